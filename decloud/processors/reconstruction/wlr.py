"""Weighted linear regression (WLR) from similar pixels of a reference date.

Zeng, Shen and Zhang (2013), "Recovering missing pixels for Landsat ETM+ SLC-off
imagery using multi-temporal regression analysis and a regularization method": a
missing pixel of the target is predicted from a *reference* date where it is clear,
by a linear regression of the target on the reference fitted over *similar pixels*
of a local window, weighted by spectral similarity and distance:

1. **Reference choice**, per pixel: every other date clear at the pixel is scored by
   the correlation between target and reference over their commonly usable pixels of
   the ``(2 radius + 1)^2`` window (mean over the bands); dates are tried from the
   best score down, at most ``references`` of them (a pixel whose best date has too
   few similar pixels goes to the next one, so that incomplete references complement
   each other).
2. **Similar pixels**: pixels of the window usable in both dates whose reference
   values are within ``2 sigma / classes`` of the centre's (root mean square over the
   bands of the differences in threshold units at most 1) (``sigma``:
   the reference band's standard deviation over the window, the threshold of Zeng et
   al. and of STARFM), every ``step`` pixels.
3. **Weights** ``1 / ((S + 1e-3) (1 + d / radius))``: ``S`` the mean relative spectral
   difference to the centre, ``d`` the distance in pixels.
4. **Prediction** per band ``a x + b``, ``x`` the centre's reference value, ``(a, b)``
   the weighted least-squares fit of target on reference over the similar pixels
   (slope shrunk towards 1 by a small ridge on flat areas, :func:`._common.slope`);
   at least ``min_similar`` similar pixels are required, else the window and its step
   are doubled (``widen`` times: clouds larger than the window); in the widest one
   every commonly usable pixel counts, weighted by its similarity.

A pure temporal change ``target = a x reference + b`` is therefore recovered exactly
(up to the ridge). Pixels that no reference can predict take the linear interpolation
in time when ``fallback`` (Zeng et al. complete the remaining gaps by a second step
too); ``days`` is the distance to the reference used.

Everything a pixel's value depends on lies within ``radius + buffer`` pixels, the
method's margin; sums are exact (integers), so blocks are seamless. The cost is
``O(pixels to fill x (2 radius / step + 1)^2 x C)`` per pass, plus box sums over every
date.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decloud.errors import ArgumentError
from decloud.processors.reconstruction._common import (
    box_sum,
    check_series,
    fill_missing,
    observed,
    slope,
)
from decloud.processors.reconstruction.series import SeriesMethod

__all__ = ["WLRMethod", "local_scores", "wlr"]


def local_scores(values: np.ndarray, ok: np.ndarray, target: int, radius: int,
                 min_pixels: int) -> np.ndarray:
    """``(T, H, W)`` local correlation of every date with the target (mean over bands).

    Computed over the pixels of the ``(2 radius + 1)^2`` window usable in both; -inf
    where fewer than ``min_pixels`` of them or where the date itself is not usable at
    the pixel, and for the target.

    Args:
        values: ``(T, H, W, C)`` int32 values, zero where not usable.
        ok: ``(T, H, W)`` usable flags.
        target: The target's index.
        radius: Window radius.
        min_pixels: Fewest commonly usable pixels for a score.
    """
    count = values.shape[0]
    scores = np.full(ok.shape, -np.inf, dtype=np.float64)
    y = values[target]
    for k in range(count):
        if k == target:
            continue
        common = ok[target] & ok[k]
        x = np.where(common[..., None], values[k], 0)
        yk = np.where(common[..., None], y, 0)
        n = box_sum(common, radius)[..., None].astype(np.float64)
        sx, sy = box_sum(x, radius), box_sum(yk, radius)
        sxx, syy, sxy = box_sum(x * x, radius), box_sum(yk * yk, radius), box_sum(x * yk, radius)
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = sxy - sx * sy / n
            vx, vy = sxx - sx * sx / n, syy - sy * sy / n
            corr = np.where((vx > 0) & (vy > 0), cov / np.sqrt(vx * vy), 0.0)
        score = corr.mean(axis=-1)
        good = (n[..., 0] >= min_pixels) & ok[k]
        scores[k] = np.where(good, score, -np.inf)
    return scores


#: Pixels fitted at once (their temporaries stay in cache).
_CHUNK = 16384


def _thresholds(values: np.ndarray, ok: np.ndarray, ref: int, radius: int,
                classes: int) -> np.ndarray:
    """``(H, W, C)`` similarity thresholds: 2 sigma / classes of the reference's window."""
    x = values[ref]
    n = box_sum(ok[ref], radius).astype(np.float64)[..., None]
    s1 = box_sum(x, radius).astype(np.float64)
    s2 = box_sum(x * x, radius).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
    return np.maximum(2.0 * sigma / classes, 1.0)


