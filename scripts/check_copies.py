"""Fail when a block of code is copied: the same run of lines in two places.

Python (the packages, tests, benches, scripts) and SQL (dbt models and macros, the query files)
are compared line by line after normalising what a copy would change or keep without meaning:
comments, blank lines, indentation and spacing; in SQL letter case too. A run of at least
`--min-lines` such lines found twice is a copy. Migrations are history, never edited: they are
left out. Runs of lines that say nothing alone (closing brackets, `else:`) still count inside a
run but never make one.

    python scripts/check_copies.py            # exit 1 and the copies, or exit 0
    python scripts/check_copies.py --min-lines 6
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_LINES = 8
LEFT_OUT = re.compile(r"(^|/)migrations/|^dbt_project/(target|dbt_packages)/")
# Lines that carry no content of their own: brackets, `else:`, `end`, `{%- endif %}`.
TRIVIAL = re.compile(
    r"^([\])},:;]+|else:|try:|finally:|pass|return|end|\{%-?\s*(end\w*|else)\s*-?%\}|\}\})$"
)
# One name or literal of a list (`equipment_id,`, `"severity" ,`): in Python, a list written out
# where it is used (an expected frame, a set of names) is a declaration, not copied logic. Not so
# in SQL: a model that lists again the columns of the model it selects from copies it (select
# `*` from it, or from one CTE).
LIST_ITEM = re.compile(r"^(\w+(\.\w+)?|'[^']*'|\"[^\"]*\") ?,$")
# A dbt model's import CTE (`tasks as (`, `select * from {{ ref('stg_tasks') }}`, `),`): the
# style every model follows, so two models of the same inputs open alike.
IMPORT_CTE = (
    re.compile(r"^(with )?\w+ as \($"),
    re.compile(r"^select \* from \{\{ (ref|source)\(.*\) \}\}$"),
    re.compile(r"^\),?$"),
)


@dataclass(frozen=True)
class Line:
    path: str
    number: int  # 1-based, in the file
    text: str  # normalised


def python_lines(path: str, source: str) -> list[Line]:
    """Each line's tokens without comments, docstrings and layout; import lines left out (the
    same imports at the top of two modules are no copy)."""
    lines: dict[int, list[str]] = defaultdict(list)
    previous = tokenize.NEWLINE
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for token in tokens:
        kind = token.type
        if kind in (tokenize.COMMENT, tokenize.NL):
            continue
        if kind in (tokenize.NEWLINE, tokenize.INDENT):
            previous = kind
            continue
        if kind in (tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if kind == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT):
            previous = tokenize.STRING  # a docstring (or a bare string statement)
            continue
        previous = kind
        lines[token.start[0]].append(token.string)
    result = []
    for number in sorted(lines):
        text = " ".join(lines[number])
        if text.startswith(("import ", "from ")) or LIST_ITEM.match(text):
            continue
        result.append(Line(path, number, text))
    return result


def sql_lines(path: str, source: str) -> list[Line]:
    """Each line lower-cased, without `--` comments and with spacing collapsed; import CTEs
    left out."""
    result = []
    for number, raw in enumerate(source.splitlines(), start=1):
        text = re.sub(r"\s+", " ", raw.split("--", 1)[0]).strip().lower()
        if text:
            result.append(Line(path, number, text))
    kept, at = [], 0
    while at < len(result):
        cte = result[at : at + len(IMPORT_CTE)]
        if len(cte) == len(IMPORT_CTE) and all(
            p.match(line.text) for p, line in zip(IMPORT_CTE, cte, strict=True)
        ):
            at += len(IMPORT_CTE)
        else:
            kept.append(result[at])
            at += 1
    return kept


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py", "*.sql"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return sorted(p for p in listed if not LEFT_OUT.search(p) and (ROOT / p).is_file())


@dataclass
class Copy:
    length: int
    places: list[tuple[str, int, int]]  # (path, first line, last line)
    sample: list[str]


def find_copies(files: dict[str, list[Line]], min_lines: int) -> list[Copy]:
    """Every maximal run of at least `min_lines` normalised lines that occurs more than once."""
    windows: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for path, lines in files.items():
        texts = [line.text for line in lines]
        for start in range(len(texts) - min_lines + 1):
            window = tuple(texts[start : start + min_lines])
            if not TRIVIAL.match(window[0]):
                windows[window].append((path, start))
    # Grow each repeated window while every place goes on alike, then keep the longest only.
    seen: set[tuple[str, int]] = set()
    copies = []
    for window, places in windows.items():
        if len(places) < 2 or all(place in seen for place in places):
            continue
        length = min_lines
        while True:
            nexts = {
                files[path][start + length].text if start + length < len(files[path]) else None
                for path, start in places
            }
            if len(nexts) != 1 or None in nexts:
                break
            length += 1
        for path, start in places:
            seen.update((path, start + k) for k in range(length - min_lines + 1))
        copies.append(
            Copy(
                length,
                [
                    (path, files[path][start].number, files[path][start + length - 1].number)
                    for path, start in places
                ],
                list(window[:3]),
            )
        )
    return sorted(copies, key=lambda c: -c.length)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-lines", type=int, default=MIN_LINES)
    parser.add_argument("paths", nargs="*", help="files to compare (default: every tracked one)")
    args = parser.parse_args(argv)
    files = {}
    for path in args.paths or tracked_files():
        source = (ROOT / path).read_text(encoding="utf-8")
        read = python_lines if path.endswith(".py") else sql_lines
        files[path] = read(path, source)
    copies = find_copies(files, args.min_lines)
    for copy in copies:
        print(f"{copy.length} lines copied:")
        for path, first, last in copy.places:
            print(f"  {path}:{first}-{last}")
        print("".join(f"    | {text}\n" for text in copy.sample), end="")
    if copies:
        print(
            f"{len(copies)} copied block(s) of {args.min_lines}+ lines: move the shared part "
            "into one function, macro or model and call it from each place"
        )
    return 1 if copies else 0


if __name__ == "__main__":
    sys.exit(main())
