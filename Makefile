# tasker-django: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo serve test lint typecheck migrations-check test-sqlite test-postgres pg-up redis-up browser bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo runs from the checkout (manage.py puts it on sys.path), so a fresh clone needs
# only the runtime dependencies (and redis, for REDIS_URL): no build of the package and no
# dev tools, a much shorter first run. `make test` installs the package and the dev tools.
DEMO_STAMP := $(VENV)/.demo-stamp
DEMO_REQUIREMENTS := $(VENV)/demo-requirements.txt
SEED_TEMPLATES := $(wildcard ../shared/seed-templates)
DEMO_ARGS ?=

$(DEMO_STAMP): pyproject.toml
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then \
	  set -e; \
	  test -x $(BIN)/python || { echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); }; \
	  $(BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	    print(*p['dependencies'], *p['optional-dependencies']['redis'], sep='\n')" > $(DEMO_REQUIREMENTS); \
	  echo "$(BIN)/python -m pip install --quiet -r $(DEMO_REQUIREMENTS)  # pyproject.toml's dependencies"; \
	  $(BIN)/python -m pip install --quiet -r $(DEMO_REQUIREMENTS); \
	fi
	@touch $@

# SQLite (demo.sqlite3) by default; DATABASE_URL / REDIS_URL run it on PostgreSQL / Redis.
# payments_demo creates the superuser demo/demo (only with DEBUG on: a demo database).
# CI: make demo DEMO_ARGS=--short
demo: $(DEMO_STAMP)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py tasker_load_templates --force example_project/task_templates $(SEED_TEMPLATES)
	$(BIN)/python manage.py payments_demo $(DEMO_ARGS)

# The development server and a tasker worker together: http://127.0.0.1:8000/admin/
serve: $(DEMO_STAMP)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py payments_serve

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

# Debian's Chromium for the admin's browser tests (Playwright drives it by its path).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the admin browser tests..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "!! could not install chromium: the admin browser tests will be SKIPPED !!"; }

test: lint typecheck migrations-check browser test-sqlite test-postgres

bench: venv pg-up redis-up
	DATABASE_URL=$(PG_URL) $(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo.sqlite3* tasker_test.sqlite3*
