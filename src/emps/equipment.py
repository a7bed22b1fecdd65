"""The equipment registry: importing a real fleet from CSV, validated against the sensor catalog."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from emps.catalog import Catalog
from emps.db import one

# Same rule as the raw.equipment check constraint, so the database never has the last word.
EQUIPMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
REQUIRED_COLUMNS = ("equipment_id", "equipment_type", "site", "commissioned_at")
OPTIONAL_COLUMNS = ("unit",)
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class EquipmentRecord:
    equipment_id: str
    equipment_type: str
    site: str
    commissioned_at: datetime
    unit: str | None = None


class EquipmentImportError(ValueError):
    """The file cannot be imported; `problems` lists each one with its row and field."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"{path.name}: {len(problems)} problem(s), nothing imported:", *shown]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n".join(lines))


def _parse_time(text: str) -> datetime:
    """ISO-8601 date or date-time; without an offset it is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_equipment_csv(path: Path, catalog: Catalog) -> list[EquipmentRecord]:
    """Parse and validate an equipment CSV; raises EquipmentImportError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EquipmentImportError(path, [f"cannot read the file: {exc}"]) from exc
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise EquipmentImportError(
            path,
            [
                f"header: missing column(s) {', '.join(missing)}; expected "
                f"{', '.join(REQUIRED_COLUMNS)}[, unit]"
            ],
        )
    problems: list[str] = []
    records: list[EquipmentRecord] = []
    seen: dict[str, int] = {}
    types = catalog.type_names
    now = datetime.now(UTC)
    # Row numbers count the header as row 1, as a spreadsheet shows them.
    for number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"row {number}"
        equipment_id = row.get("equipment_id", "")
        if not EQUIPMENT_ID.match(equipment_id):
            problems.append(
                f"{where}, field 'equipment_id': {equipment_id!r} is not a valid id (letters, "
                "digits and _ . : - , starting with a letter or digit, at most 64 characters)"
            )
        elif equipment_id in seen:
            problems.append(
                f"{where}, field 'equipment_id': {equipment_id!r} already appears in row "
                f"{seen[equipment_id]}"
            )
        else:
            seen[equipment_id] = number
        equipment_type = row.get("equipment_type", "")
        if equipment_type not in catalog.equipment_types:
            problems.append(
                f"{where}, field 'equipment_type': {equipment_type!r} is not an equipment type of "
                f"the sensor catalog (known: {', '.join(types)}); add it to the catalog first"
            )
        site = row.get("site", "")
        if not site:
            problems.append(f"{where}, field 'site': empty; every equipment needs a site")
        commissioned_at = None
        try:
            commissioned_at = _parse_time(row.get("commissioned_at", ""))
            if commissioned_at > now:
                problems.append(
                    f"{where}, field 'commissioned_at': {row['commissioned_at']!r} is in the future"
                )
        except ValueError:
            problems.append(
                f"{where}, field 'commissioned_at': {row.get('commissioned_at', '')!r} is not an "
                "ISO-8601 date (e.g. 2023-04-01 or 2023-04-01T08:00:00+00:00)"
            )
        if not problems and commissioned_at is not None:
            records.append(
                EquipmentRecord(
                    equipment_id, equipment_type, site, commissioned_at, row.get("unit") or None
                )
            )
    if problems:
        raise EquipmentImportError(path, problems)
    if not records:
        raise EquipmentImportError(path, ["the file has a header but no equipment rows"])
    return records


def upsert_equipment(
    conn: psycopg.Connection, records: list[EquipmentRecord], source: str = "import"
) -> tuple[int, int]:
    """Insert new equipment and update known ones; returns (inserted, updated)."""
    inserted = updated = 0
    with conn.cursor() as cur:
        for record in records:
            cur.execute(
                """
                insert into raw.equipment
                    (equipment_id, equipment_type, site, unit, commissioned_at, source)
                values (%s, %s, %s, %s, %s, %s)
                on conflict (equipment_id) do update
                    set equipment_type = excluded.equipment_type, site = excluded.site,
                        unit = excluded.unit, commissioned_at = excluded.commissioned_at,
                        source = excluded.source
                returning (xmax = 0) as inserted
                """,
                (
                    record.equipment_id,
                    record.equipment_type,
                    record.site,
                    record.unit,
                    record.commissioned_at,
                    source,
                ),
            )
            if one(cur)[0]:
                inserted += 1
            else:
                updated += 1
    return inserted, updated


def import_equipment_csv(conn: psycopg.Connection, path: Path, catalog: Catalog) -> tuple[int, int]:
    """Validate the whole file, then upsert it in one transaction (all rows or none)."""
    records = read_equipment_csv(path, catalog)
    with conn.transaction():
        return upsert_equipment(conn, records)
