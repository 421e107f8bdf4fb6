# bankcore — the two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_SETTINGS_MODULE ?= bankcore.settings.development

.PHONY: run test venv venv-dev system-deps migrate seed lint typecheck check bench bench-api bench-batch bench-door bench-chaos bench-scale clean lock

# Debian and Ubuntu ship Python without ensurepip (it comes with python3.X-venv), and then
# `python3 -m venv` fails half-way. Install that package with apt as root or with passwordless
# sudo, as deploy/install-system-deps.sh does; otherwise stop and say what to install.
# Installs come from the lock files (requirements/*.lock: every package pinned, with its hashes;
# `make lock` makes them from the ranges in requirements/*.txt). A file whose hash is not in the
# lock stops the install.
$(VENV)/.base: requirements/base.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	    echo "$(PYTHON) not found: bankcore needs Python 3.11+ (choose one with make PYTHON=...)." >&2; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	    pkg=$$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'); \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	    else sudo="-"; fi; \
	    if [ "$$sudo" = "-" ] || ! command -v apt-get >/dev/null 2>&1; then \
	        echo "$(PYTHON) cannot create a virtual environment: its ensurepip module is missing." >&2; \
	        echo "On Debian/Ubuntu install it with: sudo apt-get install -y $$pkg (python3-venv for the default python3)," >&2; \
	        echo "elsewhere install a Python 3.11+ that includes ensurepip; then run make again." >&2; \
	        exit 1; \
	    fi; \
	    echo "Installing $$pkg (ensurepip, which python -m venv needs) …"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$$pkg" >/dev/null \
	        || { echo "apt-get could not install $$pkg; install it and run make again." >&2; exit 1; }; \
	    $(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	        echo "$$pkg is installed but $(PYTHON) still has no ensurepip: is it the system's Python?" >&2; exit 1; }; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --require-hashes -r requirements/base.lock
	touch $@

$(VENV)/.dev: $(VENV)/.base requirements/dev.lock
	$(PIP) install --quiet --require-hashes -r requirements/dev.lock
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
	$(VENV)/bin/mypy accounts transfers audit bankcore backoffice bench

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

# The partner API through gunicorn against transfer_create and raw SQL (bench/api.py).
bench-api: venv-dev
	$(PY) bench/api.py

# The bulk API (batches of 100 cross-ledger transfers) against the raw baseline (bench/batch.py).
bench-batch: venv-dev
	$(PY) bench/batch.py

# The API's door alone, in one process: its CPU per transfer beside transfer_create's (bench/door.py).
bench-door: venv-dev
	$(PY) bench/door.py

# Server faults at random against gunicorn and the recovery loop, with heal times (bench/chaos.py).
CHAOS_MINUTES ?= 5
bench-chaos: venv-dev
	$(PY) bench/chaos.py --minutes $(CHAOS_MINUTES)

# Recovery of 10,000 stuck transfers, then reconciliation of a million entries (bench/scale.py).
bench-scale: venv-dev
	$(PY) bench/scale.py

# The lock files, again from the ranges in requirements/*.txt: the newest versions within them,
# each with the hashes of every file the index has for it. Run after changing a .txt file and
# commit both; bankcore/tests/project/test_locked_dependencies.py checks every pin against its range.
LOCKS := base dev prod
lock:
	test -x $(PIP) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "pip-tools>=7.4,<8"
	for name in $(LOCKS); do \
	    $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --upgrade \
	        --no-emit-index-url --no-emit-find-links --output-file requirements/$$name.lock requirements/$$name.txt \
	        || exit 1; \
	done

clean:
	rm -rf var .pytest_cache .mypy_cache
