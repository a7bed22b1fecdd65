"""JSON logs on stdout with a correlation id (a drop file, a flow run) on every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

correlation_id: ContextVar[str | None] = ContextVar("emps_correlation_id", default=None)


class CorrelationFilter(logging.Filter):
    """Stamp the current correlation id; inside a Prefect run, fall back to the flow run id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or _prefect_run_id()
        return True


def _prefect_run_id() -> str | None:
    if "prefect" not in sys.modules:
        return None
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


@contextmanager
def correlated(value: str) -> Iterator[None]:
    """Log lines inside the block carry `correlation_id=value`."""
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


def configure_logging(level: str = "INFO") -> None:
    """Route the `emps` loggers to stdout as one JSON object per line."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(CorrelationFilter())
    logger = logging.getLogger("emps")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
