"""Streaming parsers for drop files: CSV, a JSON array, or NDJSON, each optionally gzip'd.

What is accepted (sniffed from the bytes, never from the untrusted name):
- CSV with a header line; the delimiter is read from the header: comma, or semicolon, tab or
  pipe, in which case reading values may use a decimal comma (`80,5`). A UTF-8 byte order mark,
  CRLF line ends, quoted fields (with doubled quotes, line breaks inside quotes), spaces after
  delimiters, header names in any case, `ts` for `timestamp`, blank lines.
- A JSON array of objects, or one JSON object per line (NDJSON, blank lines allowed).
- Any of them gzip'd (also concatenated gzip members).
What is refused, with the reason: UTF-16 text, a header that is not UTF-8, a corrupt or cut
gzip stream (its checksum cannot vouch for the bytes), a file over the limits (`Limits`).

Records come out in chunks: one list of dicts for a small file (no pandas: a device's
one-minute drop is a few hundred bytes), pandas frames of at most `chunk_rows` rows otherwise.
Values are as received (text for CSV, JSON scalars for JSON), column names normalised
(`normalise_columns`), plus `row_number`: the record's 1-based position in the file (the
header and blank lines not counted). A record the parser cannot read is still a record, so the
rest of the file loads: it carries `_problem` (the reason), `_kind` and `_line` (its text):
- malformed: a CSV row with more or fewer fields than the header, broken quoting, text that
  is not UTF-8; an NDJSON line or array element that is not a JSON object, or repeats a field;
- unterminated: the file ends inside the record (no line end after it). A last line without
  its line end is read like any other only when the file has settled (unchanged since it was
  claimed) and the line is complete; a device still writing, or a cut upload, leaves it here.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pandas as pd

from emps.ingest.files import FileRejected

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
READ_BLOCK = 1 << 20
# Decompressed files up to this size are parsed whole into dicts, without pandas, whose
# per-call overhead would dominate a thousand one-row files.
SMALL_TEXT = 256 * 1024
MAX_LINE = 1 << 20
MAX_QUOTED_LINES = 100  # a quoted field spanning more lines than this never closes
MAX_ELEMENT = 16 << 20  # one JSON array element larger than this is not a reading
SHOWN_TEXT = 2000  # characters of an unreadable record kept in the quarantine
PROBLEM = "_problem"
KIND = "_kind"
LINE = "_line"
ROW = "row_number"
INTERNAL_COLUMNS = (PROBLEM, KIND, LINE, ROW, "ingest_file_id")
DELIMITERS = {",": "csv", ";": "csv-semicolon", "\t": "csv-tab", "|": "csv-pipe"}


class TooBigForGroup(Exception):
    """The file decompresses to more than a shared transaction takes: load it on its own."""


@dataclass
class Limits:
    """Bounds on one file: decompressed bytes, records, seconds (EMPS_INGEST_MAX_FILE_*).

    `group_bytes`, when set, raises TooBigForGroup past that many decompressed bytes.
    """

    max_bytes: int = 1 << 40
    max_rows: int = 1 << 40
    max_seconds: float | None = None
    group_bytes: int | None = None
    started: float = field(default_factory=time.monotonic)

    def check_time(self) -> None:
        if self.max_seconds is not None and time.monotonic() - self.started > self.max_seconds:
            raise FileRejected(
                f"reading the file took longer than {self.max_seconds:g} s "
                "(EMPS_INGEST_MAX_FILE_SECONDS); split it into smaller files"
            )


@dataclass
class ReadNotes:
    """What reading a file learned besides its records; the ledger keeps it."""

    format: str = ""
    columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def see_columns(self, names) -> None:
        for name in names:
            if name not in self._seen:
                self._seen.add(name)
                self.columns.append(name)

    def __post_init__(self) -> None:
        self._seen: set[str] = set(self.columns)


class _Source:
    """The file's decompressed bytes, counted against the limits."""

    def __init__(self, handle: IO[bytes], limits: Limits, notes: ReadNotes):
        self.limits = limits
        self.notes = notes
        head = handle.read(2)
        handle.seek(0)
        self.gzipped = head == GZIP_MAGIC
        self.stream: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=handle, mode="rb") if self.gzipped else handle
        )

    def read(self, size: int) -> bytes:
        try:
            data = self.stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            if not self.gzipped:
                raise
            raise FileRejected(
                f"the gzip data is corrupt or cut short ({exc}); nothing of it can be trusted: "
                "send the file again"
            ) from exc
        self.notes.bytes += len(data)
        limits = self.limits
        if self.notes.bytes > limits.max_bytes:
            raise FileRejected(
                f"the file holds more than {limits.max_bytes:,} bytes of data (decompressed; "
                "EMPS_INGEST_MAX_FILE_BYTES); split it into smaller files"
            )
        if limits.group_bytes is not None and self.notes.bytes > limits.group_bytes:
            raise TooBigForGroup()
        limits.check_time()
        return data


