"""The mask-guided composite against brute-force distances on synthetic masks."""

from __future__ import annotations

import numpy as np
import pytest

from decloud.constants import MaskClass
from decloud.errors import ArgumentError
from decloud.inference.composite import (
    QUALITY_CLEAR,
    QUALITY_FEATHERED,
    QUALITY_NODATA,
    QUALITY_RECONSTRUCTED,
    CompositeOptions,
    composite,
    reconstruction_weight,
)


def _mask(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((30, 34), np.uint8)
    for cls in (MaskClass.CLOUD, MaskClass.CIRRUS, MaskClass.SHADOW):
        r, c = rng.integers(0, 30), rng.integers(0, 34)
        mask[r:r + rng.integers(1, 5), c:c + rng.integers(1, 5)] = cls
    mask[:, :3] = MaskClass.NODATA  # a swath edge
    return mask


def _brute_weight(mask: np.ndarray, options: CompositeOptions) -> np.ndarray:
    """Weights from pairwise distances between all pixels (no distance transform)."""
    pixels = np.argwhere(np.ones(mask.shape, bool)).astype(np.float64)
    weight = np.zeros(mask.shape, np.float64)
    cloud = np.argwhere(np.isin(mask, (1, 2, 3))).astype(np.float64)
    if len(cloud):
        to_cloud = np.hypot(*(pixels[:, None, :] - cloud[None, :, :]).transpose(2, 0, 1))
        dilated = pixels[to_cloud.min(axis=1) <= options.dilation]
        to_dilated = np.hypot(*(pixels[:, None, :] - dilated[None, :, :]).transpose(2, 0, 1))
        d = to_dilated.min(axis=1).reshape(mask.shape)
        weight = np.where(d == 0, 1.0, np.where(d <= options.feather,
                                                1 - d / (options.feather + 1), 0.0))
    weight[mask == MaskClass.NODATA] = 1.0
    return weight


@pytest.mark.parametrize(("seed", "dilation", "feather"), [(0, 0, 0), (1, 1, 3), (2, 2, 2)])
def test_weight_equals_brute_force(seed: int, dilation: int, feather: int) -> None:
    mask = _mask(seed)
    options = CompositeOptions(dilation=dilation, feather=feather)
    got = reconstruction_weight(mask, options)
    assert np.allclose(got, _brute_weight(mask, options), atol=1e-6)


def test_composite_values_and_quality() -> None:
    mask = _mask(1)
    options = CompositeOptions(dilation=1, feather=3)
    rng = np.random.default_rng(5)
    target = rng.uniform(0, 3000, (*mask.shape, 2)).astype(np.float32)
    target[mask == MaskClass.NODATA] = np.nan
    reconstruction = rng.uniform(0, 3000, (*mask.shape, 2)).astype(np.float32)
    reconstruction[:2] = np.nan  # the method has nothing on the first rows
    values, quality = composite(target, mask, reconstruction, options)
    w = _brute_weight(mask, options)
    has = np.asarray(np.isfinite(reconstruction).all(axis=-1))
    expected = np.where(has[..., None] & (w[..., None] > 0),
                        w[..., None] * reconstruction + (1 - w[..., None]) * target, target)
    swath = np.logical_and(has, mask == MaskClass.NODATA)
    expected[swath] = reconstruction[swath]
    assert np.allclose(values, expected, equal_nan=True, atol=1e-3)
    kept = quality == QUALITY_CLEAR
    assert np.array_equal(values[kept], target[kept])  # bit-identical
    assert np.array_equal(quality == QUALITY_RECONSTRUCTED, has & (w == 1))
    assert np.array_equal(quality == QUALITY_FEATHERED, has & (w > 0) & (w < 1))
    assert np.array_equal(quality == QUALITY_NODATA, ~has & (mask == MaskClass.NODATA))
    assert np.isnan(values[quality == QUALITY_NODATA]).all()


def test_refusals() -> None:
    with pytest.raises(ArgumentError, match="dilation"):
        CompositeOptions(dilation=-1)
    with pytest.raises(ArgumentError, match="shape"):
        composite(np.zeros((4, 4, 2)), np.zeros((4, 5), np.uint8), np.zeros((4, 4, 2)),
                  CompositeOptions())