def _fit(values: np.ndarray, ok: np.ndarray, common: np.ndarray, target: int, ref: int,
         rows: np.ndarray, cols: np.ndarray, thresholds: np.ndarray, *, radius: int,
         step: int, min_similar: int, ridge: float,
         threshold_on: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``(N, C)`` at pixels ``(rows, cols)`` from reference ``ref``, and validity.

    ``common``: pixels usable in both dates; ``thresholds``: :func:`_thresholds`.
    Without ``threshold_on``, every commonly usable pixel of the window counts (still
    weighted by its spectral similarity).
    """
    height, width = ok.shape[1:]
    x_all, y_all = values[ref], values[target]
    threshold = thresholds[rows, cols]
    centre = x_all[rows, cols].astype(np.float64)
    shape = centre.shape
    s0, sx, sy = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    sxx, sxy = np.zeros(shape), np.zeros(shape)
    found = np.zeros(shape[0], dtype=np.int64)
    for dy in range(-radius, radius + 1, step):
        for dx in range(-radius, radius + 1, step):
            if dy == 0 and dx == 0:
                continue
            ny, nx = rows + dy, cols + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            ny, nx = np.clip(ny, 0, height - 1), np.clip(nx, 0, width - 1)
            x = x_all[ny, nx].astype(np.float64)
            diff = np.abs(x - centre)
            # Similar: within the threshold on average over the bands (quadratically).
            similar = inside & common[ny, nx]
            if threshold_on:
                similar &= ((diff / threshold) ** 2).mean(axis=-1) <= 1.0
            if not similar.any():
                continue
            spectral = (diff / (np.abs(centre) + 1.0)).mean(axis=-1)
            weight = np.where(similar, 1.0 / ((spectral + 1e-3)
                                              * (1.0 + np.hypot(dy, dx) / radius)), 0.0)
            w = weight[:, None]
            y = y_all[ny, nx].astype(np.float64)
            s0 += w
            sx += w * x
            sy += w * y
            sxx += w * x * x
            sxy += w * x * y
            found += similar
    valid = found >= min_similar
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / s0, sy / s0
        a = slope(sxy / s0 - mx * my, sxx / s0 - mx * mx, ridge)
        predicted = a * centre + (my - a * mx)
    return predicted, valid


def wlr(series: np.ndarray, masks: np.ndarray, times: Sequence[float] | np.ndarray,
        target: int, *, radius: int = 10, step: int = 1, widen: int = 3, classes: int = 4,
        min_similar: int = 5, references: int = 3, ridge: float = 25.0, buffer: int = 0,
        fallback: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The target of a series by weighted linear regression on similar pixels.

    Args:
        series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000).
        masks: ``(T, H, W)`` :class:`~decloud.constants.MaskClass` layers.
        times: The T acquisition times in days.
        target: Index of the target in the series.
        radius: Half side of the local window, pixels.
        step: Every ``step``-th pixel of the window is a candidate similar pixel.
        widen: Times the window (and its step) is doubled for the pixels that still
            lack similar pixels (clouds larger than the window); in the widest window
            every commonly usable pixel counts, weighted by its similarity.
        classes: The ``m`` of the ``2 sigma / m`` similarity threshold.
        min_similar: Fewest similar pixels for a regression.
        references: Most reference dates tried per pixel, best score first.
        ridge: Variance (squared x 10000 units) shrinking the slope towards 1.
        buffer: Dilation radius of clouds, cirrus and shadows.
        fallback: Fill what no reference predicts by linear interpolation in time.

    Returns:
        ``(H, W, C)`` float32 reflectance x 10000 and ``(H, W)`` days, NaN where
        nothing can be said.

    Raises:
        ArgumentError: Bad shapes, a target out of range or a non-positive parameter.
    """
    series, masks = np.asarray(series), np.asarray(masks)
    times = np.asarray(times, dtype=np.float64)
    check_series(series, masks, times, target)
    _check_parameters(radius, step, widen, classes, min_similar, references)
    ok, values = observed(series, masks, buffer)
    height, width, channels = series.shape[1:]
    out = np.full((height, width, channels), np.nan, dtype=np.float32)
    days = np.full((height, width), np.nan, dtype=np.float32)
    out[ok[target]] = series[target][ok[target]]
    days[ok[target]] = 0.0
    rows, cols = np.nonzero(~ok[target])
    if rows.size and series.shape[0] > 1:
        widest = radius << widen
        scores = local_scores(values, ok, target, widest, min_pixels=min_similar)[:, rows, cols]
        # Best first; ties to the date nearer in time, then to the earlier index.
        distance = np.abs(times - times[target])
        order = np.lexsort((np.broadcast_to(np.arange(len(times))[:, None], scores.shape),
                            np.broadcast_to(distance[:, None], scores.shape), -scores), axis=0)
        todo = np.ones(rows.size, dtype=bool)
        for rank in range(min(references, series.shape[0] - 1)):
            choice = order[rank]
            usable_choice = np.take_along_axis(scores, choice[None], axis=0)[0] > -np.inf
            for level in range(widen + 1):
                for ref in np.unique(choice[todo & usable_choice]):
                    picked = np.nonzero(todo & usable_choice & (choice == ref))[0]
                    thresholds = _thresholds(values, ok, int(ref), radius << level, classes)
                    common = ok[target] & ok[ref]
                    for lo in range(0, picked.size, _CHUNK):
                        pick = picked[lo:lo + _CHUNK]
                        predicted, valid = _fit(
                            values, ok, common, target, int(ref), rows[pick], cols[pick],
                            thresholds, radius=radius << level, step=step << level,
                            min_similar=min_similar, ridge=ridge,
                            threshold_on=level < widen)
                        done = pick[valid]
                        out[rows[done], cols[done]] = predicted[valid]
                        days[rows[done], cols[done]] = abs(times[ref] - times[target])
                        todo[done] = False
    if fallback:
        fill_missing(out, days, series, masks, times, target, buffer)
    return out, days


def _check_parameters(radius: int, step: int, widen: int, classes: int, min_similar: int,
                      references: int) -> None:
    for field, value in (("radius", radius), ("step", step), ("classes", classes),
                         ("min_similar", min_similar), ("references", references),
                         ("widen", widen + 1)):
        if value < 1:
            raise ArgumentError(f"{field} {value} must be >= {1 if field != 'widen' else 0}",
                                field=field)


class WLRMethod(SeriesMethod):
    """WLR as a block method (see :func:`wlr` and :class:`~.series.SeriesMethod`).

    Args:
        acquisitions: Acquisition names, one per date.
        target: The acquisition reconstructed.
        radius, step, widen, classes, min_similar, references, ridge, fallback: :func:`wlr`'s.
        **options: :class:`~.series.SeriesMethod`'s keywords (bands, buffer, name,
            dates).

    Raises:
        ArgumentError: A non-positive parameter, or what the base class refuses.
    """

    kind = "wlr"

    def __init__(self, acquisitions: Sequence[str], target: str | float, *, radius: int = 10,
                 step: int = 1, widen: int = 3, classes: int = 4, min_similar: int = 5,
                 references: int = 3, ridge: float = 25.0, fallback: bool = True,
                 **options: Any) -> None:
        super().__init__(acquisitions, target, **options)
        _check_parameters(radius, step, widen, classes, min_similar, references)
        self.radius, self.step, self.classes = int(radius), int(step), int(classes)
        self.widen = int(widen)
        self.min_similar, self.references = int(min_similar), int(references)
        self.ridge, self.fallback = float(ridge), bool(fallback)
        # The widest window (box sums and similar pixels) on top of the cloud dilation.
        self.margin = (self.radius << self.widen) + self.buffer

    def reconstruct(self, series: np.ndarray, masks: np.ndarray, times: np.ndarray,
                    target: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`wlr` with the method's parameters."""
        return wlr(series, masks, times, target, radius=self.radius, step=self.step,
                   widen=self.widen, classes=self.classes, min_similar=self.min_similar,
                   references=self.references, ridge=self.ridge, buffer=self.buffer,
                   fallback=self.fallback)

    def parameters(self) -> dict[str, Any]:
        """The window, similarity and regression settings."""
        return {"radius_px": self.radius, "step_px": self.step, "widen": self.widen,
                "classes": self.classes,
                "min_similar": self.min_similar, "references": self.references,
                "ridge": self.ridge, "fallback": self.fallback}
