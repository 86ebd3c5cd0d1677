"""Progressive spatio-temporal patch-group reconstruction.

After Zhang et al. (IGARSS 2019), "Cloud removal for Sentinel-2 by progressively
spatio-temporal patch group learning": the target date is cut into overlapping
patches; each target patch is stacked with the patches of the other dates at the same
place (its *spatio-temporal patch group*), sorted by their correlation with the target
on their commonly clear pixels; a model learnt on the fly on the group's clear pixels,
under a global-local consistency constraint, recovers the cloudy pixels; the restored
patches are aggregated with weights that favour more complete groups, and the whole
is iterated from the most to the least complete regions.

How each step is done here
    * **Masks**: every date's own cloud, cirrus, shadow and nodata mask (the engine's
      ``s2_mask_<a>``), dilated by ``buffer``.
    * **Patches** of ``patch`` px on a lattice of ``patch / 2`` px anchored on the
      grid's origin (the engine's blocks lie on it:
      :attr:`PatchGroupMethod.size_multiple`), so every pixel lies in four patches.
    * **Ranking**: each date's patch is scored by the correlation of its values with
      the target's over their commonly usable pixels (mean over the bands); the
      ``group`` best dates form the group.
    * **Model**: one affine spectral map per date, ``target = mean_y + (date -
      mean_x) @ M`` (every target band from every band of the date, ``M`` shrunk
      towards the identity by ``ridge``, so land covers that change differently are
      mapped differently), fitted by weighted least squares whose loss is the squared
      error on the patch's clear pixels plus ``consistency`` times the squared error
      over a ``context``-px ring
      around the patch (the global-local term: the patch's map must also hold on its
      surroundings, which keeps small or nearly empty patches from over-fitting and
      neighbouring patches consistent). The group's prediction at a pixel is the
      inverse-residual-variance weighted mean of the maps of the group's dates usable
      there.
    * **Aggregation**: each pixel averages the predictions of the (up to four) patches
      covering it, weighted by the completeness of their target patch (its usable
      fraction) plus 0.05.
    * **Progression**: ``thresholds`` (e.g. 0.5, 0.25, 0) are the least completeness a
      patch must have to predict in each pass; the pixels a pass fills join the
      target's known pixels for the next pass, so reconstruction grows from the most
      complete regions into the cloud cores.

Why a closed-form model and not a CNN trained on the fly
    A group holds at most ``patch^2`` target pixels and ``group`` source dates: a
    network trained on that few samples per patch has far more parameters than
    constraints and must be regularised back to something close to a per-date linear
    map anyway, at a cost of thousands of gradient steps per patch (millions of patches
    on a tile). The loss above (clear-pixel squared error plus the global-local term)
    is quadratic in a linear model's parameters, so its exact minimiser is given by
    the group's first and second moments: computed for every patch at once from exact
    integer cell sums, with no iterative training, no random initialisation (so a
    block-wise run equals the whole-image one exactly) and no accelerator (so no
    Keras either: the method is numpy, like the gap-filling it is compared with).
    Measured on real cut clouds (``benchmarks/results/patchgroup.md``) it is ahead of
    WLR on CC, SSIM and RMSE except the winter series' CC, and ahead of linear
    interpolation on RMSE and PSNR everywhere.

Seams: a pixel's value depends on pixels at most ``passes x (patch + context) +
buffer`` away, the method's margin (a multiple of the lattice step); sums are exact
integers and the lattice is anchored on the grid, so blocks equal the whole image.
Pixels that no pass can fill take the linear interpolation in time when ``fallback``.
``days`` is the weighted mean temporal distance to the dates used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decloud.errors import ArgumentError
from decloud.processors.gapfill import usable
from decloud.processors.reconstruction._common import check_series, fill_missing
from decloud.processors.reconstruction.series import SeriesMethod

__all__ = ["PatchGroupMethod", "patchgroup", "rank_group"]

#: Cells processed at once when predicting (bounds the temporary arrays).
_CHUNK = 2048


def rank_group(target: np.ndarray, target_ok: np.ndarray, candidates: np.ndarray,
               candidates_ok: np.ndarray, *, min_pixels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Sort the candidate patches of a group by correlation with the target patch.

    Args:
        target: ``(H, W, C)`` target patch.
        target_ok: ``(H, W)`` its usable pixels.
        candidates: ``(K, H, W, C)`` the other dates' patches.
        candidates_ok: ``(K, H, W)`` their usable pixels.
        min_pixels: Fewest commonly usable pixels for a candidate to be ranked.

    Returns:
        The candidates' indices, best first (unrankable ones last, in input order), and
        their ``(K,)`` scores (mean over bands of the correlation; -inf unrankable).
    """
    scores = np.full(candidates.shape[0], -np.inf)
    for k in range(candidates.shape[0]):
        common = target_ok & candidates_ok[k]
        if common.sum() < min_pixels:
            continue
        x = candidates[k][common].astype(np.float64)
        y = target[common].astype(np.float64)
        cov = ((x - x.mean(0)) * (y - y.mean(0))).mean(0)
        sd = x.std(0) * y.std(0)
        scores[k] = float(np.where(sd > 0, cov / np.where(sd > 0, sd, 1.0), 0.0).mean())
    order = np.lexsort((np.arange(scores.size), -scores))
    return order, scores


