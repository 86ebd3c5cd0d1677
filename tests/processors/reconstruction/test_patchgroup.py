"""The patch-group method: ranking, a pure temporal change, progression, no seams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import ArgumentError
from decloud.processors.reconstruction.patchgroup import (
    PatchGroupMethod,
    patchgroup,
    rank_group,
)
from tests.processors.reconstruction.conftest import blobs, pad_window

CLEAR, CLOUD, NODATA = int(MaskClass.CLEAR), int(MaskClass.CLOUD), int(MaskClass.NODATA)


def _changed(reflectance: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.rint(reflectance.astype(np.float64) * gain + offset).astype(np.int16)


def test_rank_group_puts_an_identical_date_first(reflectance: np.ndarray) -> None:
    patch = reflectance[:32, :32]
    rng = np.random.default_rng(0)
    noisy = np.clip(patch + rng.normal(0, 400, patch.shape), 0, None).astype(np.int16)
    flipped = patch[::-1, ::-1].copy()
    candidates = np.stack([noisy, flipped, patch, noisy])
    target_ok = ~blobs((32, 32), seed=3, density=0.02, size=3)
    candidates_ok = np.ones((4, 32, 32), dtype=bool)
    candidates_ok[2] = ~blobs((32, 32), seed=4, density=0.02, size=2)  # partly cloudy too
    candidates_ok[3] = False  # nothing in common: unrankable
    order, scores = rank_group(patch, target_ok, candidates, candidates_ok)
    assert order[0] == 2 and scores[2] == pytest.approx(1.0)
    assert list(order) == [2, 0, 1, 3] and np.isneginf(scores[3])
    assert scores[0] > scores[1]


def test_pure_temporal_change_is_recovered(reflectance: np.ndarray) -> None:
    target = _changed(reflectance, 1.3, 150.0)
    series = np.stack([reflectance, target])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    cut = blobs(masks.shape[1:], seed=1, density=0.01, size=5)
    masks[1][cut] = CLOUD
    out, days = patchgroup(series, masks, [0.0, 12.0], 1, fallback=False)
    error = out[cut] - target[cut]
    assert np.sqrt(np.mean(error ** 2)) < 1.0
    assert np.abs(error).max() < 20
    np.testing.assert_array_equal(out[~cut], target[~cut])
    np.testing.assert_allclose(days[cut], 12.0)


def test_the_group_prefers_the_correlated_date(reflectance: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    noise = rng.integers(200, 3000, reflectance.shape).astype(np.int16)
    target = _changed(reflectance, 0.9, 80.0)
    series = np.stack([reflectance, noise, target])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    cut = blobs(masks.shape[1:], seed=2)
    masks[2][cut] = CLOUD
    out, days = patchgroup(series, masks, [0.0, 29.0, 30.0], 2, group=1, fallback=False)
    np.testing.assert_allclose(days[cut], 30.0)
    assert np.sqrt(np.mean((out[cut] - target[cut]) ** 2)) < 1.0


def test_progression_fills_a_cloud_larger_than_the_patches(reflectance: np.ndarray) -> None:
    target = _changed(reflectance, 1.1, 60.0)
    series = np.stack([reflectance, target])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    masks[1, 20:84, 20:84] = CLOUD  # 64 px: no 16 px patch in its core sees a clear pixel
    options = {"patch": 16, "context": 8, "fallback": False}
    one, _ = patchgroup(series, masks, [0.0, 5.0], 1, thresholds=(0.25,), **options)
    assert np.isnan(one[50, 50]).all()
    out, _ = patchgroup(series, masks, [0.0, 5.0], 1, thresholds=(0.5, 0.25, 0.1, 0.0),
                        **options)
    assert np.isfinite(out).all()
    cloud = masks[1] == CLOUD
    assert np.sqrt(np.mean((out[cloud] - target[cloud]) ** 2)) < 2.0


@pytest.mark.parametrize("size", [16, 24])
def test_windowed_on_the_lattice_equals_whole(reflectance: np.ndarray, size: int) -> None:
    rng = np.random.default_rng(size)
    reflectance = reflectance[:61, :53]
    series = np.stack([_changed(reflectance, g, o) for g, o in
                       ((1.0, 0), (1.1, 50), (0.8, 200), (1.2, -40))])
    series = np.clip(series + rng.integers(-30, 30, series.shape), 1, None).astype(np.int16)
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    for t in range(4):
        masks[t][blobs(masks.shape[1:], seed=20 + t, density=0.01, size=5)] = CLOUD
    masks[0, :, 40:] = NODATA
    series[0, :, 40:] = S2_NODATA
    options = {"patch": 8, "context": 4, "thresholds": (0.5, 0.0), "buffer": 1}
    method = PatchGroupMethod(["d0", "d1", "d2", "d3"], "d2", **options)  # type: ignore[arg-type]
    margin = method.margin
    assert method.size_multiple == 4 and margin % 4 == 0 and margin >= 2 * (8 + 4) + 1
    times = [0.0, 10.0, 20.0, 45.0]
    whole, whole_days = patchgroup(series, masks, times, 2, **options)  # type: ignore[arg-type]
    assert np.isfinite(whole_days).mean() > 0.9
    height, width = masks.shape[1:]
    # Blocks start on the lattice (multiples of the size multiple), as the engine's do.
    for row in range(0, height, size):
        for col in range(0, width, size):
            r1, c1 = min(row + size, height), min(col + size, width)
            box = (row - margin, col - margin, r1 + margin, c1 + margin)
            part, days = patchgroup(pad_window(series, *box, S2_NODATA),
                                    pad_window(masks, *box, NODATA), times, 2,
                                    **options)  # type: ignore[arg-type]
            core = (slice(margin, margin + r1 - row), slice(margin, margin + c1 - col))
            np.testing.assert_array_equal(part[core], whole[row:r1, col:c1])
            np.testing.assert_array_equal(days[core], whole_days[row:r1, col:c1])


def test_method_describes_itself_and_refuses_bad_parameters() -> None:
    method = PatchGroupMethod(["d0", "d1", "d2"], "d1", buffer=2)
    assert method.size_multiple == 16
    assert method.margin == 160  # 3 passes x (32 + 16) + 2, up to a multiple of 16
    described = method.describe()
    json.dumps(described)
    assert described["method"] == "patchgroup" and described["patch_px"] == 32
    for bad in ({"patch": 15}, {"context": 5}, {"group": 0}, {"thresholds": ()},
                {"thresholds": (1.5,)}, {"consistency": -1.0}, {"min_pixels": 0}):
        with pytest.raises(ArgumentError):
            PatchGroupMethod(["d0", "d1"], "d1", **bad)  # type: ignore[arg-type]
