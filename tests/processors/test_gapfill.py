"""Per-pixel gap-filling: hand-computed cases, brute force, streamed equals whole."""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from decloud.archive import Archive
from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import ArgumentError
from decloud.keys import CLOUD_CLASSES
from decloud.processors.gapfill import (
    GapFillMethod,
    GapFillOptions,
    dilate_disk,
    fill_gaps,
    gapfill_tile,
    output_path,
    time_grid,
    usable,
)

CLEAR, CLOUD, CIRRUS, SHADOW, NODATA = (int(c) for c in MaskClass)
BANDS = ("B02", "B03", "B04", "B08")


def _series(values: list[list[list[int]]]) -> np.ndarray:
    """(T, W, C) nested lists to a (T, 1, W, C) int16 series."""
    return np.array(values, dtype=np.int16)[:, None]


# Three dates (days 0, 10, 30), five pixels in a row, two bands.
HAND_DAYS = [0.0, 10.0, 30.0]
HAND_SERIES = _series([
    [[100, 1000], [100, 1000], [100, 1000], [100, 1000], [100, 1000]],
    [[200, 2000], [200, 2000], [300, 3000], [200, 2000], [200, S2_NODATA]],
    [[400, 4000], [400, 4000], [700, 7000], [400, 4000], [400, 4000]],
])
HAND_MASKS = np.array([
    [CLEAR, CLEAR, CLEAR, CLOUD, CLEAR],
    [CLEAR, CLEAR, SHADOW, CIRRUS, CLEAR],
    [CLEAR, CLOUD, CLEAR, NODATA, CLEAR],
], dtype=np.uint8)[:, None]


def test_hand_computed_interpolation() -> None:
    out = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, 16.0)
    got, days = out.reflectance[0, 0], out.days[0, 0]
    # pixel 0: all clear, between day 10 and day 30: 200 + 6/20 x (400 - 200).
    np.testing.assert_allclose(got[0], [260.0, 2600.0], rtol=0, atol=1e-3)
    assert days[0] == 14.0  # max(16 - 10, 30 - 16)
    # pixel 1: cloud after: one side only, the day-10 value as is.
    np.testing.assert_array_equal(got[1], [200.0, 2000.0])
    assert days[1] == 6.0
    # pixel 2: shadow at day 10: between day 0 and day 30: 100 + 16/30 x 600.
    np.testing.assert_allclose(got[2], [420.0, 4200.0], rtol=0, atol=1e-3)
    assert days[2] == 16.0
    # pixel 3: cloud, cirrus, mask nodata: no value.
    assert np.isnan(got[3]).all() and np.isnan(days[3])
    # pixel 4: a band nodata at day 10: the date is not used there.
    np.testing.assert_allclose(got[4], [100 + 16 / 30 * 300, 1000 + 16 / 30 * 3000],
                               rtol=0, atol=1e-3)
    np.testing.assert_array_equal(out.before[0, 0], [1, 1, 0, -1, 0])
    np.testing.assert_array_equal(out.after[0, 0], [2, -1, 2, -1, 2])


def test_no_floating_point_warning_and_no_discarded_weights() -> None:
    from decloud.processors.gapfill import _pair_tables

    # Every pair table holds pairs no pixel can have (ib == ia: ta - tb = 0); their
    # weight must not be computed (it was +-inf or NaN, hidden by an errstate).
    weight = _pair_tables(np.array(HAND_DAYS), 16.0, None)[4]
    assert np.isfinite(weight).all() and ((weight >= 0) & (weight <= 1)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, [16.0, 0.0, 40.0],
                            max_days=20.0)
    assert np.isfinite(out.reflectance[0, 0, 0]).all()


def test_target_on_a_date_is_used_as_is_where_clear() -> None:
    out = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, [10.0])
    got, days = out.reflectance[0, 0], out.days[0, 0]
    np.testing.assert_array_equal(got[0], [200.0, 2000.0])
    assert days[0] == 0.0 and out.after[0, 0, 0] == -1
    # Not clear at day 10 there: interpolated between day 0 and day 30 (10/30).
    np.testing.assert_allclose(got[2], [300.0, 3000.0], atol=1e-3)
    assert days[2] == 20.0


