"""`emps fleet import PACK`: bring a fleet pack's history into the platform.

Steps, each idempotent (importing the same pack again adds nothing):
1. the pack's catalog becomes the platform's (<home>/catalog.yaml) and is migrated in place;
2. equipment upserted (and units named only in the readings, when pack.yaml gives a type);
3. readings through the platform's own ingest (validation, quarantine, the ledger's checksum
   makes a file already loaded a duplicate); delimited files are first written as drop files
   by the pack's column map;
4. failures (or each unit's last reading, for a run-to-failure pack), services with their
   outcomes, and the held-out units' true remaining life.
Nothing valid is lost to a bad row: each refusal is listed with its file, row and field.
Each import is recorded (raw.fleet_imports) with a digest of the pack's files: `emps up --fleet`
skips a pack imported before and unchanged since.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect, ensure_database, one
from emps.fleet.pack import (
    DROP_SUFFIXES,
    SKIP,
    Pack,
    PackProblem,
    ReadingsSpec,
    read_pack,
)
from emps.migrate import migrate
from emps.settings import Settings, get_settings

ROWS_PER_DROP = 100_000
OnProgress = Callable[[str, int, int | None], None]  # (step, done, total)


class FleetConflict(ValueError):
    """The install cannot take this pack as it stands (it holds the simulated fleet's history,
    or EMPS_CATALOG_PATH names another catalog)."""


def _quiet(step: str, done: int, total: int | None) -> None:
    """No progress to show."""


@dataclass
class Step:
    name: str
    loaded: int = 0
    known: int = 0
    refused: int = 0
    seconds: float = 0.0
    note: str = ""


@dataclass
class ImportReport:
    pack: str
    dry_run: bool
    settings: Settings
    steps: list[Step] = field(default_factory=list)
    problems: list[PackProblem] = field(default_factory=list)
    readings: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)

    def step(self, name: str) -> Step:
        self.steps.append(Step(name))
        return self.steps[-1]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def equipment(self) -> int:
        """Equipment of the pack in the registry (added or already there)."""
        return sum(s.loaded + s.known for s in self.steps if s.name == "equipment")


def installed_catalog(settings: Settings) -> Path:
    """Where an imported pack's catalog goes: the platform's catalog from then on."""
    return settings.home / "catalog.yaml"


def pack_digest(root: Path) -> str:
    """A digest of every file of the pack (names and contents; dot files aside): equal digests,
    the same pack."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def check_catalog_setting(pack: Pack, settings: Settings, target: Path) -> None:
    """Refuse a pack whose catalog the platform would not read: EMPS_CATALOG_PATH set to another
    catalog (the platform's processes read that one, not the pack's)."""
    chosen = Path(settings.catalog_path)
    if "catalog_path" not in settings.model_fields_set or chosen.resolve() == target.resolve():
        return
    if chosen.is_file() and chosen.read_text(encoding="utf-8") == pack.catalog_text:
        return
    raise FleetConflict(
        f"EMPS_CATALOG_PATH is {chosen}, but the fleet pack {pack.root} brings its own catalog "
        f"(installed as {target}): unset EMPS_CATALOG_PATH, or point it at the pack's catalog.yaml"
    )


def simulated_equipment(settings: Settings) -> int:
    """Equipment of the simulated fleet in this install's registry (0 before any migration)."""
    ensure_database(settings)
    with connect(Role.OWNER, settings) as conn:
        if one(conn.execute("select to_regclass('raw.equipment')"))[0] is None:
            return 0
        row = one(conn.execute("select count(*) from raw.equipment where source = 'simulator'"))
    return int(row[0])


def refuse_simulated_history(settings: Settings, pack: Path) -> None:
    """A real fleet's failures must not mix with simulated ones: refuse an install holding the
    simulated fleet."""
    simulated = simulated_equipment(settings)
    if simulated:
        raise FleetConflict(
            f"this install ({settings.home}) holds the simulated fleet's history ({simulated} "
            f"equipment): the failures of {pack} would mix with simulated ones. Give the fleet an "
            "install of its own: EMPS_HOME=<an empty folder> (with EMPS_DATABASE_URL, an empty "
            "database too)"
        )


