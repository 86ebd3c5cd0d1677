"""Benchmark: per-patch statistics of a full-size tile mask against only reading the mask.

Uses the full-size THEIA scene that ``bench_read_tile.py`` builds (10980 x 10980 px,
mirror-tiled from real eo-learn Slovenia data; its CLM and EDG masks at 20 m are
5490 x 5490). decloud computes cloud, shadow and nodata percentages per 64 px patch
(``s2_patch_stats``); the baseline reads the same two mask files in the same strips
with rasterio and does nothing else. Goal: at most 1.5x the read time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import rasterio
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
from bench_read_tile import build_scene

from decloud.index.stats import PatchGrid, s2_patch_stats
from decloud.products import open_product

ROOT = Path(__file__).resolve().parents[1]


def raw_read(product_dir: Path, patches: PatchGrid) -> int:
    """Read CLM_R2 and EDG_R2 strip by strip, as the statistics do."""
    paths = [next((product_dir / "MASKS").glob(f"*_{m}.tif")) for m in ("CLM_R2", "EDG_R2")]
    total = 0
    sources = [rasterio.open(p) for p in paths]
    try:
        for _, window in patches.strips():
            for src in sources:
                total += int(src.read(1, window=window).shape[0])
    finally:
        for src in sources:
            src.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    args = parser.parse_args()
    product_dir = build_scene(args.cache)
    product = open_product(product_dir)
    patches = PatchGrid(product.grid(), 64)
    runs: dict[str, list[float]] = {"stats": [], "read": []}
    s2_patch_stats(product, patches)  # warm the page cache
    for run in range(args.repeat):
        for name, func in (("read", lambda: raw_read(product_dir, patches)),
                           ("stats", lambda: s2_patch_stats(product, patches))):
            t0 = time.perf_counter()
            func()
            runs[name].append(time.perf_counter() - t0)
            log(f"run {run + 1}/{args.repeat} {name}: {runs[name][-1]:.2f} s")
    med = {k: median(v) for k, v in runs.items()}
    ratio = med["stats"] / med["read"]
    data: dict[str, Any] = {
        "benchmark": "patch_stats", "date": now_utc(), "commit": git_commit(),
        "machine": machine_info(), "versions": package_versions(("numpy", "rasterio", "decloud")),
        "scene": "full-size THEIA tile mirror-tiled from real eo-learn Slovenia data",
        "patch_size": 64, "positions": list(patches.shape), "runs_s": runs, "median_s": med,
        "ratio_stats_over_read": ratio, "goal": "<= 1.5",
    }
    md = f"""# Benchmark: per-patch statistics of a full tile mask

- Date: {data['date']}, git commit: `{data['commit']}`
- Machine: {machine_line(data['machine'])}
- Scene: full-size 10980 x 10980 THEIA tile built by mirror-tiling real eo-learn Slovenia
  data (`bench_read_tile.py`); masks CLM_R2 and EDG_R2, 5490 x 5490 at 20 m.
- decloud: `s2_patch_stats` at 64 px ({patches.shape[0]} x {patches.shape[1]} positions):
  cloud, shadow, nodata percentages. Baseline: rasterio reads of the same two masks in
  the same strips, nothing else. Files warm in the page cache; {args.repeat} runs.

| method | median s | runs (s) |
|---|---:|---|
| statistics | {med['stats']:.2f} | {', '.join(f'{x:.2f}' for x in runs['stats'])} |
| read only | {med['read']:.2f} | {', '.join(f'{x:.2f}' for x in runs['read'])} |

**Ratio: {ratio:.2f}x the read time** (goal: at most 1.5x).
"""
    write_results("patch_stats", data, md)
    print(md)


if __name__ == "__main__":
    main()