def test_before_first_and_after_last_date_are_one_sided() -> None:
    out = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, [-5.0, 45.0])
    np.testing.assert_array_equal(out.reflectance[0, 0, 0], [100.0, 1000.0])
    np.testing.assert_array_equal(out.days[0, 0, :3], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(out.reflectance[1, 0, 0], [400.0, 4000.0])
    # pixel 1 is cloudy at day 30: the last clear value is day 10's, 35 days before.
    np.testing.assert_array_equal(out.reflectance[1, 0, 1], [200.0, 2000.0])
    assert out.days[1, 0, 1] == 35.0


def test_max_days_drops_far_observations() -> None:
    out = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, 16.0, max_days=10)
    # pixel 0: day 30 is 14 days away: only day 10 is used.
    np.testing.assert_array_equal(out.reflectance[0, 0, 0], [200.0, 2000.0])
    # pixel 2: day 0 is 16 days away and day 30 14: nothing within 10 days.
    assert np.isnan(out.reflectance[0, 0, 2]).all()


def test_float_reflectance_equals_encoded() -> None:
    physical = HAND_SERIES.astype(np.float32) / 10000
    physical[HAND_SERIES == S2_NODATA] = np.nan
    encoded = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, [3.0, 16.0, 25.0])
    floats = fill_gaps(physical, HAND_MASKS, HAND_DAYS, [3.0, 16.0, 25.0])
    np.testing.assert_allclose(floats.reflectance, encoded.reflectance, atol=1e-3)
    np.testing.assert_array_equal(floats.days, encoded.days)


def test_datetimes_equal_day_numbers() -> None:
    t0 = datetime(2020, 5, 1, 10, 30, tzinfo=UTC)
    dates = [t0 + timedelta(days=d) for d in HAND_DAYS]
    by_date = fill_gaps(HAND_SERIES, HAND_MASKS, dates, t0 + timedelta(days=16))
    by_days = fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, 16.0)
    np.testing.assert_array_equal(by_date.reflectance, by_days.reflectance)
    np.testing.assert_array_equal(by_date.days, by_days.days)


def test_dilation_buffer_is_a_disk() -> None:
    # One cloud pixel at the centre of the middle date; buffer 2.
    series = np.full((3, 7, 7, 1), 500, dtype=np.int16)
    series[1] = 900
    masks = np.zeros((3, 7, 7), dtype=np.uint8)
    masks[1, 3, 3] = CLOUD
    ok = usable(series, masks, buffer=2)
    rows, cols = np.mgrid[:7, :7]
    inside = (rows - 3) ** 2 + (cols - 3) ** 2 <= 4
    np.testing.assert_array_equal(ok[1], ~inside)
    assert ok[1, 1, 2] and not ok[1, 1, 3] and not ok[1, 2, 2]  # (2, 1) out, (1, 1) in
    out = fill_gaps(series, masks, [0.0, 5.0, 10.0], 5.0, buffer=2)
    np.testing.assert_array_equal(out.reflectance[0, ..., 0], np.where(inside, 500, 900))
    np.testing.assert_array_equal(out.days[0], np.where(inside, 5.0, 0.0))
    # Without a buffer only the cloud pixel itself is filled.
    plain = fill_gaps(series, masks, [0.0, 5.0, 10.0], 5.0)
    assert (plain.reflectance[0, ..., 0] == 500).sum() == 1


def test_nodata_is_not_dilated() -> None:
    series = np.full((1, 5, 5, 1), 100, dtype=np.int16)
    masks = np.zeros((1, 5, 5), dtype=np.uint8)
    masks[0, 2, 2] = NODATA
    ok = usable(series, masks, buffer=2)
    assert not ok[0, 2, 2] and ok.sum() == 24


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5])
def test_dilate_disk_equals_scipy(radius: int) -> None:
    rng = np.random.default_rng(radius)
    for shape in [(2, 23, 31), (1, 3, 4), (1, 1, 9)]:
        mask = rng.random(shape) < 0.03
        rows, cols = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        disk = rows ** 2 + cols ** 2 <= radius ** 2
        for t in range(shape[0]):
            expected = ndimage.binary_dilation(mask[t], structure=disk) if radius else mask[t]
            np.testing.assert_array_equal(dilate_disk(mask, radius)[t], expected)


