"""Per-block choice of the t-1 / t+1 neighbours of the multi-temporal processor.

The multi-temporal models (``msop_*``, ``os1_unet``) take S2 (+ S1) images at t-1, t
and t+1. CNES decloud picks t-1 and t+1 once per tile, by nodata alone; decloud
picks them **per block** of the engine, from the catalog's per-patch statistics
(:mod:`decloud.index.stats`), by cloud cover within the acquisition layout's time
windows, so that one cloudy date over part of a tile does not spoil the whole tile.

Block statistics
    A block is a window on the tile's 10 m grid; it overlaps several catalog patches.
    Its *unusable* fraction on an S2 product is the fraction of its pixels (inside the
    tile) that are cloud, cirrus, shadow or nodata: each patch contributes its own
    fraction weighted by the block's pixels in it (pixels of a patch are taken as
    uniformly cloudy). Per patch, the catalog stores cloud and shadow as percentages of
    the valid pixels and nodata as a percentage of all the patch's pixels, counting a
    partial edge patch's pixels past the tile's edge as nodata; so, in units of 0.01 %
    of the patch's pixels inside the tile (``area``; ``outside`` the others)::

        nodata'   = round(100 * max(0, nodata - edge) * P**2 / area)
        cloud'    = round((100 - nodata) * min(100, cloud + shadow) * P**2 / area)
        unusable' = min(10000, nodata' + cloud')

    with ``P`` the patch size, ``edge = rint(100 * outside / P**2)`` the percentage the
    catalog stores for the pixels past the edge alone, and rounding half up (exact
    integers on full patches, where ``edge`` is 0). The catalog rounds its
    percentages, so a partial patch's in-tile nodata is known to within 0.5 % of
    ``P**2`` pixels; a product valid over the whole tile has none.
    A block's sums ``sum(pixels * unusable')`` are exact integers, so every comparison
    below is exact and reproducible. Nodata counts as unusable: a date with nodata over
    the block ranks below a clear one, never above.

Acceptance, per acquisition ``a`` (``tm1``, ``tp1``)
    A candidate is an S2 product of the tile that is not the target date (at least
    :data:`SAME_DATE_HOURS` away) and lies on the acquisition's side of the target
    (before it for a window ending at or before 0, after it for one starting at or
    after 0); when ``a`` has S1, at least one S1 image must lie within its
    ``max_gap_hours`` (with its pass direction and orbits). It is *within limits* on a
    block when the block's unusable percentage is at most ``max_unusable`` (default:
    the layout's S2 cloud maximum) and its nodata percentage at most ``max_nodata``
    (default: the layout's S2 ``nodata_max``). The layout's cloud minimum is a training
    constraint (cloudy references) and is not applied to neighbours.

Fallback tiers, per block (the first that has a candidate wins)
    0. ``Fallback.NONE``: in the layout's window, within limits;
    1. ``Fallback.WIDENED``: in the window widened by ``widen_hours`` on both ends
       (still on the acquisition's side), within limits (skipped when ``widen_hours``
       is 0);
    2. ``Fallback.OVER_LIMIT``: in the widened window, whatever its cover;
    3. ``Fallback.MISSING``: no candidate at all (the choice's ``s2`` is None).

Score within the tier
    The least unusable candidate ``m`` sets the bar; candidates at most ``tolerance``
    percentage points above it are equally clear, and among them the one nearest in
    time wins. Ties are broken by the smaller unusable fraction, then the earlier
    acquisition, then the smaller catalog id: the choice is deterministic.

S1
    For an acquisition with S1 (the reference included: its S2 is the target), each
    block's S1 image is chosen among those within ``max_gap_hours`` of the chosen S2
    (pass direction and orbits as asked) with the same rule on the block's S1 nodata
    fraction (least nodata, ties within ``tolerance`` broken by the smallest time gap to
    the S2, then the earlier, then the smaller id); ``s1_over_limit`` says its nodata
    is above the layout's S1 ``nodata_max``.

Everything is vectorised over blocks and products: block sums are two matrix products
of the per-patch arrays with the blocks' row and column overlaps.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from decloud.errors import ArgumentError, GridError, LayoutError, NoProductError
from decloud.index.stats import PatchGrid
from decloud.layouts.model import RandInt

if TYPE_CHECKING:
    from decloud.index.catalog import Catalog, ProductRecord
    from decloud.layouts import Acquisition, Layout, S1Spec

__all__ = [
    "SAME_DATE_HOURS",
    "BlockChoice",
    "BlockStats",
    "Fallback",
    "NeighbourChoice",
    "block_stats",
    "choose_neighbours",
]

#: Products closer than this to the target (hours) are the target date itself (an
#: acquisition processed twice, by two ground segments), never its neighbour.
SAME_DATE_HOURS = 12.0
#: Percentages are handled in units of 0.01 % (integers, exact comparisons).
_UNITS = 100
_FULL = 100 * _UNITS
# Times are compared in hours since 1970, as ProductRecord.hours gives them.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Fallback(enum.StrEnum):
    """How far a block's choice had to fall back (see the module docstring)."""

    NONE = "none"
    WIDENED = "widened"
    OVER_LIMIT = "over_limit"
    MISSING = "missing"


