"""Window arithmetic for streaming: margins, size multiples, and the pad/crop pair.

Everything streamed through decloud (computed masks, statistics, model inference) is
cut into windows that are read with a *margin* of context and cropped back to their
*core*; models also need their input sides to be a multiple of a *size multiple*.
The helpers here are that arithmetic, in one place, so that a result computed window
by window equals the whole-image result ("streamed equals whole"):

* :func:`expand` grows a window by a margin, optionally clipped to a domain;
* :func:`core_crop` says where a core window lies inside a larger window;
* :func:`pad_to_multiple` pads an array by a margin and up to a size multiple and
  returns the :class:`Crop` that :func:`crop` uses to cut the original pixels back out
  of the (model's) result.

Only numpy and rasterio's :class:`~rasterio.windows.Window` are used: this module is
imported by the grid and by engine-side code and stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from decloud.errors import GridError

__all__ = [
    "Crop",
    "core_crop",
    "crop",
    "expand",
    "pad_to_multiple",
    "round_up",
    "window_bounds",
]


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    if multiple < 1:
        raise GridError(f"size multiple {multiple} must be >= 1", field="multiple")
    return -(-value // multiple) * multiple


def window_bounds(window: Window) -> tuple[int, int, int, int]:
    """``(row0, col0, row1, col1)`` of a window with integer offsets and sizes."""
    values = (window.row_off, window.col_off, window.height, window.width)
    if any(not float(v).is_integer() for v in values):
        raise GridError(f"window {window} is not on whole pixels", field="window")
    row0, col0, height, width = (int(v) for v in values)
    return row0, col0, row0 + height, col0 + width


def expand(window: Window, margin: int, within: Window | None = None) -> Window:
    """``window`` grown by ``margin`` pixels on each side, clipped to ``within``.

    Args:
        window: A window on whole pixels.
        margin: Pixels added on every side (>= 0).
        within: The domain the context may come from (e.g. the grid's full window);
            no clipping when None. The window itself is never cut: the domain is
            widened to include it.

    Returns:
        The expanded window.
    """
    if margin < 0:
        raise GridError(f"margin {margin} must be >= 0", field="margin")
    r0, c0, r1, c1 = window_bounds(window)
    r0, c0, r1, c1 = r0 - margin, c0 - margin, r1 + margin, c1 + margin
    if within is not None:
        w_r0, w_c0, w_r1, w_c1 = window_bounds(within)
        o_r0, o_c0, o_r1, o_c1 = window_bounds(window)
        r0, c0 = max(r0, min(w_r0, o_r0)), max(c0, min(w_c0, o_c0))
        r1, c1 = min(r1, max(w_r1, o_r1)), min(c1, max(w_c1, o_c1))
    return Window(c0, r0, c1 - c0, r1 - r0)


@dataclass(frozen=True)
class Crop:
    """Where the original pixels lie in a padded array: offsets and size, in pixels.

    Attributes:
        top: First row of the original pixels.
        left: First column of the original pixels.
        height: Rows of the original pixels.
        width: Columns of the original pixels.
    """

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the original pixels."""
        return (slice(self.top, self.top + self.height),
                slice(self.left, self.left + self.width))

    def scaled(self, factor: float) -> Crop:
        """The same crop in pixels ``factor`` times as fine (0.5: on a 20 m output).

        Raises:
            GridError: The crop does not fall on whole pixels at that scale.
        """
        values = [v * factor for v in (self.top, self.left, self.height, self.width)]
        if any(abs(v - round(v)) > 1e-9 for v in values):
            raise GridError(f"crop {self} is not a whole number of pixels at scale "
                            f"{factor:g}", field="crop")
        top, left, height, width = (round(v) for v in values)
        return Crop(top, left, height, width)


def core_crop(core: Window, padded: Window) -> Crop:
    """Where ``core`` lies inside ``padded`` (both windows of one grid).

    Raises:
        GridError: ``core`` is not inside ``padded``.
    """
    r0, c0, r1, c1 = window_bounds(core)
    p0, q0, p1, q1 = window_bounds(padded)
    if r0 < p0 or c0 < q0 or r1 > p1 or c1 > q1:
        raise GridError(f"window {core} is not inside {padded}", field="window")
    return Crop(r0 - p0, c0 - q0, r1 - r0, c1 - c0)


def pad_to_multiple(
    array: np.ndarray,
    multiple: int,
    *,
    margin: int = 0,
    fill: float | int = np.nan,
    axes: Sequence[int] = (-2, -1),
) -> tuple[np.ndarray, Crop]:
    """Pad an array by ``margin`` on each side, then up to a multiple of ``multiple``.

    The extra rows and columns that reach the size multiple go at the bottom and on
    the right, so the original pixels keep their offset ``margin`` (a multiple of the
    size multiple keeps the pooling lattice of a U-Net aligned with the whole image).

    Args:
        array: Any array; ``axes`` are its (row, column) axes (``(1, 2)`` for NHWC).
        multiple: Size multiple of the padded sides (>= 1).
        margin: Pixels of ``fill`` added on every side first (>= 0).
        fill: Value of the added pixels (the encoding's nodata, for model inputs).
        axes: The row and column axes.

    Returns:
        ``(padded, crop)``: :func:`crop` of ``padded`` (or of a model output of the
        same size) with ``crop`` gives back the original pixels.
    """
    if margin < 0:
        raise GridError(f"margin {margin} must be >= 0", field="margin")
    row_axis, col_axis = (a % array.ndim for a in axes)
    height, width = array.shape[row_axis], array.shape[col_axis]
    pad = [(0, 0)] * array.ndim
    pad[row_axis] = (margin, round_up(height + 2 * margin, multiple) - height - margin)
    pad[col_axis] = (margin, round_up(width + 2 * margin, multiple) - width - margin)
    if np.issubdtype(array.dtype, np.integer) and isinstance(fill, float) and math.isnan(fill):
        raise GridError(f"NaN cannot fill an array of {array.dtype}: give its nodata",
                        field="fill")
    padded = np.pad(array, pad, mode="constant", constant_values=fill)
    return padded, Crop(margin, margin, height, width)


def crop(array: np.ndarray, where: Crop, *, axes: Sequence[int] = (-2, -1)) -> np.ndarray:
    """The original pixels of a padded array (a view), as :func:`pad_to_multiple` says."""
    row_axis, col_axis = (a % array.ndim for a in axes)
    index: list[slice] = [slice(None)] * array.ndim
    index[row_axis], index[col_axis] = where.slices
    if array.shape[row_axis] < where.top + where.height or \
            array.shape[col_axis] < where.left + where.width:
        raise GridError(f"array of shape {array.shape} is too small for {where}",
                        field="crop")
    return array[tuple(index)]