def normalise_columns(columns: list[Any]) -> list[str]:
    """Lower-case, trimmed header names; `ts` is an accepted spelling of `timestamp`. Names that
    would collide with ingest's own columns are kept apart (and ignored as unknown)."""
    names = []
    for number, column in enumerate(columns, start=1):
        name = storable(str(column)).replace("\ufeff", "").strip().lower()
        if not name:
            name = f"(unnamed column {number})"
        elif name in INTERNAL_COLUMNS:
            name = f"{name} (from the file)"
        names.append(name)
    if "timestamp" not in names:
        names = ["timestamp" if n == "ts" else n for n in names]
    return names


def storable(text: str) -> str:
    """Text PostgreSQL can store: lone surrogates (undecodable bytes, or JSON escapes like
    \\udc80) and NULs become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def shown(data: bytes | str) -> str:
    """Text of an unreadable record as the quarantine keeps it: bounded, storable."""
    text = storable(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)
    return text[:SHOWN_TEXT] + ("…" if len(text) > SHOWN_TEXT else "")


def problem(row: int, kind: str, reason: str, text: bytes | str) -> dict[str, Any]:
    return {ROW: row, PROBLEM: reason, KIND: kind, LINE: shown(text)}


def _not_utf8(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"the row is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
            f"{exc.start + 1}); save the file as UTF-8"
        )
    return None


def _unterminated(settled: bool) -> str:
    if not settled:
        return (
            "unterminated: the file changed while it was read and ends inside this row (still "
            "being written?); an admin can retry the row"
        )
    return (
        "unterminated: the file ends inside this row (cut short, or still being written "
        "when it was dropped); an admin can retry the row"
    )


# -- entry point -------------------------------------------------------------------------------


def read_records(
    handle: IO[bytes],
    *,
    chunk_rows: int,
    numeric: frozenset[str],
    limits: Limits | None = None,
    notes: ReadNotes | None = None,
    settled: Callable[[], bool] = lambda: True,
    small_text: int | None = None,
) -> Iterator[list[dict[str, Any]] | pd.DataFrame]:
    """The file's records (see the module docstring); `numeric` names the reading columns,
    `settled()` says at the end whether the file stayed unchanged while it was read."""
    limits = limits or Limits()
    notes = notes if notes is not None else ReadNotes()
    source = _Source(handle, limits, notes)
    small_text = SMALL_TEXT if small_text is None else small_text
    head = source.read(max(small_text + 1, 4))
    if head.startswith(UTF16_BOMS):
        raise FileRejected("the file is UTF-16 text; save it as UTF-8")
    body = head[3:] if head.startswith(UTF8_BOM) else head
    first = body.lstrip(b" \t\r\n")[:1]
    if not first:
        if len(head) > small_text:  # nothing but whitespace for a quarter of a megabyte
            raise FileRejected("the file starts with more than 256 KiB of blank space")
        raise FileRejected("the file is empty (0 readings)")
    kind = {b"[": "json", b"{": "ndjson"}.get(first, "csv")
    notes.format = kind + ("+gzip" if source.gzipped else "")
    small = len(head) <= small_text
    blocks = _blocks(source, body, small)
    if kind == "csv":
        yield from _csv(blocks, small, chunk_rows, numeric, limits, notes, settled)
    elif kind == "ndjson":
        yield from _ndjson(blocks, small, chunk_rows, limits, notes, settled)
    else:
        yield from _json_array(blocks, small, chunk_rows, limits, notes, settled)


def _blocks(source: _Source, first: bytes, small: bool) -> Iterator[bytes]:
    yield first
    if small:
        return
    while block := source.read(READ_BLOCK):
        yield block


def _lines(
    blocks: Iterator[bytes], limits: Limits
) -> Iterator[tuple[list[bytes], bytes | None, bool]]:
    """Complete lines block by block: (lines without their \\n, None, whether they are all
    UTF-8), then ([], tail, True) once at the end, `tail` being what follows the last line end
    (b"" when the file ends with one)."""
    rest = b""
    for block in blocks:
        data = rest + block
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > MAX_LINE:
                raise FileRejected("a line is longer than 1 MiB; this is not a batch of readings")
            rest = data
            continue
        complete = data[:cut]
        rest = data[cut + 1 :]
        if len(rest) > MAX_LINE:
            raise FileRejected("a line is longer than 1 MiB; this is not a batch of readings")
        limits.check_time()
        yield complete.split(b"\n"), None, _not_utf8(complete) is None
    yield [], rest, True


def _count(notes: ReadNotes, limits: Limits, added: int) -> None:
    notes.rows += added
    if notes.rows > limits.max_rows:
        raise FileRejected(
            f"the file holds more than {limits.max_rows:,} rows (EMPS_INGEST_MAX_FILE_ROWS); "
            "split it into smaller files"
        )


# -- CSV -------------------------------------------------------------------------------------


class OpenQuote(Exception):
    """The text ends inside a quoted field."""


def csv_fields(text: bytes | str, delimiter: str) -> list[str]:
    """One CSV record's fields, strictly (RFC 4180 quoting); OpenQuote when a quote never closes."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True
        )
        rows = list(reader)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc) or "EOF" in str(exc):
            raise OpenQuote() from exc
        raise
    if len(rows) != 1:
        raise csv.Error(f"expected one row, found {len(rows)}")
    return rows[0]


