"""The README stays an orientation page a newcomer can trust: its layout tree names every module,
its links into docs/ land on real pages and headings, and no page or comment sends the reader to
an issue number they cannot follow."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from emps.settings import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
CODE_ROOTS = ("src/emps/",)
# The design's folders: flows/, ml/ and streamlit_app/ are pointers into src/emps/ now.
FOLDERS = (
    "flows/",
    "ml/",
    "streamlit_app/",
    "dbt_project/",
    "expectations/",
    "infra/",
    "bench/",
    "tests/",
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ISSUE_NUMBER = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
# Every text file a reader opens, migrations included (their checksums ignore comments).
TEXT_FILES = (".py", ".md", ".sql", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".sh", ".txt")
TEXT_NAMES = ("Makefile", "Dockerfile", ".env.example", ".sqlfluff")


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    return listing.stdout.splitlines()


def layout_entries() -> list[str]:
    """The paths the README's layout tree names, folders ending in '/'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1]
    entries: list[str] = []
    parents: list[str] = []
    for number, line in enumerate(block.splitlines()[1:], start=1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent // 2 <= len(parents), (
            f"README layout line {number} is not indented by two spaces under a folder: {line!r}"
        )
        parents = parents[: indent // 2]
        name = line.split()[0]
        path = "".join(parents) + name
        entries.append(path)
        if name.endswith("/"):
            parents.append(name)
    return entries


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {slug(heading) for heading in headings}


def broken_links(page: Path, only_docs: bool) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if only_docs and not resolved.is_relative_to(DOCS):
            continue
        if not resolved.is_file():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_the_layout_tree_names_every_module(tracked):
    """Every tracked module of the package (src/emps/) has its line in the tree."""
    named = set(layout_entries())
    missing = [
        path
        for path in tracked
        if path.startswith(CODE_ROOTS)
        and path.endswith(".py")
        and path not in named
        and not (path.endswith("/__init__.py") and path.removesuffix("__init__.py") in named)
    ]
    assert not missing, f"modules missing from the README's layout tree: {missing}"


def test_the_layout_tree_names_only_what_exists_and_every_top_folder(tracked):
    """No line names a module that is gone, and the project's other folders are there."""
    entries = layout_entries()
    gone = [path for path in entries if path.endswith(".py") and path not in tracked]
    assert not gone, f"the README's layout tree names modules that do not exist: {gone}"
    absent = [folder for folder in FOLDERS if folder not in entries]
    assert not absent, f"folders missing from the README's layout tree: {absent}"


def test_links_into_docs_resolve():
    """README's links into docs/, and the docs pages' links, reach a real file and heading."""
    broken = broken_links(README, only_docs=True)
    broken += broken_links(PROJECT_ROOT / "SECURITY.md", only_docs=True)
    for page in sorted(DOCS.glob("*.md")):
        broken += broken_links(page, only_docs=False)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_starts_with_the_two_commands():
    """A newcomer meets `make up` and `make test` before anything else."""
    sections = re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert sections[0] == "The two commands"
    first = README.read_text(encoding="utf-8").split("\n## ", 2)[1]
    assert "make up" in first and "make test" in first


def test_no_page_or_comment_points_to_an_issue_number(tracked):
    """Code, docs and configuration say what they mean instead of citing an issue number."""
    found = []
    for path in tracked:
        if not path.endswith(TEXT_FILES) and path.rsplit("/", 1)[-1] not in TEXT_NAMES:
            continue
        text = (PROJECT_ROOT / path).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            if ISSUE_NUMBER.search(line):
                found.append(f"{path}:{number}: {line.strip()}")
    assert not found, "references to issue numbers:\n" + "\n".join(found)
