"""Benchmark: the patch index on a synthetic 5-year archive of one tile.

Archive: one 10980 x 10980 tile, 365 S2 products (one every 5 days) and 600 S1 images
(one every 3 days, two passes, four orbits) over 5 years, statistics at 64 px
(172 x 172 positions, the last row and column partial). The statistics are synthetic
(smooth random cloud fields, swath edges): this benchmark times the index, not masks.

Measured, each the median of several runs:

* **build**: decloud's persistent build (a new catalog: products, statistics and the
  R-tree, committed product by product) and its per-run cost (open the catalog, load
  the tile's statistics), against the reference design: one in-memory R-tree of S2
  products per patch position and one nearest-S1 search per S2 and position, built in
  Python loops at every run.
* **query**: the OS2 layout's tuple search over the whole tile (decloud: load + count;
  reference: per-position R-tree queries).
* **add**: adding one S2 product to the full catalog.

The reference design takes minutes on a full tile, so it runs on a block of positions
and its time is scaled by the number of positions (its work per position is
independent of the others); the results say so.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rtree
from _common import (
    git_commit,
    log,
    machine_info,
    machine_line,
    median,
    now_utc,
    package_versions,
    write_results,
)
from affine import Affine
from rasterio.crs import CRS

from decloud.grid import Grid
from decloud.index import Catalog
from decloud.index.search import TileStack, TupleSearch
from decloud.index.stats import PatchGrid
from decloud.layouts import load_layout

ROOT = Path(__file__).resolve().parents[1]
TILE = "T31TEJ"
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 499980, 0, -10, 4900020), 10980, 10980)
START = datetime(2018, 1, 1, tzinfo=UTC)


def synthetic_archive(seed: int = 0) -> dict[str, Any]:
    """Per-patch statistics of 365 S2 and 600 S1 products of one tile."""
    rng = np.random.default_rng(seed)
    shape = PatchGrid(GRID, 64).shape
    n2, n1 = 365, 600
    s2_times = [START + timedelta(days=5 * i, hours=10.5) for i in range(n2)]
    s1_times = [START + timedelta(days=3 * i, hours=(5.9 if i % 2 else 17.4)) for i in range(n1)]
    coarse = rng.random((n2, 12, 12))
    level = rng.choice([0.0, 0.15, 0.5, 0.85, 1.0], n2, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    cloud = np.empty((n2, *shape), np.uint8)
    for p in range(n2):
        field = np.kron(coarse[p], np.ones((15, 15)))[: shape[0], : shape[1]]
        cloud[p] = np.clip((field - (1 - level[p])) * 300, 0, 100).astype(np.uint8)
    s2_nodata = np.zeros((n2, *shape), np.uint8)
    s2_nodata[rng.random(n2) < 0.2, :, : shape[1] // 3] = 100  # swath edges
    s1_nodata = np.zeros((n1, *shape), np.uint8)
    s1_nodata[rng.random(n1) < 0.1, :, -shape[1] // 4 :] = 100
    return {"shape": shape, "s2_times": s2_times, "s1_times": s1_times, "cloud": cloud,
            "s2_nodata": s2_nodata, "s1_nodata": s1_nodata,
            "s1_pass": ["DES" if i % 2 else "ASC" for i in range(n1)],
            "s1_orbit": [8 + 22 * (i % 4) for i in range(n1)]}


# decloud ----------------------------------------------------------------------------


def build_catalog(folder: Path, data: dict[str, Any], count: int | None = None) -> Catalog:
    """A new catalog holding the archive (or its first ``count`` S2 products)."""
    catalog = Catalog.create(folder, patch_size=64)
    catalog.register_tile(TILE, GRID)
    n2 = len(data["s2_times"]) if count is None else count
    for p in range(n2):
        catalog.insert_record(
            sensor="S2", kind="synthetic", path=f"s2/{p}", files=[f"s2/{p}"], tile=TILE,
            acquired=data["s2_times"][p], platform="S2A", pass_direction="DES",
            relative_orbit=51, mask_origin="SCL", grid=GRID,
            arrays={"cloud": data["cloud"][p], "shadow": np.zeros_like(data["cloud"][p]),
                    "nodata": data["s2_nodata"][p]})
    if count is None:
        for q, when in enumerate(data["s1_times"]):
            catalog.insert_record(
                sensor="S1", kind="synthetic", path=f"s1/{q}", files=[f"s1/{q}"], tile=TILE,
                acquired=when, platform="S1A", pass_direction=data["s1_pass"][q],
                relative_orbit=data["s1_orbit"][q], mask_origin=None, grid=GRID,
                arrays={"nodata": data["s1_nodata"][q]})
    return catalog


def decloud_query(folder: Path, layout_path: Path) -> tuple[int, float, float]:
    """Open, load the tile and count OS2 tuples; returns (tuples, load s, search s)."""
    t0 = time.perf_counter()
    with Catalog.open(folder) as catalog:
        stack = TileStack.load(catalog, TILE)
    t1 = time.perf_counter()
    layout = load_layout(layout_path).resolve(np.random.default_rng(0))
    total = int(TupleSearch(stack, layout).counts().sum())
    return total, t1 - t0, time.perf_counter() - t1


# the reference design -------------------------------------------------------------


def _hours(when: datetime) -> float:
    return (when - START).total_seconds() / 3600


def reference_build(data: dict[str, Any], positions: list[tuple[int, int]]) -> dict[Any, Any]:
    """Per position: an R-tree of valid S2 (time, cloud) and the nearest valid S1 of each."""
    s2_h = [_hours(t) for t in data["s2_times"]]
    s1_h = [_hours(t) for t in data["s1_times"]]
    built = {}
    for r, c in positions:
        s2_index = rtree.index.Index()
        for p, h in enumerate(s2_h):
            if data["s2_nodata"][p, r, c] == 0:
                cloud = float(data["cloud"][p, r, c])
                s2_index.insert(p, (h, cloud, h, cloud))
        s1_index = rtree.index.Index()
        for q, h in enumerate(s1_h):
            if data["s1_nodata"][q, r, c] == 0:
                s1_index.insert(q, (h, 0.0, h, 0.0))
        nearest = {}
        for p, h in enumerate(s2_h):
            found = list(s1_index.nearest((h, 0.0, h, 0.0), 1))
            nearest[p] = abs(s1_h[found[0]] - h) if found else float("inf")
        built[(r, c)] = (s2_index, nearest)
    return built


def reference_query(data: dict[str, Any], built: dict[Any, Any]) -> int:
    """OS2 tuples per position from the per-position indexes (one S1 per S2)."""
    s2_h = [_hours(t) for t in data["s2_times"]]
    total = 0
    for s2_index, nearest in built.values():
        for p in s2_index.intersection((-1e9, 1, 1e9, 100)):
            if nearest[p] > 72:
                continue
            h = s2_h[p]
            before = s2_index.intersection((h - 720, 0, h - 240, 100))
            after = s2_index.intersection((h + 240, 0, h + 720, 100))
            tm1 = [q for q in before if nearest[q] <= 72]
            tp1 = [q for q in after if nearest[q] <= 72]
            target = list(s2_index.intersection((h - 240, 0, h + 240, 0)))
            total += len(tm1) * len(tp1) * len(target)
    return total


# driver -----------------------------------------------------------------------------


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = func()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure")
    parser.add_argument("--block", type=int, default=43,
                        help="side of the block of positions the reference design runs on")
    args = parser.parse_args()
    layout_path = ROOT / "acquisition_layouts" / "os2-occitanie.yaml"
    log("generating the synthetic archive")
    data = synthetic_archive()
    rows, cols = data["shape"]
    positions = [(r, c) for r in range(args.block) for c in range(args.block)]
    scale = rows * cols / len(positions)
    work = Path(tempfile.mkdtemp(prefix="bench_index_"))
    results: dict[str, list[float]] = {k: [] for k in (
        "decloud_build", "decloud_open_load", "decloud_search", "decloud_add",
        "reference_build_block", "reference_query_block")}
    tuples = 0
    try:
        for run in range(args.repeat):
            log(f"run {run + 1}/{args.repeat}: decloud build")
            folder = work / f"catalog{run}"
            seconds, catalog = timed(lambda folder=folder: build_catalog(folder, data))
            results["decloud_build"].append(seconds)
            extra = data["s2_times"][-1] + timedelta(days=5)
            seconds, _ = timed(lambda catalog=catalog, extra=extra: catalog.insert_record(
                sensor="S2", kind="synthetic", path="s2/extra", files=["s2/extra"], tile=TILE,
                acquired=extra, platform="S2B", pass_direction="DES", relative_orbit=51,
                mask_origin="SCL", grid=GRID, arrays={
                    "cloud": data["cloud"][0], "shadow": data["cloud"][0] * 0,
                    "nodata": data["s2_nodata"][0]}))
            results["decloud_add"].append(seconds)
            catalog.close()
            log(f"run {run + 1}/{args.repeat}: decloud query")
            tuples, load, search = decloud_query(folder, layout_path)
            results["decloud_open_load"].append(load)
            results["decloud_search"].append(search)
            log(f"run {run + 1}/{args.repeat}: reference design on {len(positions)} positions")
            seconds, built = timed(lambda: reference_build(data, positions))
            results["reference_build_block"].append(seconds)
            seconds, _ = timed(lambda built=built: reference_query(data, built))
            results["reference_query_block"].append(seconds)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: median(v) for k, v in results.items()}
    ref_build = med["reference_build_block"] * scale
    ref_query = med["reference_query_block"] * scale
    decloud_query_s = med["decloud_open_load"] + med["decloud_search"]
    figures = {
        "build_ratio_persistent": ref_build / med["decloud_build"],
        "build_ratio_per_run": ref_build / med["decloud_open_load"],
        "query_ratio": ref_query / decloud_query_s,
        "reference_build_full_tile_s": ref_build,
        "reference_query_full_tile_s": ref_query,
        "decloud_query_s": decloud_query_s,
        "os2_tuples_full_tile": tuples,
    }
    data_out = {
        "benchmark": "index", "date": now_utc(), "commit": git_commit(),
        "machine": machine_info(), "versions": package_versions(("numpy", "rtree", "decloud")),
        "archive": {"tile": TILE, "s2_products": len(data["s2_times"]),
                    "s1_images": len(data["s1_times"]), "patch_size": 64,
                    "positions": [rows, cols], "statistics": "synthetic"},
        "reference_block_positions": len(positions), "reference_scale": scale,
        "repeat": args.repeat, "runs_s": results, "median_s": med, "figures": figures,
    }
    md = f"""# Benchmark: patch index (build, query, add)

