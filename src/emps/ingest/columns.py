"""Which columns of a drop file ingest reads: the key, the readings, and the rest (ignored, with
a warning on the ledger).

`reading_channels` is the one place ingest decides which catalog entries are reading columns:
the parser (numeric columns), the typing, the validation suite, the load into
raw.sensor_readings and the conflict check all ask it: every channel of the catalog (sensors
and operating settings), and the usage counter `cycle` of counter-clocked types.
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime, timedelta

from emps.catalog import Catalog, Channel
from emps.settings import Settings

KEY_COLUMNS = ("equipment_id", "timestamp")
# What the key columns hold. An id: the same rule as the raw.equipment check constraint
# (migration 0002). A time as nearly every device sends it, read without taking it apart
# (emps.ingest.timestamps reads the other shapes).
EQUIPMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
STRICT_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})$"
)
# The usage counter (cycles, operating hours) readings of counter-clocked types carry.
COUNTER = "cycle"


def reading_channels(catalog: Catalog) -> list[Channel]:
    """The catalog channels a drop file carries as reading columns, one column each."""
    return list(catalog.channels.values())


def reading_columns(catalog: Catalog) -> list[str]:
    """The names of the numeric reading columns (raw.sensor_readings has one column per name)."""
    return [*(channel.name for channel in reading_channels(catalog)), COUNTER]


def counts_usage(catalog: Catalog) -> bool:
    """Whether a type of the catalog counts its life by a usage counter."""
    return any(t.clock.kind == "counter" for t in catalog.equipment_types.values())


def required_everywhere(catalog: Catalog) -> list[Channel]:
    """Required channels every type has: a file must carry them (the others are checked per row,
    for the types that have them)."""
    return [
        channel
        for channel in reading_channels(catalog)
        if channel.required
        and all(channel.name in t.channels for t in catalog.equipment_types.values())
    ]


def required_columns(catalog: Catalog) -> list[str]:
    """Columns a file must have: the equipment, the timestamp (unless a type counts cycles: its
    rows may carry the counter instead) and every reading every type requires."""
    key = ["equipment_id"] if counts_usage(catalog) else list(KEY_COLUMNS)
    return [*key, *(c.name for c in required_everywhere(catalog))]


def unknown_columns_warning(columns: list[str], catalog: Catalog) -> str | None:
    """A ledger warning naming the columns ingest ignores, with the likely meant column."""
    known = [*KEY_COLUMNS, *reading_columns(catalog)]
    unknown = [c for c in columns if c not in known]
    if not unknown:
        return None
    described = []
    for name in unknown[:20]:
        if not name or name.startswith("(unnamed"):
            described.append("an unnamed column")
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        shown = repr(name[:40])
        described.append(f"{shown} (did you mean {close[0]!r}?)" if close else shown)
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    return f"unknown column(s) ignored: {', '.join(described)}{more}"


def reading_time_bounds(settings: Settings, now: datetime) -> dict[str, datetime]:
    """The oldest (`min_ts`, the retention age) and newest (`max_ts`, the future tolerance)
    reading time ingest accepts at `now`."""
    return {
        "min_ts": now - timedelta(days=settings.ingest.max_age_days),
        "max_ts": now + timedelta(minutes=settings.ingest.future_tolerance_min),
    }
