"""Splits: random blocks that never touch (buffer), and vector ROIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from decloud.index.splits import block_splits, roi_splits
from tests.index.conftest import PATCHES


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
