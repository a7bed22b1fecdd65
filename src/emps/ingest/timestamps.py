"""Reading the `timestamp` column: ISO-8601 with an offset, or a Unix epoch, to UTC microseconds.

What devices send and what becomes of it:
- ISO-8601 / RFC 3339 date and time with an offset (`Z`, `+02:00`, `+0200`, `+02`), `T` or a
  space between date and time, upper or lower case: read as that instant. More than six
  fractional digits (Go's RFC 3339 nano, .NET's seven) are floored to the microsecond, the
  precision PostgreSQL stores.
- Without an offset: refused, unless EMPS_INGEST_NAIVE_TIMESTAMPS_UTC says they are UTC.
- A date alone (`2026-12-04`, also with an offset-looking tail `2026-12-04-04`): refused, a
  date is not a reading time.
- A Unix epoch, integer or fractional: seconds, milliseconds, microseconds or nanoseconds told
  apart by magnitude (a plausible reading time has 10, 13, 16 or 19 digits, and the ranges a
  retention period allows never overlap), each value on its own; floored to the microsecond.
Every refusal is a reason naming the value; nothing here raises for any input.
"""

from __future__ import annotations

import re

import pandas as pd

from emps.ingest.columns import STRICT_TIMESTAMP as STRICT

EPOCH = re.compile(r"^([+-]?)0*(\d+)(?:\.(\d*))?$")
ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
DATE_ONLY = re.compile(r"^\d{4}-?\d{2}-?\d{2}(?:Z|[+-]\d{2}(?::?\d{2})?)?$")
# Digits of the integer part -> (unit name, microseconds per unit as a power of ten).
EPOCH_UNITS = [(11, "seconds", 6), (14, "milliseconds", 3), (17, "microseconds", 0)]
NANOSECOND_DIGITS = 19
UTC_DTYPE = "datetime64[us, UTC]"


def parse_timestamps(text: pd.Series, naive_as_utc: bool) -> tuple[pd.Series, pd.Series]:
    """(UTC timestamps at microsecond precision, the reason per unreadable value or None).

    `text` holds stripped strings or NA; the result has its index.
    """
    ts = pd.Series(pd.NaT, index=text.index, dtype=UTC_DTYPE)
    problem = pd.Series(None, index=text.index, dtype=object)
    missing = text.isna()
    problem[missing] = "timestamp is missing"
    present = text[~missing].astype(str)
    if present.empty:
        return ts, problem
    epoch = present.str.fullmatch(EPOCH.pattern)
    epochs = present[epoch]
    if len(epochs):
        values, reasons = _epochs(epochs)
        ts[values.index] = values
        problem[reasons.index] = reasons
    textual = present[~epoch]
    if len(textual):
        values, reasons = _iso(textual, naive_as_utc)
        ts[values.index] = values
        problem[reasons.index] = reasons
    return ts, problem


def _quoted(values: pd.Series) -> pd.Series:
    shown = values.str.slice(0, 60).str.replace(r"[\x00-\x1f\x7f]", "?", regex=True)
    return "timestamp '" + shown + "'"


def _from_microseconds(us: pd.Series) -> pd.Series:
    array = us.to_numpy(dtype="int64").astype("datetime64[us]")
    return pd.Series(array, index=us.index).dt.tz_localize("UTC")


