"""Linear interpolation in time: a hand computation, one-sided and no-clear pixels."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from decloud.constants import MaskClass
from decloud.errors import ArgumentError
from decloud.processors.reconstruction.linear import LinearMethod, interpolate

CLEAR, CLOUD, SHADOW = int(MaskClass.CLEAR), int(MaskClass.CLOUD), int(MaskClass.SHADOW)

# Three dates (days 0, 10, 40), four pixels in a row, two bands; the target is day 10.
TIMES = [0.0, 10.0, 40.0]
SERIES = np.array([
    [[100, 1000], [100, 1000], [100, 1000], [100, 1000]],
    [[200, 2000], [900, 9000], [900, 9000], [900, 9000]],
    [[400, 4000], [400, 4000], [400, 4000], [400, 4000]],
], dtype=np.int16)[:, None]
MASKS = np.array([
    [CLEAR, CLEAR, CLEAR, CLOUD],
    [CLEAR, CLOUD, SHADOW, CLOUD],
    [CLEAR, CLEAR, CLOUD, CLOUD],
], dtype=np.uint8)[:, None]


def test_hand_computed_interpolation_one_sided_and_no_clear() -> None:
    out, days = interpolate(SERIES, MASKS, TIMES, 1)
    # Pixel 0: the target is clear, its own value. Pixel 1: 10/40 of the way from day 0
    # to day 40. Pixel 2: only day 0 is clear, copied. Pixel 3: nothing clear.
    np.testing.assert_array_equal(out[0, 0], [200, 2000])
    np.testing.assert_allclose(out[0, 1], [100 + 0.25 * 300, 1000 + 0.25 * 3000], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 2], [100, 1000])
    assert np.isnan(out[0, 3]).all()
    np.testing.assert_array_equal(days[0, :3], [0.0, 30.0, 10.0])
    assert math.isnan(days[0, 3])


def test_method_interface_batch_and_missing_target() -> None:
    t0 = datetime(2021, 3, 2, 10, 40, tzinfo=UTC)
    dates = [t0 + timedelta(days=d) for d in TIMES]
    method = LinearMethod.from_dates(dates, 1, bands=("B02", "B08"))
    assert method.target == "d1" and method.margin == 0 and method.extras == ("days",)
    assert [k.name for k in method.input_keys][:3] == ["s2_d0", "s2_mask_d0", "dt_d0"]
    described = method.describe()
    json.dumps(described)
    assert described["method"] == "linear" and described["target"] == "d1"
    inputs: dict[str, np.ndarray] = {}
    for i in range(3):
        inputs[f"s2_d{i}"] = np.stack([SERIES[i], SERIES[i]])
        inputs[f"s2_mask_d{i}"] = np.stack([MASKS[i], MASKS[i]])[..., None]
        inputs[f"dt_d{i}"] = np.array([[TIMES[i]], [TIMES[i]]], dtype=np.float32)
    # The second block has no product for the target: interpolated at its time.
    inputs["dt_d1"][1, 0] = math.nan
    result = method(inputs)
    expected, expected_days = interpolate(SERIES, MASKS, TIMES, 1)
    np.testing.assert_array_equal(result.reflectance[0], expected)
    np.testing.assert_array_equal(result.extras["days"][0], expected_days)
    # Without the target: pixel 0 between days 0 and 40, 10 days in.
    np.testing.assert_allclose(result.reflectance[1][0, 0], [175, 1750], rtol=1e-6)
    assert result.extras["days"][1][0, 0] == 30.0


def test_bad_arguments() -> None:
    with pytest.raises(ArgumentError, match="target"):
        interpolate(SERIES, MASKS, TIMES, 3)
    with pytest.raises(ArgumentError, match="target"):
        LinearMethod(["d0", "d1"], "d2")
    with pytest.raises(ArgumentError, match="max_days"):
        LinearMethod(["d0"], "d0", max_days=-1)
    with pytest.raises(ArgumentError, match="bands"):
        LinearMethod(["d0"], "d0", bands=("B05",))


@pytest.mark.parametrize(("series", "masks", "times", "target", "field"), [
    (SERIES.astype(np.int32), MASKS, TIMES, 1, "series"),  # neither int16 nor float
    (SERIES[:, 0], MASKS, TIMES, 1, "series"),  # (T, W, C): no row axis
    (SERIES, MASKS.astype(np.float32), TIMES, 1, "masks"),  # float mask classes
    (SERIES, MASKS[:2], TIMES, 1, "masks"),
    (SERIES, MASKS, np.array(TIMES)[:, None], 1, "times"),  # (T, 1): not (T,)
    (SERIES, MASKS, TIMES, 1.0, "target"),  # an index must be an integer
])
def test_interpolate_refuses_bad_shapes_and_dtypes(series: np.ndarray, masks: np.ndarray,
                                                   times: object, target: object,
                                                   field: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        interpolate(series, masks, times, target)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_interpolate_accepts_float_reflectance() -> None:
    floating = np.where(SERIES == -10000, np.nan, SERIES / 10000.0).astype(np.float32)
    got, days = interpolate(floating, MASKS, TIMES, 1)
    expected, expected_days = interpolate(SERIES, MASKS, TIMES, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_array_equal(days, expected_days)
