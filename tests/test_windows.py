"""Window arithmetic: margins, the pad/crop pair, crops at 20 m."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from decloud.errors import GridError
from decloud.windows import Crop, core_crop, crop, expand, pad_to_multiple, round_up


def test_round_up() -> None:
    assert [round_up(v, 4) for v in (0, 1, 4, 5, 8)] == [0, 4, 4, 8, 8]
    assert round_up(7, 1) == 7
    with pytest.raises(GridError, match="multiple"):
        round_up(3, 0)


def test_expand_clips_to_the_domain_but_never_the_window() -> None:
    domain = Window(0, 0, 100, 80)
    assert expand(Window(10, 20, 5, 5), 3) == Window(7, 17, 11, 11)
    assert expand(Window(10, 20, 5, 5), 3, within=domain) == Window(7, 17, 11, 11)
    assert expand(Window(0, 0, 5, 5), 3, within=domain) == Window(0, 0, 8, 8)
    assert expand(Window(98, 78, 2, 2), 3, within=domain) == Window(95, 75, 5, 5)
    # A window past the domain keeps all its pixels; only the margin is clipped.
    assert expand(Window(97, -4, 6, 6), 3, within=domain) == Window(94, -4, 9, 9)
    with pytest.raises(GridError, match="margin"):
        expand(Window(0, 0, 1, 1), -1)
    with pytest.raises(GridError, match="whole pixels"):
        expand(Window(0.5, 0, 1, 1), 1)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 16), (17, 33)])
@pytest.mark.parametrize(("multiple", "margin"), [(1, 0), (4, 0), (4, 8), (16, 3)])
def test_pad_to_multiple_then_crop_gives_back_the_array(shape: tuple[int, int], multiple: int,
                                                        margin: int) -> None:
    rng = np.random.default_rng(0)
    array = rng.random((2, *shape)).astype(np.float32)
    padded, where = pad_to_multiple(array, multiple, margin=margin, fill=-1.0)
    assert padded.shape[0] == 2
    assert padded.shape[1] % multiple == 0 and padded.shape[2] % multiple == 0
    assert padded.shape[1] - shape[0] - 2 * margin < multiple  # the smallest such size
    assert padded.shape[1] >= shape[0] + 2 * margin
    assert where == Crop(margin, margin, *shape)
    np.testing.assert_array_equal(crop(padded, where), array)
    # Everything outside the crop is the fill value.
    outside = np.ones(padded.shape[1:], bool)
    outside[where.slices] = False
    assert (padded[:, outside] == -1.0).all()


def test_pad_nhwc_and_integer_fill() -> None:
    array = np.arange(2 * 5 * 3 * 4, dtype=np.int16).reshape(2, 5, 3, 4)  # NHWC
    padded, where = pad_to_multiple(array, 4, fill=-10000, axes=(1, 2))
    assert padded.shape == (2, 8, 4, 4) and padded.dtype == np.int16
    assert (padded[:, 5:] == -10000).all() and (padded[:, :, 3:] == -10000).all()
    np.testing.assert_array_equal(crop(padded, where, axes=(1, 2)), array)
    with pytest.raises(GridError, match="NaN"):
        pad_to_multiple(array, 4, axes=(1, 2))


def test_crop_at_20m_and_core_crop() -> None:
    assert Crop(8, 4, 16, 32).scaled(0.5) == Crop(4, 2, 8, 16)
    with pytest.raises(GridError, match="whole number"):
        Crop(3, 0, 16, 16).scaled(0.5)
    assert core_crop(Window(10, 20, 5, 6), Window(6, 16, 16, 16)) == Crop(4, 4, 6, 5)
    with pytest.raises(GridError, match="not inside"):
        core_crop(Window(0, 0, 5, 5), Window(1, 1, 16, 16))
    with pytest.raises(GridError, match="too small"):
        crop(np.zeros((4, 4)), Crop(2, 2, 4, 4))
