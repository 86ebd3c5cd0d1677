"""Archive discovery: every product found, bad entries reported, scan never aborted."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from decloud.archive import Archive, normalize_tile
from decloud.errors import DecloudError, NoProductError
from tests.conftest import ARCHIVE, THEIA


def test_scan_sample_archive() -> None:
    archive = Archive.from_root(ARCHIVE)
    assert archive.problems == []
    assert archive.tiles() == ["T29UPU", "T31UFS", "T33TVM", "T33UUP"]
    assert len(archive.s2) == 19 and len(archive.s1) == 12 and len(archive.dems) == 1
    assert {p.kind for p in archive.s2} == {"theia", "safe"}


def test_queries() -> None:
    archive = Archive.from_root(ARCHIVE)
    assert len(archive.select_s2("31UFS", date(2023, 4, 5), date(2023, 4, 15))) == 5
    with pytest.raises(NoProductError, match="empty date range"):
        archive.select_s2("T31UFS", date(2023, 5, 1), date(2023, 4, 1))
    s2 = archive.find_s2("T29UPU", date(2017, 6, 17))
    s1 = archive.nearest_s1("T29UPU", s2.acquired, timedelta(hours=72))
    assert s1 is not None and s1.pass_direction == "DES"
    assert archive.nearest_s1("T29UPU", s2.acquired, timedelta(hours=1)) is None
    belgium = archive.nearest_s1("T31UFS", datetime(2023, 4, 15, 10, 50, tzinfo=UTC),
                                 timedelta(hours=72))
    assert belgium is not None and belgium.acquired.date() == date(2023, 4, 15)
    with pytest.raises(NoProductError, match="dates available: 2015-07-11"):
        archive.find_s2("T33TVM", date(2020, 1, 1))
    assert archive.dem("33TVM") is not None and archive.dem("T29UPU") is None


def test_normalize_tile() -> None:
    assert normalize_tile("31tej") == normalize_tile("T31TEJ") == "T31TEJ"
    with pytest.raises(DecloudError, match="not a Sentinel-2 tile"):
        normalize_tile("31-TEJ")


def test_flat_folders_and_bad_entries(tmp_path: Path) -> None:
    s2 = tmp_path / "s2"
    s2.mkdir()
    shutil.copytree(THEIA, s2 / THEIA.name)  # flat: no tile folder
    (s2 / "notes.txt").write_text("sidecar files are ignored")
    (s2 / "random_folder").mkdir()
    broken = s2 / "S2B_MSIL2A_20220615T103629_N0400_R008_T31TEJ_20220615T135020.SAFE"
    broken.mkdir()
    (s2 / "T31TEJ").mkdir()
    shutil.copytree(THEIA, s2 / "T31TEJ" / THEIA.name)  # a T33TVM product in a T31TEJ folder
    s1 = tmp_path / "s1"
    s1.mkdir()
    (s1 / "s1a_31TEJ_vv_DES_110_20170101t054437.tif").write_bytes(b"truncated")
    (s1 / "whatever.tif").write_bytes(b"")
    archive = Archive.scan(s2, s1, tmp_path / "missing_dem_root")
    assert len(archive.s2) == 1
    reasons = {p.path.name: p.reason for p in archive.problems}
    assert "unknown naming scheme" in reasons["random_folder"]
    assert "MTD_MSIL2A.xml is missing" in reasons[broken.name]
    assert "in the folder of T31TEJ" in reasons[THEIA.name]
    assert "cannot be opened" in reasons["s1a_31TEJ_vv_DES_110_20170101t054437.tif"]
    assert "not an S1Tiling file name" in reasons["whatever.tif"]
    assert "does not exist" in reasons["missing_dem_root"]
    assert "notes.txt" not in reasons


def test_roots_merge_into_one_archive(tmp_path: Path) -> None:
    whole = Archive.from_root(ARCHIVE)
    # Separate roots: S2 of the archive, S1 and DEM from a copy of the other two.
    shutil.copytree(ARCHIVE / "S1", tmp_path / "S1")
    shutil.copytree(ARCHIVE / "DEM", tmp_path / "DEM")
    parts = Archive.from_roots(s2_root=ARCHIVE / "S2", s1_root=tmp_path / "S1",
                               dem_root=tmp_path / "DEM")
    assert [p.name for p in parts.s2] == [p.name for p in whole.s2]
    assert [p.name for p in parts.s1] == [p.name for p in whole.s1]
    assert len(parts.dems) == 1 and parts.problems == []
    # A root and one of its own sub-folders: every product once, in scan order.
    both = Archive.from_roots(ARCHIVE, s2_root=ARCHIVE / "S2", dem_root=ARCHIVE / "DEM")
    assert [p.path for p in both.s2] == [p.path for p in whole.s2]
    assert [p.files for p in both.s1] == [p.files for p in whole.s1]
    assert len(both.dems) == 1
    # Another S2 folder adds its products, sorted in with the root's.
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copytree(THEIA, extra / THEIA.name)
    (extra / "notes.bin").write_text("not a product")
    more = Archive.from_roots(tmp_path, s2_root=extra)
    assert [p.path for p in more.s2] == [extra / THEIA.name]
    assert [p.path.name for p in more.problems] == ["notes.bin"]
    with pytest.raises(NoProductError, match="no archive"):
        Archive.from_roots()


def test_inventory_rows_in_the_library(tmp_path: Path) -> None:
    from decloud.archive import inventory_rows

    shutil.copytree(THEIA, tmp_path / "S2" / THEIA.name)
    shutil.copytree(ARCHIVE / "DEM", tmp_path / "DEM")
    archive = Archive.from_root(tmp_path)
    rows = inventory_rows(archive)
    assert [r["sensor"] for r in rows] == ["S2", "DEM"]
    s2 = rows[0]
    assert s2["name"] == THEIA.name and s2["tile"] == "T33TVM" and s2["level"] == "L2A"
    assert s2["path"] == str(archive.s2[0].path) and "problem" not in s2
    cover = archive.s2[0].cover(20.0)
    assert (s2["cloud"], s2["shadow"], s2["nodata"]) == (
        cover["cloud"], cover["shadow"], cover["nodata"])
    # Masks that cannot be read: the row says why, the listing goes on.
    for mask in (tmp_path / "S2" / THEIA.name / "MASKS").glob("*.tif"):
        mask.write_bytes(mask.read_bytes()[:100])
    broken = inventory_rows(Archive.from_root(tmp_path))
    assert THEIA.name in broken[0]["problem"] and broken[1]["sensor"] == "DEM"
