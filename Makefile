# `make demo` and `make test` set up their own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test notebooks bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m parallelbar_clone.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Re-run every notebook in notebooks/ and save it with its outputs (the tests run them too).
notebooks: $(VENV)/.installed
	$(PY) notebooks/execute.py

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[benchmarks]'
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