def _brute_force(series: np.ndarray, masks: np.ndarray, times: list[float],
                 targets: list[float], buffer: int,
                 max_days: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A plain loop over pixels, dates and targets (the kernel's rules, in words)."""
    count, height, width, channels = series.shape
    ok = np.zeros((count, height, width), dtype=bool)
    for t in range(count):
        for y in range(height):
            for x in range(width):
                near_cloud = any(
                    masks[t, yy, xx] in CLOUD_CLASSES
                    for yy in range(max(0, y - buffer), min(height, y + buffer + 1))
                    for xx in range(max(0, x - buffer), min(width, x + buffer + 1))
                    if (yy - y) ** 2 + (xx - x) ** 2 <= buffer ** 2)
                ok[t, y, x] = (masks[t, y, x] == CLEAR and not near_cloud
                               and all(series[t, y, x] != S2_NODATA))
    values = np.full((len(targets), height, width, channels), np.nan)
    days = np.full((len(targets), height, width), np.nan)
    for k, target in enumerate(targets):
        for y in range(height):
            for x in range(width):
                use = [t for t in range(count) if ok[t, y, x] and
                       (max_days is None or abs(times[t] - target) <= max_days)]
                before = [t for t in use if times[t] <= target]
                after = [t for t in use if times[t] > target]
                # Nearest in time; among equal times the later in the series.
                b = max(before, key=lambda t: (times[t], t)) if before else None
                a = min(after, key=lambda t: (times[t], -t)) if after else None
                if b is not None and times[b] == target:
                    a = None
                if b is not None and a is not None:
                    vb, va = series[b, y, x].astype(float), series[a, y, x].astype(float)
                    w = (target - times[b]) / (times[a] - times[b])
                    values[k, y, x] = vb + w * (va - vb)
                    days[k, y, x] = max(target - times[b], times[a] - target)
                elif b is not None:
                    values[k, y, x], days[k, y, x] = series[b, y, x], target - times[b]
                elif a is not None:
                    values[k, y, x], days[k, y, x] = series[a, y, x], times[a] - target
    return values, days


def _random_series(rng: np.random.Generator, count: int, height: int, width: int,
                   channels: int) -> tuple[np.ndarray, np.ndarray]:
    series = rng.integers(-500, 9000, (count, height, width, channels)).astype(np.int16)
    series[rng.random(series.shape) < 0.02] = S2_NODATA
    masks = rng.choice([CLEAR, CLOUD, CIRRUS, SHADOW, NODATA], (count, height, width),
                       p=[0.8, 0.06, 0.04, 0.05, 0.05]).astype(np.uint8)
    return series, masks


@pytest.mark.parametrize(("seed", "buffer", "max_days"), [(0, 0, None), (1, 1, None),
                                                          (2, 2, 25.0)])
def test_equals_brute_force_on_random_series(seed: int, buffer: int,
                                             max_days: float | None) -> None:
    rng = np.random.default_rng(seed)
    series, masks = _random_series(rng, 7, 9, 8, 3)
    # Unsorted dates, one repeated (two products at the same time).
    times = [40.0, 5.0, 22.5, 60.0, 5.0, 31.0, 12.0]
    targets = [-3.0, 5.0, 10.0, 22.5, 26.0, 45.0, 70.0]
    out = fill_gaps(series, masks, times, targets, buffer=buffer, max_days=max_days)
    values, days = _brute_force(series, masks, times, targets, buffer, max_days)
    np.testing.assert_allclose(out.reflectance, values, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.isnan(out.reflectance), np.isnan(values))
    np.testing.assert_allclose(out.days, days, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(out.days), np.isnan(days))


def _pad_window(array: np.ndarray, row0: int, col0: int, row1: int, col1: int,
                fill: int) -> np.ndarray:
    """``array[:, row0:row1, col0:col1]`` with ``fill`` where the window leaves it."""
    height, width = array.shape[1:3]
    out = np.full((array.shape[0], row1 - row0, col1 - col0, *array.shape[3:]), fill,
                  dtype=array.dtype)
    r0, c0, r1, c1 = max(row0, 0), max(col0, 0), min(row1, height), min(col1, width)
    out[:, r0 - row0:r1 - row0, c0 - col0:c1 - col0] = array[:, r0:r1, c0:c1]
    return out


@pytest.mark.parametrize(("size", "buffer"), [(16, 3), (7, 2), (50, 4)])
def test_windowed_equals_whole(size: int, buffer: int) -> None:
    rng = np.random.default_rng(size)
    series, masks = _random_series(rng, 5, 37, 45, 4)
    # Clouds in blobs, so the buffer matters across block edges.
    masks[ndimage.binary_dilation(rng.random(masks.shape) < 0.01, iterations=2)] = CLOUD
    times, targets = [0.0, 11.0, 19.0, 33.0, 40.0], [15.0, 33.0]
    method = GapFillMethod([f"d{i}" for i in range(5)], 0.0, buffer=buffer)
    margin = method.margin
    whole = fill_gaps(series, masks, times, targets, buffer=buffer)
    height, width = masks.shape[1:]
    for row in range(0, height, size):
        for col in range(0, width, size):
            r1, c1 = min(row + size, height), min(col + size, width)
            box = (row - margin, col - margin, r1 + margin, c1 + margin)
            part = fill_gaps(_pad_window(series, *box, S2_NODATA),
                             _pad_window(masks, *box, NODATA), times, targets, buffer=buffer)
            core = (slice(None), slice(margin, margin + r1 - row),
                    slice(margin, margin + c1 - col))
            np.testing.assert_array_equal(part.reflectance[core],
                                          whole.reflectance[:, row:r1, col:c1])
            np.testing.assert_array_equal(part.days[core], whole.days[:, row:r1, col:c1])


def test_method_interface_and_batch() -> None:
    pytest.importorskip("keras")
    from decloud.inference.method import BlockMethod, BlockResult

    t0 = datetime(2021, 3, 2, 10, 40, tzinfo=UTC)
    dates = [t0, t0 + timedelta(days=10), t0 + timedelta(days=30)]
    method = GapFillMethod.from_dates(dates, t0 + timedelta(days=16), bands=("B02", "B08"),
                                      buffer=1)
    assert isinstance(method, BlockMethod)
    assert method.margin == 1 and method.size_multiple == 1
    assert method.output_bands == ("B02", "B08") and method.extras == ("days",)
    assert [k.name for k in method.input_keys] == [
        "s2_d0", "s2_mask_d0", "dt_d0", "s2_d1", "s2_mask_d1", "dt_d1",
        "s2_d2", "s2_mask_d2", "dt_d2"]
    assert method.input_keys[0].bands == ("B02", "B08")
    assert method.target == 16.0
    json.dumps(method.describe())

    rng = np.random.default_rng(3)
    series, masks = _random_series(rng, 3, 12, 10, 2)
    second = series[::-1].copy()  # another block of the batch
    inputs: dict[str, np.ndarray] = {}
    for i in range(3):
        inputs[f"s2_d{i}"] = np.stack([series[i], second[i]])
        inputs[f"s2_mask_d{i}"] = np.stack([masks[i], masks[i]])[..., None]
        inputs[f"dt_d{i}"] = np.array([[HAND_DAYS[i]], [HAND_DAYS[i]]], dtype=np.float32)
    # The second block has no product for d2 (dt NaN): it is left out there.
    inputs["dt_d2"][1, 0] = math.nan
    result = method(inputs)
    assert isinstance(result, BlockResult)
    assert result.reflectance.shape == (2, 12, 10, 2)
    assert result.reflectance.dtype == np.float32
    first = fill_gaps(series, masks, HAND_DAYS, 16.0, buffer=1)
    np.testing.assert_array_equal(result.reflectance[0], first.reflectance[0])
    np.testing.assert_array_equal(result.extras["days"][0], first.days[0])
    other = fill_gaps(second[:2], masks[:2], HAND_DAYS[:2], 16.0, buffer=1)
    np.testing.assert_array_equal(result.reflectance[1], other.reflectance[0])
    np.testing.assert_array_equal(result.extras["days"][1], other.days[0])


def test_time_grid() -> None:
    start = datetime(2020, 1, 1)
    grid = time_grid(start, datetime(2020, 1, 31), timedelta(days=10))
    assert grid == [start + timedelta(days=d) for d in (0, 10, 20, 30)]
    with pytest.raises(ArgumentError):
        time_grid(start, start, timedelta(0))
    with pytest.raises(ArgumentError):
        time_grid(start, start - timedelta(days=1), timedelta(days=1))


def test_bad_arguments() -> None:
    with pytest.raises(ArgumentError, match="masks"):
        fill_gaps(HAND_SERIES, HAND_MASKS[:, :, :3], HAND_DAYS, 1.0)
    with pytest.raises(ArgumentError, match="dates"):
        fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS[:2], 1.0)
    with pytest.raises(ArgumentError, match="datetimes"):
        fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, datetime(2020, 1, 1))
    with pytest.raises(ArgumentError, match="buffer"):
        fill_gaps(HAND_SERIES, HAND_MASKS, HAND_DAYS, 1.0, buffer=-1)
    with pytest.raises(ArgumentError, match="series"):
        fill_gaps(HAND_SERIES.astype(np.int32), HAND_MASKS, HAND_DAYS, 1.0)
    with pytest.raises(ArgumentError, match="bands"):
        GapFillMethod(["d0"], 0.0, bands=("B05",))
    with pytest.raises(ArgumentError):
        GapFillMethod([], 0.0)


