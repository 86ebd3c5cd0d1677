"""Pooled metrics: batch by batch equals one evaluation of everything at once."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from decloud.constants import S2_NODATA, MaskClass
from decloud.evaluation import PooledMetrics, cloud_at
from decloud.models.metrics import METRIC_NAMES, PIXEL_COUNTS, evaluate


def assert_same_metrics(got: Mapping[str, float | int | None],
                        expected: Mapping[str, float | int | None], *, rel: float = 1e-9,
                        abs: float = 1e-12) -> None:
    """Equal keys, None (empty regions) at the same names, the numbers close."""
    assert set(got) == set(expected)
    assert {k for k, v in got.items() if v is None} == \
        {k for k, v in expected.items() if v is None}
    numbers = [k for k, v in expected.items() if v is not None]
    assert {k: got[k] for k in numbers} == pytest.approx(
        {k: expected[k] for k in numbers}, rel=rel, abs=abs)


def _images(rng: np.random.Generator, n: int, size: int, channels: int = 3
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets with nodata holes, noisy predictions, binary cloud masks."""
    target = rng.integers(0, 6000, (n, size, size, channels)).astype(np.float32)
    hole = rng.random((n, size, size)) < 0.002
    hole[0, :4, :] = True  # a nodata strip wider than nothing
    target[hole] = S2_NODATA
    prediction = (target + rng.normal(0, 300, target.shape)).astype(np.float32)
    cloud = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    cloud[1] = 0  # an image without clouds: its masked region is empty
    return target, prediction, cloud


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
def test_pooled_batches_equal_one_evaluation(batch: int) -> None:
    rng = np.random.default_rng(batch)
    target, prediction, cloud = _images(rng, 7, 24)
    pooled = PooledMetrics()
    for start in range(0, len(target), batch):
        part = slice(start, start + batch)
        pooled.add(target[part], prediction[part], cloud[part])
    whole = evaluate(target, prediction, cloud=cloud)
    result = pooled.result()
    assert list(result) == [*METRIC_NAMES, *PIXEL_COUNTS]
    assert_same_metrics(result, whole)
    assert (whole["mae_masked"] or 0) > 0 and (whole["ssim"] or 0) > 0  # not vacuous


def test_pooled_without_clouds_and_empty() -> None:
    rng = np.random.default_rng(0)
    target, prediction, _ = _images(rng, 4, 16)
    pooled = PooledMetrics()
    pooled.add(target[:2], prediction[:2], None)
    pooled.add(target[2:], prediction[2:], None)
    assert_same_metrics(pooled.result(), evaluate(target, prediction))
    assert pooled.result()["mae_masked"] is None and pooled.result()["pixels_masked"] == 0
    # Nothing pooled: no values (not a perfect 0.0) and pixel counts of 0.
    assert PooledMetrics().result() == dict.fromkeys(METRIC_NAMES) | dict.fromkeys(
        PIXEL_COUNTS, 0)


def test_cloud_at_counts_cloud_classes_and_pools_to_20m() -> None:
    mask = np.full((1, 4, 4, 1), int(MaskClass.CLEAR), np.uint8)
    mask[0, 0, 0, 0] = MaskClass.CIRRUS
    mask[0, 3, 2, 0] = MaskClass.SHADOW
    mask[0, 1, 3, 0] = MaskClass.NODATA
    full = cloud_at(mask, (1, 4, 4, 3))
    assert full.dtype == np.uint8 and full.sum() == 2 and full[0, 0, 0] and full[0, 3, 2]
    # 20 m: a pixel is cloud if any of its four 10 m pixels is.
    np.testing.assert_array_equal(cloud_at(mask, (1, 2, 2, 6))[0], [[1, 0], [0, 1]])
