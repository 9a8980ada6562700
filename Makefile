# MIM Workbench. `make figures` and `make test` create the environment when it is missing.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: env test test-slow figures bench lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -e ".[test]"
	@touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

figures: $(STAMP)
	@test -f analysis/make_figures.py || { echo "analysis/make_figures.py is not written yet (see the notebooks issue)"; exit 2; }
	$(PY) analysis/make_figures.py

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1

clean:
	rm -rf runs figures .pytest_cache
