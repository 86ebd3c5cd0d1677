"""Finding the tuples of images that match an acquisition layout, per patch position.

For one tile, the catalog's statistics are stacked into arrays over (product, patch
row, patch column). Each acquisition of a resolved layout turns them into a weight
``w[p, r, c]``: 1 when S2 product ``p`` meets the acquisition's cloud and nodata
conditions at that patch, times the number of its valid S1 candidates (within the
S1-S2 gap, pass direction and orbits asked for) when the acquisition needs S1. With
products sorted by time, the candidates of an acquisition relative to a reference
product form a contiguous range, so counts come from cumulative sums: the whole tile
is searched with a few array operations per reference product, never a Python loop
per patch.

A *tuple* is one choice per acquisition: an S2 product (and, when asked, one of its
S1 candidates), or an S1 image for S1-only acquisitions. Acquisitions grouped as
siblings share one S2 product. Tuples are counted exactly and drawn uniformly by
:class:`TupleSearch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from decloud.errors import CatalogError, LayoutError, NoProductError
from decloud.index.catalog import Catalog, ProductRecord
from decloud.index.stats import PatchGrid

if TYPE_CHECKING:
    from decloud.layouts import Acquisition, Layout, S1Spec, S2Spec

__all__ = ["SampleTuple", "TileStack", "TupleSearch"]


@dataclass
class TileStack:
    """The statistics of one tile's products as arrays, products sorted by time."""

    tile: str
    patches: PatchGrid
    s2: list[ProductRecord]
    s2_cloud: np.ndarray
    s2_nodata: np.ndarray
    s1: list[ProductRecord]
    s1_nodata: np.ndarray
    s2_hours: np.ndarray = field(init=False)
    s1_hours: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.s2_hours = np.array([r.hours for r in self.s2], np.float64)
        self.s1_hours = np.array([r.hours for r in self.s1], np.float64)
        # Counting relies on time-sorted products (candidate ranges are contiguous).
        for sensor, hours in (("s2", self.s2_hours), ("s1", self.s1_hours)):
            if np.any(np.diff(hours) < 0):
                raise CatalogError(f"{sensor.upper()} products of tile {self.tile} are not "
                                   "sorted by acquisition time", field=sensor)
        shapes = {"s2_cloud": (self.s2_cloud, len(self.s2)),
                  "s2_nodata": (self.s2_nodata, len(self.s2)),
                  "s1_nodata": (self.s1_nodata, len(self.s1))}
        for name, (array, count) in shapes.items():
            if array.shape != (count, *self.patches.shape):
                raise CatalogError(f"{name} has shape {array.shape}, expected "
                                   f"{(count, *self.patches.shape)} (products, patch rows, "
                                   "patch columns)", field=name)

    @classmethod
    def load(cls, catalog: Catalog, tile: str) -> TileStack:
        """Read a tile's statistics from the catalog."""
        grid = catalog.tile_grid(tile)
        if grid is None:
            raise NoProductError(f"tile {tile} is not in the catalog (tiles: "
                                 f"{', '.join(catalog.tiles()) or 'none'})",
                                 path=catalog.folder, field="tile")
        s2 = catalog.records(tile, "S2")
        s1 = catalog.records(tile, "S1")
        patches = PatchGrid(grid, catalog.patch_size)
        empty = np.zeros((0, *patches.shape), np.uint8)
        ids2, ids1 = [r.id for r in s2], [r.id for r in s1]
        return cls(
            tile=tile, patches=patches, s2=s2,
            s2_cloud=catalog.stats(ids2, "cloud") if s2 else empty,
            s2_nodata=catalog.stats(ids2, "nodata") if s2 else empty,
            s1=s1, s1_nodata=catalog.stats(ids1, "nodata") if s1 else empty,
        )


@dataclass(frozen=True)
class SampleTuple:
    """One tuple: a patch position and, per acquisition, the products chosen.

    ``s2`` and ``s1`` map acquisition names to indexes into :attr:`TileStack.s2` and
    :attr:`TileStack.s1` (None when the acquisition has no such sensor).
    """

    tile: str
    row: int
    col: int
    s2: dict[str, int | None]
    s1: dict[str, int | None]


@dataclass
class _Slot:
    """Acquisitions sharing one S2 product (a sibling group, or a single acquisition)."""

    members: list[str]
    window: tuple[float, float]
    s1_only: bool
    weight: np.ndarray  # (P or Q, R, C) int32
    cumsum: np.ndarray  # (P+1 or Q+1, R, C) int64