@dataclass
class _Split:
    """One batch of CSV lines sorted out: fast lines (pandas reads them), rows read field by
    field, and unreadable records."""

    fast: list[bytes] = field(default_factory=list)
    fast_rows: list[int] = field(default_factory=list)
    slow: list[tuple[int, list[str]]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    blob: bytes | None = None  # the fast lines joined, when sorted out in one go

    def __len__(self) -> int:
        return len(self.fast_rows) + len(self.slow) + len(self.problems)

    def fast_data(self) -> bytes:
        return self.blob if self.blob is not None else b"\n".join(self.fast)

    def extend(self, other: _Split) -> None:
        self.fast += other.fast
        self.fast_rows += other.fast_rows
        self.slow += other.slow
        self.problems += other.problems


class _CsvBody:
    """Sorts the lines of a CSV body into records, tracking quoted fields across lines."""

    def __init__(self, names: list[str], delimiter: str):
        self.names = names
        self.width = len(names)
        self.delimiter = delimiter
        self.delim = delimiter.encode()
        d = re.escape(self.delim)
        field_ = rb'(?:[ ]*"(?:[^"]|"")*"|[^"' + d + rb"\r\n]*)"
        self.well_formed = re.compile(field_ + rb"(?:" + d + field_ + rb")*")
        self.quoted = re.compile(rb'"(?:[^"]|"")*"')
        self.ordinal = 0
        self.pending: list[bytes] = []
        self.pending_row = 0

    def _classify(self, line: bytes) -> tuple[str, Any]:
        """("fast", None) | ("slow", fields) | ("open", None) | ("bad", reason)."""
        if b'"' not in line:
            if b"\r" in line:
                return "bad", "the row holds a carriage return outside quotes"
            n = line.count(self.delim) + 1
        elif self.well_formed.fullmatch(line):
            n = self.quoted.sub(b"", line).count(self.delim) + 1
        else:
            try:
                fields = csv_fields(line, self.delimiter)
            except OpenQuote:
                return "open", None
            except (csv.Error, UnicodeDecodeError) as exc:
                return "bad", f"the row cannot be read as CSV ({exc}); check its quotes"
            if len(fields) != self.width:
                return "bad", self._width_reason(len(fields))
            return "slow", fields
        if n != self.width:
            return "bad", self._width_reason(n)
        return "fast", None

    def _width_reason(self, n: int) -> str:
        if n < self.width:
            return (
                f"the row has {n} of the header's {self.width} fields (cut short, or a "
                "delimiter missing)"
            )
        hint = " (a decimal comma in a comma-separated file?)" if self.delimiter == "," else ""
        return f"the row has {n} fields, the header {self.width}{hint}"

    def _take(self, line: bytes, row: int, out: _Split) -> None:
        verdict, value = self._classify(line)
        if verdict == "fast":
            out.fast.append(line)
            out.fast_rows.append(row)
        elif verdict == "slow":
            out.slow.append((row, value))
        elif verdict == "open":
            self.pending = [line]
            self.pending_row = row
        else:
            out.problems.append(problem(row, "malformed", value, line))

    def _continue(self, line: bytes, out: _Split) -> None:
        self.pending.append(line)
        joined = b"\n".join(self.pending)
        try:
            fields = csv_fields(joined, self.delimiter)
        except OpenQuote:
            if len(self.pending) > MAX_QUOTED_LINES:
                out.problems.append(
                    problem(
                        self.pending_row,
                        "malformed",
                        f"a quoted field opened in this row is still open {MAX_QUOTED_LINES} "
                        "lines later; check its quotes",
                        joined,
                    )
                )
                self.pending = []
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            out.problems.append(
                problem(
                    self.pending_row,
                    "malformed",
                    f"the row cannot be read as CSV ({exc}); check its quotes",
                    joined,
                )
            )
            self.pending = []
            return
        self.pending = []
        if len(fields) != self.width:
            out.problems.append(
                problem(self.pending_row, "malformed", self._width_reason(len(fields)), joined)
            )
        else:
            out.slow.append((self.pending_row, fields))

    def split(self, lines: list[bytes], check_utf8: bool, at_once: bool = False) -> _Split:
        """Sort out a batch of lines; `at_once` tries numpy on the whole batch first (large
        files: a Python step per line costs more than pandas' whole parse)."""
        if at_once and not self.pending and not check_utf8:
            plain = self._split_plain(lines)
            if plain is not None:
                return plain
        out = _Split()
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if self.pending:
                self._continue(line, out)
                continue
            if not line.strip():
                continue
            self.ordinal += 1
            if check_utf8 and (reason := _not_utf8(line)):
                out.problems.append(problem(self.ordinal, "malformed", reason, line))
                continue
            self._take(line, self.ordinal, out)
        return out

    def _split_plain(self, lines: list[bytes]) -> _Split | None:
        """A batch without quotes or stray carriage returns, its field counts taken with numpy;
        None for the careful path."""
        text = b"\n".join(lines) + b"\n"
        if b'"' in text:
            return None
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
            if b"\r" in text:
                return None
        data = np.frombuffer(text, dtype=np.uint8)
        ends = np.flatnonzero(data == 10)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        delimiters = np.flatnonzero(data == ord(self.delimiter))
        fields = np.searchsorted(delimiters, ends) - np.searchsorted(delimiters, starts) + 1
        blank = ends == starts
        fine = (fields == self.width) & ~blank
        odd = np.flatnonzero(~fine & ~blank)
        for index in odd:  # whitespace alone is a blank line too
            if not text[starts[index] : ends[index]].strip():
                blank[index] = True
        rows = self.ordinal + np.cumsum(~blank)
        if len(rows):
            self.ordinal = int(rows[-1])
        out = _Split()
        for index in odd:
            if not blank[index]:
                line = text[starts[index] : ends[index]]
                out.problems.append(
                    problem(
                        int(rows[index]), "malformed", self._width_reason(int(fields[index])), line
                    )
                )
        if fine.all():
            out.blob = text[:-1]
        else:
            kept = np.flatnonzero(fine)
            out.blob = b"\n".join(text[starts[i] : ends[i]] for i in kept)
        out.fast_rows = rows[fine].tolist()
        return out

    def finish(self, tail: bytes, settled: bool) -> _Split:
        """The end of the file: `tail` is what follows the last line end."""
        out = _Split()
        tail = tail[:-1] if tail.endswith(b"\r") else tail
        if self.pending:
            text = b"\n".join([*self.pending, tail]) if tail else b"\n".join(self.pending)
            out.problems.append(
                problem(self.pending_row, "unterminated", _unterminated(settled), text)
            )
            self.pending = []
            return out
        if not tail.strip():
            return out
        self.ordinal += 1
        if not _not_utf8(tail):
            verdict, value = self._classify(tail)
        else:
            verdict, value = "bad", None
        if settled and verdict == "fast":
            out.fast.append(tail)
            out.fast_rows.append(self.ordinal)
        elif settled and verdict == "slow":
            out.slow.append((self.ordinal, value))
        else:
            out.problems.append(problem(self.ordinal, "unterminated", _unterminated(settled), tail))
        return out


def _header(text: bytes) -> tuple[list[str], str]:
    """Column names and delimiter from the header line."""
    try:
        line = text.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"the header line is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be "
            "decoded); save the file as UTF-8"
        ) from exc
    if not line.strip():
        raise FileRejected("the file is empty (0 readings)")
    if "\r" in line:
        raise FileRejected(
            "lines end with a bare carriage return (classic Mac line ends); save the file with "
            "LF or CRLF line ends"
        )
    chosen = None
    for delimiter in DELIMITERS:
        if "equipment_id" in normalise_columns(line.split(delimiter)):
            chosen = delimiter
            break
    if chosen is None:  # no key column: the count decides, the error names what is missing
        chosen = max(DELIMITERS, key=lambda d: (line.count(d), d == ","))
    try:
        fields = csv_fields(line, chosen)
    except (csv.Error, OpenQuote) as exc:
        raise FileRejected(
            f"the CSV header cannot be read ({exc or 'a quote never closes'})"
        ) from exc
    names = normalise_columns(fields)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FileRejected(f"column(s) {', '.join(repeated)} appear more than once in the header")
    return names, chosen


