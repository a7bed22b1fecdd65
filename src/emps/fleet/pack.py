"""Fleet packs: the one way to bring a fleet's history.

A pack is a folder:

    catalog.yaml       the fleet's catalog (version 2; version 1 is read too)
    pack.yaml          optional: how to read the readings files, defaults for the equipment
    equipment.csv      equipment_id, equipment_type[, site, commissioned_at, unit]
    readings/          readings in the drop formats (CSV with a header, JSON, NDJSON, .gz), or
                       delimited text described by pack.yaml's column map
    failures.csv       equipment_id, failed_at or cycle, failure_mode[, repaired_at, notes]
    maintenance.csv    equipment_id, performed_at or cycle, kind (inspection, preventive,
                       corrective, repair), outcome (fault_found, no_fault_found,
                       failed_before_service)[, notes]
    test/              optional: readings of units cut before they failed (held out of training)
      rul.csv          their true remaining life at their last reading: equipment_id,
                       remaining_life (in the type's life unit)

pack.yaml (every key optional):

    readings:
      pattern: "*.txt"            # files of readings/ (and test/) to read; default: all
      delimiter: whitespace       # a column map: delimited text, the pack's own files unmodified
      header: false
      columns: [equipment_id, cycle, altitude, ...]   # "-" skips a column
      equipment_id_prefix: "FD001-"
      run_to_failure: true        # each unit's last reading is its failure (no failures.csv)
    test:
      equipment_id_prefix: "FD001-T"
      rul: {header: false, columns: [remaining_life]}   # ids by line: the n-th test unit
    equipment:
      equipment_type: turbofan    # units found in the readings but not in equipment.csv

Reading a pack checks everything it can without the database and lists each problem with its
file, row and field (`PackProblem`); the import (emps.fleet.importer) loads what is sound.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from emps.catalog import Catalog, CatalogError, parse_catalog
from emps.equipment import EQUIPMENT_ID

DROP_SUFFIXES = (".csv", ".json", ".ndjson", ".jsonl")
FAILURE_COLUMNS = ("equipment_id", "failure_mode")
MAINTENANCE_COLUMNS = ("equipment_id", "kind", "outcome")
OUTCOMES = ("fault_found", "no_fault_found", "failed_before_service")
TASK_TYPES = ("inspection", "corrective", "preventive", "repair")
SKIP = "-"


class PackError(ValueError):
    """The pack cannot be read at all (no catalog, an unreadable pack.yaml)."""


@dataclass(frozen=True)
class PackProblem:
    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ColumnMap:
    """How to read delimited readings files that are not in the drop formats."""

    columns: tuple[str, ...]
    delimiter: str | None  # None: any run of whitespace
    header: bool
    equipment_id_prefix: str = ""

    def rows(self, text: str) -> Iterator[tuple[int, dict[str, str]]]:
        """(line number, {column: text}) per non-empty line; `columns` names them in order."""
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            if (number == 1 and self.header) or not line.strip():
                continue
            if self.delimiter is None:
                fields = line.split()
            else:
                fields = next(csv.reader([line], delimiter=self.delimiter))
            yield (
                number,
                dict(zip(self.columns, fields, strict=False)) | {"__fields__": str(len(fields))},
            )


@dataclass
class ReadingsSpec:
    pattern: str = "*"
    column_map: ColumnMap | None = None
    run_to_failure: bool = False


@dataclass
class Failure:
    equipment_id: str
    failed_at: datetime
    failure_mode: str | None
    repaired_at: datetime | None = None
    notes: str | None = None
    cycle: float | None = None
    row: int | None = None  # its line in failures.csv


@dataclass
class Service:
    equipment_id: str
    performed_at: datetime
    kind: str
    outcome: str
    notes: str | None = None
    row: int | None = None  # its line in maintenance.csv


@dataclass
class Pack:
    root: Path
    catalog: Catalog
    catalog_text: str
    readings: ReadingsSpec
    test_readings: ReadingsSpec
    equipment: list[dict[str, Any]] = field(default_factory=list)
    default_type: str | None = None
    failures: list[Failure] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    remaining_life: dict[str, float] = field(default_factory=dict)
    problems: list[PackProblem] = field(default_factory=list)

    def reading_files(self, test: bool = False) -> list[Path]:
        folder = self.root / ("test" if test else "readings")
        spec = self.test_readings if test else self.readings
        if not folder.is_dir():
            return []
        files = sorted(p for p in folder.rglob(spec.pattern) if p.is_file())
        return [p for p in files if p.name != "rul.csv" and not p.name.startswith(".")]


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _read_csv(path: Path, problems: list[PackProblem]) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        problems.append(PackProblem(path.name, None, None, f"cannot read the file ({error})"))
        return [], []
    reader = csv.DictReader(io.StringIO(text))
    rows: list[dict[str, str]] = []
    for number, row in enumerate(reader, 2):
        if None in row or None in row.values():
            problems.append(
                PackProblem(path.name, number, None, "not as many fields as the header names")
            )
            rows.append({})
            continue
        rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    return [h.strip() for h in reader.fieldnames or []], rows


def _spec(raw: Any, where: str) -> ReadingsSpec:
    if raw is None:
        return ReadingsSpec()
    if not isinstance(raw, dict):
        raise PackError(f"pack.yaml: {where} must be a mapping")
    unknown = set(raw) - {
        "pattern",
        "delimiter",
        "header",
        "columns",
        "equipment_id_prefix",
        "run_to_failure",
        "rul",
    }
    if unknown:
        raise PackError(f"pack.yaml: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    column_map = None
    if "columns" in raw:
        columns = raw["columns"]
        if not isinstance(columns, list) or "equipment_id" not in columns:
            raise PackError(
                f"pack.yaml: {where}.columns lists the file's columns in order and names "
                "equipment_id among them"
            )
        delimiter = raw.get("delimiter", ",")
        column_map = ColumnMap(
            columns=tuple(str(c) for c in columns),
            delimiter=None if delimiter in ("whitespace", " ", None) else str(delimiter),
            header=bool(raw.get("header", False)),
            equipment_id_prefix=str(raw.get("equipment_id_prefix", "")),
        )
    elif "equipment_id_prefix" in raw:
        raise PackError(f"pack.yaml: {where}.equipment_id_prefix needs a column map (columns)")
    return ReadingsSpec(
        pattern=str(raw.get("pattern", "*")),
        column_map=column_map,
        run_to_failure=bool(raw.get("run_to_failure", False)),
    )


def read_pack(root: Path) -> Pack:
    """Read and check a pack (no database); problems are collected, not raised."""
    root = Path(root)
    if not root.is_dir():
        raise PackError(f"{root}: not a folder (a fleet pack is a folder; see `emps fleet --help`)")
    catalog_path = root / "catalog.yaml"
    if not catalog_path.is_file():
        raise PackError(f"{root}: no catalog.yaml (the fleet's channels, types and clocks)")
    catalog_text = catalog_path.read_text(encoding="utf-8")
    try:
        catalog = parse_catalog(catalog_text, catalog_path)
    except CatalogError as error:
        raise PackError(str(error)) from None
    options: dict[str, Any] = {}
    if (root / "pack.yaml").is_file():
        try:
            options = yaml.safe_load((root / "pack.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise PackError(f"pack.yaml: not valid YAML ({error})") from None
        unknown = set(options) - {"readings", "test", "equipment", "name", "description"}
        if unknown:
            raise PackError(f"pack.yaml: unknown key(s) {', '.join(sorted(unknown))}")
    readings = _spec(options.get("readings"), "readings")
    test_options = dict(options.get("test") or {})
    rul_options = test_options.pop("rul", None)
    test_spec = _spec(
        {**(options.get("readings") or {}), **test_options, "run_to_failure": False}, "test"
    )
    default_type = (options.get("equipment") or {}).get("equipment_type")
    if default_type is not None and default_type not in catalog.equipment_types:
        raise PackError(
            f"pack.yaml: equipment.equipment_type {default_type!r} is not a type of catalog.yaml "
            f"({', '.join(catalog.type_names)})"
        )
    pack = Pack(root, catalog, catalog_text, readings, test_spec, default_type=default_type)
    _read_equipment(pack)
    _read_failures(pack)
    _read_services(pack)
    _read_rul(pack, rul_options, test_spec)
    if not pack.reading_files():
        pack.problems.append(PackProblem("readings/", None, None, "no readings files"))
    return pack


def _read_equipment(pack: Pack) -> None:
    path = pack.root / "equipment.csv"
    if not path.is_file():
        if pack.default_type is None:
            pack.problems.append(
                PackProblem(
                    "equipment.csv",
                    None,
                    None,
                    "missing: list the equipment, or name equipment.equipment_type in pack.yaml",
                )
            )
        return
    header, rows = _read_csv(path, pack.problems)
    for column in ("equipment_id", "equipment_type"):
        if header and column not in header:
            pack.problems.append(PackProblem(path.name, 1, column, "missing column"))
            return
    seen: set[str] = set()
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        equipment_id = row.get("equipment_id", "")
        if not EQUIPMENT_ID.match(equipment_id):
            pack.problems.append(
                PackProblem(
                    path.name, number, "equipment_id", f"{equipment_id!r} is not a valid id"
                )
            )
            continue
        if equipment_id in seen:
            pack.problems.append(
                PackProblem(path.name, number, "equipment_id", f"{equipment_id} listed twice")
            )
            continue
        kind = row.get("equipment_type", "")
        if kind not in pack.catalog.equipment_types:
            pack.problems.append(
                PackProblem(
                    path.name,
                    number,
                    "equipment_type",
                    f"{kind!r} is not a type of catalog.yaml ({', '.join(pack.catalog.type_names)})",
                )
            )
            continue
        commissioned = None
        if row.get("commissioned_at"):
            try:
                commissioned = _time(row["commissioned_at"])
            except ValueError:
                pack.problems.append(
                    PackProblem(path.name, number, "commissioned_at", "not an ISO-8601 date")
                )
                continue
        seen.add(equipment_id)
        pack.equipment.append(
            {
                "equipment_id": equipment_id,
                "equipment_type": kind,
                "site": row.get("site") or None,
                "unit": row.get("unit") or None,
                "commissioned_at": commissioned,
            }
        )


def type_of(pack: Pack, equipment_id: str) -> str | None:
    for row in pack.equipment:
        if row["equipment_id"] == equipment_id:
            return row["equipment_type"]
    return pack.default_type


def counter_time(pack: Pack, equipment_id: str, cycle: float) -> datetime | None:
    """The time a counter reading of this equipment's type stands for: start + cycle x interval."""
    kind = type_of(pack, equipment_id)
    if kind is None:
        return None
    clock = pack.catalog.equipment_types[kind].clock
    if clock.kind != "counter" or clock.start is None:
        return None
    return clock.start + timedelta(seconds=cycle * clock.interval_s)


