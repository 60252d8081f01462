# The two commands of the README: `make demo` and `make test`. Each creates the virtual
# environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) samples/hello/demo.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The tests start a real PostgreSQL server and a real nginx; .ci/ensure-postgresql and
# .ci/ensure-nginx install them if they are missing.
test: lint
	.ci/ensure-postgresql
	.ci/ensure-nginx
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/run.py

# The wheel and sdist the README installs from (dist/sanctorum-VERSION-py3-none-any.whl); the
# wheel is built from the sdist, so both are checked to be complete.
.PHONY: dist
dist: $(VENV)/.installed
	rm -rf dist
	$(PY) -m build --outdir dist .

# The documentation site (mkdocs.yml) into site/; any warning fails the build, as in
# tests/test_docs.py, which `make test` runs. `$(PY) -m mkdocs serve` previews it.
.PHONY: docs
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist site
