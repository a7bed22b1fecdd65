"""Which fleet `emps up` runs on: a fleet pack (given now with `--fleet` or EMPS_FLEET_PACK, or
imported into this install before) or the built-in simulated fleet.

A real fleet runs without the simulator: no simulated history is backfilled and no simulated
device drops files, so the model learns only from the fleet's own failures. The simulated fleet
runs only in an install that holds no imported fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from emps.db import Role, connect, ensure_database, one
from emps.fleet.importer import (
    FleetConflict,
    check_catalog_setting,
    installed_catalog,
    refuse_simulated_history,
    write_catalog,
)
from emps.fleet.pack import PackError, read_pack
from emps.settings import Settings


class FleetRefused(RuntimeError):
    """`emps up` cannot start on this fleet; the message says why and what to do."""


@dataclass(frozen=True)
class FleetImportRecord:
    """One import of a fleet pack into this install (raw.fleet_imports)."""

    pack: str
    digest: str
    equipment: int
    readings_loaded: int
    problems: int
    imported_at: datetime


@dataclass(frozen=True)
class FleetPlan:
    """What `emps up` starts: the settings to run with (a pack's catalog installed), the pack
    the bootstrap imports (when new or changed), the last import, and the simulator's part."""

    settings: Settings
    pack: Path | None
    recorded: FleetImportRecord | None
    with_simulator: bool
    with_history: bool
    description: str

    @property
    def real(self) -> bool:
        """A real fleet (a pack), not the simulated one."""
        return self.pack is not None or self.recorded is not None

    @property
    def source(self) -> str | None:
        """The pack folder the fleet comes from."""
        if self.pack is not None:
            return str(self.pack)
        return self.recorded.pack if self.recorded is not None else None


def last_import(settings: Settings, digest: str | None = None) -> FleetImportRecord | None:
    """The latest import of a fleet pack into this install (of a pack with `digest`), if any."""
    with connect(Role.OWNER, settings) as conn:
        if one(conn.execute("select to_regclass('raw.fleet_imports')"))[0] is None:
            return None  # an install older than fleet imports: none was recorded
        row = conn.execute(
            "select pack, digest, equipment, readings_loaded, problems, imported_at "
            "from raw.fleet_imports where %(d)s::text is null or digest = %(d)s "
            "order by imported_at desc, id desc limit 1",
            {"d": digest},
        ).fetchone()
    return FleetImportRecord(*row) if row else None


def imports_without_features(settings: Settings) -> list[int]:
    """Imports whose readings no feature build has seen yet (ids)."""
    with connect(Role.OWNER, settings) as conn:
        if one(conn.execute("select to_regclass('raw.fleet_imports')"))[0] is None:
            return []
        rows = conn.execute(
            "select id from raw.fleet_imports "
            "where readings_loaded > 0 and features_built_at is null order by id"
        ).fetchall()
    return [r[0] for r in rows]


def mark_features_built(settings: Settings, import_ids: list[int]) -> None:
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "update raw.fleet_imports set features_built_at = now() where id = any(%s)",
            (import_ids,),
        )


def plan_fleet(
    settings: Settings, pack: Path | None, simulator: bool | None, history: bool
) -> FleetPlan:
    """Decide what `emps up` runs on, with the database up and before its migrations: a pack
    given now has its catalog installed first, so the migrations make its columns. Raises
    FleetRefused (naming the file, row or field at fault) when it cannot start."""
    ensure_database(settings)  # a first start: the database its migrations will fill
    if pack is not None:
        pack = Path(pack).expanduser().resolve()
        if simulator:
            raise FleetRefused(
                f"--simulator with the fleet pack {pack}: simulated machines would mix with the "
                "fleet's own. Run the simulator in an install of its own (EMPS_HOME=<a folder>)"
            )
        try:
            contents = read_pack(pack)
        except PackError as error:
            raise FleetRefused(f"the fleet pack {pack} cannot be used: {error}") from None
        target = installed_catalog(settings)
        try:
            check_catalog_setting(contents, settings, target)
            refuse_simulated_history(settings, pack)
        except FleetConflict as error:
            raise FleetRefused(str(error)) from None
        write_catalog(contents, target)
        settings = settings.model_copy(update={"catalog_path": target})
        listed = (
            f"{len(contents.equipment)} equipment listed"
            if contents.equipment
            else f"equipment of type {contents.default_type} named by its readings"
        )
        description = (
            f"fleet pack {pack}: {len(contents.catalog.equipment_types)} equipment type(s), "
            f"{listed}, {len(contents.reading_files())} readings file(s); imported by the "
            "bootstrap unless this install holds it unchanged; no simulator"
        )
        return FleetPlan(settings, pack, last_import(settings), False, False, description)

    recorded = last_import(settings)
    if recorded is not None:
        if simulator:
            raise FleetRefused(
                f"this install runs the fleet imported from {recorded.pack}: --simulator would "
                "drop simulated machines' readings among its own. Run the simulator in an "
                "install of its own (EMPS_HOME=<a folder>)"
            )
        description = (
            f"the fleet imported from {recorded.pack} on {recorded.imported_at:%Y-%m-%d %H:%M} "
            "(no simulator; `emps up --fleet PACK` imports a pack again when it changed)"
        )
        return FleetPlan(settings, None, recorded, False, False, description)

    with_simulator = True if simulator is None else simulator
    description = f"the simulated fleet ({settings.simulator.equipment} equipment)" + (
        "" if with_simulator else ", simulator off: real devices only"
    )
    return FleetPlan(settings, None, None, with_simulator, history, description)


def fleet_banner(plan: FleetPlan) -> str:
    """The line `emps up` prints once up: which fleet runs, and how many equipment it has."""
    with connect(Role.OWNER, plan.settings) as conn:
        total, held_out = one(
            conn.execute("select count(*), count(*) filter (where holdout) from raw.equipment")
        )
    if plan.real:
        held = f", {held_out} of them held-out test units" if held_out else ""
        return f"Fleet: {plan.source} ({total} equipment{held}); no simulator."
    if plan.with_simulator:
        return (
            f"Fleet: simulated, {total} equipment; the simulator drops "
            f"{plan.settings.simulator.equipment} devices' readings every "
            f"{plan.settings.simulator.live_interval_s} s."
        )
    return f"Fleet: {total} equipment registered; no simulator (real devices only)."
