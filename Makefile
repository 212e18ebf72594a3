# `make demo` and `make test` set up their own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-pandas notebooks bench bench-pandas mutate breaks clean

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

# `make mutate`: mutmut over the modules of pure logic (setup.cfg, [mutmut]) against their
# fast tests, in a venv of its own that holds the dependencies but not the package (the
# tests must import mutmut's mutated copy). MODULES=schedule runs one module;
# MUTATE_ARGS=--survivors lists what survived. Survivors judged harmless:
# tests/mutation/survivors.md.
MUTATE_VENV ?= .venv-mutate

$(MUTATE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MUTATE_VENV)
	$(MUTATE_VENV)/bin/python -m pip install -q --upgrade pip
	$(MUTATE_VENV)/bin/python -m pip install -q 'mutmut==3.8.1' 'tqdm>=4.60' 'dill>=0.3.6' \
		'pytest>=7' 'pytest-timeout>=2.1' 'psutil>=5.8'
	touch $@

mutate: $(MUTATE_VENV)/.installed
	$(MUTATE_VENV)/bin/python tests/mutation/mutate.py $(MUTATE_ARGS) $(MODULES)

# `make breaks`: one-line breaks of the process-level engine, each against the tests that
# must catch it (tests/mutation/breaks.py); BREAKS=timeout runs the breaks so named.
breaks: $(VENV)/.installed
	$(PY) tests/mutation/breaks.py $(BREAKS_ARGS) $(BREAKS)

clean:
	rm -rf $(VENV) $(MUTATE_VENV) .venv-pandas* *.egg-info .pytest_cache mutants