def import_pack(
    root: Path,
    settings: Settings | None = None,
    dry_run: bool = False,
    on_progress: OnProgress = _quiet,
    catalog_target: Path | None = None,
) -> ImportReport:
    """Import (or with `dry_run`, only read and check) the pack at `root`."""
    settings = settings or get_settings()
    pack = read_pack(Path(root))
    target = catalog_target or installed_catalog(settings)
    report = ImportReport(str(root), dry_run, settings.model_copy(update={"catalog_path": target}))
    report.problems += pack.problems
    readings = list(_reading_sources(pack))
    if dry_run:
        _dry_run(pack, readings, report)
        return report
    check_catalog_setting(pack, settings, target)
    refuse_simulated_history(settings, Path(root))
    digest = pack_digest(Path(root))
    settings = report.settings

    step, began = report.step("catalog"), time.monotonic()
    report.columns_added = install_catalog(pack, target, settings)
    step.loaded = len(pack.catalog.channels)
    step.note = (
        f"columns added: {', '.join(report.columns_added)}" if report.columns_added else "in place"
    )
    step.seconds = time.monotonic() - began

    with connect(Role.OWNER, settings, autocommit=True) as conn:
        step, began = report.step("equipment"), time.monotonic()
        discovered = _discover_units(pack, readings) if pack.default_type else set()
        step.loaded, step.known = upsert_equipment(conn, pack, discovered)
        step.seconds = time.monotonic() - began

    step, began = report.step("readings"), time.monotonic()
    outcome = load_readings(pack, readings, settings, on_progress, report)
    step.loaded, step.refused = outcome.get("rows_loaded", 0), outcome.get("rows_quarantined", 0)
    step.known = outcome.get("rows_duplicate", 0)
    step.seconds = time.monotonic() - began
    report.readings = outcome

    with connect(Role.OWNER, settings, autocommit=True) as conn:
        step, began = report.step("failures"), time.monotonic()
        step.loaded, step.known, step.refused = insert_failures(conn, pack, report.problems)
        step.seconds = time.monotonic() - began
        step, began = report.step("maintenance"), time.monotonic()
        step.loaded, step.known, step.refused = insert_services(conn, pack, report.problems)
        step.seconds = time.monotonic() - began
        step, began = report.step("held-out units"), time.monotonic()
        step.loaded = record_heldout(conn, pack)
        step.seconds = time.monotonic() - began
        record_import(conn, Path(root), digest, report)
    return report


def record_import(conn: psycopg.Connection, root: Path, digest: str, report: ImportReport) -> None:
    """The import in raw.fleet_imports: what loaded, how many refusals."""
    summary = {
        "steps": [
            {"name": s.name, "loaded": s.loaded, "known": s.known, "refused": s.refused}
            for s in report.steps
        ],
        "problems": [str(p) for p in report.problems[:200]],
    }
    conn.execute(
        "insert into raw.fleet_imports "
        "(pack, digest, equipment, readings_loaded, problems, summary) "
        "values (%s, %s, %s, %s, %s, %s)",
        (
            str(root.resolve()),
            digest,
            report.equipment,
            report.readings.get("rows_loaded", 0),
            len(report.problems),
            json.dumps(summary),
        ),
    )


# -- catalog --------------------------------------------------------------------------------


def install_catalog(pack: Pack, target: Path, settings: Settings) -> list[str]:
    """Make the pack's catalog the platform's and migrate the database to it; the columns added."""
    write_catalog(pack, target)
    return migrate(settings, load_catalog(target)).sensor_columns_added


