"""Who is told about an alert: people by role and site from the recipients file, and quiet hours."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from emps.domain import Severity
from emps.settings import Settings, get_settings

CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class Recipient:
    name: str
    role: str
    sites: tuple[str, ...]
    email: str | None = None
    phone: str | None = None
    channels: tuple[str, ...] = ("email",)

    def covers(self, site: str) -> bool:
        return "*" in self.sites or site in self.sites

    def address(self, channel: str) -> str | None:
        return self.email if channel == "email" else self.phone


@dataclass(frozen=True)
class RecipientsConfig:
    people: tuple[Recipient, ...]
    escalation: tuple[str, ...] = ("technician", "supervisor", "manager")
    daily_report: tuple[str, ...] = ("supervisor", "manager")
    source: Path | None = field(default=None, compare=False)
    operations: tuple[str, ...] = ("admin",)

    def role_for_level(self, level: int) -> str:
        """The role told at an escalation level; past the last level, the last role again."""
        return self.escalation[min(level, len(self.escalation) - 1)]

    def for_alert(self, site: str, level: int) -> list[Recipient]:
        role = self.role_for_level(level)
        return [p for p in self.people if p.role == role and p.covers(site)]

    def for_daily_report(self) -> list[Recipient]:
        return [p for p in self.people if p.role in self.daily_report and p.email]

    def for_operations(self) -> list[Recipient]:
        """Who hears about the platform's own trouble (emps.alerting.operations)."""
        return [p for p in self.people if p.role in self.operations and p.email]


def load_recipients(path: Path | None = None, settings: Settings | None = None) -> RecipientsConfig:
    """Read and check the recipients file; errors name the file and the entry at fault."""
    settings = settings or get_settings()
    path = Path(path or settings.notifications.recipients_path)
    if not path.exists():
        raise FileNotFoundError(
            f"recipients file {path} does not exist: copy config/recipients.yaml there "
            "or set EMPS_RECIPIENTS_PATH"
        )
    spec = yaml.safe_load(path.read_text()) or {}
    people = []
    for index, entry in enumerate(spec.get("people") or [], start=1):
        where = f"{path.name}: person {index} ({entry.get('name', 'unnamed')})"
        channels = tuple(entry.get("channels") or ["email"])
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"{where}: unknown channel(s) {sorted(unknown)}; use email or sms")
        if "email" in channels and not entry.get("email"):
            raise ValueError(f"{where}: channel email needs an 'email' address")
        if "sms" in channels and not entry.get("phone"):
            raise ValueError(f"{where}: channel sms needs a 'phone' number")
        if not entry.get("role"):
            raise ValueError(f"{where}: 'role' is missing")
        people.append(
            Recipient(
                name=str(entry.get("name", entry.get("email", "unnamed"))),
                role=str(entry["role"]),
                sites=tuple(str(s) for s in entry.get("sites") or ["*"]),
                email=entry.get("email"),
                phone=str(entry["phone"]) if entry.get("phone") else None,
                channels=channels,
            )
        )
    escalation = tuple(spec.get("escalation") or ("technician", "supervisor", "manager"))
    daily = tuple(spec.get("daily_report") or ("supervisor", "manager"))
    operations = tuple(spec.get("operations") or ("admin",))
    return RecipientsConfig(tuple(people), escalation, daily, path, operations)


def parse_quiet_hours(spec: str) -> tuple[time, time] | None:
    """'22:00-06:00' -> (22:00, 06:00); empty -> None."""
    if not spec.strip():
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in spec.split("-"))
    except ValueError as exc:
        raise ValueError(
            f"EMPS_QUIET_HOURS={spec!r} is not HH:MM-HH:MM (for example 22:00-06:00)"
        ) from exc
    return start, end


def deliver_after(
    severity: Severity | str, now: datetime, settings: Settings | None = None
) -> datetime:
    """When a notification may go out: now, or the end of quiet hours (never delays CRITICAL)."""
    settings = settings or get_settings()
    window = parse_quiet_hours(settings.notifications.quiet_hours)
    if window is None or Severity(severity) is Severity.CRITICAL:
        return now
    tz = ZoneInfo(settings.timezone)
    local = now.astimezone(tz)
    start, end = window
    t = local.time()
    in_quiet = (start <= t < end) if start <= end else (t >= start or t < end)
    if not in_quiet:
        return now
    end_today = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    release = end_today if end_today > local else end_today + timedelta(days=1)
    return release.astimezone(now.tzinfo)