- Date: {data_out['date']}, git commit: `{data_out['commit']}`
- Machine: {machine_line(data_out['machine'])}
- Archive: one tile, {len(data['s2_times'])} S2 and {len(data['s1_times'])} S1 products over
  5 years, statistics at 64 px ({rows} x {cols} positions). Statistics are synthetic (random smooth
  cloud fields, swath edges): this times the index, not mask reading.
- Runs: {args.repeat}, medians reported. The reference design (one in-memory R-tree and one
  nearest-S1 search per patch position, built in Python loops at every run) runs on a
  {args.block} x {args.block} block ({len(positions)} positions) and is scaled by
  {scale:.1f} to the full tile (its per-position work is independent).

| measure | decloud | reference design (full tile, scaled) | ratio |
|---|---:|---:|---:|
| build, persistent (new catalog: SQLite + R-tree) | {med['decloud_build']:.2f} s \
| {ref_build:.1f} s | {figures['build_ratio_persistent']:.1f}x |
| build, per run (open catalog + load tile stats) | {med['decloud_open_load']:.2f} s \
| {ref_build:.1f} s | {figures['build_ratio_per_run']:.0f}x |
| OS2 tuple search, whole tile | {decloud_query_s:.2f} s (load {med['decloud_open_load']:.2f} \
+ search {med['decloud_search']:.2f}) | {ref_query:.1f} s | {figures['query_ratio']:.0f}x |
| add one S2 product to the full catalog | {med['decloud_add'] * 1000:.0f} ms | (rebuild) | |

OS2 tuples found by decloud over the tile: {tuples:,} (every valid S1 within 72 h counts;
the reference keeps only the nearest S1, so its counts are lower by design).

Runs (s): {', '.join(f'{k}: ' + ', '.join(f'{x:.2f}' for x in v) for k, v in results.items())}
"""
    paths = write_results("index", data_out, md)
    log(f"wrote {paths[0]} and {paths[1]}")
    print(md)


if __name__ == "__main__":
    main()
