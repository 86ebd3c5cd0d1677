"""``decloud process series`` and ``monthly``: job files, resume, refusals, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from decloud.cli.main import cli
from tests.conftest import ARCHIVE

REPO = Path(__file__).resolve().parents[2]


def _series(tmp_path: Path, *extra: str) -> list[str]:
    return ["process", "series", "--job", str(REPO / "pipelines" / "series-belgium-gapfill.yaml"),
            "--archive", str(ARCHIVE), "--out", str(tmp_path / "out"), *extra]


def test_series_job_file_run_resume_and_refusal(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    runner = CliRunner()
    # The job's dates, overridden on the command line: two dates instead of twelve.
    result = runner.invoke(cli, _series(tmp_path, "--end", "2023-04-05"))
    assert result.exit_code == 0, result.output
    assert "2 dates: 2 done, 0 already complete, 0 failed" in result.output
    settings = json.loads((tmp_path / "out" / "series.json").read_text())
    assert settings["method"] == {"method": "gapfill", "window_days": 15.0, "buffer": 2,
                                  "bands": ["B04", "B08"], "keep_clear": True}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [d["label"][:10] for d in summary["dates"]] == ["2023-04-02", "2023-04-05"]

    result = runner.invoke(cli, _series(tmp_path, "--end", "2023-04-07"))
    assert result.exit_code == 0, result.output
    assert "3 dates: 1 done, 2 already complete, 0 failed" in result.output

    result = runner.invoke(cli, _series(tmp_path, "--buffer", "4"))
    assert result.exit_code != 0
    assert "method.buffer" in result.output and "2 in the folder, 4 now" in result.output


def test_job_file_errors_name_the_key(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("tile: T31UFS\nwindow_dayz: 3\n")
    result = CliRunner().invoke(cli, ["process", "series", "--job", str(job)])
    assert result.exit_code == 2 and "unknown option 'window_dayz'" in result.output
    job.write_text("- a list\n")
    result = CliRunner().invoke(cli, ["process", "monthly", "--job", str(job)])
    assert result.exit_code == 2 and "mapping of options" in result.output


def test_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["process", "series", "--archive", str(ARCHIVE), "--tile",
                                 "T31UFS", "--start", "2023-04-10", "--end", "2023-04-01",
                                 "--method", "gapfill", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "before --start" in result.output
    result = runner.invoke(cli, ["process", "monthly", "--archive", str(ARCHIVE), "--tile",
                                 "T31UFS", "--year", "2023", "--months", "4-13", "--method",
                                 "gapfill", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "months are 1 to 12" in result.output
    result = runner.invoke(cli, ["process", "monthly", "--archive", str(ARCHIVE), "--tile",
                                 "T31UFS", "--year", "2023", "--method", "nowhere.keras",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and "neither 'gapfill' nor a model file" in result.output


def test_monthly_job_file(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    result = CliRunner().invoke(cli, [
        "process", "monthly", "--job", str(REPO / "pipelines" / "monthly-belgium-gapfill.yaml"),
        "--archive", str(ARCHIVE), "--out", str(tmp_path / "out"), "--months", "4,5"])
    assert result.exit_code == 0, result.output
    assert "2 months: 2 done" in result.output
    assert (tmp_path / "out" / "T31UFS_202304_monthly_gapfill.tif").is_file()
    assert (tmp_path / "out" / "T31UFS_202305_monthly_gapfill_quicklook.png").is_file()
