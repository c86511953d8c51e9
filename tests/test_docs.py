"""The README cannot drift: its generated parts are current and every command is in it."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import click
from cogapp import Cog

from bulk._cli import COMMANDS, cli
from bulk._cli._common import load_command
from tests.sitekit import ROOT

README = ROOT / "README.md"


def test_readme_generated_parts_are_current() -> None:
    cog = Cog()
    assert cog.main(["cog", "--check", str(README)]) == 0, "run: .venv/bin/cog -r README.md"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the top level loads its commands lazily
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


def test_every_command_is_documented() -> None:
    text = README.read_text()
    for path in _commands(cli):
        assert f"### bulk {' '.join(path)}\n" in text, path


def test_two_setup_commands() -> None:
    text = README.read_text()
    assert "./scripts/bulk archive example.com -o example.zip" in text
    assert "./scripts/test" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_the_command_table_matches_the_commands() -> None:
    # 'bulk --help' lists the commands from COMMANDS without importing them: the table
    # must name each command's module and carry the first paragraph of its own help.
    for name in COMMANDS:
        load_command(name)
    assert set(cli.commands) == set(COMMANDS)
    for name, (module, text) in COMMANDS.items():
        command = cli.commands[name]
        assert command.callback is not None and command.callback.__module__ == f"bulk._cli.{module}"
        first = inspect.cleandoc(command.help or "").split("\n\n")[0]
        assert " ".join(first.split()) == text, name


def test_help_and_version_import_no_command_module() -> None:
    code = (
        "import sys\n"
        "from bulk._cli import COMMANDS, main\n"
        "from bulk._cli._common import load_command\n"
        "if sys.argv[2] == 'eager':\n"
        "    for name in COMMANDS: load_command(name)\n"
        "code = main([sys.argv[1]])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('bulk._cli._') "
        "and m != 'bulk._cli._common')\n"
        "print('LOADED', loaded, code)\n"
    )

    def run(flag: str, mode: str) -> tuple[str, str]:
        out = subprocess.run(
            [sys.executable, "-c", code, flag, mode],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "100"},
            check=True,
        ).stdout
        shown, _, loaded = out.partition("LOADED ")
        return shown, loaded.strip()

    for flag in ("--help", "--version"):
        assert run(flag, "lazy")[1] == "[] 0", flag
    lazy, _ = run("--help", "lazy")
    eager, loaded = run("--help", "eager")
    assert loaded.count("bulk._cli._") == len(set(m for m, _ in COMMANDS.values()))
    assert "Commands:" in lazy and lazy == eager
