# The two commands: `make up` runs the platform, `make test` runs lint and the tests.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_LINK_MODE ?= copy
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

.PHONY: up test install lint lint-ruff lint-deptry lint-mypy lint-imports lint-sql format bench clean
.PHONY: system-deps

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# Libraries compiled to bytecode once, at install: uv does not by default, and with
# PYTHONDONTWRITEBYTECODE set every process (each flow run, each CLI call) compiled pandas,
# Prefect and the ML stack again at import (a scoring run's imports: 8.3 s against 4.0 s).
install: $(UV)
	$(UV) sync --frozen --compile-bytecode

system-deps:
	bash scripts/system-deps.sh

up: install
	$(UV) run emps up

# The linters side by side, each printing its output when it ends: mypy and sqlfluff take about
# a minute each, the others seconds. sqlfluff's dbt templater compiles the project against a
# migrated database: its test (marked `sqlfluff`) starts one.
LINTERS := lint-ruff lint-deptry lint-mypy lint-imports lint-sql

lint: install
	$(MAKE) --no-print-directory -j$(words $(LINTERS)) --output-sync=target $(LINTERS)

lint-ruff:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

lint-deptry:
	$(UV) run deptry src
	$(UV) run deptry tests bench --exclude '\.venv' --ignore DEP001,DEP002,DEP004

lint-mypy:
	$(UV) run mypy

lint-imports:
	$(UV) run lint-imports --no-cache && $(UV) run python scripts/check_copies.py

lint-sql:
	$(UV) run pytest -q -p no:cacheprovider -m sqlfluff tests/dbt

# Two workers, a test file each at a time (each worker starts its own PostgreSQL and Prefect
# server): ~20 % faster on 2 cores than one process. The dashboard's browser tests run at the
# same time in a process of their own, ahead of the workers for the CPU: beside two workers of
# the same priority, Chromium and the Streamlit server starved past their timeouts. The
# workers' servers inherit their lower priority. The browser tests' report follows the others'.
BROWSER_LOG := test-artifacts/browser-tests.log

test: install system-deps lint
	@mkdir -p $(dir $(BROWSER_LOG))
	$(UV) run pytest -p no:cacheprovider -m browser > $(BROWSER_LOG) 2>&1 & browser=$$!; \
	nice -n 10 $(UV) run pytest -n 2 --dist loadfile -m "not browser and not sqlfluff"; \
	status=$$?; wait $$browser; browser_status=$$?; cat $(BROWSER_LOG); \
	if ((status == 0)); then exit $$browser_status; else exit $$status; fi

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

# Every bench in turn, each on its own temporary database; figures kept in bench/results and
# docs/performance.md written from them (say what the machine was doing with NOTE="...").
bench: install
	set -o pipefail; for b in $(filter-out bench/_% bench/report.py,$(wildcard bench/*.py)); do \
		$(UV) run python $$b | $(UV) run python bench/report.py record $$(basename $$b .py) \
			--note "$(NOTE)" || exit 1; \
	done
	$(UV) run python bench/report.py render

clean:
	rm -rf var/ .pytest_cache