def _when(
    pack: Pack, file: str, number: int, row: dict[str, str], at: str
) -> tuple[datetime | None, float | None]:
    """(time, cycle) of a failure or service given by time or by counter."""
    if row.get(at):
        try:
            return _time(row[at]), None
        except ValueError:
            pack.problems.append(PackProblem(file, number, at, "not an ISO-8601 date-time"))
            return None, None
    if row.get("cycle"):
        try:
            cycle = float(row["cycle"])
        except ValueError:
            pack.problems.append(PackProblem(file, number, "cycle", "not a number"))
            return None, None
        when = counter_time(pack, row.get("equipment_id", ""), cycle)
        if when is None:
            pack.problems.append(
                PackProblem(file, number, "cycle", "the equipment's type has no counter clock")
            )
        return when, cycle
    pack.problems.append(PackProblem(file, number, at, f"give {at} or cycle"))
    return None, None


def _read_failures(pack: Pack) -> None:
    path = pack.root / "failures.csv"
    if not path.is_file():
        return
    header, rows = _read_csv(path, pack.problems)
    if header and "equipment_id" not in header:
        pack.problems.append(PackProblem(path.name, 1, "equipment_id", "missing column"))
        return
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        failed_at, cycle = _when(pack, path.name, number, row, "failed_at")
        if failed_at is None:
            continue
        repaired_at = None
        if row.get("repaired_at"):
            try:
                repaired_at = _time(row["repaired_at"])
            except ValueError:
                pack.problems.append(PackProblem(path.name, number, "repaired_at", "not a date"))
                continue
            if repaired_at < failed_at:
                pack.problems.append(
                    PackProblem(path.name, number, "repaired_at", "before the failure")
                )
                continue
        pack.failures.append(
            Failure(
                row["equipment_id"],
                failed_at,
                row.get("failure_mode") or None,
                repaired_at,
                row.get("notes") or None,
                cycle,
                number,
            )
        )


