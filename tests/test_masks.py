"""The computed cloud/shadow mask against a real, hand-made cloud mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from rasterio.windows import Window

from decloud.constants import MaskClass
from decloud.errors import MissingBandError
from decloud.masks import cloud_shadow, compute_mask
from decloud.products import open_product
from tests.conftest import ARCHIVE, DATA

THEIA_PARTLY = (ARCHIVE / "S2" / "T33TVM"
                / "SENTINEL2A_20150731-100009-000_L2A_T33TVM_D_V1-8")


def test_computed_mask_agrees_with_reference_mask() -> None:
    sample = np.load(DATA / "csmask_cloudy.npz")
    img = sample["img_dn"].astype(np.float32) / 10000
    reference = sample["msk"].reshape(img.shape[:2])
    bands = {str(b): img[..., i] for i, b in enumerate(sample["band_names"])}
    cloud, shadow = cloud_shadow(bands)
    true_cloud, true_shadow = reference == 4, reference == 0
    cloud_recall = (cloud & true_cloud).sum() / true_cloud.sum()
    cloud_precision = (cloud & true_cloud).sum() / cloud.sum()
    shadow_precision = (shadow & true_shadow).sum() / shadow.sum()
    accuracy = ((cloud | shadow) == (true_cloud | true_shadow)).mean()
    assert cloud_recall > 0.9 and cloud_precision > 0.7
    assert shadow_precision > 0.8
    assert accuracy > 0.88


def test_needs_bands_and_keeps_nodata_out() -> None:
    with pytest.raises(MissingBandError, match="B11"):
        cloud_shadow({"B02": np.zeros((2, 2))})
    bright = {b: np.full((4, 4), 0.6, np.float32) for b in ("B02", "B03", "B04", "B08")}
    bright["B11"] = np.full((4, 4), 0.4, np.float32)
    bright["B02"][0, 0] = np.nan
    cloud, _ = cloud_shadow(bright)
    assert cloud[1:, 1:].all() and not cloud[0, 0]


def test_a_window_past_the_grid_is_the_window_of_the_widened_grid() -> None:
    """compute_mask's documented rule for windows that leave the grid."""
    product = dataclasses.replace(open_product(THEIA_PARTLY), masks={})
    grid = product.grid()
    window = Window(90, -5, 20, 20)  # past the top and right edges
    widened = grid.subgrid(Window(0, -5, 110, 105))  # the grid grown to include it
    expected = compute_mask(product, widened)[:20, 90:110]
    np.testing.assert_array_equal(compute_mask(product, grid, window), expected)
    # Pixels outside the product are nodata.
    assert (expected[:5] == MaskClass.NODATA).all()
