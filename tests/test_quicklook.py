"""Quicklooks refuse arrays of the wrong shape or dtype with a typed error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decloud.errors import ArgumentError
from decloud.quicklook import s2_true_colour, write_png


@pytest.mark.parametrize("shape", [(4, 8, 8), (8, 8, 3), (8, 8)])
def test_true_colour_needs_three_bands_first(shape: tuple[int, ...]) -> None:
    with pytest.raises(ArgumentError, match=r"shape \(3, h, w\)") as err:
        s2_true_colour(np.zeros(shape, np.float32))
    assert err.value.field == "rgb"
    assert s2_true_colour(np.zeros((3, 8, 8), np.float32)).shape == (8, 8, 3)


@pytest.mark.parametrize("rgb", [np.zeros((8, 8, 3), np.float32), np.zeros((3, 8, 8), np.uint8),
                                 np.zeros((8, 8), np.uint8)])
def test_png_needs_uint8_rgb(rgb: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "q.png"
    with pytest.raises(ArgumentError, match="uint8 RGB image") as err:
        write_png(path, rgb)
    assert err.value.path == str(path) and err.value.field == "rgb"
    assert not path.exists()
    assert write_png(path, np.zeros((8, 8, 3), np.uint8)).is_file()