def write_catalog(pack: Pack, target: Path) -> bool:
    """Write the pack's catalog to `target` unless it is there already; whether it wrote."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_text(encoding="utf-8") == pack.catalog_text:
        return False
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(pack.catalog_text, encoding="utf-8")
    partial.replace(target)
    return True


# -- equipment ------------------------------------------------------------------------------


def upsert_equipment(conn: psycopg.Connection, pack: Pack, discovered: set[str]) -> tuple[int, int]:
    """(added, already known) equipment: the pack's list, its test units (held out) and the units
    only the readings name (of pack.yaml's type)."""
    heldout = set(pack.remaining_life) | _test_units(pack)
    rows = {
        r["equipment_id"]: (
            r["equipment_id"],
            r["equipment_type"],
            r["site"],
            r["unit"],
            r["commissioned_at"],
            r["equipment_id"] in heldout,
        )
        for r in pack.equipment
    }
    for equipment_id in sorted(discovered - set(rows)):
        rows[equipment_id] = (
            equipment_id,
            pack.default_type,
            None,
            None,
            None,
            equipment_id in heldout,
        )
    known = {
        r[0]
        for r in conn.execute(
            "select equipment_id from raw.equipment where equipment_id = any(%s)", (list(rows),)
        )
    }
    with conn.cursor() as cur:
        cur.executemany(
            "insert into raw.equipment "
            "(equipment_id, equipment_type, site, unit, commissioned_at, holdout, source) "
            "values (%s, %s, %s, %s, %s, %s, 'import') "
            "on conflict (equipment_id) do update set equipment_type = excluded.equipment_type, "
            "site = coalesce(excluded.site, raw.equipment.site), "
            "unit = coalesce(excluded.unit, raw.equipment.unit), "
            "commissioned_at = coalesce(excluded.commissioned_at, raw.equipment.commissioned_at), "
            "holdout = excluded.holdout",
            list(rows.values()),
        )
    return len(rows) - len(known), len(known)


def _test_units(pack: Pack) -> set[str]:
    """Equipment ids named by the test readings (column-mapped files only: drop files are read
    by ingest)."""
    spec = pack.test_readings
    units: set[str] = set()
    if spec.column_map is None:
        return units
    for path in pack.reading_files(test=True):
        for _, row in spec.column_map.rows(_read_text(path)):
            if row.get("equipment_id"):
                units.add(spec.column_map.equipment_id_prefix + row["equipment_id"])
    return units


def _discover_units(pack: Pack, sources: list[tuple[Path, bool]]) -> set[str]:
    units: set[str] = set()
    for path, test in sources:
        spec = pack.test_readings if test else pack.readings
        if spec.column_map is None:
            continue
        for _, row in spec.column_map.rows(_read_text(path)):
            if row.get("equipment_id"):
                units.add(spec.column_map.equipment_id_prefix + row["equipment_id"])
    return units


# -- readings -------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def _reading_sources(pack: Pack) -> Iterator[tuple[Path, bool]]:
    for test in (False, True):
        for path in pack.reading_files(test=test):
            yield path, test


def _is_drop(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(DROP_SUFFIXES)


def convert_to_drops(
    path: Path, spec: ReadingsSpec, catalog: Catalog, out: Path, problems: list[PackProblem]
) -> list[Path]:
    """A delimited file read by the pack's column map, written as CSV drop files (a header,
    equipment_id and the mapped channels, cycle and timestamp), at most ROWS_PER_DROP rows each.
    A line with the wrong number of fields is refused with its line number."""
    assert spec.column_map is not None
    mapping = spec.column_map
    keep = [c for c in mapping.columns if c != SKIP]
    known = {"equipment_id", "timestamp", "cycle", *catalog.channel_names}
    unknown = [c for c in keep if c not in known]
    if unknown:
        problems.append(
            PackProblem(
                "pack.yaml",
                None,
                "readings.columns",
                f"{', '.join(unknown)}: not channels of catalog.yaml (use '{SKIP}' to skip one)",
            )
        )
        return []
    written: list[Path] = []
    chunk: list[list[str]] = []

    def flush() -> None:
        if not chunk:
            return
        target = out / f"{path.name}.{len(written):04d}.csv.gz"
        with gzip.open(target, "wt", encoding="utf-8", newline="", compresslevel=1) as handle:
            writer = csv.writer(handle)
            writer.writerow(keep)
            writer.writerows(chunk)
        written.append(target)
        chunk.clear()

    expected = len(mapping.columns)
    for number, row in mapping.rows(_read_text(path)):
        if int(row.pop("__fields__")) != expected:
            problems.append(
                PackProblem(
                    f"{path.parent.name}/{path.name}",
                    number,
                    None,
                    f"{expected} fields expected by pack.yaml's column map",
                )
            )
            continue
        values = [row[c] for c in keep]
        values[keep.index("equipment_id")] = mapping.equipment_id_prefix + row["equipment_id"]
        chunk.append(values)
        if len(chunk) >= ROWS_PER_DROP:
            flush()
    flush()
    return written


def load_readings(
    pack: Pack,
    sources: list[tuple[Path, bool]],
    settings: Settings,
    on_progress: OnProgress,
    report: ImportReport,
) -> dict[str, int]:
    """Every readings file through the platform's ingest; totals of its outcomes."""
    # Great Expectations comes with ingest (~10 s to import): loaded when readings are.
    from emps.ingest.pipeline import ingest_landing, stage_into_incoming

    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="emps-pack-") as folder:
        staging = Path(folder)
        drops: list[Path] = []
        for index, (path, test) in enumerate(sources, 1):
            on_progress("reading files", index, len(sources))
            spec = pack.test_readings if test else pack.readings
            if spec.column_map is not None:
                drops += convert_to_drops(path, spec, pack.catalog, staging, report.problems)
            elif _is_drop(path):
                drops.append(path)
            else:
                report.problems.append(
                    PackProblem(
                        f"{path.parent.name}/{path.name}",
                        None,
                        None,
                        "not a drop file (CSV, JSON, NDJSON) and pack.yaml gives no column map",
                    )
                )
        done = 0
        for batch in _batches(drops, 200):
            names = stage_into_incoming(batch, settings)
            result = ingest_landing(settings, names=names)
            for outcome in result.files:
                totals[f"files_{outcome.status}"] += 1
                for key in ("rows_loaded", "rows_duplicate", "rows_quarantined"):
                    totals[key] += int(getattr(outcome, key, 0) or 0)
                if outcome.status == "duplicate":  # imported before, unchanged: no problem
                    continue
                if outcome.status == "quarantined" or getattr(outcome, "error", None):
                    message = (outcome.error or outcome.status).removeprefix(f"{outcome.file}: ")
                    report.problems.append(PackProblem(outcome.file, None, None, message))
            done += len(batch)
            on_progress("loading readings", done, len(drops))
        shutil.rmtree(staging, ignore_errors=True)
    return dict(totals)


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- failures, services, held-out units ---------------------------------------------------


def _registered(conn: psycopg.Connection, equipment_ids: set[str]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "select equipment_id from raw.equipment where equipment_id = any(%s)",
            (sorted(equipment_ids),),
        )
    }


