"""``decloud process gapfill``: targets from dates or a time grid, resume, usage errors."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from decloud.cli.main import cli
from decloud.cli.process_gapfill import gapfill, parse_step
from tests.processors.test_gapfill import STACK_T0, _stack_archive


def _report(output: str) -> list[str]:
    """The command's lines, one per target (the progress bars left out)."""
    return [line for line in output.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]


def test_parse_step() -> None:
    assert parse_step("10d") == timedelta(days=10)
    assert parse_step("10") == timedelta(days=10)
    assert parse_step("2w") == timedelta(weeks=2)
    for bad in ("0d", "ten", "10h", "-3"):
        with pytest.raises(click.BadParameter):
            parse_step(bad)


def test_time_grid_run_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    _stack_archive(tmp_path / "archive")
    start = STACK_T0.date()
    args = ["process", "gapfill", "--archive", str(tmp_path / "archive"), "--tile", "T33TVM",
            "--every", "10d",
            "--start", f"{start}", "--end", f"{start + timedelta(days=25)}",
            "--out", str(tmp_path / "out"), "--window-days", "12", "--block-size", "64",
            "--bands", "B04,B08"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = _report(result.stdout)
    assert [line.split()[0] for line in lines] == [
        f"{start + timedelta(days=d)}" for d in (0, 10, 20)]
    assert all(line.split()[1] == "done" for line in lines)
    written = sorted(p.name for p in (tmp_path / "out").glob("*_gapfill.tif"))
    assert written == [f"T33TVM_{start + timedelta(days=d):%Y%m%d}_gapfill.tif"
                       for d in (0, 10, 20)]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert [line.split()[1] for line in _report(again.stdout)] == ["complete"] * 3


def test_usage_errors(tmp_path: Path) -> None:
    base = ["--archive", str(tmp_path), "--tile", "T33TVM", "--out", str(tmp_path / "o")]
    both = CliRunner().invoke(gapfill, [*base, "--date", "2020-01-01", "--every", "10d"])
    assert both.exit_code == 2 and "not both" in both.output
    neither = CliRunner().invoke(gapfill, base)
    assert neither.exit_code == 2 and "--every with --start and --end" in neither.output
    missing = CliRunner().invoke(cli, ["process", "gapfill", *base, "--date", "2020-01-01"])
    assert missing.exit_code == 1 and "NoProductError" in missing.output