# -- the processor, on an archive of generic stacks with per-pixel masks -----------------

STACK_DAYS = (0, 7, 15, 24, 31)
STACK_T0 = datetime(2015, 7, 11, 10, 0, 8, tzinfo=UTC)


def _stack_archive(root: Path) -> Archive:
    """Five dates of real T33TVM reflectance (scaled per date) with per-pixel masks."""
    import rasterio
    import yaml

    from decloud.products import open_product
    from tests.conftest import THEIA_CLEAR

    theia = open_product(THEIA_CLEAR)
    grid = theia.grid()
    real = theia.read(list(BANDS))
    rng = np.random.default_rng(7)
    folder = root / "S2" / "T33TVM"
    folder.mkdir(parents=True)
    for i, offset in enumerate(STACK_DAYS):
        data = np.rint(real * (1 + 0.1 * i) * 10000).astype(np.uint16)
        blobs = ndimage.binary_dilation(rng.random(real.shape[1:]) < 0.004, iterations=4)
        mask = np.where(blobs, rng.choice([1, 2, 3], real.shape[1:]), 0).astype(np.uint8)
        mask[:, 90 - 10 * i:] = np.where(i % 2, 255, mask[:, 90 - 10 * i:])
        data[:, mask == 255] = 0
        when = STACK_T0 + timedelta(days=offset)
        stem = folder / f"stack_{when:%Y%m%d}"
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height,
                   "crs": grid.crs, "transform": grid.transform}
        with rasterio.open(stem.with_suffix(".tif"), "w", count=len(BANDS), dtype="uint16",
                           nodata=0, **profile) as dst:
            dst.write(data)
        with rasterio.open(stem.with_name(stem.name + "_mask.tif"), "w", count=1,
                           dtype="uint8", **profile) as dst:
            dst.write(mask, 1)
        stem.with_suffix(".yaml").write_text(yaml.safe_dump({
            "platform": "S2A", "tile": "T33TVM", "acquired": when.isoformat(),
            "bands": list(BANDS), "mask": {"path": stem.name + "_mask.tif", "cloud": [1],
                                           "shadow": [2], "cirrus": [3], "nodata": [255]}}))
    return Archive.from_root(root)


