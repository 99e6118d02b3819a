# tasker-django: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo serve test lint typecheck migrations-check test-sqlite test-postgres pg-up redis-up bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py tasker_load_templates example_project/task_templates

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

migrations-check: venv
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django makemigrations --check --dry-run tasker_django

test-sqlite: venv
	@echo "== pytest on SQLite =="
	$(BIN)/pytest -q

pg-up:
	@if ls /etc/postgresql >/dev/null 2>&1; then \
	  pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done; \
	fi

redis-up:
	@if command -v redis-server >/dev/null; then \
	  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no; \
	fi

test-postgres: venv pg-up
	@if ls /etc/postgresql >/dev/null 2>&1; then \
	  echo "== pytest on PostgreSQL =="; \
	  DATABASE_URL=$(PG_URL) $(BIN)/pytest -q; \
	else \
	  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	  echo "!! PostgreSQL is not installed here: the PostgreSQL pass of the suite is SKIPPED !!"; \
	  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	fi

test: lint typecheck migrations-check test-sqlite test-postgres

bench: venv pg-up redis-up
	DATABASE_URL=$(PG_URL) $(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo.sqlite3* tasker_test.sqlite3*
