# Course entry points. Everything runs inside .venv, created on first use.
#   make lab                 install, provision the embedded models, start JupyterLab
#   make test                install, then unit tests and every notebook (smoke profile, offline)
#   make smoke LAB=<path>    run one lab's notebooks headless
#   make timing              per-notebook seconds of the last notebook run, slowest first
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.course-installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 COURSE_PROFILE=smoke
PORT ?= 8888
# Jupyter refuses to run as root (containers, cloud VMs) unless told to.
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install provision lab test unit notebooks smoke timing lint doctor clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

provision: install
	$(PY) -m common_utils provision

doctor: install
	$(PY) -m common_utils doctor

lab: provision
	@echo "Starting JupyterLab: open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	$(VENV)/bin/jupyter lab --no-browser --port=$(PORT) --notebook-dir=. $(JUPYTER_ROOT)

unit: provision
	$(OFFLINE) $(PY) -m pytest tests -q

notebooks: provision
	$(OFFLINE) $(PY) scripts/notebooks.py run

test: unit notebooks

smoke: provision
	@test -n "$(LAB)" || (echo "usage: make smoke LAB=path/to/lab" && exit 2)
	$(OFFLINE) $(PY) scripts/notebooks.py run "$(LAB)"

timing:
	@$(PY) scripts/notebooks.py report

lint: install
	$(VENV)/bin/ruff check .

clean-outputs:
	find . -path ./$(VENV) -prune -o -type d -name outputs -print -exec rm -rf {} +
