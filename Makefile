# The two commands a new user runs: `make demo` and `make test`.
# Everything else here is what they need: a virtualenv with the project installed.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Python 3.12+ (.python-version); pyenv's shim or a system python3.12 both do.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
STAMP := $(VENV)/.installed

.PHONY: demo test lint format venv migrate clean bench bench-write screenshots

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "Python 3.12+ is needed (found %s)" % sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest's exit code 5 (no tests collected) is a failure here like any other.
test: lint
	mkdir -p var
	$(BIN)/python manage.py makemigrations --check --dry-run > /dev/null
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

migrate: $(STAMP)
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

# `make demo PORT=8001` when 8000 is taken. Run again, load_demo tops the data up to now;
# serve_demo runs the pipeline beside the server until Ctrl+C.
PORT ?= 8000
demo: migrate
	DEBUG=true $(BIN)/python manage.py load_demo
	@echo
	@echo "Dashboard: http://127.0.0.1:$(PORT)/  Logins:"
	@echo "  demo     / demo-password      superuser"
	@echo "  auditor  / auditor-password   Auditor: reads everything"
	@echo "  operator / operator-password  Operator: reads, and acts on leads"
	@echo
	DEBUG=true $(BIN)/python manage.py serve_demo --port $(PORT)

# Into a scratch database of its own, never the demo's; --reuse keeps the fill.
BENCH_DB ?= sqlite:///$(CURDIR)/var/bench.sqlite3
bench: $(STAMP)
	mkdir -p var
	DATABASE_URL=$(BENCH_DB) $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(BENCH_DB) AUDIT_JSONL_PATH=$(CURDIR)/var/bench-logs/audit.log \
		$(BIN)/python manage.py audit_bench --events 1000000 --reuse

# The write path alone (audit writes, lead API through gunicorn, storage), in a few
# minutes; shares the bench database, so the 1M fill is made once.
bench-write: $(STAMP)
	mkdir -p var
	DATABASE_URL=$(BENCH_DB) $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(BENCH_DB) $(BIN)/python manage.py createcachetable
	DATABASE_URL=$(BENCH_DB) AUDIT_JSONL_PATH=$(CURDIR)/var/bench-logs/audit.log \
		$(BIN)/python manage.py write_bench --events 1000000

# docs/screenshots/*.png for the README: the demo data in a throwaway database,
# photographed by Debian's Chromium (apt-get install --no-install-recommends chromium).
SHOTS_DB := sqlite:///$(CURDIR)/var/screenshots.sqlite3
screenshots: $(STAMP)
	mkdir -p var
	rm -rf var/screenshots.sqlite3* var/screenshots-logs
	DATABASE_URL=$(SHOTS_DB) $(BIN)/python manage.py migrate --noinput -v0
	DATABASE_URL=$(SHOTS_DB) $(BIN)/python manage.py createcachetable
	DATABASE_URL=$(SHOTS_DB) AUDIT_JSONL_PATH=$(CURDIR)/var/screenshots-logs/audit.log \
		$(BIN)/python manage.py screenshots --output docs/screenshots

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
