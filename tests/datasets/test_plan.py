"""Dataset plans: reproducible with a seed, split-aware, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.warp import transform_bounds

from decloud.datasets import DatasetPlan, PlanOptions, plan_dataset
from decloud.datasets.plan import allocate, derive_seed, patch_stack
from decloud.errors import DatasetError
from decloud.index.catalog import Catalog
from decloud.index.search import TileStack
from decloud.index.splits import block_splits
from decloud.layouts import Layout
from tests.datasets.conftest import SEED, TILE, N


def test_same_seed_same_plan_other_seed_differs(catalog: Catalog, layout: Layout,
                                                plan: DatasetPlan) -> None:
    again = plan_dataset(catalog, layout, PlanOptions(N, (TILE,), seed=SEED))
    assert again.to_dict() == plan.to_dict()
    assert again.fingerprint() == plan.fingerprint()
    other = plan_dataset(catalog, layout, PlanOptions(N, (TILE,), seed=SEED + 1))
    assert other.fingerprint() != plan.fingerprint()
    assert [(s.row, s.col, s.s2, s.s1) for s in other.samples] != \
        [(s.row, s.col, s.s2, s.s1) for s in plan.samples]


def test_plan_content(catalog: Catalog, plan: DatasetPlan) -> None:
    assert len(plan) == N and plan.counts() == {"train": N}
    assert plan.tiles == [TILE] and plan.patch_size == 32 and plan.seed == SEED
    # The random bound of t was drawn; the layout as given keeps it.
    t_cloud = plan.resolved_layout["acquisitions"]["t"]["s2"]["cloud"]
    assert isinstance(t_cloud[0], int | float) and 1 <= t_cloud[0] <= 5
    assert plan.layout["acquisitions"]["t"]["s2"]["cloud"][0] == {"randint": [1, 5]}
    stack = TileStack.load(catalog, TILE)
    ids2 = {r.id: r for r in stack.s2}
    for sample in plan.samples:
        assert set(sample.s2) == {"tm1", "t", "target", "tp1"}
        assert sample.s1["target"] is None and sample.s1["t"] is not None
        t = ids2[sample.s2["t"]]  # type: ignore[index]
        target = ids2[sample.s2["target"]]  # type: ignore[index]
        assert abs((target.acquired - t.acquired).total_seconds()) <= 120 * 3600
        for pid in sample.product_ids():
            assert plan.products[pid]["path"]


def test_json_round_trip(plan: DatasetPlan, tmp_path: Path) -> None:
    path = plan.save(tmp_path / "plan.json")
    loaded = DatasetPlan.load(path)
    assert loaded == plan and loaded.fingerprint() == plan.fingerprint()
    # Acquisition order (the order of the dataset keys) survives JSON.
    assert list(loaded.layout_model().acquisitions) == ["tm1", "t", "target", "tp1"]
    data = json.loads(path.read_text())
    data["version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="version"):
        DatasetPlan.load(tmp_path / "bad.json")


def test_block_splits(catalog: Catalog, layout: Layout) -> None:
    splits = {"train": 0.5, "val": 0.5}
    plan = plan_dataset(catalog, layout, PlanOptions(6, (TILE,), seed=3, splits=splits,
                                                     split_block=1, split_buffer=0))
    split_map, names = block_splits(TileStack.load(catalog, TILE).patches.shape, splits,
                                    block=1, buffer=0, seed=3)
    assert plan.split_names == names == ["train", "val"]
    assert sum(plan.counts().values()) <= 6
    for sample in plan.samples:
        assert names[split_map[sample.row, sample.col]] == sample.split
    assert plan.samples == sorted(plan.samples, key=lambda s: names.index(s.split))


def test_constant_sampler_spreads_positions(catalog: Catalog, layout: Layout) -> None:
    plan = plan_dataset(catalog, layout, PlanOptions(3, (TILE,), sampler="constant", seed=1))
    positions = [(s.row, s.col) for s in plan.samples]
    # Two positions have tuples: the last, partial row of patches is mostly nodata.
    assert len(positions) == len(set(positions)) == 2
    seasonal = plan_dataset(catalog, layout, PlanOptions(4, (TILE,), sampler="seasonal", seed=1))
    assert len(seasonal) == 4 and seasonal.sampler == "seasonal"


def test_bad_arguments(catalog: Catalog, layout: Layout) -> None:
    with pytest.raises(DatasetError, match="sampler"):
        plan_dataset(catalog, layout, PlanOptions(4, (TILE,), sampler="nope"))
    with pytest.raises(DatasetError, match="not both"):
        plan_dataset(catalog, layout,
                     PlanOptions(4, (TILE,), splits={"a": 1.0}, rois={"b": Path("x")}))
    with pytest.raises(DatasetError, match="positive"):
        plan_dataset(catalog, layout, PlanOptions(0, (TILE,)))
    with pytest.raises(DatasetError, match="no tuple"):
        plan_dataset(catalog, layout, PlanOptions(4, ("T33TVM",)))  # no S1 there


def test_allocate_and_seeds() -> None:
    assert allocate(10, [0.7, 0.3]) == [7, 3]
    assert allocate(5, [1, 1, 1]) == [2, 2, 1]
    assert allocate(4, [0, 3, 1]) == [0, 3, 1]
    assert sum(allocate(7, [0.2, 0.5, 0.3])) == 7
    assert derive_seed(1, "T31UFS", "train") == derive_seed(1, "T31UFS", "train")
    assert len({derive_seed(1, "T31UFS", "train"), derive_seed(1, "T31UFS", "val"),
                derive_seed(2, "T31UFS", "train")}) == 3
    assert np.iinfo(np.uint32).max >= derive_seed(0, "x") >= 0


def test_roi_splits(catalog: Catalog, layout: Layout, tmp_path: Path) -> None:
    grid = catalog.tile_grid(TILE)
    assert grid is not None
    west, south, east, north = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
    rois = {}
    for name, (w, s, e, n) in {"everywhere": (west - 1, south - 1, east + 1, north + 1),
                               "elsewhere": (0.0, 0.0, 0.1, 0.1)}.items():
        rois[name] = tmp_path / f"{name}.geojson"
        rois[name].write_text(json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {},
            "geometry": {"type": "Polygon",
                         "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}]}))
    plan = plan_dataset(catalog, layout, PlanOptions(5, (TILE,), seed=0, rois=rois))
    assert plan.counts() == {"everywhere": 5, "elsewhere": 0}
    assert plan.split_config["kind"] == "rois"


@pytest.mark.parametrize("patch_size", [64, 96, 40])
def test_patch_statistics_equal_a_pixel_by_pixel_count(catalog: Catalog,
                                                       patch_size: int) -> None:
    # Random cell statistics, spread on pixels (a cell's pixels alike, past the cell grid
    # nodata), then counted in each sample window the writer reads (PatchGrid.window).
    stack = TileStack.load(catalog, TILE)
    rng = np.random.default_rng(0)
    stack.s2_cloud = rng.integers(0, 101, stack.s2_cloud.shape)
    stack.s2_nodata = np.where(rng.random(stack.s2_nodata.shape) < 0.5, 0,
                               rng.integers(0, 101, stack.s2_nodata.shape))
    stack.s1_nodata = rng.integers(0, 101, stack.s1_nodata.shape)
    out = patch_stack(stack, patch_size)
    cell = stack.patches.patch_size
    rows, cols = stack.patches.shape

    def pixels(per_cell: np.ndarray, outside: float) -> np.ndarray:
        spread = np.repeat(np.repeat(per_cell / 100.0, cell, axis=0), cell, axis=1)
        return np.pad(spread, patch_size, constant_values=outside)

    def windows() -> list[tuple[int, int, tuple[slice, slice]]]:
        out = []
        for r in range(rows):
            for c in range(cols):
                w = stack.patches.window(r, c, patch_size)
                top, left = int(w.row_off) + patch_size, int(w.col_off) + patch_size
                out.append((r, c, np.s_[top:top + patch_size, left:left + patch_size]))
        return out

    cuts = windows()
    for p in range(len(stack.s2)):
        nodata = pixels(stack.s2_nodata[p], 1.0)
        cloudy = pixels(stack.s2_cloud[p], 0.0) * (1.0 - nodata)
        for r, c, cut in cuts:
            valid = (1.0 - nodata[cut]).sum()
            expected = 100 * cloudy[cut].sum() / valid if valid > 0 else 0.0
            assert out.s2_nodata[p, r, c] == pytest.approx(100 * nodata[cut].mean(), abs=1e-9)
            assert out.s2_cloud[p, r, c] == pytest.approx(expected, abs=1e-9)
    for q in range(len(stack.s1)):
        nodata = pixels(stack.s1_nodata[q], 1.0)
        for r, c, cut in cuts:
            assert out.s1_nodata[q, r, c] == pytest.approx(100 * nodata[cut].mean(), abs=1e-9)
    assert patch_stack(stack, cell) is stack  # cells vouch for themselves
