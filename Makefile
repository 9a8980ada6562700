# MIM Workbench. `make figures` and `make test` create the environment when it is missing.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CHROMIUM ?= /usr/bin/chromium
LAB_PORT ?= 8888

.PHONY: env test test-slow test-browser figures evidence bench lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -e ".[test]"
	@touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Real JupyterLab + headless Chromium (Playwright drives the system Chromium; no browser download).
# Screenshots go to test-output/browser/.
test-browser: $(STAMP)
	@test -x $(CHROMIUM) || { echo "make test-browser needs Chromium at $(CHROMIUM): apt-get install chromium (or CHROMIUM=/path/to/chromium make test-browser)" >&2; exit 2; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --upgrade-strategy only-if-needed -e ".[test,browser]"
	MIM_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

# The gallery's MAE and MFF-MAE are the shipped weights/ (the CPU learning regime, provenance in
# weights/*/provenance.json); TRAIN=1 trains them afresh with the same command (~10 min more).
TRAIN ?= 0
figures: $(STAMP)
	$(PY) analysis/make_figures.py $(if $(filter 1,$(TRAIN)),--train)

# The evidence profile: the claims over seeds, minibatches and mask ratios (analysis/evidence.py;
# about 95 min on 2 CPU cores in the learning regime, resumable: run it again after an
# interruption; --report-only rebuilds the report from its job files).
# EVIDENCE_PROFILE=gpu scales the same plan up on a GPU.
EVIDENCE_PROFILE ?= cpu
evidence: $(STAMP)
	$(PY) analysis/evidence.py --profile $(EVIDENCE_PROFILE)

# Benchmarks against peers (bench/README.md): each script writes bench/results/<name>.json, then
# bench/report.py prints the summary table. gpu.py writes a "skipped" result without CUDA.
# BENCH_FIGURES=1 also times `make figures` end to end in a temp dir (slow: 15+ min on 2 cores);
# BENCH_THREADS=1 pins torch to one thread (steadier on a machine shared with other jobs).
BENCH_FIGURES ?= 0
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --upgrade-strategy only-if-needed -e ".[test,bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@failed=""; for b in train_step hessian hessian_exact slider cli knn_monitor gpu $(if $(filter 1,$(BENCH_FIGURES)),figures); do \
		echo "== bench/$$b.py"; $(PY) bench/$$b.py || failed="$$failed $$b"; done; \
	$(PY) bench/report.py; \
	if [ -n "$$failed" ]; then echo "failed:$$failed" >&2; exit 1; fi

# JupyterLab on notebooks/ with this venv's kernel (the package is installed editable), bound to
# 127.0.0.1 with a fresh token; LAB_PORT=9999 make lab for another port. lab/ adds two settings
# to the user's own: notebooks are saved without outputs (the tracked ones stay clean) and no
# news or update pop-ups.
lab: $(STAMP)
	@token=$$($(PY) -c "import secrets; print(secrets.token_hex(24))"); \
	echo ""; echo "JupyterLab: http://127.0.0.1:$(LAB_PORT)/lab?token=$$token"; echo "(Ctrl-C to stop)"; echo ""; \
	JUPYTER_PREFER_ENV_PATH=1 JUPYTER_CONFIG_PATH=$(CURDIR)/lab exec $(PY) -m jupyter lab --no-browser \
		--ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.port_retries=0 --ServerApp.root_dir=notebooks \
		--IdentityProvider.token=$$token --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		$(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf runs figures evidence .pytest_cache