def _csv(
    blocks: Iterator[bytes],
    small: bool,
    chunk_rows: int,
    numeric: frozenset[str],
    limits: Limits,
    notes: ReadNotes,
    settled: Callable[[], bool],
) -> Iterator[list[dict[str, Any]] | pd.DataFrame]:
    body: _CsvBody | None = None
    decimal_comma = False
    batch: list[bytes] = []
    batch_utf8 = True
    for complete, tail, utf8 in _lines(blocks, limits):
        if body is None:
            if complete:
                header, complete = complete[0], complete[1:]
            else:
                header, tail = tail or b"", b""
            names, delimiter = _header(header)
            notes.format = notes.format.replace("csv", DELIMITERS[delimiter], 1)
            notes.see_columns(names)
            body = _CsvBody(names, delimiter)
            decimal_comma = delimiter != ","
        batch += complete
        batch_utf8 = batch_utf8 and utf8
        if small:
            if tail is None:
                continue
            split = body.split(batch, check_utf8=not batch_utf8)
            split.extend(body.finish(tail, settled()))
            _count(notes, limits, len(split))
            records = _csv_dicts(split, body, numeric, decimal_comma)
            if records:
                yield records
            return
        while len(batch) >= chunk_rows or (tail is not None and batch):
            split = body.split(batch[:chunk_rows], check_utf8=not batch_utf8, at_once=True)
            batch = batch[chunk_rows:]
            _count(notes, limits, len(split))
            if len(split):
                yield _csv_frame(split, body, numeric, decimal_comma)
        if not batch:
            batch_utf8 = True
        if tail is not None:
            split = body.finish(tail, settled())
            _count(notes, limits, len(split))
            if len(split):
                yield _csv_frame(split, body, numeric, decimal_comma)


