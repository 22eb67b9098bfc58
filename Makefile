# Course entry points. Everything runs inside .venv, created on first use.
#   make lab                 install, provision the embedded models, start JupyterLab
#   make test                install, then unit tests, every notebook (smoke profile, offline, keeping each
#                            executed notebook under build/executed/), then the course site and its checks
#   make smoke LAB=<path>    run one lab's notebooks headless
#   make timing              per-notebook seconds of the last notebook run, slowest first
#   make test-gpu            on an NVIDIA GPU: unit tests, then every notebook in the full profile, one at a
#                            time, failing when a notebook's peak reserved GPU memory exceeds GPU_MAX_GIB
#   make engines             the serving engines of chapter 02 in their own venvs (.venv-vllm: vLLM on CPU,
#                            .venv-triton: PyTriton); `make test` installs them, `make lab` does not (~4 GB)
#   make serve               the course's OpenAI-compatible server on 127.0.0.1:$PORT (default 8000; COURSE_API_KEY required)
#   make duplicates          notebook pairs that share copied code (scripts/notebook_duplicates.py)
#   make site                the course site in build/site/ (theory, READMEs, notebooks with the outputs of
#                            the last notebook run), link-checked; open build/site/index.html
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.course-installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 COURSE_PROFILE=smoke
PORT ?= 8888
# Jupyter refuses to run as root (containers, cloud VMs) unless told to.
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
GPU_MAX_GIB ?= 15
NO_CUDA := make test-gpu needs an NVIDIA GPU with CUDA
# Executed copies of the notebooks (outputs included) written by the notebook runs; the site publishes them.
SNAPSHOTS ?= build/executed
SITE_DIR ?= build/site

.PHONY: install provision lab test unit notebooks smoke timing lint doctor clean-outputs test-gpu gpu-guard \
	duplicates site site-check serve engines

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

provision: install
	$(PY) -m common_utils provision

# Idempotent: an engine venv that already holds its pinned release is left alone.
engines:
	bash scripts/install_engines.sh all

# The course's OpenAI-compatible server on 127.0.0.1:$${PORT:-8000} (Lab-2.4); needs COURSE_API_KEY.
# ADAPTER=path/to/lora/adapter serves base + adapter (merged at load).
serve: provision
	$(OFFLINE) $(PY) -m common_utils.inference.server $(if $(ADAPTER),--adapter $(ADAPTER))

doctor: install
	$(PY) -m common_utils doctor

lab: provision
	@echo "Starting JupyterLab: open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	$(VENV)/bin/jupyter lab --no-browser --port=$(PORT) --notebook-dir=. $(JUPYTER_ROOT)

# The site checks (marker `site`) run after the notebook run, on the site built from its snapshots.
unit: provision engines
	$(OFFLINE) COURSE_REQUIRE_ENGINES=1 $(PY) -m pytest tests -q -m "not site"

notebooks: provision engines
	$(OFFLINE) COURSE_REQUIRE_ENGINES=1 $(PY) scripts/notebooks.py run --snapshots $(SNAPSHOTS)

test: unit notebooks site-check

# Builds from whatever snapshots exist; a notebook without one is shown without outputs, with a note.
site: install
	$(PY) scripts/build_site.py --executed $(SNAPSHOTS) --out $(SITE_DIR)

site-check: site
	COURSE_SITE_DIR=$(SITE_DIR) COURSE_SNAPSHOT_DIR=$(SNAPSHOTS) $(PY) -m pytest tests/test_site.py -q -m site

smoke: provision
	@test -n "$(LAB)" || (echo "usage: make smoke LAB=path/to/lab" && exit 2)
	$(OFFLINE) $(PY) scripts/notebooks.py run --snapshots $(SNAPSHOTS) "$(LAB)"

# Stops within seconds where there is no usable GPU. When $(VENV) already has torch, torch decides
# (a CPU build of torch cannot use the GPU either); before the first install only nvidia-smi is asked,
# so a CPU machine never starts the long install for nothing.
gpu-guard:
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { \
	    echo "$(NO_CUDA): torch $$($(PY) -c 'import torch; print(torch.__version__)') in $(VENV) finds no CUDA device" \
	      "(no NVIDIA driver, or a CPU build of torch). On a CPU machine run make test."; exit 2; }; \
	elif ! nvidia-smi >/dev/null 2>&1; then \
	  echo "$(NO_CUDA): nvidia-smi finds no NVIDIA driver or GPU here. On a CPU machine run make test."; exit 2; \
	fi

# Guard again after provisioning: the freshly installed torch must see the GPU too.
test-gpu: gpu-guard
	@$(MAKE) --no-print-directory provision VENV=$(VENV)
	@$(MAKE) --no-print-directory gpu-guard VENV=$(VENV)
	$(PY) -m pytest tests -q -m "not site"
	$(PY) scripts/notebooks.py run --profile full --workers 1 --max-gpu-gib $(GPU_MAX_GIB) --snapshots $(SNAPSHOTS)

duplicates: install
	$(PY) scripts/notebook_duplicates.py

timing:
	@$(PY) scripts/notebooks.py report

lint: install
	$(VENV)/bin/ruff check .

clean-outputs:
	find . \( -path ./$(VENV) -o -path "./$(VENV)-*" \) -prune -o -type d -name outputs -print -exec rm -rf {} +
