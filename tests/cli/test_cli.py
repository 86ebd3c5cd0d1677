"""The command line, and every bad-input case: message, non-zero exit, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from decloud import __version__
from decloud.cli.main import cli
from tests.conftest import ARCHIVE, THEIA, file_identity, leftovers

STACK_ARGS = ["stack", "--tile", "T33TVM", "--date", "2015-09-09"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["inventory", "info", "stack", "quicklook"])
def test_help(command: str) -> None:
    code, out = run(command, "--help")
    assert code == 0 and "Usage:" in out


def test_version_and_listing() -> None:
    code, out = run("--version")
    assert code == 0 and __version__ in out
    code, out = run("--help")
    assert all(c in out for c in ("inventory", "info", "stack", "quicklook"))


def test_inventory_json() -> None:
    code, out = run("inventory", "--archive", str(ARCHIVE), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["tiles"] == ["T29UPU", "T31UFS", "T33TVM", "T33UUP"]
    slovenia = [r for r in report["products"] if r["tile"] == "T33TVM" and r["sensor"] == "S2"]
    assert [round(r["cloud"]) for r in slovenia] == [0, 1, 1, 0, 0]
    assert report["problems"] == []


def test_info_and_stack_and_quicklook(tmp_path: Path) -> None:
    code, out = run("info", str(THEIA))
    assert code == 0 and json.loads(out)["tile"] == "T33TVM"
    code, out = run(*STACK_ARGS, "--archive", str(ARCHIVE), "--out", str(tmp_path))
    assert code == 0, out
    s2 = tmp_path / "T33TVM_20150909" / "s2.tif"
    code, out = run("quicklook", str(s2), str(tmp_path / "q.png"), "--size", "50")
    assert code == 0 and (tmp_path / "q.png").exists()
    code, out = run("quicklook", str(s2), str(tmp_path / "q1.png"), "--kind", "s1")
    assert code != 0 and "VV" in out and not (tmp_path / "q1.png").exists()


# Bad inputs: one clear message naming the file and what is wrong, exit 1, no output.


def test_not_the_product_its_name_says(archive_copy: Path, tmp_path: Path) -> None:
    product = archive_copy / "S2" / "T33TVM" / THEIA.name
    nested = product.with_name(THEIA.name + "_tmp")
    product.rename(nested)
    product.mkdir()
    nested.rename(product / THEIA.name)  # one folder level too many
    out_dir = tmp_path / "out"
    code, out = run(*STACK_ARGS, "--archive", str(archive_copy), "--out", str(out_dir))
    assert code == 1
    assert THEIA.name in out and "product folder itself" in out
    assert leftovers(out_dir) == []


def test_truncated_band(archive_copy: Path, tmp_path: Path) -> None:
    band = next((archive_copy / "S2" / "T33TVM" / THEIA.name).glob("*_FRE_B11.tif"))
    band.write_bytes(band.read_bytes()[:2000])
    out_dir = tmp_path / "out"
    code, out = run(*STACK_ARGS, "--archive", str(archive_copy), "--out", str(out_dir))
    assert code == 1
    assert "CorruptRasterError" in out and band.name in out
    assert leftovers(out_dir) == []


def test_missing_band(archive_copy: Path, tmp_path: Path) -> None:
    next((archive_copy / "S2" / "T33TVM" / THEIA.name).glob("*_FRE_B8A.tif")).unlink()
    out_dir = tmp_path / "out"
    code, out = run(*STACK_ARGS, "--archive", str(archive_copy), "--out", str(out_dir))
    assert code == 1
    assert "MissingBandError" in out and "B8A" in out and THEIA.name in out
    assert leftovers(out_dir) == []


def test_unknown_naming_scheme(tmp_path: Path) -> None:
    weird = tmp_path / "LC08_L2SP_196029_20200101"
    weird.mkdir()
    code, out = run("info", str(weird))
    assert code == 1 and "unknown naming scheme" in out and weird.name in out
    s2_root = tmp_path / "s2"
    s2_root.mkdir()
    shutil.copytree(weird, s2_root / weird.name)
    code, out = run("inventory", "--s2-root", str(s2_root), "--strict")
    assert code == 1 and "could not be read" in out


def test_dem_not_covering_tile(archive_copy: Path, tmp_path: Path) -> None:
    dem = archive_copy / "DEM" / "T29UPU.tif"
    shutil.copy(archive_copy / "DEM" / "T33TVM.tif", dem)  # a Slovenian DEM for Ireland
    out_dir = tmp_path / "out"
    code, out = run("stack", "--tile", "T29UPU", "--date", "2017-06-17", "--archive",
                    str(archive_copy), "--out", str(out_dir))
    assert code == 1
    assert "DemCoverageError" in out and str(dem) in out
    assert leftovers(out_dir) == []


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    args = [*STACK_ARGS, "--archive", str(ARCHIVE), "--out", str(tmp_path)]
    assert run(*args)[0] == 0
    before = {p: file_identity(p) for p in leftovers(tmp_path)}
    code, out = run(*args)
    assert code == 1 and "exists already" in out
    assert {p: file_identity(p) for p in leftovers(tmp_path)} == before


def test_usage_errors(tmp_path: Path) -> None:
    code, out = run("inventory")
    assert code == 2 and "--archive" in out
    code, out = run("inventory", "--archive", str(tmp_path))
    assert code == 1 and "S2/, S1/ or DEM/" in out


def test_index_and_layout_count(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    code, out = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(catalog),
                    "--patch-size", "32")
    assert code == 0 and "added 31 product(s)" in out
    code, out = run("index", "add", "--archive", str(ARCHIVE), "--catalog", str(catalog))
    assert code == 0 and "added 0 product(s), 31 already indexed" in out
    code, out = run("index", "info", str(catalog), "--json")
    assert code == 0 and json.loads(out)["tiles"]["T31UFS"]["S2"]["products"] == 12
    layout = Path(__file__).parents[2] / "acquisition_layouts" / "os2-occitanie.yaml"
    code, out = run("layout", "count", str(layout), "--catalog", str(catalog), "--tile", "31UFS")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("T31UFS"))
    assert int(row.split()[1]) > 0
    code, out = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(catalog))
    assert code == 1 and "exists already" in out
    code, out = run("index", "info", str(tmp_path))
    assert code == 1 and "no catalog here" in out
