"""THEIA reader: names, dates, DN / 10000 with -10000 nodata, CLM/EDG masks, zips."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from decloud.constants import MaskClass
from decloud.errors import MissingBandError, ProductFormatError
from decloud.products import TheiaProduct, open_product
from decloud.products.base import classes_from_bits
from decloud.products.theia import THEIA_CLM_BITS
from tests.conftest import THEIA, THEIA_CLEAR


def test_name_and_metadata() -> None:
    product = open_product(THEIA)
    assert isinstance(product, TheiaProduct)
    assert product.platform == "S2A" and product.tile == "T33TVM"
    assert product.acquired == datetime(2015, 9, 9, 10, 0, 17, tzinfo=UTC)
    assert product.relative_orbit == 122  # from MTD_ALL.xml
    assert product.band_names[:4] == ["B02", "B03", "B04", "B08"]
    assert product.band("B8A").resolution == 20.0
    assert product.band("b2") is product.band("B02")


def test_reflectance_is_dn_over_10000_with_nodata() -> None:
    product = open_product(THEIA)
    with rasterio.open(product.band("B04").path) as src:
        dn = src.read(1)
    refl = product.read(["B04"])[0]
    valid = dn != -10000
    assert (~valid).sum() > 0, "the fixture has a simulated swath edge"
    np.testing.assert_allclose(refl[valid], dn[valid] / 10000, rtol=1e-6)
    assert np.isnan(refl[~valid]).all()


def test_sre_is_selectable() -> None:
    product = TheiaProduct.open(THEIA, reflectance="SRE")
    assert "_SRE_B4" in product.band("B04").path
    with pytest.raises(ProductFormatError, match="FRE or SRE"):
        TheiaProduct.open(THEIA, reflectance="TOA")


def test_mask_bits_and_edge() -> None:
    product = open_product(THEIA)
    assert product.mask_origin == "CLM"
    layer = product.mask()
    assert (layer[:, :12] == MaskClass.NODATA).all()  # EDG marks the simulated edge
    cover = product.cover(resolution=10.0)
    assert cover["nodata"] == pytest.approx(0.12)
    cloudy = open_product(THEIA_CLEAR.parent / "SENTINEL2A_20150731-100009-000_L2A_T33TVM_D_V1-8")
    assert cloudy.cover()["cloud"] == pytest.approx(1.0)


def test_clm_bits_table() -> None:
    raw = np.array([0, 1, 2, 16, 32, 64, 128, 2 | 32], np.uint8)
    layer = classes_from_bits(raw, THEIA_CLM_BITS)
    expected = [MaskClass.CLEAR, MaskClass.CLEAR, MaskClass.CLOUD, MaskClass.CIRRUS,
                MaskClass.SHADOW, MaskClass.SHADOW, MaskClass.CLOUD, MaskClass.CLOUD]
    assert layer.tolist() == [int(c) for c in expected]
    only_shadows = classes_from_bits(raw, {MaskClass.SHADOW: (5,)})
    assert only_shadows.tolist() == [0, 0, 0, 0, 3, 0, 0, 3]


def test_zip_reads_like_folder(tmp_path: Path) -> None:
    archive = shutil.make_archive(str(tmp_path / THEIA.name), "zip", THEIA.parent, THEIA.name)
    zipped = open_product(Path(archive))
    folder = open_product(THEIA)
    assert zipped.band("B11").path.startswith("/vsizip/")
    np.testing.assert_array_equal(zipped.read(["B11"]), folder.read(["B11"]))
    np.testing.assert_array_equal(zipped.mask(), folder.mask())


def test_wrong_folder_level_is_explained(tmp_path: Path) -> None:
    # The user points at a folder named like the product that holds the product.
    outer = tmp_path / THEIA.name
    shutil.copytree(THEIA, outer / THEIA.name)
    with pytest.raises(ProductFormatError, match="product folder itself") as err:
        open_product(outer)
    assert str(outer) in str(err.value)


def test_missing_band_names_product_and_band(tmp_path: Path) -> None:
    copy = tmp_path / THEIA.name
    shutil.copytree(THEIA, copy)
    next(copy.glob("*_FRE_B4.tif")).unlink()
    product = open_product(copy)
    with pytest.raises(MissingBandError, match="B04") as err:
        product.read(["B04"])
    assert err.value.path == str(copy) and err.value.field == "B04"
