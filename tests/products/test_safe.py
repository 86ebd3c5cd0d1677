"""SAFE reader: BOA offset of baseline 04.00, SCL classes, resolutions, zips."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from decloud.constants import MaskClass
from decloud.errors import ProductFormatError
from decloud.products import SafeProduct, open_product
from decloud.products.base import classes_from_values
from decloud.products.safe import SCL_CLASSES
from tests.conftest import SAFE_PB0205, SAFE_PB0400


def raw(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1).astype(np.float64)


def test_name_and_metadata() -> None:
    product = open_product(SAFE_PB0400)
    assert isinstance(product, SafeProduct)
    assert product.processing_baseline == "04.00"
    assert product.tile == "T29UPU" and product.platform == "S2A"
    assert product.relative_orbit == 80 and product.pass_direction == "DES"
    assert product.acquired.replace(microsecond=0) == datetime(2017, 6, 17, 11, 33, 21,
                                                               tzinfo=UTC)
    assert {b: product.bands[b].resolution for b in ("B02", "B05", "B01")} == {
        "B02": 10.0, "B05": 20.0, "B01": 60.0}


def test_pb0400_reflectance_subtracts_offset() -> None:
    product = open_product(SAFE_PB0400)
    dn = raw(product.band("B03").path)
    refl = product.read(["B03"])[0]
    valid = dn != 0
    assert (~valid).any(), "the fixture has a simulated nodata corner"
    np.testing.assert_allclose(refl[valid], (dn[valid] - 1000) / 10000, atol=1e-7)
    assert np.isnan(refl[~valid]).all()


def test_pre_0400_has_no_offset() -> None:
    product = open_product(SAFE_PB0205)
    assert product.band("B04").offset == 0.0
    dn = raw(product.band("B04").path)
    np.testing.assert_allclose(product.read(["B04"])[0], dn / 10000, atol=1e-7)


def test_20m_band_on_10m_grid_and_20m_grid() -> None:
    product = open_product(SAFE_PB0400)
    on10 = product.read(["B11"])
    assert on10.shape == (1, 120, 120)
    on20 = product.read(["B11"], product.grid(20.0))[0]
    dn = raw(product.band("B11").path)
    valid = dn != 0
    np.testing.assert_allclose(on20[valid], (dn[valid] - 1000) / 10000, atol=1e-7)


def test_scl_mask() -> None:
    product = open_product(SAFE_PB0400)
    assert product.mask_origin == "SCL"
    scl = raw(product.masks["SCL_20m"].path).astype(np.uint8)
    layer = product.mask(product.grid(20.0))
    np.testing.assert_array_equal(layer == MaskClass.CLOUD, np.isin(scl, (8, 9)))
    np.testing.assert_array_equal(layer == MaskClass.SHADOW, scl == 3)
    assert (layer[scl == 0] == MaskClass.NODATA).all()
    table = classes_from_values(np.arange(12, dtype=np.uint8), SCL_CLASSES)
    assert table.tolist() == [255, 255, 0, 3, 0, 0, 0, 0, 1, 1, 2, 0]
    cover = product.cover()
    assert 0.1 < cover["cloud"] < 0.4 and 0.0 < cover["shadow"] < 0.2


def test_zip_reads_like_folder(tmp_path: Path) -> None:
    archive = shutil.make_archive(str(tmp_path / SAFE_PB0400.name), "zip", SAFE_PB0400.parent,
                                  SAFE_PB0400.name)
    zipped = open_product(Path(archive))
    np.testing.assert_array_equal(zipped.read(["B8A"]), open_product(SAFE_PB0400).read(["B8A"]))


def test_not_a_safe_and_bad_metadata(tmp_path: Path) -> None:
    parent = tmp_path / SAFE_PB0400.name
    parent.mkdir()
    shutil.copytree(SAFE_PB0400, parent / "inner")
    with pytest.raises(ProductFormatError, match=r"MTD_MSIL2A\.xml is missing"):
        open_product(parent)
    copy = tmp_path / "copy" / SAFE_PB0400.name
    shutil.copytree(SAFE_PB0400, copy)
    (copy / "MTD_MSIL2A.xml").write_text("<broken")
    with pytest.raises(ProductFormatError, match="not valid XML") as err:
        open_product(copy)
    assert "MTD_MSIL2A.xml" in str(err.value)
