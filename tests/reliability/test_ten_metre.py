"""Products with only the 10 m bands: the computed mask uses the bands present and says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from decloud.archive import Archive
from decloud.cli.inventory import inventory_rows
from decloud.errors import MissingBandError
from decloud.grid import RasterPool
from decloud.masks import FALLBACK_BANDS, cloud_shadow, compute_mask
from decloud.products import open_product
from tests.conftest import THEIA_CLEAR
from tests.products.test_l1c import LOOSE, SAFE


def _ten_metre_theia(theia_copy: Path) -> Path:
    for pattern in ("*_B5.tif", "*_B6.tif", "*_B7.tif", "*_B8A.tif", "*_B11.tif", "*_B12.tif",
                    "MASKS/*_CLM_*.tif"):
        for path in theia_copy.glob(pattern):
            path.unlink()
    return theia_copy


def test_ten_metre_theia_gets_the_ten_metre_test(theia_copy: Path) -> None:
    product = open_product(_ten_metre_theia(theia_copy))
    assert product.band_names == ["B02", "B03", "B04", "B08"]
    assert product.mask_origin == "computed-10m"
    cover = product.cover(20.0)
    assert cover["nodata"] == 0.0 and cover["cloud"] < 0.01  # the clear date stays clear
    rows = inventory_rows(Archive.scan(theia_copy.parent, check_files=True))
    assert [(r["mask"], "problem" in r) for r in rows] == [("computed-10m", False)]


def test_ten_metre_l1c_band_files(tmp_path: Path) -> None:
    for band in ("B02", "B03", "B04", "B08"):
        shutil.copy(LOOSE / f"T33TVM_20150711T100008_{band}.jp2", tmp_path)
    product = open_product(tmp_path / "T33TVM_20150711T100008_B02.jp2")
    assert product.mask_origin == "computed-10m" and product.describe()["level"] == "L1C"
    assert product.mask().shape == (100, 100)


def test_full_products_keep_the_full_test() -> None:
    assert open_product(SAFE).mask_origin == "computed"
    assert open_product(THEIA_CLEAR).mask_origin == "CLM"


def test_ten_metre_clouds_contain_the_full_test_clouds() -> None:
    """Fewer tests can only raise the cloud score: the 10 m test flags a superset."""
    product = open_product(SAFE)
    data = dict(zip(FALLBACK_BANDS, product.read(FALLBACK_BANDS), strict=True))
    full, _ = cloud_shadow(data)
    ten, _ = cloud_shadow({b: v for b, v in data.items() if b != "B11"})
    assert full.any() and np.all(ten[full])


def test_too_few_bands_say_which(theia_copy: Path) -> None:
    _ten_metre_theia(theia_copy)
    for path in theia_copy.glob("*_B8.tif"):
        path.unlink()
    product = open_product(theia_copy)
    with pytest.raises(MissingBandError, match="needs at least bands B02, B03, B04, B08"):
        product.mask()


@pytest.mark.parametrize("size", [7, 32])
def test_ten_metre_mask_streamed_equals_whole(size: int) -> None:
    # The overcast date of the L1C SAFE has clouds and edges for the filters to reach across.
    product = open_product(SAFE)
    product.bands = {b: f for b, f in product.bands.items() if b in ("B02", "B03", "B04", "B08")}
    assert product.mask_origin == "computed-10m"
    grid = product.grid()
    with RasterPool() as pool:
        whole = compute_mask(product, grid, pool=pool)
        assert (whole == 1).any() and (whole == 0).any()
        streamed = np.zeros_like(whole)
        for row in range(0, grid.height, size):
            for col in range(0, grid.width, size):
                window = Window(col, row, min(size, grid.width - col),
                                min(size, grid.height - row))
                streamed[window.toslices()] = compute_mask(product, grid, window, pool=pool)
    np.testing.assert_array_equal(streamed, whole)