def _unregistered(equipment_id: str, file: str, row: int | None) -> PackProblem:
    return PackProblem(
        file,
        row,
        "equipment_id",
        f"{equipment_id!r} is not in equipment.csv (nor named by the readings)",
    )


def insert_failures(
    conn: psycopg.Connection, pack: Pack, problems: list[PackProblem]
) -> tuple[int, int, int]:
    """(added, already known, refused) failures: failures.csv, or each unit's last reading for a
    run-to-failure pack (its test units aside: they were cut before failing). A failure of
    equipment the registry does not hold is refused with its row."""
    registered = _registered(conn, {f.equipment_id for f in pack.failures})
    rows, refused = [], 0
    for f in pack.failures:
        if f.equipment_id not in registered:
            problems.append(_unregistered(f.equipment_id, "failures.csv", f.row))
            refused += 1
            continue
        rows.append((f.equipment_id, f.failed_at, f.failure_mode, f.repaired_at, f.notes))
    if pack.readings.run_to_failure:
        rows += conn.execute(
            "select r.equipment_id, max(r.ts), 'run to failure', null::timestamptz, "
            "'the last reading of a run-to-failure history' "
            "from raw.sensor_readings r join raw.equipment e using (equipment_id) "
            "where not e.holdout and e.equipment_id = any(%s) group by r.equipment_id",
            (list(_pack_units(pack)),),
        ).fetchall()
    added = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "insert into raw.failure_events "
                "(equipment_id, failed_at, failure_mode, repaired_at, notes, source) "
                "values (%s, %s, %s, %s, %s, 'import') "
                "on conflict (equipment_id, failed_at) do nothing",
                row,
            )
            added += cur.rowcount
    return added, len(rows) - added, refused


