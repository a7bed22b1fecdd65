"""Parsing drop files: formats, tolerated CSV variations, streaming in bounded chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from emps.ingest.parse import FileRejected, ReadNotes, read_records
from tests.ingest.drop_files import csv_bytes, gz, json_bytes, ndjson_bytes, reading


def chunks(path: Path, chunk_rows: int = 1000, small_text: int = 0) -> list:
    """The file's chunks; small_text=0 reads every file the way large ones are read."""
    with path.open("rb") as handle:
        return list(
            read_records(
                handle,
                chunk_rows=chunk_rows,
                numeric=frozenset({"temperature", "vibration"}),
                small_text=small_text,
            )
        )


def records(path: Path, chunk_rows: int = 1000) -> pd.DataFrame:
    return pd.concat(chunks(path, chunk_rows), ignore_index=True)


def sniffed(path: Path) -> str:
    notes = ReadNotes()
    with path.open("rb") as handle:
        list(read_records(handle, chunk_rows=1000, numeric=frozenset(), notes=notes))
    return notes.format


def test_csv_variations_are_tolerated(tmp_path: Path):
    """A BOM, CRLF line ends, quoted fields, reordered upper-case headers, `ts` and extra columns all parse."""
    text = (
        "\ufeffVoltage,TS,Equipment_ID,Temperature,vibration,firmware\r\n"
        '"410.5",2026-01-01T00:00:00+00:00,"GEN-0001",80.5,3.1,"v1, beta"\r\n'
    )
    path = tmp_path / "drop.csv"
    path.write_bytes(text.encode())
    frame = records(path)
    assert list(frame.columns[:5]) == [
        "voltage",
        "timestamp",
        "equipment_id",
        "temperature",
        "vibration",
    ]
    assert frame.loc[0, "equipment_id"] == "GEN-0001"
    assert frame.loc[0, "firmware"] == "v1, beta"
    assert frame.loc[0, "row_number"] == 1


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("a.csv", csv_bytes([reading()]), "csv"),
        ("a.json", json_bytes([reading()]), "json"),
        ("a.ndjson", ndjson_bytes([reading()]), "ndjson"),
        ("a.csv.gz", gz(csv_bytes([reading()])), "csv+gzip"),
        ("a.json.gz", gz(json_bytes([reading()])), "json+gzip"),
        ("no-extension", gz(ndjson_bytes([reading()])), "ndjson+gzip"),
    ],
)
def test_formats_are_sniffed_from_content(tmp_path: Path, name: str, data: bytes, fmt: str):
    """The format comes from the bytes, not the untrusted name; every format yields the reading."""
    path = tmp_path / name
    path.write_bytes(data)
    assert sniffed(path) == fmt
    frame = records(path)
    assert frame.loc[0, "equipment_id"] == "GEN-0001"
    assert float(frame.loc[0, "temperature"]) == 80.5


@pytest.mark.parametrize("kind", ["csv", "json", "ndjson"])
def test_large_files_stream_in_bounded_chunks(tmp_path: Path, kind: str):
    """A large file is read in frames of at most chunk_rows rows, numbered continuously."""
    rows = [reading(minute=i) for i in range(2500)]
    data = {"csv": csv_bytes, "json": json_bytes, "ndjson": ndjson_bytes}[kind](rows)
    path = tmp_path / f"big.{kind}"
    path.write_bytes(gz(data))
    parts = chunks(path, 1000)
    assert [len(c) for c in parts] == [1000, 1000, 500]
    assert parts[-1]["row_number"].iloc[-1] == 2500


def test_json_array_parser_crosses_read_blocks(tmp_path: Path, monkeypatch):
    """Objects split across the parser's read blocks are decoded whole."""
    monkeypatch.setattr("emps.ingest.parse.READ_BLOCK", 7)
    path = tmp_path / "small-blocks.json"
    path.write_text(json.dumps([reading(minute=i) for i in range(20)], indent=1))
    assert len(records(path)) == 20


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"\x1f\x8b\x08\x00garbage-not-gzip", "gzip"),
        (b"equipment_id,timestamp\xff\xfe\nGEN-0001,2026\n", "not UTF-8"),
        ("equipment_id,timestamp\n".encode("utf-16"), "UTF-16"),
        (b"equipment_id,equipment_id\nA,B\n", "more than once"),
    ],
)
def test_unreadable_files_are_rejected_in_plain_words(tmp_path: Path, data: bytes, says: str):
    """Files that cannot be read at all raise FileRejected with a reason a device owner understands."""
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(FileRejected) as excinfo:
        records(path)
    assert says in excinfo.value.reason


def test_a_file_past_its_time_limit_is_rejected(tmp_path: Path):
    """Reading a file longer than EMPS_INGEST_MAX_FILE_SECONDS rejects it naming the setting."""
    from emps.ingest.parse import Limits

    path = tmp_path / "slow.csv"
    path.write_bytes(csv_bytes([reading(minute=i) for i in range(5000)]))
    limits = Limits(max_seconds=0.0)
    with path.open("rb") as handle, pytest.raises(FileRejected) as excinfo:
        list(read_records(handle, chunk_rows=100, numeric=frozenset(), limits=limits, small_text=0))
    assert "EMPS_INGEST_MAX_FILE_SECONDS" in excinfo.value.reason


def test_an_unsettled_file_keeps_its_last_line_out(tmp_path: Path):
    """A complete last line without its line end loads when the file settled, and is kept as
    unterminated when the file changed while it was read."""
    path = tmp_path / "growing.csv"
    path.write_bytes(csv_bytes([reading(minute=i) for i in range(3)]).rstrip(b"\n"))
    for settled, kinds in ((True, [None, None, None]), (False, [None, None, "unterminated"])):
        with path.open("rb") as handle:
            [records] = read_records(
                handle, chunk_rows=100, numeric=frozenset(), settled=lambda s=settled: s
            )
        assert [r.get("_kind") for r in records] == kinds
