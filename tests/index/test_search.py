"""Tuple search against a brute-force enumeration, samplers and splits."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from decloud.errors import LayoutError
from decloud.grid import Grid
from decloud.index.catalog import ProductRecord
from decloud.index.samplers import SAMPLERS
from decloud.index.search import SampleTuple, TileStack, TupleSearch
from decloud.index.splits import block_splits, roi_splits
from decloud.index.stats import PatchGrid
from decloud.layouts import Layout

T0 = datetime(2020, 1, 1, tzinfo=UTC)
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000), 192, 128)
PATCHES = PatchGrid(GRID, 64)  # 2 rows x 3 cols


def record(i: int, sensor: str, hours: float, direction: str | None = None,
           orbit: int | None = None) -> ProductRecord:
    return ProductRecord(i, sensor, "test", f"p{i}", (f"p{i}",), "T31TEJ",
                         T0 + timedelta(hours=hours), sensor + "A", direction, orbit, None)


def make_stack(rng: np.random.Generator, n2: int, n1: int) -> TileStack:
    h2 = np.sort(rng.choice(np.arange(0, 40 * 24, 12), n2, replace=False)).astype(float)
    h1 = np.sort(rng.choice(np.arange(6, 40 * 24, 12), n1, replace=False)).astype(float)
    s2 = [record(i, "S2", h) for i, h in enumerate(h2)]
    s1 = [record(100 + i, "S1", h, direction=("ASC", "DES")[i % 2], orbit=8 + i % 3)
          for i, h in enumerate(h1)]
    cloud = rng.choice([0, 0, 5, 50, 100], (n2, *PATCHES.shape)).astype(np.uint8)
    nodata = rng.choice([0, 0, 0, 30], (n2, *PATCHES.shape)).astype(np.uint8)
    s1_nodata = rng.choice([0, 0, 0, 10], (n1, *PATCHES.shape)).astype(np.uint8)
    return TileStack("T31TEJ", PATCHES, s2, cloud, nodata, s1, s1_nodata)


LAYOUTS: dict[str, dict[str, Any]] = {
    "os2": {"name": "os2", "acquisitions": {
        "tm1": {"window_hours": [-400, -48], "s2": {"cloud": [0, 100]},
                "s1": {"max_gap_hours": 48}},
        "t": {"reference": True, "s2": {"cloud": [1, 100]}, "s1": {"max_gap_hours": 72}},
        "target": {"window_hours": [-240, 240], "s2": {"cloud": [0, 0]}}}},
    "constraints": {"name": "constraints", "siblings": [["a", "b"]], "acquisitions": {
        "t": {"reference": True, "s2": {"cloud": [0, 60], "nodata_max": 10},
              "s1": {"max_gap_hours": 96, "pass_direction": "ASC"}},
        "a": {"window_hours": [0, 480], "s2": {"cloud": [0, 10]},
              "s1": {"max_gap_hours": 120, "relative_orbits": [8, 9]}},
        "b": {"window_hours": [-100, 300], "s2": {"cloud": [0, 50]}},
        "radar": {"window_hours": [-300, 0], "s1": {"nodata_max": 5}}}},
}


def brute_force(stack: TileStack, layout: Layout, row: int, col: int) -> int:
    """Enumerate every assignment of products to acquisitions and count the valid ones."""
    names = list(layout.acquisitions)
    ref = layout.reference_name
    choices = []
    for name in names:
        acq = layout.acquisitions[name]
        s2 = range(len(stack.s2)) if acq.s2 else [None]
        s1 = range(len(stack.s1)) if acq.s1 else [None]
        choices.append(list(itertools.product(s2, s1)))
    total = 0
    for combo in itertools.product(*choices):
        pick = dict(zip(names, combo, strict=True))
        t_ref = stack.s2_hours[pick[ref][0]]  # type: ignore[index]
        if all(ok(stack, layout, n, pick[n], t_ref, row, col) for n in names) and all(
                len({pick[m][0] for m in group}) == 1 for group in layout.siblings):
            total += 1
    return total


def ok(stack: TileStack, layout: Layout, name: str, pick: tuple[int | None, int | None],
       t_ref: float, row: int, col: int) -> bool:
    acq = layout.acquisitions[name]
    p, q = pick
    start, end = (0.0, 0.0) if acq.reference else acq.window_hours  # type: ignore[misc]
    if acq.s2 is not None:
        assert p is not None
        lo, hi = acq.s2.cloud
        if not (lo <= stack.s2_cloud[p, row, col] <= hi  # type: ignore[operator]
                and stack.s2_nodata[p, row, col] <= acq.s2.nodata_max
                and start <= stack.s2_hours[p] - t_ref <= end):
            return False
    if acq.s1 is not None:
        assert q is not None
        s1 = stack.s1[q]
        if stack.s1_nodata[q, row, col] > acq.s1.nodata_max:
            return False
        if acq.s1.pass_direction and s1.pass_direction != acq.s1.pass_direction:
            return False
        if acq.s1.relative_orbits and s1.relative_orbit not in acq.s1.relative_orbits:
            return False
        if acq.s2 is not None:
            return abs(stack.s1_hours[q] - stack.s2_hours[p]) <= acq.s1.max_gap_hours
        return start <= stack.s1_hours[q] - t_ref <= end
    return True


@pytest.mark.parametrize("name", list(LAYOUTS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_counts_equal_brute_force(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stack = make_stack(rng, n2=5, n1=4)
    layout = Layout.model_validate(LAYOUTS[name])
    search = TupleSearch(stack, layout)
    counts = search.counts()
    expected = np.array([[brute_force(stack, layout, r, c) for c in range(3)] for r in range(2)])
    np.testing.assert_array_equal(counts, expected)
    # Every drawn tuple satisfies the layout.
    refs, rows, cols = np.nonzero(search.tuple_counts_by_reference())
    for p, r, c in list(zip(refs, rows, cols, strict=True))[:5]:
        tup = search.draw(rng, int(p), int(r), int(c))
        t_ref = stack.s2_hours[tup.s2[layout.reference_name]]  # type: ignore[index]
        for acq in layout.acquisitions:
            assert ok(stack, layout, acq, (tup.s2[acq], tup.s1[acq]), t_ref, r, c)


def test_unresolved_layout_is_refused() -> None:
    layout = Layout.model_validate({"name": "m", "acquisitions": {
        "t": {"reference": True, "s2": {"cloud": [{"randint": [0, 2]}, 100]}}}})
    with pytest.raises(LayoutError, match="resolve"):
        TupleSearch(make_stack(np.random.default_rng(0), 3, 2), layout)


def key(t: SampleTuple) -> tuple[object, ...]:
    return (t.row, t.col, sorted(t.s2.items()), sorted(t.s1.items()))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_samplers_are_seeded_and_distinct(sampler: str) -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    assert search.counts().sum() > 10
    first = SAMPLERS[sampler](seed=1).sample(search, 10)
    again = SAMPLERS[sampler](seed=1).sample(search, 10)
    other = SAMPLERS[sampler](seed=2).sample(search, 10)
    assert [key(t) for t in first] == [key(t) for t in again]
    assert [key(t) for t in first] != [key(t) for t in other]
    assert len({str(key(t)) for t in first}) == len(first)


def test_constant_sampler_balances_positions() -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    tuples = SAMPLERS["constant"](seed=0, per_position=1).sample(search, 100)  # type: ignore[call-arg]
    positions = [(t.row, t.col) for t in tuples]
    assert len(positions) == len(set(positions)) == int((search.counts() > 0).sum())


def test_allowed_positions_are_respected() -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    allowed = np.zeros(PATCHES.shape, bool)
    allowed[search.counts() > 0] = True
    allowed[0, :] = False
    tuples = SAMPLERS["random"](seed=0).sample(search, 20, allowed)
    assert tuples and all(t.row != 0 for t in tuples)


@given(seed=st.integers(0, 1000), buffer=st.integers(0, 2))
@settings(max_examples=20, deadline=None)
def test_block_splits_never_touch(seed: int, buffer: int) -> None:
    split, names = block_splits((40, 50), {"train": 0.7, "valid": 0.15, "test": 0.15},
                                block=5, buffer=buffer, seed=seed)
    assert names == ["train", "valid", "test"]
    again, _ = block_splits((40, 50), {"train": 0.7, "valid": 0.15, "test": 0.15},
                            block=5, buffer=buffer, seed=seed)
    np.testing.assert_array_equal(split, again)
    for a in range(3):
        for b in range(3):
            if a == b:
                continue
            near = np.zeros_like(split, bool)
            rows, cols = np.nonzero(split == a)
            for dr in range(-buffer, buffer + 1):
                for dc in range(-buffer, buffer + 1):
                    rr, cc = rows + dr, cols + dc
                    keep = (rr >= 0) & (rr < 40) & (cc >= 0) & (cc < 50)
                    near[rr[keep], cc[keep]] = True
            if buffer:
                assert not (near & (split == b)).any(), "splits closer than the buffer"
    assert {int(v) for v in np.unique(split)} <= {-1, 0, 1, 2}


def test_roi_splits(tmp_path: Path) -> None:
    import json

    # ROIs in the tile CRS: left and right halves of the grid, touching.
    left, top = 600000, 5000000
    def square(x0: float, x1: float) -> dict[str, Any]:
        ring = [[x0, top - 1280], [x1, top - 1280], [x1, top], [x0, top], [x0, top - 1280]]
        return {"type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32631"}},
                "features": [{"type": "Feature", "properties": {},
                              "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (tmp_path / "a.geojson").write_text(json.dumps(square(left, left + 1280)))
    (tmp_path / "b.geojson").write_text(json.dumps(square(left + 1280, left + 1920)))
    split, names = roi_splits(PATCHES, {"train": tmp_path / "a.geojson",
                                        "test": tmp_path / "b.geojson"})
    assert names == ["train", "test"]
    np.testing.assert_array_equal(split, [[0, 0, 1], [0, 0, 1]])