def _whole_reference(archive: Archive, when: datetime, buffer: int,
                     window: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel on the whole grid (no engine): encoded reflectance (C, H, W), days."""
    from decloud.keys import encode_s2

    products = sorted(archive.select_s2("T33TVM"), key=lambda p: p.acquired)
    products = [p for p in products if abs(p.acquired - when) <= timedelta(days=window)]
    grid = products[0].grid()
    series = np.stack([encode_s2(np.moveaxis(p.read(list(BANDS), grid), 0, -1))
                       for p in products])
    masks = np.stack([p.mask(grid) for p in products])
    # The input contract: mask nodata wherever a band is.
    masks[(series == S2_NODATA).any(axis=-1)] = NODATA
    filled = fill_gaps(series, masks, [p.acquired for p in products], when, buffer=buffer,
                       max_days=window)
    encoded = encode_s2(np.moveaxis(filled.reflectance[0], -1, 0) / 10000)
    return encoded, filled.days[0]


def test_processor_writes_resumes_and_equals_whole(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    import rasterio

    from decloud.inference import QUALITY_CLEAR, QUALITY_NODATA, EngineOptions, record_path

    archive = _stack_archive(tmp_path / "archive")
    between = (STACK_T0 + timedelta(days=11)).date()  # no product that day
    own = (STACK_T0 + timedelta(days=15)).date()      # the third product's day
    far = date(2016, 1, 1)
    options = GapFillOptions(window_days=15.5, buffer=2, bands=BANDS,
                             engine=EngineOptions(block_size=32, readers=2))
    out_dir = tmp_path / "out"
    results = gapfill_tile(archive, "33TVM", [between, own, far], out_dir, options)
    assert [r.status for r in results] == ["done", "done", "no-data"]
    assert results[0].target == datetime.combine(between, time(), tzinfo=UTC)
    assert results[1].target == STACK_T0 + timedelta(days=15)
    # Within 15.5 days: days 0 to 24 of the series (day 31 is 20.4 and 16 days away).
    assert [(d - STACK_T0).days for d in results[0].dates] == [0, 7, 15, 24]
    assert results[1].dates == results[0].dates
    first_out, own_out = results[0].output, results[1].output
    assert first_out is not None and own_out is not None

    # No product on the target day: the interpolation everywhere, equal to the kernel
    # on the whole grid (blocks of 32 px with a 2 px halo: no seams).
    path = first_out
    assert path == output_path(out_dir, "T33TVM", between)
    expected, days = _whole_reference(archive, results[0].target, 2, 15.5)
    with rasterio.open(path) as src:
        got = src.read()
        assert src.descriptions == BANDS
    np.testing.assert_array_equal(got, expected)
    with rasterio.open(path.with_name(path.stem + "_days.tif")) as src:
        got_days = src.read(1)
    np.testing.assert_array_equal(got_days == 65535, ~np.isfinite(days))
    np.testing.assert_array_equal(got_days[np.isfinite(days)],
                                  np.rint(days[np.isfinite(days)]).astype(np.uint16))
    record = json.loads(record_path(path).read_text())
    assert record["method"]["method"] == "gapfill" and record["method"]["buffer_px"] == 2
    assert len(record["inputs"]["acquisitions"]) == 4

    # A product that day: its clear pixels kept bit-identical, the rest filled.
    path = own_out
    expected, _ = _whole_reference(archive, results[1].target, 2, 15.5)
    target = next(p for p in archive.s2 if p.acquired == results[1].target)
    from decloud.keys import encode_s2

    original = encode_s2(target.read(list(BANDS)))
    with rasterio.open(path) as src:
        got = src.read()
    with rasterio.open(path.with_name(path.stem + "_quality.tif")) as src:
        quality = src.read(1)
    clear = quality == QUALITY_CLEAR
    assert clear.any() and (~clear & (quality != QUALITY_NODATA)).any()
    np.testing.assert_array_equal(got[:, clear], original[:, clear])
    np.testing.assert_array_equal(got[:, ~clear & (quality == 1)],
                                  expected[:, ~clear & (quality == 1)])

    # Resume: completed targets are not touched; one without a record is redone.
    stamp = path.stat().st_mtime_ns
    again = gapfill_tile(archive, "T33TVM", [between, own], out_dir, options)
    assert [r.status for r in again] == ["complete", "complete"]
    assert path.stat().st_mtime_ns == stamp
    record_path(first_out).unlink()
    again = gapfill_tile(archive, "T33TVM", [between, own], out_dir, options)
    assert [r.status for r in again] == ["done", "complete"]
    assert record_path(first_out).is_file()
    # A truncated record does not vouch for its outputs either.
    record_path(own_out).write_text('{"outputs": {"reflectance": ')
    again = gapfill_tile(archive, "T33TVM", [between, own], out_dir, options)
    assert [r.status for r in again] == ["complete", "done"]
    assert json.loads(record_path(own_out).read_text())["outputs"]
