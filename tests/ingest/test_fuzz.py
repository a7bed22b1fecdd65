"""Byte-level fuzzing of the drop parsers and of a whole ingest run: any bytes end as records
(unreadable ones carrying a reason) or a file rejected with a reason, never an exception out of
the pipeline; the small-file and streaming paths read the same rows the same way."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import zlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emps.catalog import load_catalog
from emps.ingest.columns import reading_columns
from emps.ingest.landing import Landing
from emps.ingest.parse import KIND, PROBLEM, ROW, FileRejected, Limits, read_records
from emps.ingest.pipeline import ingest_landing
from emps.ingest.validate import FILE, prepare
from emps.settings import PROJECT_ROOT
from tests.ingest.corpus import build_corpus

CATALOG = load_catalog(PROJECT_ROOT / "catalog" / "sensors.yaml")
READINGS = reading_columns(CATALOG)
BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
# Real drops to mutate: the corpus (readable and unreadable ones), so mutations start from every
# format and every edge the corpus knows.
SEEDS = [case.data for case in build_corpus(CATALOG, BASE, ["unit-a1", "unit-b2"])]
SEEDS = [seed for seed in SEEDS if len(seed) < 20_000]


@st.composite
def drop_bytes(draw) -> bytes:
    """Random bytes, or a real drop with bytes flipped, inserted, cut or repeated, maybe gzip'd."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "cut", "repeat", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [b'"', b",", b";", b"\n", b"\r", b"\x00", b"[", b"{", b"}", b"\xff", b"\\"]
                )
                | st.binary(min_size=1, max_size=8)
            )
        elif action == "cut":
            del data[at:]
        elif action == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
    data = bytes(data)
    if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
        data = gzip.compress(data)
    return data


def _read(data: bytes, small_text: int | None) -> list[dict] | str:
    """The file's records, or the reason it was rejected."""
    try:
        chunks = list(
            read_records(
                io.BytesIO(data),
                chunk_rows=7,
                numeric=frozenset(READINGS),
                limits=Limits(max_bytes=1 << 20, max_rows=20_000),
                small_text=small_text,
            )
        )
    except FileRejected as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return exc.reason
    records: list[dict] = []
    for chunk in chunks:
        if isinstance(chunk, pd.DataFrame):
            records += [
                {k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))}
                for r in chunk.to_dict("records")
            ]
        else:
            records += chunk
    return records


@settings(
    max_examples=250,
    deadline=None,
    # The same examples every run, so `make test` is repeatable; explore with
    # `pytest --hypothesis-seed=random` and max_examples raised (30,000 passed before commit).
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=drop_bytes())
def test_any_bytes_parse_to_records_or_a_reason(data: bytes):
    """Any bytes: records numbered in order, each unreadable one with its reason and kind, all of
    them typed without an error; or the file rejected with a reason. Read whole (small file) or
    streamed, the same rows come out, unreadable the same way."""
    outcomes = []
    for small_text in (None, 0):
        records = _read(data, small_text)
        if isinstance(records, str):
            outcomes.append("rejected")
            continue
        rows = [r[ROW] for r in records]
        assert rows == sorted(rows) and len(set(rows)) == len(rows), rows
        for record in records:
            if record.get(PROBLEM) is not None:
                assert record[PROBLEM] and record[KIND] in ("malformed", "unterminated")
        if records:
            frame = pd.DataFrame.from_records(records)
            frame[FILE] = 1
            prepare(frame, READINGS, naive_as_utc=False)
        outcomes.append([(r[ROW], record_problem(r)) for r in records])
    if not _content(data).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        # One pretty-printed NDJSON object is read whole only when the file is small.
        assert outcomes[0] == outcomes[1]


def _content(data: bytes) -> bytes:
    try:
        return gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data
    except (OSError, EOFError, ValueError, zlib.error):
        return data


def record_problem(record: dict) -> str | None:
    return record.get(KIND) if record.get(PROBLEM) is not None else None


@pytest.mark.parametrize("case", range(len(SEEDS)))
def test_corpus_files_read_the_same_whole_or_streamed(case: int):
    """Every corpus file gives the same rows and the same unreadable ones through both paths
    (but one pretty-printed object, read whole only when the file is small)."""
    small, streamed = _read(SEEDS[case], None), _read(SEEDS[case], 0)
    first_line = SEEDS[case].lstrip().split(b"\n", 1)[0].strip()
    if first_line == b"{":  # one object over many lines: read whole only when small
        return
    if isinstance(small, str) or isinstance(streamed, str):
        assert small == streamed
        return
    assert [(r[ROW], record_problem(r)) for r in small] == [
        (r[ROW], record_problem(r)) for r in streamed
    ]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.lists(drop_bytes(), min_size=1, max_size=4))
def test_any_bytes_end_as_a_file_outcome(ingest_db, files):
    """Any bytes dropped, several files at once: the run returns, every file ends loaded,
    partial, duplicate, conflict or quarantined for a reason of its own, and nothing is left
    claimed."""
    import psycopg

    from emps.db import Role, database_url

    url = database_url(Role.OWNER, ingest_db)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate raw.quarantined_rows, raw.ingest_files, raw.sensor_readings cascade")
    shutil.rmtree(ingest_db.landing_dir, ignore_errors=True)
    landing = Landing(ingest_db.landing_dir).ensure()
    for number, data in enumerate(files):
        (landing.incoming / f"fuzz-{number}.dat").write_bytes(data)
    report = ingest_landing(ingest_db)
    assert len(report.files) == len(files)
    with psycopg.connect(url, autocommit=True) as conn:
        ledger = conn.execute("select status, coalesce(error, '') from raw.ingest_files").fetchall()
    statuses = [status for status, _ in ledger]
    assert len(statuses) == len(files)
    # No file needed the isolation's last resort (an error nobody foresaw).
    assert not [error for _, error in ledger if "could not be processed" in error]
    assert set(statuses) <= {"loaded", "partial", "duplicate", "conflict", "quarantined"}
    assert not os.listdir(landing.processing) and not os.listdir(landing.incoming)
