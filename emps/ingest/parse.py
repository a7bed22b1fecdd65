"""Streaming parsers for drop files: CSV, JSON array, NDJSON, each optionally gzip'd.

A parser yields the file's records as pandas frames of at most `chunk_rows` rows, values as
received (text for CSV, JSON scalars for JSON), column names lower-cased, `ts` renamed
`timestamp`, plus `row_number` (1-based record number, header not counted). Memory stays
bounded by the chunk size whatever the file size. A file that cannot be read at all raises
`FileRejected` with the reason in plain words.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd

GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK = 1 << 20
# Files up to this size are read whole and parsed without pandas: a device's one-minute drop
# is a few hundred bytes, and pandas' per-call overhead would dominate 1,000 of them.
SMALL_FILE_BYTES = 256 * 1024
SMALL_FILE_MAX_TEXT = 4 * 1024 * 1024  # decompressed; beyond it a small .gz is streamed
PROBLEM = "_problem"  # per-row parse problem (e.g. an NDJSON line that is not JSON)
ROW = "row_number"


class FileRejected(Exception):
    """The whole file is unusable; `reason` says why in the file owner's words."""

    def __init__(self, reason: str, **details):
        super().__init__(reason)
        self.reason = reason
        self.details = details


def _open_binary(path: Path) -> tuple[IO[bytes], bool]:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    return raw, False


def detect_format(path: Path) -> str:
    """`csv`, `json` or `ndjson`, with `+gzip` when compressed: sniffed, never from the name."""
    handle, gzipped = _open_binary(path)
    try:
        with handle:
            head = _read_head(handle)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"not a readable gzip file ({exc}); send it again") from exc
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise FileRejected("the file is empty (0 readings)")
    kind = {"[": "json", "{": "ndjson"}.get(chr(text[0]), "csv")
    return kind + ("+gzip" if gzipped else "")


def _read_head(handle: IO[bytes], size: int = 4096) -> bytes:
    return handle.read(size)


def iter_records(
    path: Path, fmt: str, chunk_rows: int, numeric: frozenset[str] = frozenset()
) -> Iterator[pd.DataFrame]:
    """Yield the file's records in frames of at most `chunk_rows` rows (see module docstring).

    CSV columns named in `numeric` are left for pandas to read as numbers (much faster than
    text); a chunk where such a column holds anything else keeps that column as text.
    """
    handle, _ = _open_binary(path)
    kind = fmt.split("+")[0]
    try:
        with handle:
            if kind == "csv":
                yield from _iter_csv(handle, chunk_rows, numeric)
            else:
                text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="strict", newline="")
                if kind == "json":
                    yield from _frames(_iter_json_array(text), chunk_rows)
                else:
                    yield from _frames(_iter_ndjson(text), chunk_rows)
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8"
        ) from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise FileRejected(f"the gzip data is corrupt or cut short ({exc}); send it again") from exc


def read_small(path: Path, fmt: str) -> list[dict] | None:
    """All records of a small file as dicts (same shape as `iter_records` rows), or None when
    it decompresses to more than SMALL_FILE_MAX_TEXT and must be streamed instead."""
    handle, _ = _open_binary(path)
    try:
        with handle:
            data = handle.read(SMALL_FILE_MAX_TEXT + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"the gzip data is corrupt or cut short ({exc}); send it again") from exc
    if len(data) > SMALL_FILE_MAX_TEXT:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8"
        ) from exc
    kind = fmt.split("+")[0]
    if kind == "csv":
        records = _small_csv(text)
    elif kind == "json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileRejected(
                f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        if not isinstance(parsed, list):
            raise FileRejected("the JSON is not an array of objects (nor one object per line)")
        records = [_record(obj, f"element {i} of the array") for i, obj in enumerate(parsed, 1)]
    else:
        records = list(_iter_ndjson(io.StringIO(text, newline="")))
    renames = {}
    for number, record in enumerate(records, start=1):
        keys = tuple(record)
        if keys not in renames:
            renames[keys] = dict(zip(keys, normalise_columns(list(keys)), strict=True))
        mapping = renames[keys]
        records[number - 1] = {mapping[k]: v for k, v in record.items()}
        records[number - 1][ROW] = number
    return records


def _small_csv(text: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise FileRejected("the file is empty (0 readings)")
        names = normalise_columns(header)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise FileRejected(
                f"column(s) {', '.join(repeated)} appear more than once in the header"
            )
        width = len(names)
        records = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) > width:
                raise FileRejected(
                    f"the CSV cannot be parsed (Expected {width} fields in line "
                    f"{reader.line_num}, saw {len(fields)}); check delimiters and quotes"
                )
            # A short row (a file cut mid-line) leaves its missing fields null.
            values = zip(names, fields, strict=False)
            records.append({n: (v if v != "" else None) for n, v in values})
        return records
    except csv.Error as exc:
        raise FileRejected(
            f"the CSV cannot be parsed ({exc} at line {reader.line_num}); check delimiters "
            "and quotes"
        ) from exc


def normalise_columns(columns: list[str]) -> list[str]:
    """Lower-case, trimmed header names; `ts` is an accepted spelling of `timestamp`."""
    names = [str(c).replace("\ufeff", "").strip().lower() for c in columns]
    if "timestamp" not in names:
        names = ["timestamp" if n == "ts" else n for n in names]
    return names


