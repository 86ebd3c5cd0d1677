"""Shared helpers of the index tests: hand-made tile stacks and test layouts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from decloud.grid import Grid
from decloud.index.catalog import ProductRecord
from decloud.index.search import TileStack
from decloud.index.stats import PatchGrid

T0 = datetime(2020, 1, 1, tzinfo=UTC)
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000), 192, 128)
PATCHES = PatchGrid(GRID, 64)  # 2 rows x 3 cols


def record(i: int, sensor: str, hours: float, direction: str | None = None,
           orbit: int | None = None) -> ProductRecord:
    """A catalog record acquired ``hours`` after :data:`T0`."""
    return ProductRecord(i, sensor, "test", f"p{i}", (f"p{i}",), "T31TEJ",
                         T0 + timedelta(hours=hours), sensor + "A", direction, orbit, None)


def make_stack(rng: np.random.Generator, n2: int, n1: int,
               patches: PatchGrid = PATCHES) -> TileStack:
    """Random S2 and S1 products over 40 days with random per-patch statistics."""
    h2 = np.sort(rng.choice(np.arange(0, 40 * 24, 12), n2, replace=False)).astype(float)
    h1 = np.sort(rng.choice(np.arange(6, 40 * 24, 12), n1, replace=False)).astype(float)
    s2 = [record(i, "S2", h) for i, h in enumerate(h2)]
    s1 = [record(100 + i, "S1", h, direction=("ASC", "DES")[i % 2], orbit=8 + i % 3)
          for i, h in enumerate(h1)]
    cloud = rng.choice([0, 0, 5, 50, 100], (n2, *patches.shape)).astype(np.uint8)
    nodata = rng.choice([0, 0, 0, 30], (n2, *patches.shape)).astype(np.uint8)
    s1_nodata = rng.choice([0, 0, 0, 10], (n1, *patches.shape)).astype(np.uint8)
    return TileStack("T31TEJ", patches, s2, cloud, nodata, s1, s1_nodata)


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
