# The two commands: `make up` runs the platform, `make test` runs lint and the tests.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_LINK_MODE ?= copy
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

.PHONY: up test install lint format bench clean system-deps

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

install: $(UV)
	$(UV) sync --frozen

system-deps:
	bash scripts/system-deps.sh

up: install
	$(UV) run emps up

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run deptry src
	$(UV) run deptry tests bench --exclude '\.venv' --ignore DEP001,DEP002,DEP004
	$(UV) run mypy
	$(UV) run lint-imports --no-cache && $(UV) run python scripts/check_copies.py

# Two workers, a test file each at a time (each worker starts its own PostgreSQL and Prefect
# server): ~20 % faster on 2 cores than one process. Then the dashboard's browser tests alone:
# beside two busy workers, Chromium and the Streamlit server starved past their timeouts.
test: install system-deps lint
	$(UV) run pytest -n 2 --dist loadfile -m "not browser"
	$(UV) run pytest -m browser

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