def _cells(values: np.ndarray, step: int) -> np.ndarray:
    """Sums over ``step x step`` cells of ``(H, W, ...)`` (sides multiples of ``step``)."""
    height, width = values.shape[:2]
    shaped = values.reshape(height // step, step, width // step, step, *values.shape[2:])
    return shaped.sum(axis=(1, 3), dtype=np.int64)


def _rects(cells: np.ndarray, start: int, length: int, counts: tuple[int, int]) -> np.ndarray:
    """Sums over ``length x length`` cells whose first cell is ``start + i, start + j``.

    ``i`` and ``j`` run over ``counts`` (rows, columns); sums are exact (int64).
    """
    total = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1, *cells.shape[2:]), np.int64)
    total[1:, 1:] = cells.cumsum(0).cumsum(1)
    rows_lo, cols_lo = slice(start, start + counts[0]), slice(start, start + counts[1])
    rows_hi = slice(start + length, start + length + counts[0])
    cols_hi = slice(start + length, start + length + counts[1])
    return (total[rows_hi, cols_hi] - total[rows_lo, cols_hi] - total[rows_hi, cols_lo]
            + total[rows_lo, cols_lo])


def _cell_moments(common: np.ndarray, x: np.ndarray, y: np.ndarray, step: int,
                  chunk: int = 8) -> np.ndarray:
    """Per ``step x step`` cell, the sums of ``z z^T`` with ``z = (1, x, y)`` over ``common``.

    ``(Hc, Wc, K, K)`` int64, ``K = 1 + 2 C``: counts, sums, and sums of products of
    every pair of bands of ``x`` and ``y``. Computed by batched matrix products (BLAS)
    in float64, which are exact here (integers below 2^53), so any summation order
    gives the same sums.

    Args:
        common: ``(H, W)`` pixels that count (sides multiples of ``step``).
        x: ``(H, W, C)`` source values.
        y: ``(H, W, C)`` target values.
        step: The cell side.
        chunk: Cell rows computed at once (bounds the temporaries).
    """
    height, width, channels = x.shape
    rows, cols, k = height // step, width // step, 1 + 2 * channels
    out = np.empty((rows, cols, k, k), dtype=np.int64)
    for r0 in range(0, rows, chunk):
        r1 = min(r0 + chunk, rows)
        part = slice(r0 * step, r1 * step)
        z = np.empty((r1 * step - r0 * step, width, k), dtype=np.float64)
        z[..., 0] = common[part]
        z[..., 1:1 + channels] = x[part]
        z[..., 1 + channels:] = y[part]
        z *= z[..., :1]
        cells = z.reshape(r1 - r0, step, cols, step, k).transpose(0, 2, 1, 3, 4)
        cells = cells.reshape((r1 - r0) * cols, step * step, k)
        products = np.matmul(cells.transpose(0, 2, 1), cells)
        out[r0:r1] = np.rint(products).astype(np.int64).reshape(r1 - r0, cols, k, k)
    return out


