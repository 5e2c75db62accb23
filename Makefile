# Dataset Webhook Export: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV_DIR := .local/uv
UV := $(UV_DIR)/bin/uv
NODE_STAMP := tests/node/node_modules/.installed-stamp
# checkov pins packaging<24 and pytest 9 needs >=24, so checkov lives in a venv of its own.
CHECKOV_VENV := .local/checkov-venv
CHECKOV_STAMP := $(CHECKOV_VENV)/.checkov-3.3.30

.PHONY: help setup lock deps up down status run demo test lint typecheck unit bundle bench terraform-check clean bqemulator-venv bqemulator-lock

help:
	@echo "make run    - start the local stack on the emulators and run a real export end to end"
	@echo "make test   - ruff, mypy, deptry and every test (starts and stops its own emulators)"
	@echo "make up / make down / make status - the local stack alone"
	@echo "make bundle - build the function zips for infra/terraform"
	@echo "make lock   - after editing pyproject.toml's dependencies: uv.lock, .venv, requirements"
	@echo "DWE_ENGINE=bigquery make up - the stack with the BigQuery emulator and the demo table"

# uv.lock is the one lock (README "Dependencies"). uv itself comes from PyPI through pip, pinned
# with its hashes by requirements-bootstrap.txt (exported from the lock's uv group).
$(UV): requirements-bootstrap.txt
	rm -rf $(UV_DIR)
	$(PYTHON) -m pip install -qq --disable-pip-version-check --root-user-action=ignore \
	  --no-deps --require-hashes --target $(UV_DIR) -r requirements-bootstrap.txt
	@touch $(UV)

# .venv is exactly uv.lock (every extra and the dev group), rebuilt whenever the lock changes;
# --locked stops with a message when pyproject.toml has changed but uv.lock has not (make lock).
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --quiet --locked --all-extras --python $(PYTHON)
	@touch $(STAMP)

# The Node receiver that checks our signatures the way customers' Express handlers do.
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund
	@touch $(NODE_STAMP)

setup: $(STAMP)

# After editing pyproject.toml's dependencies: resolve uv.lock again (keeping every version that
# still fits; LOCK_ARGS=--upgrade or --upgrade-package NAME to move), sync .venv, regenerate the
# requirements files.
lock: $(UV)
	$(UV) lock $(LOCK_ARGS)
	$(MAKE) setup
	$(PY) -m dataset_export_tools.lockfile

# Every import is a declared dependency: deptry over the deployed code and its tooling package,
# then over tests, bench and tools/ (which may also import dev dependencies); google.* is checked
# module by module in tests/unit/test_dependencies.py, the generated requirements files in
# tests/unit/test_lock.py.
deps: setup
	$(VENV)/bin/deptry src functions
	$(VENV)/bin/deptry tests bench tools --exclude tests/node --ignore DEP002,DEP004

up: setup
	$(PY) -m dataset_export_tools.localstack up

# The BigQuery emulator (PyPI bqemulator) needs duckdb 1.5.5, so it has a virtualenv of its own,
# built from tools/bqemulator/requirements.txt (hash-pinned). `DWE_ENGINE=bigquery make up` and
# the BigQuery tests build it on demand; this target builds it ahead.
bqemulator-venv: setup
	$(PY) -m dataset_export_tools.localstack bqemulator-venv

# After editing tools/bqemulator/requirements.in: pin every distribution with its hashes.
bqemulator-lock: $(UV)
	$(UV) pip compile tools/bqemulator/requirements.in --generate-hashes --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  -o tools/bqemulator/requirements.txt

down:
	@if [ -x $(PY) ]; then $(PY) -m dataset_export_tools.localstack down; else echo "nothing to stop"; fi

status: setup
	$(PY) -m dataset_export_tools.localstack status

run: up
	$(PY) -m dataset_export_tools.demo

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30
	@touch $(CHECKOV_STAMP)

# Reproducible, content-addressed function bundles for Terraform (build/bundles/).
bundle: setup
	$(PY) -m dataset_export_tools.bundle

# Not part of `make test`: 10M rows through the real process code into the GCS emulator; then
# 10M and 20M rows planned as 1, 2, 4 and 8 parts, each part in a process of its own, the
# compose alone, and the model for N instances (bench/README.md, "Parts"; about an hour); then
# the BigQuery path on the BigQuery emulator (emulator figures).
bench: setup
	$(PY) bench/process_bench.py --rows 1000000 10000000
	$(PY) bench/parts_bench.py --rows 10000000 20000000
	$(PY) bench/bigquery_bench.py --rows 1000000

# terraform fmt works offline; init/validate need providers this machine cannot download, so
# tools/tf_schema/check.py checks every .tf file against the providers' schemas instead.
terraform-check: setup $(CHECKOV_STAMP)
	terraform fmt -check -recursive infra/terraform
	$(PY) tools/tf_schema/check.py infra/terraform
	$(CHECKOV_VENV)/bin/checkov -d infra/terraform --framework terraform --skip-download --compact --quiet

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q

test: lint typecheck deps terraform-check $(NODE_STAMP)
	$(PY) -m pytest -q

clean: down
	rm -rf .local .mypy_cache .pytest_cache .ruff_cache