def _pack_units(pack: Pack) -> set[str]:
    units = {r["equipment_id"] for r in pack.equipment}
    if pack.default_type:
        units |= _discover_units(pack, [(p, False) for p in pack.reading_files()])
    return units


def insert_services(
    conn: psycopg.Connection, pack: Pack, problems: list[PackProblem]
) -> tuple[int, int, int]:
    """(added, already known, refused) completed services, backdated to when they were
    performed. A service of equipment the registry does not hold is refused with its row."""
    registered = _registered(conn, {s.equipment_id for s in pack.services})
    services = []
    for service in pack.services:
        if service.equipment_id in registered:
            services.append(service)
        else:
            problems.append(_unregistered(service.equipment_id, "maintenance.csv", service.row))
    added = 0
    with conn.cursor() as cur:
        for service in services:
            cur.execute(
                "insert into ops.maintenance_tasks (equipment_id, task_type, priority, status, "
                "scheduled_date, completed_date, outcome, notes, created_by) "
                "values (%s, %s, 3, 'completed', %s, %s, %s, %s, 'fleet import') "
                "on conflict (equipment_id, task_type, completed_date) "
                "where created_by = 'fleet import' do nothing",
                (
                    service.equipment_id,
                    service.kind,
                    service.performed_at,
                    service.performed_at,
                    service.outcome,
                    service.notes,
                ),
            )
            added += cur.rowcount
    return added, len(services) - added, len(pack.services) - len(services)


def record_heldout(conn: psycopg.Connection, pack: Pack) -> int:
    """The held-out units' true remaining life (evaluation reads it; training never does)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into raw.heldout_remaining_life (equipment_id, remaining_life) "
            "select %s, %s where exists (select 1 from raw.equipment where equipment_id = %s) "
            "on conflict (equipment_id) do update set remaining_life = excluded.remaining_life",
            [(k, v, k) for k, v in pack.remaining_life.items()],
        )
    return len(pack.remaining_life)


# -- dry run --------------------------------------------------------------------------------


def _dry_run(pack: Pack, sources: list[tuple[Path, bool]], report: ImportReport) -> None:
    report.step("catalog").loaded = len(pack.catalog.channels)
    report.step("equipment").loaded = len(pack.equipment)
    step = report.step("readings")
    for path, test in sources:
        spec = pack.test_readings if test else pack.readings
        if spec.column_map is not None:
            with tempfile.TemporaryDirectory() as folder:
                drops = convert_to_drops(path, spec, pack.catalog, Path(folder), report.problems)
                step.loaded += sum(_count_rows(d) for d in drops)
        elif _is_drop(path):
            step.loaded += 1
            step.note = "drop files are validated row by row when imported"
        else:
            report.problems.append(
                PackProblem(path.name, None, None, "not a drop file and no column map")
            )
    report.step("failures").loaded = len(pack.failures)
    report.step("maintenance").loaded = len(pack.services)
    report.step("held-out units").loaded = len(pack.remaining_life)


def _count_rows(path: Path) -> int:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1
