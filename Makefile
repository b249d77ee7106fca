# Two commands on a fresh machine:  `make demo` (set up + default experiment)  and  `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HOME := $(CURDIR)/files/hf_home

.PHONY: setup demo test test-fast evaluate-forms
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: setup
	$(PY) src/exec/unlearn_model.py --config_file configs/synthetic/npo.json

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

evaluate-forms: setup
	PY=$(PY) bash benchmarks/evaluation_forms.sh
