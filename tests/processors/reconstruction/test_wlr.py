"""WLR: a pure temporal change recovered, the reference chosen by correlation, no seams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import ArgumentError
from decloud.processors.reconstruction.wlr import WLRMethod, local_scores, wlr
from tests.processors.reconstruction.conftest import blobs, pad_window

CLEAR, CLOUD, NODATA = int(MaskClass.CLEAR), int(MaskClass.CLOUD), int(MaskClass.NODATA)


def _shifted(reflectance: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.rint(reflectance.astype(np.float64) * gain + offset).astype(np.int16)


def test_pure_temporal_change_is_recovered(reflectance: np.ndarray) -> None:
    target = _shifted(reflectance, 1.3, 150.0)
    series = np.stack([reflectance, target])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    cut = blobs(masks.shape[1:], seed=1, density=0.01, size=5)
    masks[1][cut] = CLOUD
    assert 0.2 < cut.mean() < 0.8
    out, days = wlr(series, masks, [0.0, 12.0], 1, fallback=False)
    error = out[cut] - target[cut]
    # Exact up to the integer rounding of the target and the slope's tiny ridge.
    assert np.sqrt(np.mean(error ** 2)) < 1.0
    assert np.abs(error).max() < 20
    np.testing.assert_array_equal(out[~cut], target[~cut])
    assert set(np.unique(days[cut])) == {12.0} and (days[~cut] == 0).all()


def test_reference_is_chosen_by_local_correlation(reflectance: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(200, 3000, reflectance.shape).astype(np.int16)
    target = _shifted(reflectance, 0.9, 80.0)
    # The uncorrelated date is nearer in time: correlation must win over distance.
    series = np.stack([reflectance, noise, target])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    cut = blobs(masks.shape[1:], seed=2)
    masks[2][cut] = CLOUD
    from decloud.processors.reconstruction._common import observed

    ok, values = observed(series, masks, 0)
    scores = local_scores(values, ok, 2, 5, min_pixels=5)
    inside = np.isfinite(scores[0]) & np.isfinite(scores[1])
    assert (scores[0][inside] > scores[1][inside]).all()
    assert np.isneginf(scores[2]).all()
    out, days = wlr(series, masks, [0.0, 29.0, 30.0], 2, radius=5)
    assert set(np.unique(days[cut])) == {30.0}
    assert np.sqrt(np.mean((out[cut] - target[cut]) ** 2)) < 1.0


@pytest.mark.parametrize("size", [16, pytest.param(23, marks=pytest.mark.slow)])
def test_windowed_equals_whole(reflectance: np.ndarray, size: int) -> None:
    rng = np.random.default_rng(size)
    reflectance = reflectance[:50, :60]
    series = np.stack([_shifted(reflectance, g, o) for g, o in
                       ((1.0, 0), (1.1, 50), (0.8, 200), (1.2, -40))])
    series = np.clip(series + rng.integers(-30, 30, series.shape), 1, None).astype(np.int16)
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    for t in range(4):
        masks[t][blobs(masks.shape[1:], seed=10 + t, density=0.01)] = CLOUD
    masks[0, :, 50:] = NODATA
    series[0, :, 50:] = S2_NODATA
    options = {"radius": 3, "widen": 2, "buffer": 1}
    method = WLRMethod(["d0", "d1", "d2", "d3"], "d2", **options)
    margin = method.margin
    assert margin == (3 << 2) + 1
    times = [0.0, 10.0, 20.0, 45.0]
    whole, whole_days = wlr(series, masks, times, 2, **options)
    height, width = masks.shape[1:]
    for row in range(0, height, size):
        for col in range(0, width, size):
            r1, c1 = min(row + size, height), min(col + size, width)
            box = (row - margin, col - margin, r1 + margin, c1 + margin)
            part, days = wlr(pad_window(series, *box, S2_NODATA),
                             pad_window(masks, *box, NODATA), times, 2, **options)
            core = (slice(margin, margin + r1 - row), slice(margin, margin + c1 - col))
            np.testing.assert_array_equal(part[core], whole[row:r1, col:c1])
            np.testing.assert_array_equal(days[core], whole_days[row:r1, col:c1])


def test_method_describes_itself_and_refuses_bad_parameters() -> None:
    method = WLRMethod(["d0", "d1"], "d1", radius=4, buffer=2)
    assert method.margin == (4 << 3) + 2 and method.size_multiple == 1
    described = method.describe()
    json.dumps(described)
    assert described["method"] == "wlr" and described["radius_px"] == 4
    for bad in ({"radius": 0}, {"step": 0}, {"classes": 0}, {"min_similar": 0},
                {"references": 0}, {"widen": -1}):
        with pytest.raises(ArgumentError):
            WLRMethod(["d0", "d1"], "d1", **bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="int16"):
        wlr(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4), np.uint8), [0, 1], 1)
    with pytest.raises(ArgumentError, match="target"):
        wlr(np.zeros((2, 4, 4, 1), np.int16), np.zeros((2, 4, 4), np.uint8), [0, 1], 2)
