# The two set-up commands of the README: `make demo` and `make test`. Each creates its
# virtual environment(s) from this repository's files on first use.
PYTHON ?= python3
PYTHON312 ?= /root/.pyenv/versions/3.12.1/bin/python3
VENV ?= .venv
VENV312 ?= .venv312
# --no-loadscope-reorder: files reach the workers in collection order, longest first
# (tests/conftest.py), not by their number of tests
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder -q -rs

.PHONY: demo test test311 test312 venvs bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

$(VENV312)/.installed: setup.py
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/pip install -q --upgrade pip
	$(VENV312)/bin/pip install -q -e ".[test-notorch]"
	touch $@

# both environments, installed side by side (CI: the two pip runs overlap)
venvs:
	@if [ -x "$(PYTHON312)" ]; then \
		$(MAKE) --no-print-directory -j2 $(VENV)/.installed $(VENV312)/.installed; \
	else $(MAKE) --no-print-directory $(VENV)/.installed; fi

demo: $(VENV)/.installed
	$(VENV)/bin/msa-jax demo

test: test311 test312

# the tests marked leg312 run on the 3.12 leg instead (the 3.11 leg runs their single_leg twin;
# without Python 3.12, on 3.11 too)
test311: $(VENV)/.installed
	@set --; if [ -x "$(PYTHON312)" ]; then set -- -m "not leg312"; fi; \
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) "$$@" tests

# Python 3.12 (JAX 0.12) where it exists; torch is not installed there, so the tests that
# compare with transformers skip, and the tests marked single_leg (long end-to-end runs whose
# subject does not depend on the JAX version, and the folders tests/cli, colabs, eval, data,
# memory and parallel:
# tests/conftest.py) run on the 3.11 leg only.
test312:
	@if [ -x "$(PYTHON312)" ]; then \
		$(MAKE) --no-print-directory $(VENV312)/.installed && \
		$(VENV312)/bin/python -m pytest $(PYTEST_ARGS) -m "not single_leg" tests; \
	else echo "($(PYTHON312) not found: Python 3.12 suite skipped)"; fi

clean:
	rm -rf $(VENV) $(VENV312) outputs .pytest_cache
