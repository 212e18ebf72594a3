# `make demo` and `make test` set up their own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-pandas notebooks bench bench-pandas clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m parallelbar_clone.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

# `make test-pandas PANDAS=2` (or 3): the pandas tests in a venv of their own with that
# pandas major version (pandas 3 needs Python 3.11+; pandas 2.0.3 is the last for 3.8).
PANDAS ?= 3
PANDAS_VENV ?= .venv-pandas$(PANDAS)

$(PANDAS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PANDAS_VENV)
	$(PANDAS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PANDAS_VENV)/bin/python -m pip install -q -e '.[test,pandas]' 'pandas==$(PANDAS).*'
	touch $@

test-pandas: $(PANDAS_VENV)/.installed
	$(PANDAS_VENV)/bin/python -c 'import pandas; print("pandas", pandas.__version__)'
	$(PANDAS_VENV)/bin/python -m pytest -q tests/test_pandas.py tests/test_notebook.py -k "pandas" $(PYTEST_ARGS)

# pandarallel runs with pandas 2 only
.venv-pandas2/.bench: pyproject.toml
	$(MAKE) .venv-pandas2/.installed PANDAS=2 PANDAS_VENV=.venv-pandas2
	.venv-pandas2/bin/python -m pip install -q -e '.[pandas-benchmarks]'
	touch $@

bench-pandas: .venv-pandas2/.bench
	.venv-pandas2/bin/python benchmarks/pandas_bench.py $(BENCH_ARGS)

# Re-run every notebook in notebooks/ and save it with its outputs (the tests run them too).
notebooks: $(VENV)/.installed
	$(PY) notebooks/execute.py

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[benchmarks]'
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-pandas* *.egg-info .pytest_cache