def _iter_csv(
    handle: IO[bytes], chunk_rows: int, numeric: frozenset[str]
) -> Iterator[pd.DataFrame]:
    header_line = handle.readline(1 << 20)
    if not header_line.strip(b"\xef\xbb\xbf \t\r\n"):
        raise FileRejected("the file is empty (0 readings)")
    try:
        header = next(csv.reader([header_line.decode("utf-8-sig").rstrip("\r\n")]))
    except (csv.Error, StopIteration) as exc:
        raise FileRejected(f"the CSV header cannot be read ({exc})") from exc
    names = normalise_columns(header)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FileRejected(f"column(s) {', '.join(repeated)} appear more than once in the header")
    # Text columns stay text ("007" is an id, not 7); sensor columns are parsed as numbers and
    # fall back to text in a chunk holding "12,5" or "NaN", so the raw value is kept for the
    # quarantine instead of silently becoming null.
    dtype = {name: "str" for name in names if name not in numeric}
    try:
        reader = pd.read_csv(
            handle,
            header=None,
            names=names,
            dtype=dtype,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
            chunksize=chunk_rows,
            skipinitialspace=True,
            engine="c",
        )
        seen = 0
        for chunk in reader:
            chunk[ROW] = range(seen + 1, seen + len(chunk) + 1)
            seen += len(chunk)
            yield chunk
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as exc:
        raise FileRejected(
            f"the CSV cannot be parsed ({_short(exc)}); check delimiters and quotes"
        ) from exc


def _short(exc: Exception) -> str:
    return str(exc).replace("Error tokenizing data. C error: ", "").strip()


def _frames(records: Iterator[dict], chunk_rows: int) -> Iterator[pd.DataFrame]:
    batch: list[dict] = []
    seen = 0
    for record in records:
        batch.append(record)
        if len(batch) >= chunk_rows:
            yield _to_frame(batch, seen)
            seen += len(batch)
            batch = []
    if batch or seen == 0:
        yield _to_frame(batch, seen)


def _to_frame(batch: list[dict], seen: int) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(batch) if batch else pd.DataFrame()
    frame.columns = normalise_columns(list(frame.columns))
    frame = frame.loc[:, ~pd.Index(frame.columns).duplicated()]
    frame[ROW] = range(seen + 1, seen + len(batch) + 1)
    return frame


def _scalar(value):
    # Nested values are not readings; keep them as JSON text so the quarantine shows them.
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _record(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise FileRejected(
            f"{where} is a JSON {type(obj).__name__}, expected an object with equipment_id, "
            "timestamp and sensor fields"
        )
    return {str(k): _scalar(v) for k, v in obj.items()}


def _iter_json_array(text: io.TextIOWrapper) -> Iterator[dict]:
    """Objects of a top-level JSON array, decoded one at a time from a bounded buffer."""
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    eof = False
    consumed = 0  # characters dropped from the front of buf, for error positions

    def fill() -> bool:
        nonlocal buf, pos, eof, consumed
        if eof:
            return False
        block = text.read(READ_BLOCK)
        if not block:
            eof = True
            return False
        consumed += pos
        buf = buf[pos:] + block
        pos = 0
        return True

    def skip_ws() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    fill()
    if skip_ws() != "[":
        raise FileRejected("the JSON is not an array of objects (nor one object per line)")
    pos += 1
    index = 0
    expect_value = True
    while True:
        char = skip_ws()
        if char == "":
            raise FileRejected(
                f"the JSON ends early after {index} objects (missing ']'); the file may be cut short"
            )
        if char == "]" and (index == 0 or not expect_value):
            pos += 1
            break
        if not expect_value:
            if char != ",":
                raise FileRejected(
                    f"invalid JSON at character {consumed + pos}: expected ',' or ']' "
                    f"after object {index}"
                )
            pos += 1
            expect_value = True
            continue
        while True:
            try:
                obj, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as exc:
                if not fill():
                    raise FileRejected(
                        f"invalid JSON in object {index + 1} at character {consumed + exc.pos}: "
                        f"{exc.msg}"
                    ) from exc
        pos = end
        index += 1
        expect_value = False
        yield _record(obj, f"element {index} of the array")
    if skip_ws() != "":
        raise FileRejected("the JSON has extra content after the closing ']'")


def _iter_ndjson(text: io.TextIOWrapper) -> Iterator[dict]:
    """One object per line; a line that is not a JSON object becomes a row with a problem."""
    for number, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield {PROBLEM: f"line {number} is not valid JSON ({exc.msg})", "_line": stripped}
            continue
        if not isinstance(obj, dict):
            yield {
                PROBLEM: f"line {number} is a JSON {type(obj).__name__}, expected an object",
                "_line": stripped,
            }
            continue
        yield {str(k): _scalar(v) for k, v in obj.items()}


def _lines(text: io.TextIOWrapper) -> Iterator[str]:
    # Bounded per line as well: a single 1 GB line is a broken file, not a reading.
    decoder_limit = 1 << 20
    while True:
        line = text.readline(decoder_limit)
        if not line:
            return
        if len(line) >= decoder_limit and not line.endswith("\n"):
            raise FileRejected("a line is longer than 1 MiB; this is not a batch of readings")
        yield line
