"""``stack`` and its sources: a broken S1 file or DEM is not the absence of one.

A source the stack would have used that exists but cannot be read fails the stack with
a message naming the file and the cause (exit 1, no stack folder), unless
``--skip-broken-sources`` is given: then the stack is written without it, a warning
says so and ``stack.json`` and the COG tags record it. A full disk is one line naming
the stack folder and "no space left", and leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result

from decloud.archive import Archive
from decloud.cli.main import cli
from decloud.errors import BrokenSourceError, OutputWriteError, SkippedSourceWarning
from decloud.stack import build_stack
from decloud.writers import CogWriter
from tests.conftest import ARCHIVE, DEM, THEIA
from tests.reliability.conftest import truncate

S1_VV = "s1a_29UPU_vv_DES_023_20170617t064724.tif"
DAY = date(2017, 6, 17)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def irish(tmp_path: Path) -> Path:
    """The T29UPU S2 product and its S1 pair (6 h apart), copied to break."""
    root = tmp_path / "archive"
    shutil.copytree(ARCHIVE / "S2" / "T29UPU", root / "S2" / "T29UPU")
    shutil.copytree(ARCHIVE / "S1" / "T29UPU", root / "S1" / "T29UPU")
    return root


@pytest.fixture
def slovenian(tmp_path: Path) -> Path:
    """A T33TVM THEIA product and its DEM, copied to break."""
    root = tmp_path / "archive"
    shutil.copytree(THEIA, root / "S2" / "T33TVM" / THEIA.name)
    (root / "DEM").mkdir()
    shutil.copy(DEM, root / "DEM" / DEM.name)
    return root


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_a_broken_s1_file_fails_the_stack(irish: Path, tmp_path: Path,
                                          fraction: float) -> None:
    # Half a file does not open (the scan refuses it); 95 % opens but its last block is
    # gone (the stack's own check of the chosen image finds it).
    vv = irish / "S1" / "T29UPU" / S1_VV
    truncate(vv, fraction)
    out = tmp_path / "out"
    with pytest.raises(BrokenSourceError, match="within 72 h cannot be read") as caught:
        build_stack(Archive.from_root(irish), "T29UPU", DAY, out)
    assert caught.value.path == str(vv) and caught.value.field == "s1"
    assert _leftovers(out) == []
    result = run("stack", "--archive", str(irish), "--tile", "T29UPU", "--date", "2017-06-17",
                 "--out", str(out))
    assert result.exit_code == 1
    (line,) = [x for x in result.output.splitlines() if "Error" in x]
    assert line.startswith("Error: BrokenSourceError") and S1_VV in line
    assert "--skip-broken-sources" in line and _leftovers(out) == []


def test_skipping_a_broken_s1_file_is_warned_and_recorded(irish: Path, tmp_path: Path) -> None:
    vv = irish / "S1" / "T29UPU" / S1_VV
    truncate(vv)
    with pytest.warns(SkippedSourceWarning, match=S1_VV):
        result = build_stack(Archive.from_root(irish), "T29UPU", DAY, tmp_path,
                             skip_broken_sources=True)
    assert result.s1 is None and "s1" not in result.files
    assert [(s["sensor"], s["file"]) for s in result.skipped] == [("s1", str(vv))]
    manifest = json.loads(result.files["manifest"].read_text())
    assert manifest["s1"] is None and manifest["skipped_sources"] == result.skipped
    with rasterio.open(result.files["s2"]) as src:
        assert json.loads(src.tags()["DECLOUD_SKIPPED_SOURCES"]) == result.skipped
    cli_out = tmp_path / "cli"
    ran = run("stack", "--archive", str(irish), "--tile", "T29UPU", "--date", "2017-06-17",
              "--out", str(cli_out), "--skip-broken-sources")
    assert ran.exit_code == 0, ran.output
    assert f"WARNING: S1 {vv} cannot be read" in ran.output
    assert "S1  none readable within 72 h (broken file skipped)" in ran.output


def test_no_s1_at_all_is_reported_as_absence(irish: Path, tmp_path: Path) -> None:
    shutil.rmtree(irish / "S1" / "T29UPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedSourceWarning)  # nothing is skipped
        result = build_stack(Archive.from_root(irish), "T29UPU", DAY, tmp_path / "a")
    assert result.s1 is None and result.skipped == []
    ran = run("stack", "--archive", str(irish), "--tile", "T29UPU", "--date", "2017-06-17",
              "--out", str(tmp_path / "b"))
    assert ran.exit_code == 0 and "S1  none within 72 h" in ran.output


def _strip_crs(path: Path) -> None:
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.pop("crs")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.mark.parametrize("damage", ["no crs", "truncated"])
def test_a_broken_dem_fails_the_stack(slovenian: Path, tmp_path: Path, damage: str) -> None:
    dem = slovenian / "DEM" / DEM.name
    if damage == "no crs":
        _strip_crs(dem)
    else:
        truncate(dem, 0.6)
    out = tmp_path / "out"
    ran = run("stack", "--archive", str(slovenian), "--tile", "T33TVM", "--date", "2015-09-09",
              "--out", str(out))
    assert ran.exit_code == 1
    (line,) = [x for x in ran.output.splitlines() if "Error" in x]
    assert str(dem) in line and "DEM T33TVM.tif cannot be read" in line
    if damage == "no crs":
        assert "no CRS" in line
    assert _leftovers(out) == []
    with pytest.warns(SkippedSourceWarning, match="T33TVM.tif"):
        result = build_stack(Archive.from_root(slovenian), "T33TVM", date(2015, 9, 9), out,
                             skip_broken_sources=True)
    assert result.dem is None and "dem" not in result.files
    assert [s["sensor"] for s in result.skipped] == ["dem"]


def test_a_full_disk_is_one_line_and_leaves_nothing(irish: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []

    def full(self: CogWriter, data: np.ndarray, window: object = None) -> None:
        written.append(1)
        if len(written) > 2:  # a few windows in: the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device", str(self._tmp))

    monkeypatch.setattr(CogWriter, "write", full)
    out = tmp_path / "out"
    folder = out / "T29UPU_20170617"
    with pytest.raises(OutputWriteError, match="no space left on device") as caught:
        build_stack(Archive.from_root(irish), "T29UPU", DAY, out, window_size=64)
    assert caught.value.path == str(folder)
    assert _leftovers(out) == []
    written.clear()
    ran = CliRunner().invoke(cli, ["stack", "--archive", str(irish), "--tile", "T29UPU",
                                   "--date", "2017-06-17", "--out", str(out),
                                   "--window-size", "64"])
    assert ran.exit_code == 1
    errors = [x for x in ran.output.splitlines() if "error" in x.lower()]
    assert errors == [f"Error: OutputWriteError: {folder}: writing the stack failed, nothing "
                      "was written: no space left on device"]
    assert "GDAL" not in ran.output and "TIFF" not in ran.output
    assert _leftovers(out) == []


def test_gdal_reporting_a_full_disk_is_the_same_one_line(
        irish: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GDAL says it in its own words when the COG conversion runs out of space.
    import rasterio.shutil
    from rasterio.errors import RasterioIOError

    def full(*args: object, **kwargs: object) -> None:
        raise RasterioIOError("TIFFAppendToStrip:Write error at scanline 0: No space left "
                              "on device")

    monkeypatch.setattr(rasterio.shutil, "copy", full)
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError) as caught:
        build_stack(Archive.from_root(irish), "T29UPU", DAY, out)
    assert caught.value.path == str(out / "T29UPU_20170617")
    assert caught.value.message == ("writing the stack failed, nothing was written: no space "
                                    "left on device")
    assert _leftovers(out) == []