@dataclass(frozen=True)
class NeighbourChoice:
    """The products chosen for one acquisition on one block.

    Attributes:
        acquisition: The layout's acquisition name (``tm1``, ``t``, ``tp1``).
        s2: The S2 product (the target's own record for the reference, when the
            catalog has it); None when no candidate exists.
        s1: The S1 image, when the acquisition has S1 and one exists.
        unusable: Fraction (0-1) of the block's pixels that are cloud, shadow or nodata
            on ``s2`` (NaN when ``s2`` is None or is the reference).
        cloud: Fraction of the block's pixels that are cloud or shadow on ``s2``.
        nodata: Fraction of the block's pixels that are nodata on ``s2``.
        s1_nodata: Fraction of the block's pixels that are nodata on ``s1`` (NaN none).
        fallback: The tier the S2 choice came from.
        s1_over_limit: The S1 image's nodata is above the layout's S1 ``nodata_max``.
    """

    acquisition: str
    s2: ProductRecord | None
    s1: ProductRecord | None
    unusable: float
    cloud: float
    nodata: float
    s1_nodata: float
    fallback: Fallback
    s1_over_limit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the completion record)."""

        def product(record: ProductRecord | None) -> dict[str, Any] | None:
            if record is None:
                return None
            return {"id": record.id, "path": record.path,
                    "acquired": record.acquired.isoformat(timespec="seconds")}

        def number(value: float) -> float | None:
            return None if np.isnan(value) else round(value, 6)

        return {"s2": product(self.s2), "s1": product(self.s1),
                "unusable": number(self.unusable), "cloud": number(self.cloud),
                "nodata": number(self.nodata), "s1_nodata": number(self.s1_nodata),
                "fallback": self.fallback.value, "s1_over_limit": self.s1_over_limit}


@dataclass(frozen=True)
class BlockChoice:
    """The products chosen for one block, per acquisition.

    Attributes:
        window: The block (10 m pixels of the tile grid).
        choices: Per acquisition name: the neighbours asked for, and the reference when
            the layout gives it S1.
    """

    window: Window
    choices: dict[str, NeighbourChoice]

    @property
    def fallback(self) -> bool:
        """Whether any acquisition of the block fell back or lacks a product."""
        return any(c.fallback is not Fallback.NONE or c.s1_over_limit
                   for c in self.choices.values())

    def key(self) -> tuple[tuple[str, int | None, int | None], ...]:
        """The chosen product ids: blocks with equal keys read the same products."""
        return tuple((name, c.s2.id if c.s2 else None, c.s1.id if c.s1 else None)
                     for name, c in self.choices.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the completion record)."""
        w = self.window
        return {"window": [int(w.col_off), int(w.row_off), int(w.width), int(w.height)],
                "acquisitions": {n: c.to_dict() for n, c in self.choices.items()}}


