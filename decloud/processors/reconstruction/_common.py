"""Helpers the reconstruction kernels share: exact box sums, values, regression."""

from __future__ import annotations

import numpy as np

from decloud.processors.gapfill import usable

__all__ = ["box_sum", "observed", "slope"]


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