def _cell(value: str, is_number: bool, decimal_comma: bool) -> str | None:
    value = value.strip()
    if not value:
        return None
    if is_number and decimal_comma:
        return value.replace(",", ".")
    return value


def _csv_dicts(
    split: _Split, body: _CsvBody, numeric: frozenset[str], decimal_comma: bool
) -> list[dict[str, Any]]:
    names = body.names
    numbers = [name in numeric for name in names]
    rows: list[tuple[int, list[str]]] = []
    plain = [i for i, line in enumerate(split.fast) if b'"' not in line]
    text = b"\n".join(split.fast[i] for i in plain).decode("utf-8")
    for i, decoded in zip(plain, text.split("\n") if plain else [], strict=True):
        rows.append((split.fast_rows[i], decoded.split(body.delimiter)))
    for i, line in enumerate(split.fast):
        if b'"' in line:
            rows.append((split.fast_rows[i], csv_fields(line, body.delimiter)))
    rows += split.slow
    records: list[dict[str, Any]] = []
    for row, fields in rows:
        record: dict[str, Any] = {
            name: _cell(value, number, decimal_comma)
            for name, value, number in zip(names, fields, numbers, strict=True)
        }
        record[ROW] = row
        records.append(record)
    records += split.problems
    records.sort(key=lambda r: r[ROW])
    return records


