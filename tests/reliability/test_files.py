"""Truncated and deleted files are reported where the product is first seen.

Opening a product reads its names and metadata; :func:`check_files` (used by ``info``,
``inventory --strict``, ``index build`` and ``Archive.scan(check_files=True)``) also
opens every band and mask file and reads its last block.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from decloud.archive import Archive
from decloud.errors import CorruptRasterError, MissingBandError, ProductFormatError
from decloud.products import Dem, open_product
from decloud.products.checks import check_files
from tests.conftest import DEM, S1_STACK, S1_VH, S1_VV, SAFE_PB0205
from tests.reliability.conftest import truncate


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.mark.parametrize("pattern", ["*_B03_10m.jp2", "*_B11_20m.jp2", "*_SCL_20m.jp2"])
def test_truncated_safe_file(safe_copy: Path, pattern: str) -> None:
    broken = _one(safe_copy, pattern)
    truncate(broken)
    product = open_product(safe_copy)  # names and metadata only: opens
    with pytest.raises(CorruptRasterError) as info:
        check_files(product)
    assert info.value.path == str(broken) and "truncated" in str(info.value)


@pytest.mark.parametrize("pattern", ["*_FRE_B8A.tif", "MASKS/*_CLM_R1.tif", "MASKS/*_EDG_R2.tif"])
def test_truncated_theia_file(theia_copy: Path, pattern: str) -> None:
    broken = sorted(theia_copy.glob(pattern))[0]
    truncate(broken, 0.6)
    with pytest.raises(CorruptRasterError) as info:
        check_files(open_product(theia_copy))
    assert info.value.path == str(broken)


def test_deleted_safe_band(safe_copy: Path) -> None:
    deleted = _one(safe_copy, "*_B03_10m.jp2")
    deleted.unlink()
    product = open_product(safe_copy)
    assert "B03" not in product.bands  # the reader alone would go on without it
    with pytest.raises(MissingBandError) as info:
        check_files(product)
    assert info.value.path == str(safe_copy) and deleted.name in str(info.value)


def test_scan_with_checks_skips_the_broken_product(safe_copy: Path) -> None:
    truncate(_one(safe_copy, "*_B04_10m.jp2"))
    shutil.copytree(SAFE_PB0205, safe_copy.parent / SAFE_PB0205.name)
    lenient = Archive.scan(safe_copy.parent)
    assert len(lenient.s2) == 2 and lenient.problems == []  # a header-only scan misses it
    checked = Archive.scan(safe_copy.parent, check_files=True)
    assert [p.name for p in checked.s2] == [SAFE_PB0205.name]
    assert [p.path for p in checked.problems] == [safe_copy]
    assert "_B04_10m.jp2" in checked.problems[0].reason
    assert "truncated" in checked.problems[0].reason


def _zip(folder: Path, out: Path, *, skip: str = "") -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not (skip and path.match(skip)):
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return out


def test_truncated_zip(safe_copy: Path, tmp_path: Path) -> None:
    zipped = _zip(safe_copy, tmp_path / f"{safe_copy.stem}.zip")
    assert open_product(zipped).band_names  # the intact zip opens
    truncate(zipped, 0.7)
    with pytest.raises(ProductFormatError) as info:
        open_product(zipped)
    assert info.value.path == str(zipped) and "zip" in str(info.value)
    root = tmp_path / "zips"
    root.mkdir()
    shutil.move(zipped, root / zipped.name)
    archive = Archive.scan(root)
    assert archive.s2 == [] and [p.path for p in archive.problems] == [root / zipped.name]


def test_zip_without_a_declared_member(safe_copy: Path, tmp_path: Path) -> None:
    zipped = _zip(safe_copy, tmp_path / f"{safe_copy.stem}.zip", skip="*_B08_10m.jp2")
    with pytest.raises(MissingBandError, match=r"_B08_10m\.jp2"):
        check_files(open_product(zipped))


def test_truncated_s1_is_reported_when_opened(tmp_path: Path) -> None:
    root = tmp_path / "S1"
    root.mkdir()
    vv, vh = root / S1_VV.name, root / S1_VH.name
    shutil.copy(S1_VV, vv)
    shutil.copy(S1_VH, vh)
    shutil.copy(S1_STACK, root / S1_STACK.name)
    truncate(vh)
    archive = Archive.scan(s1_root=root)  # the sampled value check reads it: no flag needed
    assert [p.path for p in archive.problems] == [vh]
    assert [p.name for p in archive.s1] == [S1_STACK.name]


def test_truncated_dem(tmp_path: Path) -> None:
    root = tmp_path / "DEM"
    root.mkdir()
    dem = root / DEM.name
    shutil.copy(DEM, dem)
    truncate(dem, 0.5)
    with pytest.raises(CorruptRasterError) as info:
        check_files(Dem.open(dem))
    assert info.value.path == str(dem)
    archive = Archive.scan(dem_root=root, check_files=True)
    assert archive.dems == [] and [p.path for p in archive.problems] == [dem]


def test_intact_fixtures_pass_the_checks() -> None:
    archive = Archive.from_root(DEM.parent.parent, check_files=True)
    assert archive.problems == []
    assert len(archive.s2) == 19 and len(archive.s1) == 12 and len(archive.dems) == 1


def test_deleted_theia_band_listed_in_its_metadata(theia_copy: Path) -> None:
    mtd = next(theia_copy.glob("*_MTD_ALL.xml"))
    listed = sorted(p.relative_to(theia_copy).as_posix() for p in theia_copy.rglob("*.tif"))
    entries = "".join(f"<IMAGE_FILE>{name}</IMAGE_FILE>" for name in listed)
    text = mtd.read_text(encoding="utf-8")
    mtd.write_text(text.replace("</Muscate_Metadata_Document>",
                                f"<Product_Organisation><Image_File_List>{entries}"
                                "</Image_File_List></Product_Organisation>"
                                "</Muscate_Metadata_Document>"), encoding="utf-8")
    check_files(open_product(theia_copy))  # all there: passes
    deleted = next(theia_copy.glob("*_FRE_B11.tif"))
    deleted.unlink()
    next(theia_copy.glob("*_SRE_B12.tif")).unlink()  # SRE is not used: not required
    product = open_product(theia_copy)
    with pytest.raises(MissingBandError) as info:
        check_files(product)
    assert deleted.name in str(info.value) and "SRE" not in str(info.value)


def test_zip_with_a_damaged_metadata_member(safe_copy: Path, tmp_path: Path) -> None:
    zipped = _zip(safe_copy, tmp_path / f"{safe_copy.stem}.zip")
    raw = bytearray(zipped.read_bytes())
    at = raw.index(b"<PRODUCT_START_TIME>")  # stored, not compressed: flip one byte in it
    raw[at + 1] ^= 0x20
    zipped.write_bytes(bytes(raw))
    with pytest.raises(ProductFormatError) as info:
        open_product(zipped)
    assert info.value.path == str(zipped) and info.value.field == "MTD_MSIL2A.xml"
    assert "CRC" in str(info.value)
