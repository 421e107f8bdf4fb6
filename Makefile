# bankcore — the two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_SETTINGS_MODULE ?= bankcore.settings.development

.PHONY: run test venv venv-dev system-deps migrate seed lint typecheck check bench clean

$(VENV)/.base: requirements/base.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.dev: $(VENV)/.base requirements/dev.txt requirements/mysql.txt
	$(PIP) install --quiet -r requirements/dev.txt
	touch $@

venv: $(VENV)/.base
venv-dev: system-deps $(VENV)/.dev

# Packages the test suite needs from the system: MariaDB and Redis servers (started by the tests
# themselves on free ports), and the headers mysqlclient builds against.
system-deps:
	@bash deploy/install-system-deps.sh

migrate: venv
	$(PY) manage.py migrate_ledgers

seed: migrate
	$(PY) manage.py seed_demo --accounts-per-ledger 5 --opening-balance 10000.00

# The embedded default: SQLite files under var/, demo data, web server and recovery loop.
run: seed
	@echo ""
	@echo "bankcore is starting on http://$(HOST):$(PORT)/  —  admin: http://$(HOST):$(PORT)/admin/"
	@echo "Demo logins: teller, supervisor, auditor, demo-partner (passwords printed above when first created;"
	@echo "set DEMO_PASSWORD before the first run to choose them)."
	@echo ""
	@trap 'kill 0' EXIT INT TERM; \
	$(PY) manage.py recover_transfers --loop --interval 5 & \
	$(PY) manage.py runserver $(HOST):$(PORT) --noreload

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy accounts transfers audit bankcore

check: $(VENV)/.dev
	DJANGO_SETTINGS_MODULE=bankcore.settings.development $(PY) manage.py makemigrations --check --dry-run

# The whole suite against real MariaDB servers (one per ledger) and Redis, started by the tests;
# then the ledger-count-agnostic tests again with three ledgers.
test: venv-dev
	$(MAKE) --no-print-directory lint typecheck check
	$(PY) -m pytest
	BANKCORE_TEST_LEDGERS=3 $(PY) -m pytest -m ledgers3 -q

bench: venv-dev
	$(PY) bench/run.py

clean:
	rm -rf var .pytest_cache .mypy_cache
