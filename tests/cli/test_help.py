"""Every command documents itself: ``--help`` of each group and subcommand.

The command tree is walked from ``decloud.cli.main:cli``, so commands added later
are checked without touching this test.
"""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from decloud.cli.main import cli


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                          click.Command]]:
    """Every command under ``command`` (itself included) with its argument path."""
    found = [(path, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1] if path else "decloud")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found += walk(sub, (*path, name))
    return found


COMMANDS = walk(cli)


def words(text: str) -> str:
    """Text with its whitespace collapsed (help output is rewrapped)."""
    return " ".join(text.split())


def description(command: click.Command) -> str:
    """The first paragraph of the command's docstring, as click shows it."""
    doc = (command.help or "").split("\f")[0]
    return words(re.split(r"\n\s*\n", doc.strip())[0])


def test_the_tree_is_walked() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    # A few known commands at each level: the walk reaches groups and their commands.
    assert {"", "inventory", "index", "index build", "layout", "dataset create"} <= paths
    assert len(paths) > 15


@pytest.mark.parametrize(("path", "command"), COMMANDS,
                         ids=[" ".join(p) or "decloud" for p, _ in COMMANDS])
def test_help_of_every_command(path: tuple[str, ...], command: click.Command) -> None:
    assert command.help and command.help.strip(), f"{path}: no docstring"
    text = description(command)
    assert len(text) > 15, f"{path}: a description says what the command does"
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="decloud")
    assert result.exit_code == 0, result.output
    usage = result.output.splitlines()[0]
    assert usage.startswith(f"Usage: {' '.join(('decloud', *path))} "), usage
    assert text in words(result.output), f"{path}: description missing from --help"
    # "--help" alone: click caches a command's help option, and other tests invoke
    # subgroups as the root command, without the "-h" alias that `decloud` adds.
    assert re.search(r"^Options:$(.|\n)*--help\b", result.output, re.MULTILINE)
