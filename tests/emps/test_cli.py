"""The `emps` command line, whose commands are imported when looked up: help still lists every
command with its help, a typo still gets the command meant."""

from __future__ import annotations

import re

from typer.main import get_command
from typer.testing import CliRunner

from emps.cli import COMMANDS, app


def test_help_lists_every_command_with_its_help():
    """`emps --help` lists every command, in the order of emps.cli.COMMANDS, each beside the
    start of its own help; no module defines a command that list leaves out (unreachable)."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^│ (\S+) +(\S.*?) *│$", result.output, flags=re.MULTILINE)
    listed = [(name, text) for name, text in listed if not name.startswith("-")]
    assert [name for name, _ in listed] == list(COMMANDS)

    group = get_command(app)
    for name, text in listed:
        own_help = " ".join((group.commands[name].help or "").split())
        assert own_help and own_help.startswith(text[:40]), f"{name}: {text!r} vs {own_help!r}"
    assert list(group.commands) == list(COMMANDS), "a command missing from emps.cli.COMMANDS"


def test_a_misspelt_command_is_answered_with_the_one_meant():
    """`emps predcit` fails naming `predict`, as it did before commands were looked up lazily."""
    result = CliRunner().invoke(app, ["predcit", "EQ-0001"])
    assert result.exit_code == 2
    assert "Did you mean 'predict'?" in result.output
