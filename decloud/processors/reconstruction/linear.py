"""Linear interpolation in time: the simplest baseline of the patch-group paper.

Per pixel, the target's own observation where it is usable, else the linear
interpolation between the nearest usable observations before and after the target
(one side only: that observation; neither: NaN). It is the gap-filling kernel
(:func:`decloud.processors.gapfill.fill_gaps`) evaluated at the target's own time
(:func:`._common.linear`, also the fallback of :mod:`.wlr` and :mod:`.patchgroup`),
wrapped as a :class:`~.series.SeriesMethod` so that it runs, is described and is
benchmarked exactly as :mod:`.wlr` and :mod:`.patchgroup` are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decloud.errors import ArgumentError
from decloud.processors.reconstruction._common import check_series, linear
from decloud.processors.reconstruction.series import SeriesMethod

__all__ = ["LinearMethod", "interpolate"]


def interpolate(series: np.ndarray, masks: np.ndarray, times: Sequence[float] | np.ndarray,
                target: int, *, buffer: int = 0,
                max_days: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The target of a series by per-pixel linear interpolation in time.

    Args:
        series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000) or float
            reflectance (NaN nodata).
        masks: ``(T, H, W)`` :class:`~decloud.constants.MaskClass` layers.
        times: The T acquisition times in days.
        target: Index of the target in the series.
        buffer: Dilation radius of clouds, cirrus and shadows.
        max_days: Observations farther than this are not used (None: no limit).

    Returns:
        ``(H, W, C)`` float32 reflectance x 10000 and ``(H, W)`` days, NaN where no
        usable observation.

    Raises:
        ArgumentError: Shapes or dtypes that do not fit (:func:`._common.check_series`),
            a target index out of range, a negative buffer or ``max_days``.
    """
    series, masks = np.asarray(series), np.asarray(masks)
    times = np.asarray(times, dtype=np.float64)
    check_series(series, masks, times, target, floating=True)
    return linear(series, masks, times, float(times[target]), buffer, max_days)


class LinearMethod(SeriesMethod):
    """Linear interpolation as a block method (see :class:`~.series.SeriesMethod`).

    Args:
        acquisitions: Acquisition names, one per date.
        target: The acquisition reconstructed.
        max_days: Observations farther than this from the target are not used.
        **options: :class:`~.series.SeriesMethod`'s keywords (bands, buffer, name,
            dates).

    Raises:
        ArgumentError: A negative ``max_days``, or what the base class refuses.
    """

    kind = "linear"

    def __init__(self, acquisitions: Sequence[str], target: str | float, *,
                 max_days: float | None = None, **options: Any) -> None:
        super().__init__(acquisitions, target, **options)
        if max_days is not None and not max_days >= 0:
            raise ArgumentError(f"max_days {max_days} must be >= 0", field="max_days")
        self.max_days = max_days

    def reconstruct(self, series: np.ndarray, masks: np.ndarray, times: np.ndarray,
                    target: int) -> tuple[np.ndarray, np.ndarray]:
        """The interpolation at the target's time (its own value where usable)."""
        return interpolate(series, masks, times, target, buffer=self.buffer,
                           max_days=self.max_days)

    def parameters(self) -> dict[str, Any]:
        """The distance limit."""
        return {"max_days": self.max_days}
