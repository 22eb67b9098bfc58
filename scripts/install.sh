#!/usr/bin/env bash
# Create (if missing) and fill the course virtual environment. Idempotent; used by `make`.
#   bash scripts/install.sh [VENV_DIR]
# torch is installed first, by machine: a CUDA build where an NVIDIA driver is present, the CPU
# build elsewhere, so a CPU-only machine never downloads the multi-GB CUDA wheels.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' constraints.txt)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# (Re)install torch when it is missing or not the pinned release.
if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "NVIDIA GPU found: installing the CUDA build of torch $TORCH_VERSION"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  elif [ "$(uname -s)" = "Linux" ] && "$VENV/bin/python" - <<'PY'
import socket, sys
try:
    socket.create_connection(("download.pytorch.org", 443), timeout=5).close()
except OSError:
    sys.exit(1)
PY
  then
    echo "No GPU: installing the CPU build of torch $TORCH_VERSION from download.pytorch.org"
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  else
    # macOS wheels on PyPI are CPU/MPS builds; Linux machines without the PyTorch index use a local
    # CPU wheel if pip's find-links has one (as on the course CI machines).
    echo "No GPU: installing torch $TORCH_VERSION from the default index"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  fi
fi

# DS_BUILD_OPS=0: DeepSpeed installs without compiling its CUDA/C++ ops; the few it needs (e.g. the
# CPU shared-memory comm op) are JIT-built with the system compiler on first use.
DS_BUILD_OPS=0 "${PIP[@]}" -c constraints.txt -e ".[dev,distributed,serve,eval]"
# Build DeepSpeed's CPU shared-memory comm op now (once, cached in ~/.cache/torch_extensions), so the
# first multi-process DeepSpeed run of Lab-1.3 does not spend minutes compiling inside a notebook.
"$VENV/bin/python" -c "from common_utils.training.deepspeed import ensure_deepspeed_cpu_comm_op as e; print('DeepSpeed CPU comm op:', e())" \
  || echo "warning: DeepSpeed's CPU comm op did not build here (no C++ compiler?); the first DeepSpeed run will try again"
echo "Environment ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
