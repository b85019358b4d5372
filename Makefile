# The front door. `make help` lists the targets. Every target that runs Python first makes
# sure .venv matches requirements.lock (rebuilt when the lock's hash changes).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-$(shell sha256sum $(LOCK) 2>/dev/null | cut -c1-16)
PARAMS ?= params.yaml
PROFILE ?= default
UI_PORT ?= 5000

# A relative DATA_SOURCE means the file relative to where make was called, in every process.
ifneq ($(strip $(DATA_SOURCE)),)
ifeq ($(findstring ://,$(DATA_SOURCE)),)
override DATA_SOURCE := $(abspath $(DATA_SOURCE))
export DATA_SOURCE
endif
endif

# Local, embedded defaults; anything already set in the environment wins.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_LOGGING_EXTRA_LOGGERS ?= tabreg
# The temporary server a plain flow run starts can take longer than Prefect's 20 s default to
# come up on a busy 2-core machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

TAB := python -m tabreg --params $(PARAMS)

.PHONY: help setup profile run repro ingest validate split features tune train evaluate ui \
	check-file generate test test-fast lint clean distclean register promote rollback status \
	tune-worker plots \
	retrain monitor schedule prefect-server new-batch

# Bold names only on a terminal (a pipe or a file gets plain text); $(UI_PORT) in a description
# reads as its value.
help: ## list the targets
	@if [ -t 1 ]; then b=$$'\033[1m'; r=$$'\033[0m'; else b=; r=; fi; \
	awk -v b="$$b" -v r="$$r" -v ui_port='$(UI_PORT)' 'BEGIN {FS = ":.*## "} \
		/^[a-zA-Z_-]+:.*## / {d = $$2; gsub(/\$$\(UI_PORT\)/, ui_port, d); \
		printf "  %s%-15s%s %s\n", b, $$1, r, d}' $(MAKEFILE_LIST)

# The stamp's name carries the lock's hash: a changed lock means a missing stamp, and a
# checkout that only touches the lock's mtime rebuilds nothing.
$(STAMP):
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found" >&2; exit 1; }
	@echo "Creating $(VENV) from $(LOCK) with $(PYTHON) ..."
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV)
	@echo "Installing $$(grep -c '==' $(LOCK)) pinned packages, among them" \
		$$(grep -E '^(torch|mlflow|prefect|dvc|great[-_]expectations|optuna|scikit-learn|pandas)==' \
		$(LOCK) | tr '\n' ' '); \
		echo "(about 3 minutes; pip stays quiet unless something fails) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	@echo "Installing tabreg (this project, editable) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@
	@echo "$(VENV) is ready."

setup: $(STAMP) ## create .venv from requirements.lock (only when missing or the lock changed)

profile: # record the budget profile (PROFILE=quick|default) where DVC sees it
	@[ "$$(cat profile.yaml 2>/dev/null)" = "profile: $(PROFILE)" ] || \
		printf 'profile: %s\n' '$(PROFILE)' > profile.yaml

run: $(STAMP) profile ## run the training flow (Prefect); PROFILE=quick for a one-minute budget
	python flows/training.py --params $(PARAMS)

repro: $(STAMP) profile ## run the same pipeline with `dvc repro` (the DVC driver)
	dvc repro

ingest: $(STAMP) ## DVC stage ingest: fetch + verify the source, append landing batches
	dvc repro ingest

validate: $(STAMP) ## DVC stage validate (and ingest if out of date): the data contracts
	dvc repro validate

split: $(STAMP) ## DVC stage split (and what it needs): stratified train/test tables
	dvc repro split

features: $(STAMP) ## DVC stage features: fit the feature pipeline on train, report the features
	dvc repro features

tune: $(STAMP) profile ## DVC stage tune: the Optuna study (resumes an interrupted one)
	dvc repro tune

tune-worker: $(STAMP) ## join a running study as one more worker: make tune-worker STUDY=<name>
	@test -n "$(STUDY)" || { echo "usage: make tune-worker STUDY=<name> (tune prints the name)" >&2; exit 2; }
	$(TAB) tune-worker --study "$(STUDY)"

train: $(STAMP) profile ## DVC stage train: refit the best configuration, log the model
	dvc repro train

evaluate: $(STAMP) profile ## DVC stage evaluate: metrics, interval, slices, plots, model card
	dvc repro evaluate

register: $(STAMP) profile ## DVC stage register: the model becomes challenger, then the gate
	dvc repro register

plots: $(STAMP) ## the DVC plots as one page that opens offline: reports/plots.html
	$(TAB) plots

promote: $(STAMP) ## run the champion/challenger gate for the current challenger
	$(TAB) promote

rollback: $(STAMP) ## move champion back to the champion it replaced (recorded)
	$(TAB) rollback

status: $(STAMP) ## champion, challenger and the last decisions
	@$(TAB) status

# --- backups of what git does not keep: the MLflow store, its artifacts, the ledger, the data --
.PHONY: backup restore evaluate-version

backup: $(STAMP) ## snapshot store, artifacts, ledger and every data version: BACKUP=<folder> (default backups/<time>)
	$(TAB) backup $(if $(BACKUP),--to "$(BACKUP)") $(if $(DVC_REMOTE),--dvc-remote "$(DVC_REMOTE)")

restore: $(STAMP) ## put back the latest backup (BACKUP=<folder> for another); FORCE=1 replaces newer data
	$(TAB) restore $(if $(BACKUP),--from "$(BACKUP)") $(if $(filter 1 yes true,$(FORCE)),--force)

evaluate-version: $(STAMP) ## score a version on an earlier data version's test split: VERSION=n DATA=<git rev>
	@test -n "$(VERSION)" -a -n "$(DATA)" || { echo "usage: make evaluate-version VERSION=<registered version> DATA=<git revision>" >&2; exit 2; }
	$(TAB) evaluate-version --version "$(VERSION)" --data "$(DATA)"

retrain: $(STAMP) ## the retrain-and-promote flow, once, now (skips when there is no new data)
	python flows/retrain.py --params $(PARAMS)

monitor: $(STAMP) ## report on the served traffic (drift, flags, live quality) and act on it: SINCE=, UNTIL=, ACT=0
	python flows/monitor.py --params $(PARAMS)$(if $(SINCE), --since "$(SINCE)")$(if $(UNTIL), --until "$(UNTIL)")$(if $(filter 0 no false,$(ACT)), --no-act)

schedule: $(STAMP) ## serve the retrain and monitor deployments on their crons (needs a Prefect server)
	python flows/retrain.py --params $(PARAMS) --serve

prefect-server: $(STAMP) ## a local Prefect server and UI on http://127.0.0.1:4200
	prefect server start --host 127.0.0.1 --port 4200

new-batch: $(STAMP) ## demo batch into data/landing: ROWS=2000 DRIFT=0.3 CORRUPT=out-of-range
	$(TAB) new-batch --rows $(or $(ROWS),2000) $(if $(DRIFT),--drift $(DRIFT)) \
		$(if $(CORRUPT),--corrupt $(CORRUPT)) $(if $(SEED),--seed $(SEED))

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:$(UI_PORT) over the same store as the runs
	mlflow ui --backend-store-uri "$$($(TAB) -q tracking-uri)" --host 127.0.0.1 --port $(UI_PORT)

check-file: $(STAMP) ## check a CSV against the batch contract: make check-file FILE=new.csv
	$(TAB) check-file $(FILE)

generate: $(STAMP) ## write synthetic data: make generate ROWS=20000 OUT=data/landing/gen.csv
	$(TAB) generate --rows $(or $(ROWS),20000) --seed $(or $(SEED),0) --out $(or $(OUT),data/landing/generated.csv)

# The share of src/ the suite must execute (subprocesses included: the CLI, workers, servers).
COVERAGE_FLOOR ?= 85

TEST_WORKERS ?= 2
test: $(STAMP) ## run the whole test suite (unit, integration, end-to-end on the real data) in TEST_WORKERS processes, then the coverage of src/
	python -m pytest -n $(TEST_WORKERS) --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

test-fast: $(STAMP) ## unit tests only, in TEST_WORKERS processes
	python -m pytest -n $(TEST_WORKERS) tests/unit

lint: $(STAMP) ## ruff (style, imports, docstrings of the library) and mypy (types of src/)
	ruff check src flows tests bench
	mypy

clean: ## remove pipeline outputs and caches (keeps .venv, the DVC cache and data/landing)
	rm -rf data/raw data/split reports/validation reports/plots reports/plots.html reports/tuning models \
		.cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv and the local Prefect home
	rm -rf $(VENV) .prefect

# --- serving, batch scoring and benchmarks --------------------------------------------------
.PHONY: serve predict bench

serve: $(STAMP) ## serve the champion over HTTP (serve.host:serve.port; PORT=..., WORKERS=n, VERSION=n pins one)
	$(TAB) serve $(if $(PORT),--port $(PORT)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(VERSION),--version $(VERSION))

predict: $(STAMP) ## score a file: make predict INPUT=in.csv OUTPUT=out.parquet [VERSION=n]
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict INPUT=in.csv|.parquet OUTPUT=out.csv|.parquet [VERSION=n]" >&2; exit 2; }
	$(TAB) predict "$(INPUT)" "$(OUTPUT)" $(if $(VERSION),--version $(VERSION))

bench: $(STAMP) ## benchmarks -> bench/results.json (about 12 min); BENCH=quick: small sizes; BENCH=quality: real-data RMSE, idle and busy (40 min); BENCH=champion: serving the model `make run` promoted
	python -m bench $(if $(filter quick,$(BENCH)),--quick) $(if $(filter quality champion,$(BENCH)),--only $(BENCH))

# --- the shared stack on this machine (PostgreSQL, MLflow and Prefect servers, workers) --------
.PHONY: services services-stop services-status

services: $(STAMP) ## start PostgreSQL, MLflow + Prefect servers, workers, DVC remote; prints the exports
	@$(TAB) services start

services-stop: $(STAMP) ## stop what `make services` started (says so when nothing runs)
	@$(TAB) services stop

services-status: $(STAMP) ## which services run, their pids, ports, logs and URLs
	@$(TAB) services status