def _read_services(pack: Pack) -> None:
    path = pack.root / "maintenance.csv"
    if not path.is_file():
        return
    header, rows = _read_csv(path, pack.problems)
    for column in ("equipment_id", "kind"):
        if header and column not in header:
            pack.problems.append(PackProblem(path.name, 1, column, "missing column"))
            return
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        performed_at, _ = _when(pack, path.name, number, row, "performed_at")
        if performed_at is None:
            continue
        outcome = row.get("outcome") or "no_fault_found"
        if outcome not in OUTCOMES:
            pack.problems.append(
                PackProblem(
                    path.name, number, "outcome", f"{outcome!r} is not one of {', '.join(OUTCOMES)}"
                )
            )
            continue
        kind = row.get("kind") or "preventive"
        if kind not in TASK_TYPES:
            pack.problems.append(
                PackProblem(
                    path.name, number, "kind", f"{kind!r} is not one of {', '.join(TASK_TYPES)}"
                )
            )
            continue
        pack.services.append(
            Service(
                row["equipment_id"], performed_at, kind, outcome, row.get("notes") or None, number
            )
        )


def _read_rul(pack: Pack, rul_options: Any, test_spec: ReadingsSpec) -> None:
    path = pack.root / "test" / "rul.csv"
    if not path.is_file():
        return
    if rul_options:
        prefix = test_spec.column_map.equipment_id_prefix if test_spec.column_map else ""
        columns = list(rul_options.get("columns") or ["remaining_life"])
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if rul_options.get("header") and number == 1 or not line.strip():
                continue
            values = dict(zip(columns, line.split(), strict=False))
            equipment_id = values.get("equipment_id") or f"{prefix}{number}"
            try:
                pack.remaining_life[equipment_id] = float(values["remaining_life"])
            except (KeyError, ValueError):
                pack.problems.append(
                    PackProblem("test/rul.csv", number, "remaining_life", "not a number")
                )
        return
    header, rows = _read_csv(path, pack.problems)
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        try:
            pack.remaining_life[row["equipment_id"]] = float(row["remaining_life"])
        except (KeyError, ValueError):
            pack.problems.append(
                PackProblem("test/rul.csv", number, "remaining_life", "not a number")
            )
