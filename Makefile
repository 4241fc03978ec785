# From a fresh clone: `make demo` runs the quickstart, `make test` runs the suite.
# Only Python 3.11+ and make are needed; PostgreSQL and Redis are embedded when
# DATABASE_URL / REDIS_URL are unset.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test typecheck test-unit bench bench-production lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/backfill demo

# Two pytest processes at once (tests/suite.py): the acceptance tier, and the others beside it.
test: $(STAMP) typecheck
	$(BIN)/python -m tests.suite

typecheck: $(STAMP)
	$(BIN)/mypy

test-unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench

# The same on a production-like server: the PostgreSQL binaries of BACKFILL_PG_BIN (else
# `pg_config --bindir`), 256MB shared buffers, JIT on.
bench-production: $(STAMP)
	$(BIN)/python -m bench --server production --pg-bin "$${BACKFILL_PG_BIN:-$$(pg_config --bindir 2>/dev/null)}"

lint: $(STAMP)
	$(BIN)/backfill migrate lint

clean:
	rm -rf $(VENV) .demo build *.egg-info