def _csv_frame(
    split: _Split, body: _CsvBody, numeric: frozenset[str], decimal_comma: bool
) -> pd.DataFrame:
    frames = []
    if split.fast_rows:
        data = split.fast_data()
        if decimal_comma:
            data = data.replace(b",", b".")
        # Text columns stay text ("007" is an id, not 7); reading columns are parsed as numbers
        # and fall back to text in a chunk holding "NaN" or "high", so the raw value is kept
        # for the quarantine instead of silently becoming null.
        frame = pd.read_csv(
            io.BytesIO(data),
            header=None,
            names=body.names,
            dtype={name: "str" for name in body.names if name not in numeric},
            sep=body.delimiter,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=True,
            skip_blank_lines=False,
            engine="c",
            encoding="utf-8",
        )
        if len(frame) != len(split.fast_rows):  # never seen; the careful path agrees
            careful = _Split(
                slow=[
                    (row, csv_fields(line, body.delimiter))
                    for row, line in zip(split.fast_rows, data.split(b"\n"), strict=True)
                ]
            )
            frame = pd.DataFrame.from_records(_csv_dicts(careful, body, numeric, decimal_comma))
        else:
            frame[ROW] = split.fast_rows
        frames.append(frame)
    extra = _Split(slow=split.slow, problems=split.problems)
    if len(extra):
        frames.append(pd.DataFrame.from_records(_csv_dicts(extra, body, numeric, decimal_comma)))
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if len(frames) > 1:
        frame = frame.sort_values(ROW, kind="stable", ignore_index=True)
    return frame