class _Fits:
    """Per date and patch: the group's linear maps, their weights and scores.

    The map of date ``k`` on a patch is ``y = mean_y + (x - mean_x) @ matrix``: every
    target band from every band of the date (a spectral map, so that land covers that
    change differently between the dates, told apart by their spectra, are mapped
    differently), its matrix shrunk towards the identity by the ridge.
    """

    def __init__(self, values: np.ndarray, ok: np.ndarray, known: np.ndarray,
                 filled: np.ndarray, target: int, step: int, context_cells: int,
                 counts: tuple[int, int], consistency: float, ridge: float,
                 min_pixels: int) -> None:
        dates = values.shape[0]
        channels = values.shape[-1]
        eye = np.eye(channels)
        self.matrix = np.zeros((dates, *counts, channels, channels))
        self.mean_x = np.zeros((dates, *counts, channels))
        self.mean_y = np.zeros((dates, *counts, channels))
        self.weight = np.zeros((dates, *counts, channels))
        self.score = np.full((dates, *counts), -np.inf)
        xs, ys = slice(1, 1 + channels), slice(1 + channels, 1 + 2 * channels)
        for k in range(dates):
            if k == target:
                continue
            cells = _cell_moments(known & ok[k], values[k], filled, step)
            local = _rects(cells, context_cells, 2, counts)
            window = _rects(cells, 0, 2 + 2 * context_cells, counts)
            # The global-local loss: the patch's squared errors plus `consistency`
            # times those of the ring around it.
            moments = local + consistency * (window - local)
            n = moments[..., 0, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                mx = moments[..., 0, xs] / n[..., None]
                my = moments[..., 0, ys] / n[..., None]
                outer = mx[..., :, None] * mx[..., None, :]
                cxx = moments[..., xs, xs] / n[..., None, None] - outer
                cxy = (moments[..., xs, ys] / n[..., None, None]
                       - mx[..., :, None] * my[..., None, :])
                vy = np.einsum("...cc->...c", moments[..., ys, ys]) / n[..., None] - my * my
            # The fit needs pixels in the patch or its ring (the ring alone: a patch
            # entirely under clouds, reached through the global-local term).
            good = window[..., 0, 0] >= min_pixels
            cxx[~good], cxy[~good] = eye, eye
            matrix = np.linalg.solve(cxx + ridge * eye, cxy + ridge * eye)
            residual = (np.maximum(vy, 0.0) - 2 * np.einsum("...cd,...cd->...d", matrix, cxy)
                        + np.einsum("...cd,...ce,...ed->...d", matrix, cxx, matrix))
            variance_x = np.einsum("...cc->...c", cxx)
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.where((variance_x > 0) & (vy > 0), np.einsum(
                    "...cc->...c", cxy) / np.sqrt(variance_x * vy), 0.0)
            self.matrix[k] = np.where(good[..., None, None], matrix, 0.0)
            self.mean_x[k] = np.where(good[..., None], mx, 0.0)
            self.mean_y[k] = np.where(good[..., None], my, 0.0)
            self.weight[k] = np.where(good[..., None],
                                      1.0 / (np.maximum(residual, 0.0) + ridge), 0.0)
            self.score[k] = np.where(good, corr.mean(axis=-1), -np.inf)


def patchgroup(series: np.ndarray, masks: np.ndarray, times: Sequence[float] | np.ndarray,
               target: int, *, patch: int = 32, context: int = 16, group: int = 2,
               thresholds: Sequence[float] = (0.5, 0.25, 0.0), consistency: float = 0.25,
               ridge: float = 25.0, min_pixels: int = 16, buffer: int = 0,
               fallback: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The target of a series by progressive spatio-temporal patch-group regression.

    Args:
        series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000).
        masks: ``(T, H, W)`` :class:`~decloud.constants.MaskClass` layers.
        times: The T acquisition times in days.
        target: Index of the target in the series.
        patch: Patch side, pixels (even; the lattice step is half of it).
        context: Width of the global-local ring around a patch, pixels (a multiple of
            ``patch / 2``).
        group: Dates of each patch group (the best ranked).
        thresholds: Least target completeness of a patch in each progressive pass.
        consistency: Weight of the ring's squared error against the patch's.
        ridge: Variance (squared x 10000 units) shrinking slopes towards 1 and added
            to the residual variance of each date's map.
        min_pixels: Fewest commonly usable pixels (patch and ring) for a date's map.
        buffer: Dilation radius of clouds, cirrus and shadows.
        fallback: Fill what no pass reaches by linear interpolation in time.

    Returns:
        ``(H, W, C)`` float32 reflectance x 10000 and ``(H, W)`` days, NaN where
        nothing can be said.

    Raises:
        ArgumentError: Bad shapes, a target out of range, or bad parameters.
    """
    series, masks = np.asarray(series), np.asarray(masks)
    times = np.asarray(times, dtype=np.float64)
    check_series(series, masks, times, target)
    _check_parameters(patch, context, group, thresholds, consistency, min_pixels)
    step = patch // 2
    cc = context // step
    dates, height, width, channels = series.shape
    ok = usable(series, masks, buffer)
    out = np.full((height, width, channels), np.nan, dtype=np.float32)
    days = np.full((height, width), np.nan, dtype=np.float32)
    out[ok[target]] = series[target][ok[target]]
    days[ok[target]] = 0.0

    if dates > 1 and not ok[target].all():
        # Pad so that patches start on the grid's lattice, the first one a step before
        # the first pixel, with room for the ring of the outermost patches.
        before = (1 + cc) * step
        rows_after = (1 + cc) * step + (-height) % step
        cols_after = (1 + cc) * step + (-width) % step
        pad = ((0, 0), (before, rows_after), (before, cols_after))
        ok_p = np.pad(ok, pad)
        # int16 values (zero where not usable): the moments and the maps convert them
        # to float64 chunk by chunk, so the block's series is never widened whole.
        values_p = np.pad(np.where(ok[..., None], series, np.int16(0)), (*pad, (0, 0)))
        del ok
        known = ok_p[target].copy()
        filled = values_p[target].astype(np.int32)
        result = np.zeros(filled.shape, dtype=np.float32)
        result_days = np.zeros(known.shape, dtype=np.float32)
        # Patches per axis: the grid's cells + 1 (the first starts a step before).
        counts = (-(-height // step) + 1, -(-width // step) + 1)
        distance = np.abs(times - times[target])
        for threshold in thresholds:
            if known.all():
                break
            fits = _Fits(values_p, ok_p, known, filled, target, step, cc, counts,
                         consistency, ridge, min_pixels)
            completeness = _rects(_cells(known, step), cc, 2, counts) / patch ** 2
            new_values, new_days, reached = _predict(
                fits, values_p, ok_p, known, step, cc, completeness, threshold, group,
                distance)
            result[reached] = new_values[reached]
            result_days[reached] = new_days[reached]
            filled[reached] = np.clip(np.rint(new_values[reached]), -32767, 32767)
            known |= reached
        core = (slice(before, before + height), slice(before, before + width))
        gained = known[core] & ~ok_p[target][core]
        out[gained] = result[core][gained]
        days[gained] = result_days[core][gained]
    if fallback:
        fill_missing(out, days, series, masks, times, target, buffer)
    return out, days


def _predict(fits: _Fits, values: np.ndarray, ok: np.ndarray, known: np.ndarray, step: int,
             cc: int, completeness: np.ndarray, threshold: float, group: int,
             distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One progressive pass: the aggregated group predictions at the unknown pixels."""
    dates = values.shape[0]
    channels = values.shape[-1]
    height, width = known.shape
    rows_count, cols_count = fits.score.shape[1:]
    # The group: the best `group` dates of each patch by score (ties: nearer in time).
    order = np.lexsort((np.broadcast_to(np.arange(dates)[:, None, None], fits.score.shape),
                        np.broadcast_to(distance[:, None, None], fits.score.shape),
                        -fits.score), axis=0)
    chosen = np.zeros(fits.score.shape, dtype=bool)
    for rank in range(min(group, dates)):
        np.put_along_axis(chosen, order[rank][None], True, axis=0)
    chosen &= fits.score > -np.inf
    patch_weight = np.where(completeness >= threshold, completeness + 0.05, 0.0)

    new_values = np.zeros((height, width, channels), dtype=np.float32)
    new_days = np.zeros((height, width), dtype=np.float32)
    reached = np.zeros((height, width), dtype=bool)
    cells_unknown = _cells(~known, step) > 0
    cell_rows, cell_cols = np.nonzero(cells_unknown)
    shaped = values.reshape(dates, height // step, step, width // step, step, channels)
    shaped_ok = ok.reshape(dates, height // step, step, width // step, step)
    shaped_known = known.reshape(height // step, step, width // step, step)
    for lo in range(0, cell_rows.size, _CHUNK):
        cy, cx = cell_rows[lo:lo + _CHUNK], cell_cols[lo:lo + _CHUNK]
        n = cy.size
        total = np.zeros((n, step, step, channels))
        total_days = np.zeros((n, step, step))
        total_w = np.zeros((n, step, step))
        num = np.zeros((4, n, step, step, channels))
        den = np.zeros((4, n, step, step, channels))
        dnum = np.zeros((4, n, step, step))
        dden = np.zeros((4, n, step, step))
        # The patch of each class (lattice offsets 0 or 1 per axis) containing each cell.
        origins = []
        for oy in (0, 1):
            for ox in (0, 1):
                py = cy - ((cy - cc - oy) % 2) - cc
                px = cx - ((cx - cc - ox) % 2) - cc
                origins.append((py, px))
        classes = []
        for py, px in origins:
            inside = (py >= 0) & (py < rows_count) & (px >= 0) & (px < cols_count)
            classes.append((inside, np.clip(py, 0, rows_count - 1),
                            np.clip(px, 0, cols_count - 1)))
        for k in range(dates):
            # Each patch's group holds a few dates: only its cells are computed for k.
            uses = [inside & chosen[k][py_c, px_c] for inside, py_c, px_c in classes]
            cells = np.nonzero(np.logical_or.reduce(uses))[0]
            if not cells.size:
                continue
            x = shaped[k][cy[cells], :, cx[cells], :, :].astype(np.float64)  # (m, s, s, C)
            usable_k = shaped_ok[k][cy[cells], :, cx[cells], :]
            for c, (_, py_c, px_c) in enumerate(classes):
                sub = np.nonzero(uses[c][cells])[0]
                if not sub.size:
                    continue
                rows = cells[sub]
                pa, pb = py_c[rows], px_c[rows]
                matrix = fits.matrix[k][pa, pb]
                offset = (fits.mean_y[k][pa, pb] - np.einsum(
                    "nc,ncd->nd", fits.mean_x[k][pa, pb], fits.matrix[k][pa, pb]))
                # Band by band, not matmul: BLAS kernels vary with the batch (their
                # rounding too), elementwise products do not (blocks equal the whole).
                xs = x[sub]
                mapped = np.broadcast_to(offset[:, None, None, :], xs.shape).copy()
                for band in range(channels):
                    mapped += xs[..., band, None] * matrix[:, None, None, band, :]
                w = fits.weight[k][pa, pb][:, None, None, :]
                w = w * usable_k[sub][..., None]
                num[c][rows] += w * mapped
                den[c][rows] += w
                wd = w.mean(axis=-1)
                dnum[c][rows] += wd * distance[k]
                dden[c][rows] += wd
        for c, (py, px) in enumerate(origins):
            inside = (py >= 0) & (py < rows_count) & (px >= 0) & (px < cols_count)
            py_c, px_c = np.clip(py, 0, rows_count - 1), np.clip(px, 0, cols_count - 1)
            pw = np.where(inside, patch_weight[py_c, px_c], 0.0)[:, None, None]
            has = (den[c][..., 0] > 0) & (pw > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                prediction = num[c] / den[c]
                day = dnum[c] / dden[c]
            weight = np.where(has, pw, 0.0)
            total += np.where(has[..., None], weight[..., None] * prediction, 0.0)
            total_days += np.where(has, weight * day, 0.0)
            total_w += weight
        unknown = ~shaped_known[cy, :, cx, :]
        got = unknown & (total_w > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = (total / total_w[..., None]).astype(np.float32)
            day_value = (total_days / total_w).astype(np.float32)
        # Back to the image: cells (n, s, s) to their pixels.
        ys = (cy[:, None, None] * step + np.arange(step)[None, :, None])
        xs = (cx[:, None, None] * step + np.arange(step)[None, None, :])
        ys, xs = np.broadcast_to(ys, got.shape), np.broadcast_to(xs, got.shape)
        new_values[ys[got], xs[got]] = value[got]
        new_days[ys[got], xs[got]] = day_value[got]
        reached[ys[got], xs[got]] = True
    return new_values, new_days, reached


def _check_parameters(patch: int, context: int, group: int, thresholds: Sequence[float],
                      consistency: float, min_pixels: int) -> None:
    if patch < 2 or patch % 2:
        raise ArgumentError(f"patch side {patch} must be even and >= 2", field="patch")
    if context < 0 or context % (patch // 2):
        raise ArgumentError(f"context {context} must be a multiple of half the patch "
                            f"({patch // 2})", field="context")
    if group < 1:
        raise ArgumentError(f"group {group} must be >= 1", field="group")
    if not thresholds or any(not 0 <= t <= 1 for t in thresholds):
        raise ArgumentError(f"thresholds {list(thresholds)} must be fractions in [0, 1]",
                            field="thresholds")
    if not consistency >= 0:
        raise ArgumentError(f"consistency {consistency} must be >= 0", field="consistency")
    if min_pixels < 1:
        raise ArgumentError(f"min_pixels {min_pixels} must be >= 1", field="min_pixels")


class PatchGroupMethod(SeriesMethod):
    """The patch-group method as a block method (see :func:`patchgroup`).

    Its blocks lie on the patch lattice (:attr:`size_multiple` is half the patch) and
    its margin covers every progressive pass, so the output has no seams.

    Args:
        acquisitions: Acquisition names, one per date.
        target: The acquisition reconstructed.
        patch, context, group, thresholds, consistency, ridge, min_pixels, fallback:
            :func:`patchgroup`'s.
        **options: :class:`~.series.SeriesMethod`'s keywords (bands, buffer, name,
            dates).

    Raises:
        ArgumentError: Bad parameters, or what the base class refuses.
    """

    kind = "patchgroup"

    def __init__(self, acquisitions: Sequence[str], target: str | float, *, patch: int = 32,
                 context: int = 16, group: int = 2,
                 thresholds: Sequence[float] = (0.5, 0.25, 0.0), consistency: float = 0.25,
                 ridge: float = 25.0, min_pixels: int = 16, fallback: bool = True,
                 **options: Any) -> None:
        super().__init__(acquisitions, target, **options)
        _check_parameters(patch, context, group, thresholds, consistency, min_pixels)
        self.patch, self.context, self.group = int(patch), int(context), int(group)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.consistency, self.ridge = float(consistency), float(ridge)
        self.min_pixels, self.fallback = int(min_pixels), bool(fallback)
        step = self.patch // 2
        self.size_multiple = step
        reach = len(self.thresholds) * (self.patch + self.context) + self.buffer
        self.margin = -(-reach // step) * step

    def reconstruct(self, series: np.ndarray, masks: np.ndarray, times: np.ndarray,
                    target: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`patchgroup` with the method's parameters."""
        return patchgroup(series, masks, times, target, patch=self.patch,
                          context=self.context, group=self.group, thresholds=self.thresholds,
                          consistency=self.consistency, ridge=self.ridge,
                          min_pixels=self.min_pixels, buffer=self.buffer,
                          fallback=self.fallback)

    def parameters(self) -> dict[str, Any]:
        """The patch, group, progression and model settings."""
        return {"patch_px": self.patch, "context_px": self.context, "group": self.group,
                "thresholds": list(self.thresholds), "consistency": self.consistency,
                "ridge": self.ridge, "min_pixels": self.min_pixels,
                "fallback": self.fallback}