@dataclass(frozen=True)
class BlockStats:
    """Per-block sums of per-patch statistics, in units of 0.01 % times pixels.

    Attributes:
        area: ``(B,)`` pixels of each block inside the tile.
        unusable: ``(K, B)`` sums of ``pixels * unusable'`` per product and block.
        cloud: ``(K, B)`` sums of ``pixels * cloud'``.
        nodata: ``(K, B)`` sums of ``pixels * nodata'``.
    """

    area: np.ndarray
    unusable: np.ndarray
    cloud: np.ndarray
    nodata: np.ndarray

    def fraction(self, name: str) -> np.ndarray:
        """``(K, B)`` fraction (0-1) of the blocks' pixels: unusable, cloud or nodata."""
        sums: np.ndarray = getattr(self, name)
        return sums / (self.area[None, :] * float(_FULL))


def _round_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` rounded half up, for non-negative int64 arrays."""
    return (2 * num + den) // (2 * den)


def _overlaps(starts: np.ndarray, stops: np.ndarray, size: int, patch: int,
              count: int) -> np.ndarray:
    """``(B, count)`` pixels of each ``[start, stop)`` in each patch, inside ``[0, size)``.

    Patch ``i`` spans ``[i * patch, (i + 1) * patch)``.
    """
    lo = np.arange(count, dtype=np.int64) * patch
    hi = np.minimum(lo + patch, size)
    first = np.maximum(starts[:, None], lo[None, :])
    last = np.minimum(stops[:, None], hi[None, :])
    return np.maximum(last - first, 0)


@dataclass(frozen=True)
class _Axes:
    """The blocks' distinct row and column bands and their overlaps with the patches.

    The engine's blocks form a grid: distinct bands are few (about the square root of
    the blocks), and block sums are products over bands then a gather.
    """

    rows: np.ndarray  # (Ru, patch rows) pixels of each row band in each patch row
    cols: np.ndarray  # (Cu, patch cols)
    row_of: np.ndarray  # (B,) row band of each block
    col_of: np.ndarray  # (B,)
    area: np.ndarray  # (B,) pixels of each block inside the tile


def _bands(starts: np.ndarray, stops: np.ndarray, size: int, patch: int,
           count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct clipped intervals: their patch overlaps, each block's band, its length."""
    spans = np.stack([np.clip(starts, 0, size), np.clip(stops, 0, size)], axis=1)
    unique, inverse = np.unique(spans, axis=0, return_inverse=True)
    overlaps = _overlaps(unique[:, 0], unique[:, 1], size, patch, count)
    return overlaps, inverse.ravel(), np.maximum(spans[:, 1] - spans[:, 0], 0)


def _block_axes(patches: PatchGrid, blocks: Sequence[Window]) -> _Axes:
    """The bands of the blocks on the patch grid.

    Raises:
        ArgumentError: No blocks.
        GridError: A block lies wholly outside the tile.
    """
    if not blocks:
        raise ArgumentError("no blocks to choose neighbours for", field="blocks")
    grid, size = patches.grid, patches.patch_size
    box = np.array([[int(w.col_off), int(w.row_off), int(w.width), int(w.height)]
                    for w in blocks], np.int64)
    rows, row_of, heights = _bands(box[:, 1], box[:, 1] + box[:, 3], grid.height, size,
                                   patches.rows)
    cols, col_of, widths = _bands(box[:, 0], box[:, 0] + box[:, 2], grid.width, size,
                                  patches.cols)
    area = heights * widths
    empty = np.flatnonzero(area == 0)
    if empty.size:
        raise GridError(f"block {blocks[int(empty[0])]} lies outside the tile's "
                        f"{grid.width} x {grid.height} px grid", field="blocks")
    return _Axes(rows, cols, row_of, col_of, area)


def _patch_units(patches: PatchGrid, nodata: np.ndarray,
                 cloud: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch ``nodata'`` and ``cloud'`` (0.01 % of the patch's pixels in the tile)."""
    size, grid = patches.patch_size, patches.grid
    heights = np.minimum(size, grid.height - np.arange(patches.rows) * size).astype(np.int64)
    widths = np.minimum(size, grid.width - np.arange(patches.cols) * size).astype(np.int64)
    area = heights[:, None] * widths[None, :]
    full = size * size
    n = nodata.astype(np.int64)
    # The percentage the catalog stores for the pixels past the tile's edge alone (its
    # own rounding, numpy's half-even): what is above it is nodata inside the tile.
    outside = np.rint(100.0 * (full - area) / full).astype(np.int64)
    nd = _round_div(np.maximum(n - outside, 0) * _UNITS * full, area)
    nd = np.minimum(nd, _FULL)
    if cloud is None:
        return nd, np.zeros_like(nd)
    cs = np.minimum(cloud.astype(np.int64), 100)
    cl = _round_div((100 - n) * cs * full, area)
    return nd, np.minimum(cl, _FULL)


def _block_sums(axes: _Axes, per_patch: np.ndarray) -> np.ndarray:
    """``(K, B)`` sums over each block's pixels of a ``(K, rows, cols)`` per-patch value.

    Two 2-D matrix products (BLAS) over the distinct bands, then a gather. float64 is
    exact here: every term and partial sum is an integer below 2**53 (at most 10000
    units times a block's pixels).
    """
    n, n_rows, n_cols = per_patch.shape
    if n == 0:
        return np.zeros((0, axes.area.shape[0]), np.int64)
    by_row = per_patch.transpose(1, 0, 2).reshape(n_rows, n * n_cols).astype(np.float64)
    bands = (axes.rows.astype(np.float64) @ by_row).reshape(-1, n_cols)  # (Ru * K, C)
    sums = (bands @ axes.cols.T.astype(np.float64)).reshape(axes.rows.shape[0], n, -1)
    # Indexes on both sides of a slice: the result is (B, K).
    return np.rint(sums[axes.row_of, :, axes.col_of]).astype(np.int64).T


def block_stats(patches: PatchGrid, blocks: Sequence[Window], nodata: np.ndarray,
                cloud: np.ndarray | None = None, shadow: np.ndarray | None = None) -> BlockStats:
    """Block sums of per-patch percentages (see the module docstring for the units).

    Args:
        patches: The tile's patch grid.
        blocks: Windows on the tile's 10 m grid (parts outside the tile are ignored).
        nodata: ``(K, rows, cols)`` nodata percentages (of all the patch's pixels).
        cloud: Cloud percentages of the valid pixels (None for S1).
        shadow: Shadow percentages of the valid pixels (None: none).

    Raises:
        ArgumentError: No blocks, or arrays not of shape ``(K, rows, cols)``.
        GridError: A block lies wholly outside the tile.
    """
    for name, array in (("nodata", nodata), ("cloud", cloud), ("shadow", shadow)):
        if array is not None and (array.ndim != 3 or array.shape[1:] != patches.shape
                                  or array.shape[0] != nodata.shape[0]):
            raise ArgumentError(f"{name} statistics have shape {array.shape}, expected "
                                f"({nodata.shape[0]}, {patches.rows}, {patches.cols})",
                                field=name)
    axes = _block_axes(patches, blocks)
    cover = None
    if cloud is not None:
        cover = cloud.astype(np.int64) + (0 if shadow is None else shadow.astype(np.int64))
    nd, cl = _patch_units(patches, nodata, cover)
    unusable = np.minimum(nd + cl, _FULL)
    return BlockStats(area=axes.area, unusable=_block_sums(axes, unusable),
                      cloud=_block_sums(axes, cl), nodata=_block_sums(axes, nd))


def _pick(allowed: np.ndarray, score: np.ndarray, gap: np.ndarray, area: np.ndarray,
          tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the candidate of the score rule (module docstring).

    Args:
        allowed: ``(K, B)`` candidates.
        score: ``(K, B)`` int64 block sums (lower is better).
        gap: ``(K, B)`` time distances (lower is better).
        area: ``(B,)`` block pixels (turns ``tolerance`` into block sums).
        tolerance: Units of 0.01 %.

    Returns:
        ``(B,)`` candidate indexes (candidates are in (acquired, id) order, so the
        first of equals is the earlier, then the smaller id) and ``(B,)`` whether any
        candidate exists.
    """
    found: np.ndarray = np.asarray(allowed.any(axis=0))
    if allowed.shape[0] == 0:
        return np.zeros(allowed.shape[1], np.int64), found
    big = np.iinfo(np.int64).max
    best = np.where(found, np.where(allowed, score, big).min(axis=0), 0)
    near = allowed & (score <= best + tolerance * area)
    dist = np.where(near, gap, np.inf)
    near &= dist == dist.min(axis=0, initial=np.inf)
    masked = np.where(near, score, big)
    near &= masked == masked.min(axis=0, initial=big)
    return np.argmax(near, axis=0), found


def _percent(value: float | RandInt, layout: Layout, field: str) -> int:
    if isinstance(value, RandInt):
        raise LayoutError("a random cloud bound has no meaning at inference: give a "
                          "number (or pass max_unusable)", path=layout.source, field=field)
    return round(float(value) * _UNITS)


def _orbit_ok(spec: S1Spec, s1: Sequence[ProductRecord]) -> np.ndarray:
    return np.array([(not spec.pass_direction or r.pass_direction == spec.pass_direction)
                     and (not spec.relative_orbits or r.relative_orbit in spec.relative_orbits)
                     for r in s1], bool)


@dataclass
class _Tile:
    """A tile's statistics summed over the blocks."""

    s2: list[ProductRecord]
    s1: list[ProductRecord]
    s2_hours: np.ndarray
    s1_hours: np.ndarray
    s2_stats: BlockStats
    s1_stats: BlockStats


def _load(catalog: Catalog, tile: str, blocks: Sequence[Window]) -> _Tile:
    grid = catalog.tile_grid(tile)
    if grid is None:
        raise NoProductError(f"tile {tile} is not in the catalog (tiles: "
                             f"{', '.join(catalog.tiles()) or 'none'})",
                             path=catalog.folder, field="tile")
    patches = PatchGrid(grid, catalog.patch_size)
    s2 = catalog.records(tile, "S2")
    s1 = catalog.records(tile, "S1")
    empty = np.zeros((0, *patches.shape), np.uint8)
    ids2, ids1 = [r.id for r in s2], [r.id for r in s1]
    s2_stats = block_stats(
        patches, blocks, catalog.stats(ids2, "nodata") if s2 else empty,
        catalog.stats(ids2, "cloud") if s2 else empty,
        catalog.stats(ids2, "shadow") if s2 else empty)
    s1_stats = block_stats(patches, blocks, catalog.stats(ids1, "nodata") if s1 else empty)
    return _Tile(s2, s1, np.array([r.hours for r in s2], np.float64),
                 np.array([r.hours for r in s1], np.float64), s2_stats, s1_stats)


def _choose_s1(tile: _Tile, spec: S1Spec, s2_hours: np.ndarray, valid: np.ndarray,
               tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the S1 index for S2 times ``s2_hours`` ``(B,)`` (-1: none)."""
    gap = np.abs(tile.s1_hours[:, None] - s2_hours[None, :])  # (Q, B)
    allowed = (gap <= spec.max_gap_hours) & _orbit_ok(spec, tile.s1)[:, None] & valid[None, :]
    index, found = _pick(allowed, tile.s1_stats.nodata, gap, tile.s1_stats.area, tolerance)
    return np.where(found, index, -1), found


def _side(window: tuple[float, float]) -> tuple[float, float]:
    """The half-line of time offsets an acquisition lives on (its window's side of 0)."""
    if window[1] <= 0:
        return -np.inf, -SAME_DATE_HOURS
    if window[0] >= 0:
        return SAME_DATE_HOURS, np.inf
    return -np.inf, np.inf


def _choose(tile: _Tile, name: str, acq: Acquisition, layout: Layout, target_hours: float,
            *, max_unusable: float | None, max_nodata: float | None, widen_hours: float,
            tolerance: int) -> list[NeighbourChoice]:
    if acq.s2 is None:
        raise LayoutError("per-block neighbours are S2 (+ S1) acquisitions; this one has no "
                          "s2", path=layout.source, field=f"acquisitions.{name}.s2")
    if acq.window_hours is None:
        raise LayoutError("window_hours [start, end] is required", path=layout.source,
                          field=f"acquisitions.{name}.window_hours")
    start, end = (float(v) for v in acq.window_hours)
    limit_u = (round(max_unusable * _UNITS) if max_unusable is not None
               else _percent(acq.s2.cloud[1], layout, f"acquisitions.{name}.s2.cloud"))
    limit_n = round((acq.s2.nodata_max if max_nodata is None else max_nodata) * _UNITS)
    stats, area = tile.s2_stats, tile.s2_stats.area
    dt = tile.s2_hours - target_hours
    low, high = _side((start, end))
    base = (dt >= low) & (dt <= high) & (np.abs(dt) >= SAME_DATE_HOURS)
    if acq.s1 is not None:
        near = np.abs(tile.s1_hours[None, :] - tile.s2_hours[:, None]) <= acq.s1.max_gap_hours
        base &= (near & _orbit_ok(acq.s1, tile.s1)[None, :]).any(axis=1)
    in_window = base & (dt >= start) & (dt <= end)
    widened = base & (dt >= start - widen_hours) & (dt <= end + widen_hours)
    within = (stats.unusable <= limit_u * area) & (stats.nodata <= limit_n * area)
    tiers = [(Fallback.NONE, in_window[:, None] & within)]
    if widen_hours > 0:
        tiers.append((Fallback.WIDENED, widened[:, None] & within))
    tiers.append((Fallback.OVER_LIMIT, np.broadcast_to(widened[:, None], within.shape)))
    n_blocks = area.shape[0]
    chosen = np.full(n_blocks, -1, np.int64)
    tier = np.full(n_blocks, len(Fallback) - 1, np.int64)
    gap = np.broadcast_to(np.abs(dt)[:, None], within.shape)
    for level, allowed in enumerate(a for _, a in tiers):
        todo = chosen < 0
        index, found = _pick(allowed & todo[None, :], stats.unusable, gap, area, tolerance)
        hit = todo & found
        chosen[hit], tier[hit] = index[hit], level
    levels = [f for f, _ in tiers] + [Fallback.MISSING]
    s1_index = np.full(n_blocks, -1, np.int64)
    if acq.s1 is not None and tile.s1:
        s2_hours = np.where(chosen >= 0, tile.s2_hours[np.maximum(chosen, 0)], np.nan) \
            if tile.s2 else np.full(n_blocks, np.nan)
        s1_index, _ = _choose_s1(tile, acq.s1, s2_hours, chosen >= 0, tolerance)
    fractions = {k: stats.fraction(k) for k in ("unusable", "cloud", "nodata")}
    s1_frac = tile.s1_stats.fraction("nodata")
    out = []
    for b in range(n_blocks):
        k, q = int(chosen[b]), int(s1_index[b])
        s1_nodata = float(s1_frac[q, b]) if q >= 0 else float("nan")
        over = bool(q >= 0 and acq.s1 is not None
                    and tile.s1_stats.nodata[q, b] > round(acq.s1.nodata_max * _UNITS) * area[b])
        out.append(NeighbourChoice(
            acquisition=name, s2=tile.s2[k] if k >= 0 else None,
            s1=tile.s1[q] if q >= 0 else None,
            unusable=float(fractions["unusable"][k, b]) if k >= 0 else float("nan"),
            cloud=float(fractions["cloud"][k, b]) if k >= 0 else float("nan"),
            nodata=float(fractions["nodata"][k, b]) if k >= 0 else float("nan"),
            s1_nodata=s1_nodata, fallback=levels[int(tier[b])] if k >= 0 else Fallback.MISSING,
            s1_over_limit=over))
    return out


def _reference(tile: _Tile, name: str, acq: Acquisition, target_hours: float,
               n_blocks: int, tolerance: int) -> list[NeighbourChoice]:
    """The reference's S1 per block (its S2 is the target date itself)."""
    dt = np.abs(tile.s2_hours - target_hours)
    own = int(np.argmin(dt)) if tile.s2 and dt.min() < SAME_DATE_HOURS else -1
    record = tile.s2[own] if own >= 0 else None
    spec = acq.s1
    q_index = np.full(n_blocks, -1, np.int64)
    if spec is not None and tile.s1:
        q_index, _ = _choose_s1(tile, spec, np.full(n_blocks, target_hours),
                                np.ones(n_blocks, bool), tolerance)
    s1_frac = tile.s1_stats.fraction("nodata")
    area = tile.s1_stats.area
    out = []
    for b in range(n_blocks):
        q = int(q_index[b])
        over = bool(q >= 0 and spec is not None
                    and tile.s1_stats.nodata[q, b] > round(spec.nodata_max * _UNITS) * area[b])
        nan = float("nan")
        out.append(NeighbourChoice(
            acquisition=name, s2=record, s1=tile.s1[q] if q >= 0 else None, unusable=nan,
            cloud=nan, nodata=nan, s1_nodata=float(s1_frac[q, b]) if q >= 0 else nan,
            fallback=Fallback.NONE if q >= 0 else Fallback.MISSING, s1_over_limit=over))
    return out


def choose_neighbours(
    catalog: Catalog, tile: str, target: datetime, layout: Layout,
    blocks: Sequence[Window], *, acquisitions: Sequence[str] = ("tm1", "tp1"),
    max_unusable: float | None = None, max_nodata: float | None = None,
    widen_hours: float = 0.0, tolerance: float = 1.0,
) -> list[BlockChoice]:
    """Choose each block's neighbour dates (and S1 images) from the catalog's statistics.

    The rule (acceptance, fallback tiers, score and tie-breaks) is in the module
    docstring. When the layout's reference acquisition has S1, each block also gets
    the reference's S1 image (under the reference's name).

    Args:
        catalog: The catalog holding the tile's per-patch statistics.
        tile: The tile (its 10 m grid is the blocks' grid).
        target: Acquisition time of the date to reconstruct (timezone-aware).
        layout: The model's layout (e.g. ``os2-occitanie``): windows, cloud and nodata
            limits, S1 gaps. Random cloud bounds are refused unless ``max_unusable``
            replaces them.
        blocks: Windows on the tile's 10 m grid (the engine's core blocks).
        acquisitions: The layout's acquisitions to choose (not the reference).
        max_unusable: Largest unusable (cloud + shadow + nodata) percentage of a block
            within limits; default the layout's S2 cloud maximum per acquisition.
        max_nodata: Largest nodata percentage of a block within limits; default the
            layout's S2 ``nodata_max`` per acquisition.
        widen_hours: Hours added to both ends of the windows for the second tier.
        tolerance: Percentage points above the least unusable candidate still counted
            as equally clear (the nearest in time among them wins).

    Returns:
        One :class:`BlockChoice` per block, in the order of ``blocks``.

    Raises:
        LayoutError: An acquisition is not in the layout, is the reference, has no S2
            or no window, or has a random cloud bound.
        ArgumentError: No blocks, a naive ``target``, or a negative parameter.
        GridError: A block lies wholly outside the tile.
        NoProductError: The tile is not in the catalog.
    """
    if target.tzinfo is None:
        raise ArgumentError(f"target {target.isoformat()} has no time zone (give UTC)",
                            field="target")
    for field, value in (("widen_hours", widen_hours), ("tolerance", tolerance),
                         ("max_unusable", max_unusable), ("max_nodata", max_nodata)):
        if value is not None and not value >= 0:
            raise ArgumentError(f"{field} must be >= 0, not {value}", field=field)
    reference = layout.reference_name
    for name in acquisitions:
        if name not in layout.acquisitions:
            raise LayoutError(f"acquisition {name!r} is not in layout {layout.name} "
                              f"({', '.join(layout.acquisitions)})", path=layout.source,
                              field="acquisitions")
        if name == reference:
            raise LayoutError(f"{name!r} is the reference: its S2 is the target date",
                              path=layout.source, field=f"acquisitions.{name}")
    data = _load(catalog, tile, blocks)
    target_hours = (target - _EPOCH).total_seconds() / 3600.0
    units = round(tolerance * _UNITS)
    columns: dict[str, list[NeighbourChoice]] = {}
    ref_acq = layout.acquisitions[reference]
    if ref_acq.s1 is not None:
        columns[reference] = _reference(data, reference, ref_acq, target_hours, len(blocks),
                                        units)
    for name in acquisitions:
        columns[name] = _choose(data, name, layout.acquisitions[name], layout, target_hours,
                                max_unusable=max_unusable, max_nodata=max_nodata,
                                widen_hours=widen_hours, tolerance=units)
    return [BlockChoice(window=w, choices={n: c[b] for n, c in columns.items()})
            for b, w in enumerate(blocks)]