def _epochs(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    parts = values.str.extract(EPOCH.pattern)
    sign = parts[0].eq("-").map({True: -1, False: 1}).astype("int64")
    digits = parts[1]
    fraction = parts[2].fillna("")
    count = digits.str.len()
    us = pd.Series(0, index=values.index, dtype="int64")
    unit = pd.Series("", index=values.index, dtype=object)
    low = 0
    for high, name, shift in EPOCH_UNITS:
        these = count.gt(low) & count.le(high)
        if these.any():
            whole = pd.to_numeric(digits[these]).astype("int64") * 10**shift
            if shift:
                part = fraction[these].str.slice(0, shift).str.ljust(shift, "0")
                whole += pd.to_numeric(part).astype("int64")
            us[these] = whole
            unit[these] = name
        low = high
    nanos = count.gt(low) & count.le(NANOSECOND_DIGITS)
    if nanos.any():
        us[nanos] = pd.to_numeric(digits[nanos].str.slice(0, -3)).astype("int64")
        unit[nanos] = "nanoseconds"
    known = count.le(NANOSECOND_DIGITS)
    reasons = (
        _quoted(values[~known])
        + " is too large for an epoch in seconds, milliseconds, microseconds or nanoseconds"
    )
    readable = us[known] * sign[known]
    return _from_microseconds(readable), reasons


def _iso(values: pd.Series, naive_as_utc: bool) -> tuple[pd.Series, pd.Series]:
    strict = values.str.fullmatch(STRICT.pattern)
    if not strict.any():
        return _iso_variants(values, naive_as_utc)
    parsed = _to_utc(values[strict])
    bad = parsed.isna()
    reasons = _quoted(values[bad[bad].index]) + (
        " is not a real date and time (day, hour or offset out of range)"
    )
    if strict.all():
        return parsed[~bad], reasons
    others, other_reasons = _iso_variants(values[~strict], naive_as_utc)
    return pd.concat([parsed[~bad], others]), pd.concat([reasons, other_reasons])


def _to_utc(texts: pd.Series) -> pd.Series:
    try:
        return pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce").dt.as_unit("us")
    except (ValueError, OverflowError):  # one value pandas cannot hold spoils the batch
        return texts.map(_one_iso).astype(UTC_DTYPE)


def _iso_variants(values: pd.Series, naive_as_utc: bool) -> tuple[pd.Series, pd.Series]:
    """Lower case, a space for T, no seconds, more than six fractional digits, +0200 or +02,
    no offset, a date alone: taken apart and rebuilt in one shape, or refused."""
    reasons = pd.Series(dtype=object)
    upper = values.str.upper()
    date_only = upper.str.fullmatch(DATE_ONLY.pattern)
    if date_only.any():
        reasons = _quoted(values[date_only]) + (
            " is a date without a time of day; send the time of the reading with its UTC "
            "offset (e.g. 2026-12-04T10:15:00Z)"
        )
    parts = upper[~date_only].str.extract(ISO.pattern)
    shaped = parts[0].notna()
    unshaped = values[~date_only][~shaped]
    if len(unshaped):
        reasons = pd.concat(
            [
                reasons,
                _quoted(unshaped) + " is not an ISO-8601 date and time with a UTC offset, nor "
                "an epoch in seconds or milliseconds",
            ]
        )
    parts = parts[shaped]
    if parts.empty:
        return pd.Series(dtype=UTC_DTYPE), reasons
    offset = parts[7]
    # Rebuilt in one canonical shape: fraction floored to six digits, offset as +HH:MM (UTC
    # for now where none was given).
    fraction = parts[6].fillna("").str.slice(0, 6).str.ljust(6, "0")
    tail = offset.fillna("Z").str.replace(r"^([+-]\d{2})$", r"\1:00", regex=True)
    tail = tail.str.replace(r"^([+-]\d{2})(\d{2})$", r"\1:\2", regex=True)
    canonical = (
        parts[0]
        + "-"
        + parts[1]
        + "-"
        + parts[2]
        + "T"
        + parts[3]
        + ":"
        + parts[4]
        + ":"
        + parts[5].fillna("00")
        + "."
        + fraction
        + tail
    )
    parsed = _to_utc(canonical)
    bad = parsed.isna()
    if bad.any():
        reasons = pd.concat(
            [
                reasons,
                _quoted(values[bad[bad].index])
                + " is not a real date and time (day, hour or offset out of range)",
            ]
        )
    naive = offset.isna() & ~bad
    if naive.any() and not naive_as_utc:
        reasons = pd.concat(
            [
                reasons,
                _quoted(values[naive[naive].index])
                + " has no UTC offset (add Z or +00:00, or set EMPS_INGEST_NAIVE_TIMESTAMPS_UTC=true)",
            ]
        )
        bad |= naive
    return parsed[~bad], reasons


def _one_iso(text: str) -> pd.Timestamp:
    try:
        value = pd.Timestamp(text)
        return value.tz_convert("UTC").as_unit("us")
    except (ValueError, OverflowError, TypeError):
        return pd.NaT