class TupleSearch:
    """Counts and draws the tuples of a resolved layout on a tile.

    Args:
        stack: The tile's statistics.
        layout: A layout whose random bounds are resolved (``layout.resolve(rng)``).
    """

    def __init__(self, stack: TileStack, layout: Layout) -> None:
        if not layout.is_resolved():
            raise LayoutError("resolve the layout's random bounds with a seed first",
                              path=layout.source, field="acquisitions")
        self.stack = stack
        self.layout = layout
        self.reference = layout.reference_name
        self._pairs: dict[str, list[np.ndarray]] = {}
        self._s1_ok: dict[str, np.ndarray] = {}
        self.slots = self._make_slots()
        ref = next(s for s in self.slots if self.reference in s.members)
        self._ref_slot = ref
        self._others = [s for s in self.slots if s is not ref]
        if ref.s1_only:
            raise LayoutError("the reference acquisition must have S2", path=layout.source,
                              field=f"acquisitions.{self.reference}.s2")
        self._ranges = {id(s): self._range(s) for s in self._others}

    # Construction ----------------------------------------------------------------

    def _make_slots(self) -> list[_Slot]:
        groups: list[list[str]] = [list(g) for g in self.layout.siblings]
        grouped = {m for g in groups for m in g}
        groups += [[name] for name in self.layout.acquisitions if name not in grouped]
        slots = []
        for members in groups:
            acqs = [self.layout.acquisitions[m] for m in members]
            # An S1-only acquisition is its own slot (siblings have S2, the layout says).
            spec = acqs[0].s1 if len(members) == 1 and acqs[0].s2 is None else None
            s1_only = spec is not None
            starts, ends = zip(*[self._window(m, a) for m, a in zip(members, acqs, strict=True)],
                               strict=True)
            window = (max(starts), min(ends))
            if spec is not None:
                weight = (self.stack.s1_nodata <= spec.nodata_max).astype(np.int32)
                weight *= self._orbit_ok(spec)[:, None, None]
            else:
                weight = np.ones(self.stack.s2_cloud.shape, np.int32)
                for name, acq in zip(members, acqs, strict=True):
                    weight *= self._s2_weight(name, acq)
            cumsum = np.zeros((weight.shape[0] + 1, *weight.shape[1:]), np.int64)
            np.cumsum(weight, axis=0, out=cumsum[1:])
            slots.append(_Slot(members, window, s1_only, weight, cumsum))
        return slots

    def _window(self, name: str, acq: Acquisition) -> tuple[float, float]:
        if name == self.reference:
            return 0.0, 0.0
        if acq.window_hours is None:  # the layout's validation requires it; built by hand?
            raise LayoutError("window_hours [start, end] is required", path=self.layout.source,
                              field=f"acquisitions.{name}.window_hours")
        return float(acq.window_hours[0]), float(acq.window_hours[1])

    def _orbit_ok(self, spec: S1Spec) -> np.ndarray:
        """Which S1 images meet an acquisition's pass and orbit constraints."""
        ok = np.ones(len(self.stack.s1), bool)
        for q, rec in enumerate(self.stack.s1):
            if spec.pass_direction and rec.pass_direction != spec.pass_direction:
                ok[q] = False
            if spec.relative_orbits and rec.relative_orbit not in spec.relative_orbits:
                ok[q] = False
        return ok

    def _s2_weight(self, name: str, acq: Acquisition) -> np.ndarray:
        """S2 validity times the number of valid S1 candidates, per product and patch."""
        s2: S2Spec | None = acq.s2
        if s2 is None:  # only S1-only acquisitions lack S2, and they are slots of their own
            why = ("a sibling acquisition needs s2" if acq.s1 is not None
                   else "an acquisition needs s2, s1 or both")
            raise LayoutError(why, path=self.layout.source, field=f"acquisitions.{name}.s2")
        lo, hi = (float(b) for b in s2.cloud)  # type: ignore[arg-type]
        st = self.stack
        weight = ((st.s2_cloud >= lo) & (st.s2_cloud <= hi)
                  & (st.s2_nodata <= s2.nodata_max)).astype(np.int32)
        if acq.s1 is None:
            return weight
        orbit_ok = self._orbit_ok(acq.s1)
        s1_ok = st.s1_nodata <= acq.s1.nodata_max
        self._s1_ok[name] = s1_ok
        pairs = []
        count = np.zeros_like(weight)
        for p, hours in enumerate(st.s2_hours):
            near = np.flatnonzero((np.abs(st.s1_hours - hours) <= acq.s1.max_gap_hours)
                                  & orbit_ok)
            pairs.append(near)
            if near.size:
                count[p] = s1_ok[near].sum(axis=0)
        self._pairs[name] = pairs
        return weight * count

    def _range(self, slot: _Slot) -> tuple[np.ndarray, np.ndarray]:
        """Per reference product, the [lo, hi) index range of the slot's candidates."""
        hours = self.stack.s1_hours if slot.s1_only else self.stack.s2_hours
        ref_hours = self.stack.s2_hours
        lo = np.searchsorted(hours, ref_hours + slot.window[0], side="left")
        hi = np.searchsorted(hours, ref_hours + slot.window[1], side="right")
        return lo, hi

    # Counting --------------------------------------------------------------------

    def tuple_counts_by_reference(self) -> np.ndarray:
        """Tuples per reference product and patch: int64 ``(P, rows, cols)``."""
        total = self._ref_slot.weight.astype(np.int64)
        for slot in self._others:
            lo, hi = self._ranges[id(slot)]
            total = total * (slot.cumsum[hi] - slot.cumsum[lo])
        return total

    def counts(self) -> np.ndarray:
        """Tuples per patch position: int64 ``(rows, cols)``."""
        if not self.stack.s2:
            return np.zeros(self.stack.patches.shape, np.int64)
        return self.tuple_counts_by_reference().sum(axis=0)

    # Drawing ---------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, ref: int, row: int, col: int) -> SampleTuple:
        """Draw one tuple uniformly among those of a reference product at a patch."""
        s2: dict[str, int | None] = {}
        s1: dict[str, int | None] = {}
        for slot in [self._ref_slot, *self._others]:
            if slot is self._ref_slot:
                choice = ref
            else:
                lo, hi = (int(a[ref]) for a in self._ranges[id(slot)])
                weights = slot.weight[lo:hi, row, col].astype(np.float64)
                if weights.sum() <= 0:
                    raise NoProductError("no candidate for this tuple", field=slot.members[0])
                choice = lo + int(rng.choice(hi - lo, p=weights / weights.sum()))
            for name in slot.members:
                acq = self.layout.acquisitions[name]
                if slot.s1_only:
                    s2[name], s1[name] = None, choice
                    continue
                s2[name] = choice
                if acq.s1 is None:
                    s1[name] = None
                    continue
                near = self._pairs[name][choice]
                valid = near[self._s1_ok[name][near, row, col]]
                s1[name] = int(rng.choice(valid))
        return SampleTuple(self.stack.tile, row, col, s2, s1)
