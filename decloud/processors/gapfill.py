"""Per-pixel, cloud-aware gap-filling: linear interpolation in time between clear pixels.

Three layers: the numpy kernel :func:`fill_gaps`; :class:`GapFillMethod`, the kernel as
a block method of the streaming engine (:mod:`decloud.inference`); and the processor
:func:`gapfill_tile`, which gap-fills a tile of an archive at target dates (one COG,
quality and days layers and a completion record per date; ``decloud process gapfill``).

For every pixel and every target date, :func:`fill_gaps` takes the nearest *usable*
observation at or before the target and the nearest one after it, and interpolates
linearly in time between them:

* an observation is usable at a pixel when its mask is
  :attr:`~decloud.constants.MaskClass.CLEAR` there, the pixel is farther than
  ``buffer`` pixels (Euclidean) from every cloud, cirrus or shadow pixel of the same
  date (:func:`dilate_disk`), and none of its bands is nodata; mask nodata (255) is
  never usable but is not dilated (it is the swath's edge, not a cloud);
* an observation at the target's very time that is usable is taken as is (distance 0);
* one side only: that observation is copied; neither side: nodata;
* ``max_days`` optionally ignores observations farther than that from the target.

The kernel is vectorised: one pass over the dates builds, for every pixel, the index of
the last usable observation up to each date (and, backwards, the first one from each
date), so that any number of targets cost one gather each. Its cost is
``O(T x H x W)`` plus ``O(targets x H x W x C)``, with no loop over pixels.

The dilation looks ``buffer`` pixels around each pixel, which is the halo a block
needs: a window read with a margin of :attr:`GapFillMethod.margin` pixels gives, on its
core, exactly the whole-image result (pixels past the grid's edge are mask nodata,
which is not dilated, just as nothing is outside the whole image).

Values: int16 series are decloud's encoding (reflectance x 10000, nodata -10000);
float series are physical reflectance with NaN nodata (what
:meth:`~decloud.products.S2Product.read` returns). Either way the result is
reflectance x 10000 in float32 with NaN nodata, the engine's
:class:`~decloud.inference.method.BlockResult` convention.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage

from decloud.archive import Archive, normalize_tile
from decloud.constants import S2_10M_BANDS, S2_NODATA, S2_SCALE, MaskClass
from decloud.errors import ArgumentError, NoProductError
from decloud.inputs import AcquisitionProducts, InputKey, InputProducts, KeyRequest
from decloud.keys import CLOUD_CLASSES, KeyKind, check_acquisition, day_offset, make_key

if TYPE_CHECKING:
    from decloud.grid import Grid
    from decloud.inference.engine import EngineOptions
    from decloud.inference.method import BlockResult
    from decloud.products import S2Product

__all__ = [
    "DEFAULT_BANDS",
    "GapFill",
    "GapFillMethod",
    "GapFillOptions",
    "TargetResult",
    "dilate_disk",
    "block_series",
    "empty_outputs",
    "fill_gaps",
    "gapfill_tile",
    "output_path",
    "series_keys",
    "time_grid",
    "usable",
]

#: Index meaning "no observation used" in :attr:`GapFill.before` / :attr:`GapFill.after`.
NONE: int = -1


@dataclass(frozen=True)
class GapFill:
    """The gap-filled images of a series at its target dates.

    Attributes:
        reflectance: ``(K, H, W, C)`` float32, reflectance x 10000, NaN where no usable
            observation was found (K targets).
        days: ``(K, H, W)`` float32 temporal distance to the sources used, in days: the
            larger of the two distances when interpolating, the one distance when one
            side only is used, 0 where the target's own observation is used, NaN where
            no value.
        before: ``(K, H, W)`` int16 index (into the input series) of the observation
            used at or before the target, -1 if none.
        after: ``(K, H, W)`` int16 index of the observation used after the target, -1
            if none (also -1 where the target's own observation is used).
    """

    reflectance: np.ndarray
    days: np.ndarray
    before: np.ndarray
    after: np.ndarray


def time_grid(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """Regular target dates ``start, start + every, ...`` up to ``end`` included.

    Raises:
        ArgumentError: ``every`` is not positive or ``end`` is before ``start``.
    """
    if every <= timedelta(0):
        raise ArgumentError(f"time step {every} must be positive", field="every")
    if end < start:
        raise ArgumentError(f"end {end:%Y-%m-%d} is before start {start:%Y-%m-%d}",
                            field="end")
    count = (end - start) // every + 1
    return [start + i * every for i in range(count)]


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of the last two axes by a disk of ``radius`` pixels.

    A pixel is set when a set pixel lies within Euclidean distance ``radius`` of it
    (the same as :func:`scipy.ndimage.binary_dilation` with a disk structure, pixels
    outside the array unset). The disk is decomposed into its rows: each row is a
    1-D running maximum (:func:`scipy.ndimage.maximum_filter1d`, whose cost does not
    depend on its length), so the cost is ``O(radius)`` per pixel, not ``O(radius^2)``.

    Args:
        mask: Boolean ``(..., H, W)``.
        radius: Disk radius in pixels, >= 0.

    Raises:
        ArgumentError: A negative radius.
    """
    if radius < 0:
        raise ArgumentError(f"dilation radius {radius} must be >= 0", field="buffer")
    mask = np.asarray(mask, dtype=bool)
    if radius == 0:
        return mask.copy()
    height = mask.shape[-2]
    out = np.zeros_like(mask)
    as_bytes = mask.view(np.uint8)
    rows: dict[int, np.ndarray] = {}
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in rows:
            rows[half] = mask if half == 0 else ndimage.maximum_filter1d(
                as_bytes, 2 * half + 1, axis=-1, mode="constant", cval=0).view(bool)
        if abs(dy) >= height:
            continue
        # out[y] |= rows[y + dy]: the row dy away, dilated by the disk's half width there.
        src = rows[half]
        if dy >= 0:
            out[..., : height - dy, :] |= src[..., dy:, :]
        else:
            out[..., -dy:, :] |= src[..., : height + dy, :]
    return out


#: Which uint8 mask values are cloud, cirrus or shadow (the ones dilated).
_CLOUDY = np.isin(np.arange(256), CLOUD_CLASSES)


def _valid_bands(series: np.ndarray) -> np.ndarray:
    """``(T, H, W)``: every band has a value."""
    # Band by band: much faster than a reduction over a short last axis.
    floating = np.issubdtype(series.dtype, np.floating)
    ok = np.ones(series.shape[:-1], dtype=bool)
    for c in range(series.shape[-1]):
        ok &= np.isfinite(series[..., c]) if floating else series[..., c] != S2_NODATA
    return ok


def usable(series: np.ndarray, masks: np.ndarray, buffer: int = 0) -> np.ndarray:
    """``(T, H, W)`` boolean: which observations :func:`fill_gaps` may use at each pixel.

    Clear in the mask, at more than ``buffer`` pixels from the date's clouds, cirrus
    and shadows, and with a value in every band.

    Args:
        series: ``(T, H, W, C)`` int16 (decloud's encoding) or float (NaN nodata).
        masks: ``(T, H, W)`` :class:`~decloud.constants.MaskClass` layers.
        buffer: Dilation radius of the cloud, cirrus and shadow pixels.
    """
    masks = np.asarray(masks)
    # A lookup table is several times faster than isin on the uint8 masks.
    cloudy = _CLOUDY[masks] if masks.dtype == np.uint8 else np.isin(masks, CLOUD_CLASSES)
    return (masks == MaskClass.CLEAR) & ~dilate_disk(cloudy, buffer) & _valid_bands(series)


def _days(items: Sequence[Any], origin: datetime | None, field: str) -> np.ndarray:
    """Datetimes (relative to ``origin``) or plain day numbers to float64 days."""
    stamps = sum(isinstance(v, datetime) for v in items)
    if stamps and (stamps != len(items) or origin is None):
        raise ArgumentError("dates and targets must all be datetimes or all numbers of "
                            "days", field=field)
    if stamps and origin is not None:
        try:
            return np.array([(v - origin).total_seconds() / 86400.0 for v in items])
        except TypeError as err:  # naive against aware datetimes
            raise ArgumentError(f"cannot compare the {field} with the dates: {err}",
                                field=field) from err
    if origin is not None and items:
        raise ArgumentError("dates and targets must all be datetimes or all numbers of "
                            "days", field=field)
    try:
        out = np.asarray(items, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"{field} must be datetimes or numbers of days: {err}",
                            field=field) from err
    if not np.isfinite(out).all():
        raise ArgumentError(f"{field} must be finite", field=field)
    return out


def _check(series: np.ndarray, masks: np.ndarray, count: int) -> None:
    if series.ndim != 4:
        raise ArgumentError(f"series must be (T, H, W, C), got shape {series.shape}",
                            field="series")
    if series.dtype != np.int16 and not np.issubdtype(series.dtype, np.floating):
        raise ArgumentError(f"series must be int16 (reflectance x 10000, nodata "
                            f"{S2_NODATA}) or float reflectance, got {series.dtype}",
                            field="series")
    if masks.shape != series.shape[:3]:
        raise ArgumentError(f"masks must be (T, H, W) = {series.shape[:3]}, got "
                            f"{masks.shape}", field="masks")
    if series.shape[0] > np.iinfo(np.int16).max:
        raise ArgumentError(f"{series.shape[0]} images: at most {np.iinfo(np.int16).max}",
                            field="series")
    if count != series.shape[0]:
        raise ArgumentError(f"{count} dates for {series.shape[0]} images", field="dates")


def fill_gaps(
    series: np.ndarray,
    masks: np.ndarray,
    dates: Sequence[datetime] | Sequence[float] | np.ndarray,
    targets: datetime | float | Sequence[datetime] | Sequence[float] | np.ndarray,
    *,
    buffer: int = 0,
    max_days: float | None = None,
) -> GapFill:
    """Gap-fill a series at target dates by per-pixel linear interpolation in time.

    Args:
        series: ``(T, H, W, C)`` images: int16 reflectance x 10000 (nodata -10000) or
            float reflectance (NaN nodata); dates in any order.
        masks: ``(T, H, W)`` :class:`~decloud.constants.MaskClass` layers (255 nodata).
        dates: The T acquisition times: datetimes, or numbers of days on any origin.
        targets: One target or a sequence of them, of the same type as ``dates``
            (:func:`time_grid` makes a regular one).
        buffer: Radius in pixels by which clouds, cirrus and shadows are dilated.
        max_days: Observations farther than this from a target are not used
            (None: no limit).

    Returns:
        The images at the K targets (one target gives K = 1), with the distances and
        the indices of the observations used. Among observations at the same time, the
        one later in ``series`` wins.

    Raises:
        ArgumentError: Shapes, dtypes or dates that do not match, a negative buffer or
            ``max_days``.
    """
    series = np.asarray(series)
    masks = np.asarray(masks)
    single = isinstance(targets, (datetime, int, float, np.number))
    target_list: list[Any] = [targets] if single else list(np.ravel(np.asarray(
        targets, dtype=object)))
    date_list: list[Any] = list(np.ravel(np.asarray(dates, dtype=object)))
    _check(series, masks, len(date_list))
    if max_days is not None and not max_days >= 0:
        raise ArgumentError(f"max_days {max_days} must be >= 0", field="max_days")
    stamps = [v for v in [*date_list, *target_list] if isinstance(v, datetime)]
    # Any origin will do: days are only ever subtracted from one another.
    origin = stamps[0] if stamps else None
    times = _days(date_list, origin, "dates")
    wanted = _days(target_list, origin, "targets")

    count, height, width, channels = series.shape
    floating = np.issubdtype(series.dtype, np.floating)
    scale = np.float32(S2_SCALE if floating else 1.0)
    ok = usable(series, masks, buffer)

    # last[j]: per pixel, the input index of the last usable observation among the
    # first j + 1 in time order (-1: none); first[j]: the first usable one from j on.
    # Only the j the targets split at are kept.
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    splits = [int(np.searchsorted(sorted_times, target, side="right")) for target in wanted]
    need_last = {split - 1 for split in splits if split > 0}
    need_first = {split for split in splits if split < count}
    last: dict[int, np.ndarray] = {}
    first: dict[int, np.ndarray] = {}
    current = np.full((height, width), NONE, dtype=np.int16)
    for j in range(max(need_last, default=-1) + 1):
        np.copyto(current, np.int16(order[j]), where=ok[order[j]])
        if j in need_last:
            last[j] = current.copy()
    # Backwards, equal times in decreasing index order, so that the later one wins
    # there too (the scans split at the same place: between distinct times).
    backward = np.lexsort((-np.arange(count), times))
    current = np.full((height, width), NONE, dtype=np.int16)
    for j in range(count - 1, min(need_first, default=count) - 1, -1):
        np.copyto(current, np.int16(backward[j]), where=ok[backward[j]])
        if j in need_first:
            first[j] = current.copy()

    shape = (len(wanted), height, width)
    # Every target fills its whole slice: no need to initialise.
    reflectance = np.empty((*shape, channels), dtype=np.float32)
    days = np.empty(shape, dtype=np.float32)
    before = np.empty(shape, dtype=np.int16)
    after = np.empty(shape, dtype=np.int16)
    none = np.full((height, width), NONE, dtype=np.int16)
    for k, (target, split) in enumerate(zip(wanted, splits, strict=True)):
        # Everything but the values depends on the pixel's (before, after) pair only:
        # computed once per pair in a (T + 1)^2 table, then looked up per pixel.
        tables = _pair_tables(times, float(target), max_days)
        code = (last[split - 1] if split > 0 else none).astype(np.intp)
        code += 1
        code *= count + 1
        code += first[split] if split < count else none
        code += 1
        ib, ia, ib_value, ia_value, weight, days[k] = (t.take(code) for t in tables)
        # One side only: both ends are that observation, so the formula below copies it
        # exactly (weight 0, difference 0); neither side: NaN stays NaN.
        vb, va = _gather(series, ib_value, scale), _gather(series, ia_value, scale)
        va -= vb  # in place from here on: these are the block's largest arrays
        va *= weight[..., None]
        va += vb
        reflectance[k] = va
        before[k], after[k] = ib, ia
    return GapFill(reflectance, days, before, after)


def _pair_tables(times: np.ndarray, target: float, max_days: float | None
                 ) -> tuple[np.ndarray, ...]:
    """Per (before, after) pair of observation indices: what :func:`fill_gaps` uses.

    Flat tables of ``(T + 1)^2`` entries indexed by ``(ib + 1) * (T + 1) + (ia + 1)``
    (-1: no observation on that side), with the same float64 arithmetic a per-pixel
    computation would do, so that the looked-up results are bit-identical to it.

    Returns:
        ``(ib, ia, ib_value, ia_value, weight, days)``: the indices used before and
        after the target (int16; after max_days, and the after side dropped where the
        before one is at the target's time), the indices whose values stand for each
        end (the other side when one is missing), the weight of the later observation
        (float32) and the days to the sources (float32, NaN where none).
    """
    count = len(times)
    candidates = np.arange(-1, count, dtype=np.int16)
    ib, ia = (a.ravel() for a in np.meshgrid(candidates, candidates, indexing="ij"))
    tb = np.where(ib >= 0, times[np.maximum(ib, 0)], np.nan)
    ta = np.where(ia >= 0, times[np.maximum(ia, 0)], np.nan)
    db, da = target - tb, ta - target  # NaN where no observation
    if max_days is not None:
        ib = np.where(db > max_days, np.int16(NONE), ib)
        ia = np.where(da > max_days, np.int16(NONE), ia)
    has_b, has_a = ib >= 0, ia >= 0
    exact = has_b & (db == 0)
    ia = np.where(exact, np.int16(NONE), ia)
    has_a &= ~exact
    # A pixel's pair has tb <= target < ta (the scans split there); the table also holds
    # pairs no pixel can have (e.g. ib == ia, ta - tb = 0): their weight is not computed.
    both = has_b & has_a & (db >= 0) & (da > 0)
    db, da = np.where(has_b, db, np.nan), np.where(has_a, da, np.nan)
    # Weight of the later observation: 0 at tb, 1 at ta.
    weight = np.zeros(len(ib), dtype=np.float64)
    np.divide(db, ta - tb, out=weight, where=both)
    days = np.fmax(db, da).astype(np.float32)  # the larger distance; NaN only where neither
    ib_value = np.where(has_b, ib, ia).astype(np.int16)
    ia_value = np.where(has_a, ia, ib).astype(np.int16)
    return (ib.astype(np.int16), ia.astype(np.int16), ib_value, ia_value,
            weight.astype(np.float32), days)


def _gather(series: np.ndarray, index: np.ndarray, scale: np.float32) -> np.ndarray:
    """``series[index[y, x], y, x, :] * scale`` as float32, NaN where ``index`` is -1.

    Only usable observations are indexed: none of their bands is nodata.
    """
    count, height, width, channels = series.shape
    pixels = height * width
    # Whole rows of C values by flat index: much faster than take_along_axis.
    flat = np.maximum(index, 0).astype(np.intp).ravel() * pixels + np.arange(pixels)
    picked = np.take(series.reshape(count * pixels, channels), flat, axis=0)
    out = picked.reshape(height, width, channels).astype(np.float32)
    if scale != 1:
        out *= scale
    out[index < 0] = np.nan
    return out


#: The bands gap-filling reconstructs by default (the 10 m bands of ``s2_<acq>`` keys).
DEFAULT_BANDS: tuple[str, ...] = tuple(S2_10M_BANDS)

def series_keys(acquisitions: Sequence[str], bands: Sequence[str]
                ) -> tuple[KeyRequest, ...]:
    """The ``s2_``, ``s2_mask_`` and ``dt_`` keys of each acquisition of a series method."""
    keys: list[KeyRequest] = []
    for acq in acquisitions:
        keys += [InputKey.of(make_key(KeyKind.S2, acq), bands=tuple(bands)),
                 InputKey.of(make_key(KeyKind.S2_MASK, acq)),
                 InputKey.of(make_key(KeyKind.DT, acq))]
    return tuple(keys)


def empty_outputs(inputs: Mapping[str, np.ndarray], acquisitions: Sequence[str],
                  bands: int) -> tuple[np.ndarray, np.ndarray]:
    """NaN reflectance ``(B, H, W, bands)`` and days ``(B, H, W)`` for a batch of blocks."""
    first = inputs[make_key(KeyKind.S2, acquisitions[0])]
    batch, height, width = first.shape[:3]
    return (np.full((batch, height, width, bands), np.nan, dtype=np.float32),
            np.full((batch, height, width), np.nan, dtype=np.float32))


def block_series(inputs: Mapping[str, np.ndarray], acquisitions: Sequence[str], b: int
                 ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """Block ``b`` of a batch as a series of the acquisitions it has a product for.

    Args:
        inputs: Key -> ``(B, H, W, C)`` encoded arrays; ``dt_<acq>`` ``(B, 1)`` day
            offsets, NaN where the acquisition has no product for the block.
        acquisitions: The method's acquisition names, in time order.
        b: The block's index in the batch.

    Returns:
        The acquisitions present, their ``(T, H, W, C)`` reflectance, ``(T, H, W)``
        masks and ``(T,)`` day offsets (float64); None when no acquisition is present.
    """
    offsets = [float(np.asarray(inputs[make_key(KeyKind.DT, a)])[b].ravel()[0])
               for a in acquisitions]
    present = [i for i, d in enumerate(offsets) if math.isfinite(d)]
    if not present:
        return None
    acqs = [acquisitions[i] for i in present]
    series = np.stack([inputs[make_key(KeyKind.S2, a)][b] for a in acqs])
    masks = np.stack([inputs[make_key(KeyKind.S2_MASK, a)][b, ..., 0] for a in acqs])
    return acqs, series, masks, np.array([offsets[i] for i in present], dtype=np.float64)


class GapFillMethod:
    """Gap-filling as a block method of the engine (:class:`~decloud.inference.method.BlockMethod`).

    It reads, for each acquisition ``a`` of the series, ``s2_<a>`` (the output bands),
    ``s2_mask_<a>`` (nodata wherever a band is, :func:`decloud.inputs.read_inputs`) and
    ``dt_<a>`` (days from the reference acquisition), and gap-fills every padded block at
    one target. Acquisitions whose ``dt`` is NaN (no product) are left out. The block
    halo is the dilation buffer: the output is seamless.

    Args:
        acquisitions: Acquisition names (``d0``, ``d1``...), one per date of the series.
        target: The target, in days from the reference acquisition (as ``dt`` keys).
        bands: The S2 bands to reconstruct (10 m bands).
        buffer: Radius in pixels by which clouds, cirrus and shadows are dilated.
        max_days: Observations farther than this from the target are not used.
        name: What the provenance calls the method.
        target_date: The target as a date-time, for the provenance only.

    Raises:
        ArgumentError: No acquisition, a bad acquisition name, a band that is not a 10 m
            band, a negative buffer or ``max_days``.
    """

    size_multiple: int = 1
    #: The per-pixel extras of every result: the temporal distance to the sources.
    extras: tuple[str, ...] = ("days",)

    def __init__(self, acquisitions: Sequence[str], target: float, *,
                 bands: Sequence[str] = DEFAULT_BANDS, buffer: int = 0,
                 max_days: float | None = None, name: str = "gapfill",
                 target_date: datetime | None = None) -> None:
        if not acquisitions:
            raise ArgumentError("gap-filling needs at least one acquisition",
                                field="acquisitions")
        if buffer < 0:
            raise ArgumentError(f"dilation buffer {buffer} must be >= 0", field="buffer")
        if max_days is not None and not max_days >= 0:
            raise ArgumentError(f"max_days {max_days} must be >= 0", field="max_days")
        unknown = [b for b in bands if b not in S2_10M_BANDS]
        if unknown or not bands:
            raise ArgumentError(f"bands {', '.join(unknown) or '(none)'}: gap-filling "
                                f"reconstructs 10 m bands ({', '.join(S2_10M_BANDS)})",
                                field="bands")
        self.name = name
        self.acquisitions = tuple(check_acquisition(a) for a in acquisitions)
        self.target = float(target)
        self.target_date = target_date
        self.buffer = int(buffer)
        self.max_days = max_days
        self.output_bands: tuple[str, ...] = tuple(bands)
        self.margin = self.buffer
        self.input_keys: tuple[KeyRequest, ...] = series_keys(self.acquisitions,
                                                              self.output_bands)

    @classmethod
    def from_dates(cls, dates: Sequence[datetime], target: datetime,
                   **options: object) -> GapFillMethod:
        """The method over acquisitions ``d0``, ``d1``... at ``dates``, reference ``d0``.

        Build the matching products with ``InputProducts({"d0": ..., "d1": ...},
        reference="d0")``; ``options`` are the constructor's keywords.

        Raises:
            ArgumentError: No dates.
        """
        if not dates:
            raise ArgumentError("gap-filling needs at least one date", field="dates")
        return cls([f"d{i}" for i in range(len(dates))], day_offset(target, dates[0]),
                   target_date=target, **options)  # type: ignore[arg-type]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        """Gap-fill a batch of padded blocks (inputs: key -> ``(B, H, W, C)``, dt ``(B, 1)``)."""
        # Imported here: the engine's method module imports Keras, gap-filling needs none.
        from decloud.inference.method import BlockResult

        reflectance, days = empty_outputs(inputs, self.acquisitions, len(self.output_bands))
        for b in range(len(reflectance)):
            block = block_series(inputs, self.acquisitions, b)
            if block is None:
                continue
            _, series, masks, times = block
            filled = fill_gaps(series, masks, list(times), self.target,
                               buffer=self.buffer, max_days=self.max_days)
            reflectance[b], days[b] = filled.reflectance[0], filled.days[0]
        return BlockResult(reflectance, {"days": days})

    def describe(self) -> dict[str, Any]:
        """The method's parameters, JSON-ready."""
        return {"method": "gapfill", "name": self.name, "acquisitions": list(self.acquisitions),
                "target_days": self.target,
                "target_date": None if self.target_date is None else self.target_date.isoformat(),
                "bands": list(self.output_bands),
                "buffer_px": self.buffer, "max_days": self.max_days,
                "margin_px": self.margin, "size_multiple": self.size_multiple}


@dataclass(frozen=True)
class GapFillOptions:
    """How :func:`gapfill_tile` gap-fills a tile.

    Attributes:
        window_days: S2 dates within this many days of a target are read, and
            observations farther than that are not used.
        buffer: Radius in pixels by which clouds, cirrus and shadows are dilated.
        bands: The 10 m bands to reconstruct.
        keep_clear: Where the target day has an S2 product, keep its clear pixels
            bit-identical (the engine's mask-guided composite); else the interpolation is
            written everywhere it has a value.
        overwrite: Redo targets that have a completion record.
        engine: Streaming options (block size, readers...); its ``target`` and
            ``overwrite`` are set per target date. Engine defaults when None.
    """

    window_days: float = 60.0
    buffer: int = 2
    bands: tuple[str, ...] = DEFAULT_BANDS
    keep_clear: bool = True
    overwrite: bool = False
    engine: EngineOptions | None = None

    def __post_init__(self) -> None:
        if not self.window_days > 0:
            raise ArgumentError(f"window_days {self.window_days} must be > 0",
                                field="window_days")
        if self.buffer < 0:
            raise ArgumentError(f"dilation buffer {self.buffer} must be >= 0", field="buffer")


@dataclass(frozen=True)
class TargetResult:
    """What :func:`gapfill_tile` did for one target date.

    Attributes:
        target: The target date-time (the S2 product's own when one is on that day,
            else midnight UTC).
        status: ``done`` (written now), ``complete`` (its completion record was there:
            not touched) or ``no-data`` (no S2 product within the window: nothing
            written).
        output: The reflectance COG (None for ``no-data``).
        dates: Acquisition times of the S2 products read.
        seconds: Wall time spent on it.
    """

    target: datetime
    status: Literal["done", "complete", "no-data"]
    output: Path | None
    dates: tuple[datetime, ...]
    seconds: float


def output_path(out_dir: str | Path, tile: str, target: date | datetime) -> Path:
    """Where :func:`gapfill_tile` writes a target: ``<out_dir>/<TILE>_<YYYYMMDD>_gapfill.tif``."""
    return Path(out_dir) / f"{normalize_tile(tile)}_{target:%Y%m%d}_gapfill.tif"


def _target_time(day: date | datetime, products: Sequence[S2Product]) -> datetime:
    """A target as a date-time: the product's own time on that day, else midnight UTC."""
    if isinstance(day, datetime):
        return day if day.tzinfo is not None else day.replace(tzinfo=UTC)
    on_day = [p.acquired for p in products if p.acquired.date() == day]
    return min(on_day) if on_day else datetime.combine(day, time(), tzinfo=UTC)


def _complete(record: Path) -> bool:
    """A completion record that parses and names outputs that all exist."""
    try:
        outputs = json.loads(record.read_text())["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(outputs, dict) and all(Path(str(p)).is_file() for p in outputs.values())


def gapfill_tile(archive: Archive, tile: str, targets: Sequence[date | datetime],
                 out_dir: str | Path, options: GapFillOptions | None = None, *,
                 on_result: Callable[[TargetResult], None] | None = None,
                 ) -> list[TargetResult]:
    """Gap-fill a tile of an archive at target dates with the streaming engine.

    For each target, the S2 products of the tile within ``window_days`` are the series
    (acquisitions ``d0``, ``d1``... in time order); :class:`GapFillMethod` fills each
    pixel from its nearest usable observations before and after, and the engine
    (:func:`decloud.inference.run`) writes ``<TILE>_<YYYYMMDD>_gapfill.tif`` with its
    ``_quality.tif`` and ``_days.tif`` layers, then the completion record ``.json``
    last. A target whose record is there and names existing outputs is not touched
    (resume); one without is redone, whatever files it left.

    Args:
        archive: The archive.
        tile: The tile (``T31TEJ`` or ``31TEJ``).
        targets: Target days (a date-time is taken as is); :func:`time_grid` makes a
            regular series.
        out_dir: Output folder (created).
        options: Gap-filling and engine options (defaults when None).
        on_result: Called with each target's result as soon as it is done.

    Returns:
        One :class:`TargetResult` per target, in order.

    Raises:
        NoProductError: The tile has no S2 product.
        DecloudError: Reading an input or writing an output failed; the target's files
            are not left behind (the engine writes atomically).
    """
    # The engine imports Keras: only a processor run pays for it, not the kernel.
    from decloud.inference.engine import EngineOptions

    options = options or GapFillOptions()
    products = sorted(archive.select_s2(tile), key=lambda p: p.acquired)
    if not products:
        raise NoProductError(f"tile {normalize_tile(tile)} has no S2 product in the archive",
                             field="tile")
    grid = products[0].grid()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = options.engine or EngineOptions()
    results: list[TargetResult] = []
    for day in targets:
        result = _one_target(grid, products, day, out_dir, tile, engine, options)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _one_target(grid: Grid, products: Sequence[S2Product], day: date | datetime,
                out_dir: Path, tile: str, engine: EngineOptions,
                options: GapFillOptions) -> TargetResult:
    """Gap-fill one target of :func:`gapfill_tile` (or find it complete, or without data)."""
    from decloud.inference.engine import record_path, run

    started = perf_counter()
    window = timedelta(days=options.window_days)
    when = _target_time(day, products)
    series = [p for p in products if abs(p.acquired - when) <= window]
    dates = tuple(p.acquired for p in series)
    out = output_path(out_dir, tile, when)
    if not series:
        return TargetResult(when, "no-data", None, dates, perf_counter() - started)
    if not options.overwrite and _complete(record_path(out)):
        return TargetResult(when, "complete", out, dates, perf_counter() - started)
    names = [f"d{i}" for i in range(len(series))]
    method = GapFillMethod.from_dates(list(dates), when, bands=options.bands,
                                      buffer=options.buffer, max_days=options.window_days)
    own = [n for n, p in zip(names, series, strict=True) if p.acquired == when]
    inputs = InputProducts({n: AcquisitionProducts(s2=p)
                            for n, p in zip(names, series, strict=True)}, reference="d0")
    # Outputs without a record are an interrupted run: overwritten.
    run(method, inputs, grid, out, dataclasses.replace(
        engine, target=own[-1] if own and options.keep_clear else None, overwrite=True))
    return TargetResult(when, "done", out, dates, perf_counter() - started)
