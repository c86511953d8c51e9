"""The README cannot drift: its generated parts are current and every command is in it."""

from __future__ import annotations

import click
from cogapp import Cog

from bulk._cli import cli
from tests.sitekit import ROOT

README = ROOT / "README.md"


def test_readme_generated_parts_are_current() -> None:
    cog = Cog()
    assert cog.main(["cog", "--check", str(README)]) == 0, "run: .venv/bin/cog -r README.md"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
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
