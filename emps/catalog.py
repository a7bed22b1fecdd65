"""The sensor catalog: which sensors exist, their units and ranges, and each equipment type's envelope."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

SENSOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
RESERVED_COLUMNS = {"equipment_id", "ts", "timestamp", "ingest_file_id", "ingested_at"}


class Sensor(BaseModel):
    name: str
    unit: str
    description: str = ""
    valid_range: tuple[float, float]
    required: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_a_column(cls, name: str) -> str:
        if not SENSOR_NAME.match(name) or name in RESERVED_COLUMNS:
            raise ValueError(
                f"sensor name {name!r} must be lower-case letters, digits and '_' "
                f"(it becomes a column) and not one of {sorted(RESERVED_COLUMNS)}"
            )
        return name

    @model_validator(mode="after")
    def _range_ordered(self) -> Sensor:
        low, high = self.valid_range
        if low >= high:
            raise ValueError(
                f"sensor {self.name!r}: valid_range low {low} must be below high {high}"
            )
        return self


class EquipmentType(BaseModel):
    name: str
    description: str = ""
    id_prefix: str = Field(pattern=r"^[A-Z]{2,5}$")
    normal: dict[str, tuple[float, float]]


class Catalog(BaseModel):
    version: int = 1
    sensors: dict[str, Sensor]
    equipment_types: dict[str, EquipmentType]
    source: Path | None = None
    checksum: str = ""

    @property
    def sensor_names(self) -> list[str]:
        return list(self.sensors)

    @property
    def type_names(self) -> list[str]:
        return list(self.equipment_types)

    def sensor(self, name: str) -> Sensor:
        return self.sensors[name]

    def envelope(self, equipment_type: str, sensor: str) -> tuple[float, float]:
        """The healthy operating band of a sensor on an equipment type."""
        return self.equipment_types[equipment_type].normal[sensor]

    @model_validator(mode="after")
    def _envelopes_cover_sensors(self) -> Catalog:
        for type_name, etype in self.equipment_types.items():
            missing = set(self.sensors) - set(etype.normal)
            unknown = set(etype.normal) - set(self.sensors)
            if missing or unknown:
                raise ValueError(
                    f"equipment type {type_name!r}: normal envelope must list every catalog sensor "
                    f"(missing {sorted(missing)}, unknown {sorted(unknown)})"
                )
            for sensor, (low, high) in etype.normal.items():
                vlow, vhigh = self.sensors[sensor].valid_range
                if not (vlow <= low < high <= vhigh):
                    raise ValueError(
                        f"equipment type {type_name!r}: normal band {sensor} [{low}, {high}] "
                        f"must lie inside the valid range [{vlow}, {vhigh}]"
                    )
        return self


def parse_catalog(text: str, source: Path | None = None) -> Catalog:
    raw = yaml.safe_load(text) or {}
    sensors = {
        name: Sensor(name=name, **(spec or {})) for name, spec in (raw.get("sensors") or {}).items()
    }
    types = {
        name: EquipmentType(name=name, **(spec or {}))
        for name, spec in (raw.get("equipment_types") or {}).items()
    }
    if not sensors:
        raise ValueError(f"{source or 'catalog'}: declares no sensors")
    if not types:
        raise ValueError(f"{source or 'catalog'}: declares no equipment types")
    return Catalog(
        version=raw.get("version", 1),
        sensors=sensors,
        equipment_types=types,
        source=source,
        checksum=hashlib.sha256(text.encode()).hexdigest()[:12],
    )


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> Catalog:
    return parse_catalog(path.read_text(encoding="utf-8"), source=path)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog at `path` (default: the configured one); cached until the file changes."""
    if path is None:
        from emps.settings import get_settings

        path = get_settings().catalog_path
    path = Path(path).resolve()
    return _load(path, path.stat().st_mtime_ns)
