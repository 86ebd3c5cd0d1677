"""Helpers the reconstruction kernels share: checks, box sums, values, regression.

And the linear interpolation in time: :mod:`.linear`'s kernel and the fallback of
:mod:`.wlr` and :mod:`.patchgroup`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decloud.errors import ArgumentError
from decloud.processors.gapfill import fill_gaps, usable

__all__ = ["box_sum", "check_series", "fill_missing", "linear", "observed", "slope"]


def check_series(series: np.ndarray, masks: np.ndarray, times: np.ndarray, target: int, *,
                 floating: bool = False) -> None:
    """Refuse a series, masks, times or target index that do not fit together.

    Args:
        series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000), or float
            reflectance (NaN nodata) when ``floating``.
        masks: ``(T, H, W)`` integer :class:`~decloud.constants.MaskClass` layers.
        times: ``(T,)`` days.
        target: Index of the target in the series.
        floating: Whether float reflectance is accepted too.

    Raises:
        ArgumentError: Naming the field that does not fit.
    """
    dtype_ok = series.dtype == np.int16 or (floating and np.issubdtype(series.dtype,
                                                                       np.floating))
    if series.ndim != 4 or not dtype_ok:
        kinds = "int16 (reflectance x 10000)" + (" or float reflectance" if floating else "")
        raise ArgumentError(f"series must be (T, H, W, C) {kinds}, got {series.dtype} "
                            f"{series.shape}", field="series")
    if masks.shape != series.shape[:3] or not np.issubdtype(masks.dtype, np.integer):
        raise ArgumentError(f"masks must be (T, H, W) = {series.shape[:3]} integer mask "
                            f"classes, got {masks.dtype} {masks.shape}", field="masks")
    if times.shape != (series.shape[0],):
        raise ArgumentError(f"times must be ({series.shape[0]},) days, got shape "
                            f"{times.shape}", field="times")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
            or not 0 <= target < series.shape[0]:
        raise ArgumentError(f"target index {target!r} is not one of the {series.shape[0]} "
                            "dates", field="target")


def linear(series: np.ndarray, masks: np.ndarray, times: Sequence[float] | np.ndarray,
           when: float, buffer: int, max_days: float | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel linear interpolation in time at ``when`` days (:func:`fill_gaps`).

    The one interpolation of the package's series methods: :mod:`.linear`'s kernel,
    and the fallback of :mod:`.wlr`, :mod:`.patchgroup` and of a block without the
    target (:class:`~.series.SeriesMethod`).

    Returns:
        ``(H, W, C)`` float32 reflectance x 10000 and ``(H, W)`` days, NaN where nothing.
    """
    filled = fill_gaps(series, masks, np.asarray(times, dtype=np.float64), float(when),
                       buffer=buffer, max_days=max_days)
    return filled.reflectance[0], filled.days[0]


def fill_missing(out: np.ndarray, days: np.ndarray, series: np.ndarray, masks: np.ndarray,
                 times: np.ndarray, target: int, buffer: int) -> int:
    """Fill the NaN pixels of ``out`` (and ``days``) in place by :func:`linear`.

    Returns:
        How many pixels the interpolation filled (it may have nothing to say on some).
    """
    missing = np.isnan(days)
    if not missing.any():
        return 0
    reflectance, near = linear(series, masks, times, float(times[target]), buffer)
    out[missing] = reflectance[missing]
    days[missing] = near[missing]
    return int(np.count_nonzero(missing & np.isfinite(days)))


def box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the ``(2 radius + 1)^2`` window around each pixel, zeros outside.

    Integer inputs are summed in int64, so the result is exact and does not depend on
    where the array starts: a block's box sums equal the whole image's on its core
    (floating running sums would differ in their last bits and could flip a threshold).

    Args:
        values: ``(H, W, ...)`` array.
        radius: Window radius, >= 0.
    """
    dtype = np.int64 if np.issubdtype(values.dtype, np.integer) or values.dtype == bool \
        else np.float64
    r = radius
    pad = [(r + 1, r), (r + 1, r)] + [(0, 0)] * (values.ndim - 2)
    total = np.pad(values.astype(dtype, copy=False), pad).cumsum(0).cumsum(1)
    w = 2 * r + 1
    return total[w:, w:] - total[:-w, w:] - total[w:, :-w] + total[:-w, :-w]


def observed(series: np.ndarray, masks: np.ndarray, buffer: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T, H, W)`` usable flags and the int32 values, zero where not usable.

    int32, so that products of two values (at most 2^30) do not overflow.

    Args:
        series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000).
        masks: ``(T, H, W)`` mask layers.
        buffer: Dilation radius of clouds, cirrus and shadows.
    """
    ok = usable(series, masks, buffer)
    values = np.where(ok[..., None], series, 0).astype(np.int32)
    return ok, values


def slope(cov: np.ndarray, var: np.ndarray, ridge: float) -> np.ndarray:
    """Regression slope ``(cov + ridge) / (var + ridge)``: shrunk towards 1.

    ``cov`` and ``var`` are the (weighted) covariance of target and source and the
    variance of the source; the ridge (a variance, in squared reflectance x 10000
    units) keeps the slope finite on flat areas, where a pure offset is all that can
    be estimated, and is negligible wherever the source varies.
    """
    return ((cov + ridge) / (var + ridge)).astype(np.float64)
