"""The Prefect run log as a callback for the libraries flows call (dbt's log lines)."""

from __future__ import annotations

import contextlib

from prefect import get_run_logger


def prefect_log_forwarder():
    """A dbt log callback writing to this task run's Prefect log.

    dbt calls it from its own worker threads, which carry no Prefect run context: the logger is
    taken here, in the task's thread, and the callback never raises into dbt.
    """
    logger = get_run_logger()
    methods = {"warn": logger.warning, "error": logger.error}

    def forward(level: str, message: str) -> None:
        # A lost log line must not break the build.
        with contextlib.suppress(Exception):
            methods.get(level, logger.info)(message)

    return forward
