"""Sentinel-2 L1C: SAFE folders and zips, loose band files, TOA reflectance, computed mask.

The fixtures (``tests/data/l1c``, README section E) hold the real L1C reflectances of
the eo-learn Slovenia bundle, like the THEIA fixtures of tile T33TVM (README section A)
of the same dates: the THEIA bands are the independent reference for the values.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from decloud.archive import Archive
from decloud.cli.inventory import inventory_rows
from decloud.errors import MetadataError
from decloud.products import L1CBandFiles, SafeL1CProduct, open_product
from tests.conftest import ARCHIVE, DATA

L1C = DATA / "l1c"
SAFE = L1C / "S2A_MSIL1C_20150731T095759_N0500_R122_T33TVM_20230101T000000.SAFE"
LOOSE = L1C / "loose"
LOOSE_B04 = LOOSE / "T33TVM_20150711T100008_B04.jp2"
THEIA_0731 = ARCHIVE / "S2" / "T33TVM" / "SENTINEL2A_20150731-100009-000_L2A_T33TVM_D_V1-8"
THEIA_0711 = ARCHIVE / "S2" / "T33TVM" / "SENTINEL2A_20150711-100008-000_L2A_T33TVM_D_V1-8"
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")


def _theia_reflectance(product: Path, band: str) -> np.ndarray:
    """THEIA DN / 10000 read with rasterio (same L1C source, its own grid)."""
    theia_name = "B8A" if band == "B8A" else f"B{int(band[1:])}"
    with rasterio.open(next(product.glob(f"*_FRE_{theia_name}.tif"))) as src:
        return src.read(1).astype(np.float64) / 10000


def test_safe_l1c_model() -> None:
    product = open_product(SAFE)
    assert isinstance(product, SafeL1CProduct)
    assert product.kind == "safe-l1c" and product.level == "L1C"
    assert product.tile == "T33TVM" and product.relative_orbit == 122
    assert product.pass_direction == "DES" and product.processing_baseline == "05.00"
    assert product.mask_origin == "computed"
    assert set(BANDS_10M + BANDS_20M + ("B01", "B09")) == set(product.bands)
    described = product.describe()
    assert described["level"] == "L1C" and described["warnings"] == []
    # One definition of acquisition time: the tile's sensing time, as THEIA's.
    assert product.acquired == open_product(THEIA_0731).acquired


@pytest.mark.parametrize("bands", [BANDS_10M, BANDS_20M])
def test_safe_l1c_values_are_toa_reflectance(bands: tuple[str, ...]) -> None:
    product = open_product(SAFE)
    for band in bands:
        b = product.band(band)
        assert b.offset == pytest.approx(-0.1) and b.scale == pytest.approx(1e-4)
        got = product.read([band], product.grid(b.resolution))[0]
        # THEIA's 20 m DNs were rounded before their 2 x 2 means, these after: 1 DN apart.
        tol = 1e-6 if b.resolution == 10 else 1.01e-4
        np.testing.assert_allclose(got, _theia_reflectance(THEIA_0731, band), atol=tol)


def test_safe_l1c_zip(tmp_path: Path) -> None:
    zipped = tmp_path / f"{SAFE.stem}.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(SAFE.rglob("*")):
            if path.is_file():
                archive.write(path, f"{SAFE.name}/{path.relative_to(SAFE).as_posix()}")
    product = open_product(zipped)
    assert isinstance(product, SafeL1CProduct)
    np.testing.assert_array_equal(product.read(["B04", "B11"]),
                                  open_product(SAFE).read(["B04", "B11"]))


def _copy_safe(tmp_path: Path) -> Path:
    dst = tmp_path / SAFE.name
    shutil.copytree(SAFE, dst)
    return dst


def test_safe_l1c_without_offsets_is_refused(tmp_path: Path) -> None:
    safe = _copy_safe(tmp_path)
    mtd = safe / "MTD_MSIL1C.xml"
    mtd.write_text(re.sub(r'\s*<RADIO_ADD_OFFSET band_id="7">-1000</RADIO_ADD_OFFSET>', "",
                          mtd.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        open_product(safe)
    assert info.value.path == str(mtd) and info.value.field == "RADIO_ADD_OFFSET"
    assert "B08" in str(info.value)


def test_safe_l1c_zero_quantification(tmp_path: Path) -> None:
    safe = _copy_safe(tmp_path)
    mtd = safe / "MTD_MSIL1C.xml"
    mtd.write_text(mtd.read_text(encoding="utf-8").replace(
        '<QUANTIFICATION_VALUE unit="none">10000', '<QUANTIFICATION_VALUE unit="none">0'),
        encoding="utf-8")
    with pytest.raises(MetadataError, match="QUANTIFICATION_VALUE"):
        open_product(safe)


def test_loose_band_files() -> None:
    product = open_product(LOOSE_B04)
    assert isinstance(product, L1CBandFiles)
    assert product.kind == "l1c-bands" and product.level == "L1C"
    assert product.name == "T33TVM_20150711T100008_B*.jp2"
    assert product.acquired == open_product(THEIA_0711).acquired
    assert len(product.files) == 13 and set(product.bands) == set(open_product(SAFE).bands)
    # No MTD beside them: the documented default (no offset before 2022-01-25), said so.
    assert product.warnings and "no MTD_MSIL1C.xml" in product.warnings[0]
    assert product.band("B04").offset == 0.0
    for band in BANDS_10M:
        np.testing.assert_allclose(product.read([band])[0],
                                   _theia_reflectance(THEIA_0711, band), atol=1e-6)


def test_loose_band_files_use_an_mtd_beside_them(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    shutil.copytree(LOOSE, loose)
    shutil.copy(SAFE / "MTD_MSIL1C.xml", loose / "MTD_MSIL1C.xml")
    product = open_product(loose / LOOSE_B04.name)
    assert product.warnings == [] and product.band("B04").offset == pytest.approx(-0.1)


def test_loose_band_files_after_baseline_04_assume_the_offset(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in LOOSE.iterdir():
        shutil.copy(path, loose / path.name.replace("20150711", "20230711"))
    product = open_product(loose / "T33TVM_20230711T100008_B02.jp2")
    assert product.band("B02").offset == pytest.approx(-0.1)
    assert "offset -1000 DN" in product.warnings[0]


def test_archive_groups_loose_files_into_one_product(tmp_path: Path) -> None:
    root = tmp_path / "S2" / "T33TVM"
    shutil.copytree(LOOSE, root)
    shutil.copytree(SAFE, root / SAFE.name)
    (root / "T33TVM_20150711T100008_TCI.jp2").write_bytes((LOOSE / LOOSE_B04.name).read_bytes())
    archive = Archive.scan(tmp_path / "S2", check_files=True)
    assert archive.problems == []
    assert sorted(p.kind for p in archive.s2) == ["l1c-bands", "safe-l1c"]
    rows = inventory_rows(archive)
    assert {r["kind"] for r in rows} == {"l1c-bands", "safe-l1c"}
    assert {r["level"] for r in rows} == {"L1C"}
    assert all(r["mask"] == "computed" and "cloud" in r for r in rows)
    loose_row = next(r for r in rows if r["kind"] == "l1c-bands")
    assert loose_row["warnings"]


def test_computed_mask_on_the_clear_date() -> None:
    """2015-07-11 is clear (s2cloudless: no cloud, README A): the computed mask agrees."""
    assert open_product(LOOSE_B04).cover(20.0)["cloud"] < 0.01
