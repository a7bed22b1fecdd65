"""The adversarial drop corpus: what real gateways and careless or hostile senders produce, each
file with the outcome a trustworthy ingest gives it.

Files are built from the catalog the test loads (its reading columns, required ones, valid
ranges), never from the simulator's sensors or id prefixes, so the corpus follows the catalog.
Each case gets minutes of its own, so the only conflicts and duplicates are the intended ones.
`build_corpus` returns the cases in the order they are dropped (oldest first): the re-sends come
after the file they repeat.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from emps.catalog import Catalog
from emps.ingest.columns import reading_channels

MAX_ROWS = 1000  # the file limits the corpus test runs with
MAX_BYTES = 512 * 1024


@dataclass(frozen=True)
class Expect:
    """A file's outcome: its ledger status and row counts, and a phrase its ledger error, one of
    its quarantined rows or one of its ledger warnings says."""

    status: str
    loaded: int = 0
    quarantined: int = 0
    conflict: int = 0
    duplicate: int = 0
    says: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: Expect
    why: str


class Readings:
    """Valid readings for the catalog: each reading column at the middle of its valid range."""

    def __init__(self, catalog: Catalog, base: datetime, equipment: list[str]):
        self.channels = reading_channels(catalog)
        self.names = [c.name for c in self.channels]
        self.required = [c.name for c in self.channels if c.required]
        self.optional = [c.name for c in self.channels if not c.required]
        self.base = base
        self.equipment = equipment

    def value(self, name: str, shift: float = 0.0) -> float:
        low, high = next(c.valid_range for c in self.channels if c.name == name)
        return round((low + high) / 2 + shift, 3)

    def row(self, minute: int, unit: int = 0, **overrides: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "equipment_id": self.equipment[unit],
            "timestamp": (self.base + timedelta(minutes=minute)).isoformat(),
        }
        row.update({name: self.value(name) for name in self.names})
        row.update(overrides)
        return row

    def csv(self, rows: list[dict[str, Any]], columns: list[str] | None = None, **kw: Any) -> bytes:
        columns = columns or list(rows[0])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator=kw.pop("lineterminator", "\n"), **kw)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        return out.getvalue().encode()


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def build_corpus(catalog: Catalog, base: datetime, equipment: list[str]) -> list[Case]:
    """Every case, in drop order (see the module docstring)."""
    r = Readings(catalog, base, equipment)
    first = r.names[0]
    cases: list[Case] = []
    slot = iter(range(0, 10_000, 10))

    def minutes() -> int:
        return next(slot)

    def add(name: str, data: bytes, expect: Expect, why: str) -> None:
        cases.append(Case(name, data, expect, why))

    m = minutes()
    plain = r.csv([r.row(m + i) for i in range(3)])
    add("plain.csv", plain, Expect("loaded", 3), "the reference format")

    m = minutes()
    rows = [r.row(m + i) for i in range(3)]
    text = r.csv(rows, lineterminator="\r\n").decode()
    header, body = text.split("\r\n", 1)
    header = header.upper().replace("TIMESTAMP", "ts")
    add(
        "windows-export.csv",
        b"\xef\xbb\xbf" + f"{header}\r\n{body}".encode(),
        Expect("loaded", 3),
        "a Windows gateway: byte order mark, CRLF, upper-case header, `ts` for timestamp",
    )

    m = minutes()
    rows = [{**r.row(m + i), "note": f'says "hi", row {i}\nsecond line'} for i in range(3)]
    add(
        "quoted.csv",
        r.csv(rows, quoting=csv.QUOTE_ALL),
        Expect("loaded", 3, says="unknown column(s) ignored: 'note'"),
        "every field quoted, quotes doubled, a line break inside a quoted field",
    )

    m = minutes()
    rows = [r.row(m + i) for i in range(3)]
    text = r.csv(rows, delimiter=";").decode()
    for name in r.names:
        for row in rows:
            text = text.replace(f";{row[name]}", f";{str(row[name]).replace('.', ',')}")
    add(
        "european.csv",
        text.encode(),
        Expect("loaded", 3),
        "a European locale: semicolons, decimal commas",
    )

    m = minutes()
    add(
        "tabs.tsv",
        r.csv([r.row(m + i) for i in range(2)], delimiter="\t"),
        Expect("loaded", 2),
        "tab-separated export",
    )
    m = minutes()
    add(
        "pipes.txt",
        r.csv([r.row(m + i) for i in range(2)], delimiter="|"),
        Expect("loaded", 2),
        "pipe-separated export",
    )

    m = minutes()
    add(
        "array.json",
        json.dumps([r.row(m + i) for i in range(3)]).encode(),
        Expect("loaded", 3),
        "a JSON array",
    )

    m = minutes()
    lines = _ndjson([r.row(m + i) for i in range(3)]).replace(b"\n", b"\r\n\r\n")
    add("lines.ndjson", lines, Expect("loaded", 3), "NDJSON with CRLF and blank lines")

    m = minutes()
    add(
        "plain.csv.gz",
        gzip.compress(r.csv([r.row(m + i) for i in range(3)])),
        Expect("loaded", 3),
        "gzip'd CSV",
    )
    m = minutes()
    rows = [r.row(m + i) for i in range(4)]
    members = gzip.compress(r.csv(rows[:2])) + gzip.compress(r.csv(rows[2:]).split(b"\n", 1)[1])
    add(
        "appended.csv.gz",
        members,
        Expect("loaded", 4),
        "a gateway appending gzip members to one file",
    )
    m = minutes()
    add(
        "lines.ndjson.gz",
        gzip.compress(_ndjson([r.row(m + i) for i in range(2)])),
        Expect("loaded", 2),
        "gzip'd NDJSON",
    )

    m = minutes()
    at = base + timedelta(minutes=m)
    epoch_s = at.timestamp()
    stamps = [
        str(int(epoch_s)),
        f"{epoch_s + 60:.3f}",
        str(int((epoch_s + 120) * 1000)),
        str(int((epoch_s + 180) * 1_000_000)),
        str(int((epoch_s + 240) * 1_000_000_000)),
    ]
    rows = [r.row(m + i, timestamp=stamp) for i, stamp in enumerate(stamps)]
    add(
        "epochs.csv",
        r.csv(rows),
        Expect("loaded", 5),
        "epochs in seconds (whole and fractional), milliseconds, microseconds, nanoseconds",
    )

    m = minutes()
    at = base + timedelta(minutes=m)
    go = [
        r.row(m, timestamp=at.strftime("%Y-%m-%dT%H:%M:%S.250123456Z")),
        r.row(
            m + 1, timestamp=(at + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.2501234+00:00")
        ),
    ]
    add(
        "nanoseconds.json",
        json.dumps(go).encode(),
        Expect("loaded", 2),
        "Go's RFC 3339 nano and .NET's seven fractional digits",
    )

    m = minutes()
    at = base + timedelta(minutes=m)
    rows = [r.row(m, timestamp=f"{at.timestamp():.6f}"), r.row(m + 1, timestamp="10000000000.5")]
    add(
        "epoch-past-2262.csv",
        r.csv(rows),
        Expect("partial", 1, 1, says="in the future"),
        "a fractional epoch next to one past the year 2262",
    )

    m = minutes()
    rows = [r.row(m), r.row(m + 1, timestamp=(base + timedelta(minutes=m + 1)).date().isoformat())]
    add(
        "date-only.csv",
        r.csv(rows),
        Expect("partial", 1, 1, says="is a date without a time of day"),
        "a date where a time belongs",
    )
    m = minutes()
    rows = [
        r.row(m),
        r.row(m + 1, timestamp=(base + timedelta(minutes=m + 1)).date().isoformat() + "-04"),
    ]
    add(
        "date-with-dash.csv",
        r.csv(rows),
        Expect("partial", 1, 1, says="is a date without a time of day"),
        "a date whose tail looks like a -04 offset",
    )

    m = minutes()
    element = json.dumps(r.row(m + 1, **{first: "HUGE"})).replace('"HUGE"', "7" * 5000)
    add(
        "huge-integer.json",
        f"[{json.dumps(r.row(m))}, {element}]".encode(),
        Expect("partial", 1, 1, says="is not a number"),
        "an integer of 5,000 digits",
    )

    m = minutes()
    deep = json.dumps(r.row(m + 1))[:-1] + ', "extra": ' + "[" * 1000 + "]" * 1000 + "}"
    add(
        "deep.json",
        f"[{json.dumps(r.row(m))}, {deep}]".encode(),
        Expect("partial", 1, 1, says="nested too deeply"),
        "JSON nested a thousand levels deep",
    )
    m = minutes()
    add(
        "deep.ndjson",
        _ndjson([r.row(m)]) + deep.encode() + b"\n",
        Expect("partial", 1, 1, says="nested too deeply"),
        "an NDJSON line nested a thousand levels deep",
    )

    m = minutes()
    rows = [r.row(m), r.row(m + 1, equipment_id=equipment[0] + "\x00x")]
    add(
        "nul-in-value.csv",
        r.csv(rows),
        Expect("partial", 1, 1, says="is not a valid id"),
        "a NUL character in a value of a row that gets quarantined",
    )

    m = minutes()
    data = r.csv([r.row(m + i) for i in range(3)])
    last = r.csv([r.row(m + 3)]).split(b"\n")[1]
    add(
        "cut-mid-row.csv",
        data + last[: len(last) // 2],
        Expect("partial", 3, 1, says="unterminated"),
        "a file cut mid-row (device still writing, or a truncated upload)",
    )
    m = minutes()
    add(
        "no-final-newline.csv",
        r.csv([r.row(m + i) for i in range(3)]).rstrip(b"\n"),
        Expect("loaded", 3),
        "a complete last line without its line end, the file settled",
    )

    m = minutes()
    rows = r.csv([r.row(m + i) for i in range(4)]).decode().split("\n")
    rows[2] += ",surplus"
    add(
        "extra-field.csv",
        "\n".join(rows).encode(),
        Expect("partial", 3, 1, says="fields, the header"),
        "one row with an extra field",
    )
    m = minutes()
    rows = r.csv([r.row(m + i) for i in range(4)]).decode().split("\n")
    rows[2] = rows[2].rsplit(",", 2)[0]
    add(
        "short-row.csv",
        "\n".join(rows).encode(),
        Expect("partial", 3, 1, says="of the header's"),
        "one row with fewer fields than the header",
    )

    if r.optional:
        m = minutes()
        name = r.optional[0]
        misspelt = name[0] + name[2:] if len(name) > 2 else name + "x"
        rows = [{**r.row(m + i), misspelt: r.value(name)} for i in range(2)]
        for row in rows:
            del row[name]
        add(
            "misspelt-column.csv",
            r.csv(rows),
            Expect("loaded", 2, says=f"did you mean {name!r}"),
            "a misspelt optional column",
        )

    m = minutes()
    add(
        "booleans.json",
        json.dumps([r.row(m), r.row(m + 1, **{first: True})]).encode(),
        Expect("partial", 1, 1, says="refused to read JSON true/false"),
        "a JSON boolean where a number belongs",
    )

    m = minutes()
    twice = json.dumps(r.row(m + 1))[:-1] + f', "{first.upper()}": {r.value(first, 1)}' + "}"
    add(
        "same-key-twice.json",
        f"[{json.dumps(r.row(m))}, {twice}]".encode(),
        Expect("partial", 1, 1, says="more than once"),
        "two keys differing only in case",
    )

    m = minutes()
    rows = [
        r.row(m),
        r.row(m + 1, timestamp=(base + timedelta(minutes=m + 1)).replace(tzinfo=None).isoformat()),
        r.row(m + 2, timestamp=(datetime.now(base.tzinfo) + timedelta(days=3)).isoformat()),
        r.row(m + 3, equipment_id="not-registered-9"),
        r.row(m + 4, **{first: "high"}),
    ]
    add(
        "bad-values.ndjson",
        _ndjson(rows),
        Expect("partial", 1, 4, says="has no UTC offset"),
        "no offset, far future, unknown equipment, text for a number",
    )

    m = minutes()
    good = r.csv([r.row(m)]).decode()
    text = good + "caf\xe9," + good.split("\n")[1].split(",", 1)[1] + "\n"
    add(
        "latin1-row.csv",
        text.encode("latin-1"),
        Expect("partial", 1, 1, says="not UTF-8"),
        "one row saved as Latin-1",
    )

    m = minutes()
    body = json.dumps([r.row(m + i) for i in range(2)])
    add(
        "trailing-comma.json",
        (body[:-1] + ",]").encode(),
        Expect("loaded", 2, says="closing ']'"),
        "a trailing comma before ']'",
    )
    m = minutes()
    add(
        "unclosed.json",
        json.dumps([r.row(m + i) for i in range(2)]).encode()[:-1],
        Expect("loaded", 2, says="not closed"),
        "a JSON array missing its ']'",
    )
    m = minutes()
    body = json.dumps([r.row(m + i) for i in range(3)])
    add(
        "cut.json",
        body[: len(body) - 30].encode(),
        Expect("partial", 2, 1, says="unterminated"),
        "a JSON array cut inside an element",
    )
    m = minutes()
    add(
        "pretty.json",
        json.dumps(r.row(m), indent=2).encode(),
        Expect("loaded", 1),
        "one reading as a pretty-printed object",
    )
    m = minutes()
    add(
        "mixed.ndjson",
        _ndjson([r.row(m)]) + b"[1, 2]\n" + b'{"equipment_id": \n' + _ndjson([r.row(m + 1)]),
        Expect("partial", 2, 2, says="not an object"),
        "NDJSON with an array line and a broken line",
    )

    m = minutes()
    add(
        "site-7/unit-a/drop.csv",
        r.csv([r.row(m + i) for i in range(2)]),
        Expect("loaded", 2),
        "a folder per site and device under incoming/",
    )
    m = minutes()
    add(
        "evil |*x*| [link](http:e.x) \x1b[31m <b>.csv",
        r.csv([r.row(m)]),
        Expect("loaded", 1),
        "a name with Markdown, HTML and a terminal escape",
    )

    # Whole files that cannot be read.
    add("empty.csv", b"", Expect("quarantined", says="empty"), "an empty file")
    add(
        "header-only.csv",
        r.csv([r.row(0)]).split(b"\n")[0] + b"\n",
        Expect("quarantined", says="no readings"),
        "a header and nothing else",
    )
    add(
        "utf16.csv",
        r.csv([r.row(minutes())]).decode().encode("utf-16"),
        Expect("quarantined", says="UTF-16"),
        "Excel's 'Unicode text'",
    )
    gz = gzip.compress(r.csv([r.row(minutes() + i) for i in range(50)]))
    add(
        "cut.csv.gz",
        gz[: len(gz) // 2],
        Expect("quarantined", says="gzip data is corrupt or cut short"),
        "a gzip upload cut short",
    )
    add(
        "wrapped.json",
        json.dumps({"readings": [r.row(minutes())]}, indent=1).encode(),
        Expect("quarantined", says="holding the readings under 'readings'"),
        "readings wrapped in an object",
    )
    add(
        "numbers.json",
        b"[1, 2, 3]",
        Expect("quarantined", says="not an object"),
        "a JSON array of numbers",
    )
    add(
        "no-key-columns.csv",
        f"device:time:{first}\nA:1:2\n".encode(),
        Expect("quarantined", says="required column(s) equipment_id, timestamp"),
        "a delimiter ingest does not read",
    )
    row = r.csv([r.row(minutes())]).split(b"\n")[1] + b"\n"
    add(
        "bomb.csv.gz",
        gzip.compress(r.csv([r.row(0)]).split(b"\n")[0] + b"\n" + row * (MAX_ROWS * 3)),
        Expect("quarantined", says="EMPS_INGEST_MAX_FILE_"),
        "a small gzip that expands past the file limits",
    )

    wide = [{**r.row(minutes()), "padding": "p" * 1000} for _ in range(1)]
    add(
        "bytes-bomb.csv.gz",
        gzip.compress(r.csv(wide) + r.csv(wide).split(b"\n", 1)[1] * (MAX_BYTES // 900)),
        Expect("quarantined", says="EMPS_INGEST_MAX_FILE_BYTES"),
        "a small gzip that expands past the byte limit",
    )

    # Re-sends, dropped after the file they repeat.
    add("plain-again.csv", plain, Expect("duplicate", says="same content"), "the same bytes again")
    m = minutes()
    resent = r.csv([r.row(i) for i in range(3)] + [r.row(m)])
    add(
        "resend-plus-one.csv",
        resent,
        Expect("loaded", 1, duplicate=3),
        "the same readings in another file, plus a new one",
    )
    changed = r.csv([r.row(0, **{first: r.value(first, 1.5)}), r.row(1)])
    add(
        "resend-changed.csv",
        changed,
        Expect("conflict", 0, 0, conflict=1, duplicate=1, says="already has a different reading"),
        "a stored reading re-sent with another value (a correction, or a forgery)",
    )
    return cases