# -- JSON ------------------------------------------------------------------------------------


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once."""

    repeated: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.repeated = tuple(repeated)
    return obj


def _integer(text: str) -> int | str:
    # Python refuses integers of more than 4,300 digits (and takes long on fewer): a reading
    # never has more than a few, so a long one is kept as text and refused as not a number.
    if len(text) <= 40:
        return int(text)
    return f"{text[:40]}…({len(text)} digits)"


DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_int=_integer)
# A string (its closing quote captured: none when the text ends inside it) or a bracket.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*(")?|[\[\]{}]')
_SCALAR_END = re.compile(r"[,\]\s]")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _scalar(value: Any) -> Any:
    # Nested values are not readings; keep them as JSON text so the quarantine shows them.
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict | list):
        try:
            return json.dumps(value)[:SHOWN_TEXT]
        except (RecursionError, ValueError):
            return "(a nested JSON value too deep to show)"
    return value


def _record(obj: Any, row: int, what: str, text: bytes | str, mapping: dict) -> dict[str, Any]:
    """A parsed JSON value as a record, or a malformed-record problem."""
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
            type(obj), "number"
        )
        return problem(row, "malformed", f"{what} is a JSON {kind}, not an object", text)
    keys = tuple(obj)
    known = mapping.get(keys)
    if known is None:
        names = normalise_columns(list(keys))
        clashes = {n for n in names if names.count(n) > 1}
        known = mapping[keys] = (
            names,
            tuple(k for k, n in zip(keys, names, strict=True) if n in clashes),
        )
    names, clashing = known
    repeated = (*getattr(obj, "repeated", ()), *clashing)
    if repeated:
        fields = ", ".join(sorted({repr(k[:40]) for k in repeated}))
        return problem(
            row,
            "malformed",
            f"{what} gives field(s) {fields} more than once (names are compared ignoring "
            "case): which value is the reading is ambiguous",
            text,
        )
    record = {name: _scalar(value) for name, value in zip(names, obj.values(), strict=True)}
    record[ROW] = row
    return record


def _decode(text: str) -> Any:
    value, end = DECODER.raw_decode(text)
    if text[end:].strip():
        raise json.JSONDecodeError("extra data", text, end)
    return value


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to read (more than a reading ever needs)"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at character {exc.pos + 1})"
    return f"not valid JSON ({exc})"


class _Emitter:
    """Collects records into the chunks the parsers yield."""

    def __init__(self, small: bool, chunk_rows: int, limits: Limits, notes: ReadNotes):
        self.small = small
        self.chunk_rows = chunk_rows
        self.limits = limits
        self.notes = notes
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> pd.DataFrame | None:
        self.records.append(record)
        _count(self.notes, self.limits, 1)
        if PROBLEM not in record:
            self.notes.see_columns(k for k in record if k != ROW)
        if not self.small and len(self.records) >= self.chunk_rows:
            return self.flush()
        return None

    def flush(self) -> Any:
        records, self.records = self.records, []
        if self.small or not records:
            return records or None
        self.limits.check_time()
        return pd.DataFrame.from_records(records)


def _ndjson(
    blocks: Iterator[bytes],
    small: bool,
    chunk_rows: int,
    limits: Limits,
    notes: ReadNotes,
    settled: Callable[[], bool],
) -> Iterator[list[dict[str, Any]] | pd.DataFrame]:
    emit = _Emitter(small, chunk_rows, limits, notes)
    mapping: dict = {}
    row = 0
    whole: list[bytes] = []
    for complete, tail, _ in _lines(blocks, limits):
        items = [(line, False) for line in complete]
        if tail is not None and tail.strip():
            items.append((tail, True))
        for line, last in items:
            stripped = line.strip()
            if not stripped:
                continue
            row += 1
            if small:
                whole.append(line)
            if last and not settled():
                record = problem(row, "unterminated", _unterminated(False), stripped)
            else:
                try:
                    record = _record(
                        _decode(stripped.decode("utf-8")), row, f"line {row}", stripped, mapping
                    )
                except UnicodeDecodeError:
                    record = problem(row, "malformed", _not_utf8(stripped) or "not UTF-8", stripped)
                except (ValueError, RecursionError) as exc:
                    kind = "unterminated" if last else "malformed"
                    reason = _unterminated(True) if last else f"line {row} is {_json_reason(exc)}"
                    record = problem(row, kind, reason, stripped)
            if (chunk := emit.add(record)) is not None:
                yield chunk
    records = emit.flush()
    if small and records and all(PROBLEM in r for r in records) and len(whole) > 1:
        # Not one object per line: maybe one pretty-printed object.
        single = _single_object(b"\n".join(whole), mapping)
        if single is not None:
            notes.rows = 1
            notes.see_columns(k for k in single if k != ROW)
            yield [single]
            return
    if records is not None:
        yield records


def _single_object(data: bytes, mapping: dict) -> dict[str, Any] | None:
    try:
        value = _decode(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if "equipment_id" not in normalise_columns(list(value)):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if lists:
            raise FileRejected(
                f"the JSON is one object holding the readings under {lists[0]!r}; send a JSON "
                "array of readings, or one reading object per line"
            )
    return _record(value, 1, "the object", shown(data), mapping)


def _json_array(
    blocks: Iterator[bytes],
    small: bool,
    chunk_rows: int,
    limits: Limits,
    notes: ReadNotes,
    settled: Callable[[], bool],
) -> Iterator[list[dict[str, Any]] | pd.DataFrame]:
    """Elements of a top-level JSON array, decoded one at a time from a bounded buffer."""
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    emit = _Emitter(small, chunk_rows, limits, notes)
    mapping: dict = {}
    buf = ""
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        block = next(blocks, None)
        if block is None:
            buf = buf[pos:] + decoder.decode(b"", final=True)
            pos = 0
            eof = True
            return False
        buf = buf[pos:] + decoder.decode(block)
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
    if buf.startswith("\ufeff"):
        buf = buf[1:]
    skip_ws()
    pos += 1  # the sniffer saw '['
    row = 0
    expect_value = True
    while True:
        char = skip_ws()
        if char == "":
            rest = buf[pos:].strip()
            if rest:
                row += 1
                record = problem(row, "unterminated", _unterminated(settled()), rest)
                if (chunk := emit.add(record)) is not None:
                    yield chunk
            else:
                notes.warn(
                    "the JSON array is not closed (no ']' at the end); its elements were read"
                )
            break
        if char == "]":
            if expect_value and row:
                notes.warn("a ',' right before the JSON array's closing ']' (ignored)")
            pos += 1
            break
        if not expect_value:
            if char == ",":
                pos += 1
                expect_value = True
                continue
            notes.warn(f"element {row} of the JSON array is not followed by ',' (read anyway)")
        start = pos
        end: int | None  # None: the file ends inside this element
        while True:
            try:
                obj, end = DECODER.raw_decode(buf, pos)
                if end == len(buf) and not eof:
                    # A number at the end of the buffer may go on in the next block.
                    more = fill()
                    start = pos
                    if more:
                        continue
                    obj, end = DECODER.raw_decode(buf, pos)
                break
            except (ValueError, RecursionError) as exc:
                end = _value_end(buf, start)
                if end is None:
                    if len(buf) - start > MAX_ELEMENT:
                        raise FileRejected(
                            f"element {row + 1} of the JSON array is larger than "
                            f"{MAX_ELEMENT >> 20} MiB; this is not a batch of readings"
                        ) from exc
                    more = fill()
                    start = pos
                    if more:
                        continue
                    obj, end = exc, None
                else:
                    obj = exc
                break
        row += 1
        if end is None:  # the file ends inside this element
            record = problem(row, "unterminated", _unterminated(settled()), buf[start:])
            pos = len(buf)
        else:
            text = buf[start:end]
            if isinstance(obj, BaseException):
                record = problem(
                    row, "malformed", f"element {row} of the array is {_json_reason(obj)}", text
                )
            elif _SURROGATE.search(text):
                record = problem(
                    row, "malformed", "the element is not UTF-8 text; save the file as UTF-8", text
                )
            else:
                record = _record(obj, row, f"element {row} of the array", text, mapping)
            pos = end
        expect_value = False
        if (chunk := emit.add(record)) is not None:
            yield chunk
    extra = buf[pos:].strip() if pos <= len(buf) else ""
    while not extra and fill():
        extra = buf[pos:].strip()
    if extra:
        row += 1
        record = problem(row, "malformed", "content after the JSON array's closing ']'", extra)
        if (chunk := emit.add(record)) is not None:
            yield chunk
    if (chunk := emit.flush()) is not None:
        yield chunk


def _value_end(buf: str, start: int) -> int | None:
    """Where the JSON value at `start` ends judging by its brackets (it may still be invalid);
    None when `buf` ends first."""
    if start >= len(buf):
        return None
    if buf[start] == '"':
        match = _STRUCTURE.match(buf, start)
        return match.end() if match and match.group(1) is not None else None
    if buf[start] not in "[{":
        match = _SCALAR_END.search(buf, start)
        return match.start() if match else None
    depth = 0
    for match in _STRUCTURE.finditer(buf, start):
        token = match.group()
        if token[0] == '"':
            if match.group(1) is None:
                return None  # the text ends inside a string
            continue
        depth += 1 if token in "[{" else -1
        if depth == 0:
            return match.end()
    return None
