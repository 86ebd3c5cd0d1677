"""The commands over an archive with one bad product: skip, list as failed, go on.

Without ``--strict`` the command exits 0 and lists the product as failed with the file
and the reason; with ``--strict`` it exits 1 with one line naming the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result

from decloud.cli.main import cli
from tests.conftest import S1_STACK, S1_VH, S1_VV, SAFE_PB0205, SAFE_PB0400
from tests.reliability.conftest import edit_text, truncate


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def small_archive(tmp_path: Path) -> Path:
    """Two SAFE products and two S1 acquisitions, copied to break."""
    root = tmp_path / "archive"
    for src, sub in ((SAFE_PB0400, "S2/T29UPU"), (SAFE_PB0205, "S2/T33UUP")):
        shutil.copytree(src, root / sub / src.name)
    for src, sub in ((S1_VV, "S1/T29UPU"), (S1_VH, "S1/T29UPU"), (S1_STACK, "S1/T33UUP")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / sub / src.name)
    return root


def _zero_quantification(root: Path) -> Path:
    mtd = root / "S2" / "T29UPU" / SAFE_PB0400.name / "MTD_MSIL2A.xml"
    edit_text(mtd, 'unit="none">10000<', 'unit="none">0<')
    return mtd


def _failed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("failed ")]


def test_inventory_lists_the_bad_product_and_goes_on(small_archive: Path) -> None:
    mtd = _zero_quantification(small_archive)
    result = run("inventory", "--archive", str(small_archive))
    assert result.exit_code == 0, result.output
    assert "2 S1 image(s)" in result.output and "1 S2 product(s)" in result.output
    assert "1 failed" in result.output
    (line,) = _failed_lines(result.output)
    assert str(mtd) in line and "BOA_QUANTIFICATION_VALUE" in line
    report = json.loads(run("inventory", "--archive", str(small_archive), "--json").output)
    assert [p["path"] for p in report["problems"]] == [str(mtd.parent)]
    assert [r["name"] for r in report["products"] if r["sensor"] == "S2"] == [SAFE_PB0205.name]


def test_inventory_strict_exits_1_with_one_line(small_archive: Path) -> None:
    mtd = _zero_quantification(small_archive)
    result = run("inventory", "--archive", str(small_archive), "--strict")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(mtd) in errors[0] and "is 0" in errors[0]


def test_inventory_strict_checks_every_file(small_archive: Path) -> None:
    band = next((small_archive / "S2" / "T33UUP").rglob("*_B12_20m.jp2"))
    truncate(band)
    lenient = run("inventory", "--archive", str(small_archive))
    assert lenient.exit_code == 0 and "0 failed" in lenient.output  # B12 is not read there
    strict = run("inventory", "--archive", str(small_archive), "--strict")
    assert strict.exit_code == 1
    (error,) = [line for line in strict.output.splitlines() if line.startswith("Error:")]
    assert str(band) in error and "truncated" in error


def test_info_checks_every_file(small_archive: Path) -> None:
    safe = small_archive / "S2" / "T33UUP" / SAFE_PB0205.name
    band = next(safe.rglob("*_B05_20m.jp2"))
    truncate(band)
    result = run("info", str(safe))
    assert result.exit_code == 1
    assert "CorruptRasterError" in result.output and str(band) in result.output
    band.unlink()
    result = run("info", str(safe))
    assert result.exit_code == 1
    assert "MissingBandError" in result.output and band.name in result.output


def test_info_reports_l2a_cover_at_20m() -> None:
    result = run("info", str(SAFE_PB0400))
    assert result.exit_code == 0, result.output
    cover = json.loads(result.output)["cover"]
    # Reference: the 20 m SCL counted directly (60 m would give 25.5 % cloud, 10.1 % shadow).
    with rasterio.open(next(SAFE_PB0400.rglob("*_SCL_20m.jp2"))) as src:
        scl = src.read(1)
    valid = ~np.isin(scl, [0, 1])
    assert cover["cloud"] == pytest.approx(np.isin(scl, [8, 9, 10])[valid].mean(), abs=1e-12)
    assert cover["shadow"] == pytest.approx((scl == 3)[valid].mean(), abs=1e-12)
    assert cover["nodata"] == pytest.approx((~valid).mean(), abs=1e-12)


def test_index_build_counts_an_unreadable_s1_as_failed(small_archive: Path,
                                                      tmp_path: Path) -> None:
    vh = small_archive / "S1" / "T29UPU" / S1_VH.name
    truncate(vh)
    result = run("index", "build", "--archive", str(small_archive), "--catalog",
                 str(tmp_path / "catalog"))
    assert result.exit_code == 0, result.output
    assert "added 3 product(s)" in result.output and "1 failed" in result.output
    (line,) = _failed_lines(result.output)
    assert str(vh) in line
    strict = run("index", "build", "--archive", str(small_archive), "--catalog",
                 str(tmp_path / "catalog2"), "--strict")
    assert strict.exit_code == 1
    (error,) = [line for line in strict.output.splitlines() if line.startswith("Error:")]
    assert str(vh) in error


def test_index_build_skips_a_truncated_band(small_archive: Path, tmp_path: Path) -> None:
    band = next((small_archive / "S2" / "T29UPU").rglob("*_B8A_20m.jp2"))
    truncate(band)
    result = run("index", "build", "--archive", str(small_archive), "--catalog",
                 str(tmp_path / "catalog"))
    assert result.exit_code == 0, result.output
    assert "1 failed" in result.output and "catalog holds 1 S2" in result.output
    (line,) = _failed_lines(result.output)
    assert str(band) in line
