"""Which columns of a drop file ingest reads: the key, the readings, and the rest (ignored, with
a warning on the ledger).

`reading_channels` is the one place ingest decides which catalog entries are reading columns:
the parser (numeric columns), the typing, the validation suite, the load into
raw.sensor_readings and the conflict check all ask it. Today that is every sensor of the
catalog; a catalog with per-type channel lists changes this function, not its callers.
"""

from __future__ import annotations

import difflib

from emps.catalog import Catalog, Sensor

KEY_COLUMNS = ("equipment_id", "timestamp")


def reading_channels(catalog: Catalog) -> list[Sensor]:
    """The catalog channels a drop file carries as reading columns, one column each."""
    return list(catalog.sensors.values())


def reading_columns(catalog: Catalog) -> list[str]:
    """The names of the reading columns (raw.sensor_readings has one column per name)."""
    return [channel.name for channel in reading_channels(catalog)]


def required_columns(catalog: Catalog) -> list[str]:
    """Columns a file must have: the key and every required reading."""
    return [*KEY_COLUMNS, *(c.name for c in reading_channels(catalog) if c.required)]


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
