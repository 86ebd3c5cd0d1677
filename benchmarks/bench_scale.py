"""Benchmark: a 20-date time series gap-filled on Dask LocalClusters of 1 and 2 workers.

The scene (built once under ``benchmarks/.cache/scale/<size>``) is one THEIA tile
(``T33TVM``) with 20 S2 dates, 5 days apart from 2015-07-01: COG FRE bands B2, B3, B4,
B8 and ``MASKS/`` CLM and EDG layers, built from the real patches of
``bench_read_tile.py`` with the cloud blobs of ``bench_engine.py`` (their builders are
imported, not copied): the same ground every date with a per-date gain and noise, the
swath edge (nodata west of it) and per-date cloud cover drawn between 5 % and 90 %.

Each configuration runs the series processor
(:func:`decloud.processors.timeseries.run_series`, :class:`GapFillDates`: 4 bands,
per-pixel masks dilated by 2 px, dates within 15 days, composite on the date, STAC
items and collection, no quicklooks) into a fresh folder, in a child process:

* ``sequential``: in-process, one date after another (``--workers 0``, the baseline);
* ``workers1``: a LocalCluster of 1 worker process (1 thread);
* ``workers2``: a LocalCluster of 2 worker processes (1 thread each).

Cluster start-up is inside the timed run (it is part of what a user waits for).
Throughput = output Mpx (20 dates x size^2) / wall second; per worker = that / workers;
scaling efficiency = throughput(2 workers) / (2 x throughput(1 worker)). The engine of
one date already uses more than one thread (reader threads, COG compression), so on a
2-core machine the efficiency is bounded by what one worker leaves idle: the CPU
seconds of each configuration are reported with the wall times.

Usage (from the repository root; ~10 min on 2 idle cores at the default size)::

    .venv/bin/python benchmarks/bench_scale.py [--size 2048] [--repeat 2]

A full tile: ``--size 10980`` (scene build ~10 min, each run ~20 x the per-date cost of
``bench_engine.py``'s gap-filling: hours on 2 cores; meant for a cluster node).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _common import (  # benchmarks/ is sys.path[0] when run as a script
    REPO_ROOT,
    RESULTS_DIR,
    git_commit,
    load_average,
    log,
    machine_info,
    machine_line,
    median,
    now_utc,
    others_running,
    package_versions,
    source_digest,
    write_results,
)
from bench_engine import THEIA_BAND, _clouds, _cog
from bench_read_tile import (
    BANDS_10M,
    FORMATS,
    OTHER_BENCHMARKS,
    TILE_PX,
    _encode,
    load_patches,
    mosaic_layout,
    render_band,
)

DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "scale"
DEFAULT_SIZE = 2048
SCENE_VERSION = 1
SEED = 0
TILE = "T33TVM"
N_DATES = 20
FIRST = date(2015, 7, 1)
STEP_DAYS = 5
WINDOW_DAYS = 15.0
CONFIGS = {"sequential": 0, "workers1": 1, "workers2": 2}


def _name(day: date) -> str:
    """A THEIA L2A product name (the acquisition time is read from the name)."""
    return f"SENTINEL2A_{day:%Y%m%d}-100000-000_L2A_{TILE}_D_V1-8"


def _manifest(size: int) -> dict[str, Any]:
    return {"scene_version": SCENE_VERSION, "size": size, "seed": SEED, "dates": N_DATES,
            "first": FIRST.isoformat(), "step_days": STEP_DAYS}


def cloud_covers() -> list[float]:
    """Per-date cloud cover, seeded: between 5 % and 90 % of the valid pixels."""
    rng = np.random.default_rng([SEED, 1])
    return [float(c) for c in rng.uniform(0.05, 0.9, N_DATES)]


def build_scene(cache: Path, size: int) -> Path:
    """Build the 20-date archive under ``cache/<size>`` unless an identical one is there.

    Built in a temporary folder renamed into place at the end: an interrupted build is
    never taken for a finished one.

    Returns:
        The archive root (``S2/<product>``).
    """
    folder = cache / str(size)
    manifest = _manifest(size)
    stamp = folder / "scene.json"
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == manifest:
        log(f"scene: reusing {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    t0 = time.perf_counter()
    fmt = FORMATS["cog"]
    try:
        patches = load_patches()
        layout = mosaic_layout(size, len(patches))
        bands = {b: render_band(patches, layout, size, b) for b in BANDS_10M}
        nodata = bands[BANDS_10M[0]][1]
        for k, cover in enumerate(cloud_covers()):
            name = _name(FIRST + timedelta(days=STEP_DAYS * k))
            product = tmp / "S2" / TILE / name
            clouds = _clouds(size, cover, 100 + k) & ~nodata
            rng = np.random.default_rng([SEED, 200 + k])
            gain = np.float32(rng.uniform(0.95, 1.05))
            for band in BANDS_10M:
                values = bands[band][0] * gain + rng.normal(0.0, 3.0, (size, size)).astype(
                    np.float32)
                values = np.where(clouds, 0.4 * values + 5000.0, values)
                _cog(product / f"{name}_FRE_{THEIA_BAND[band]}.tif",
                     _encode(values, nodata, fmt), "int16", fmt.nodata, 10, fmt.crs,
                     fmt.origin)
            clm = np.where(clouds, 3, 0).astype(np.uint8)  # bits 0 and 1: clouds
            half = (size // 2) * 2
            for res, step in (("R1", 1), ("R2", 2)):
                c = clm if step == 1 else clm[:half:2, :half:2]
                e = nodata if step == 1 else nodata[:half:2, :half:2]
                _cog(product / "MASKS" / f"{name}_CLM_{res}.tif", c, "uint8", None,
                     10 * step, fmt.crs, fmt.origin)
                _cog(product / "MASKS" / f"{name}_EDG_{res}.tif", e.astype(np.uint8),
                     "uint8", None, 10 * step, fmt.crs, fmt.origin)
            log(f"scene: date {k + 1}/{N_DATES} ({cover:.0%} cloud) written "
                f"({time.perf_counter() - t0:.0f} s)")
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"scene: built {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


def child(workers: int, scene: Path, out: Path) -> dict[str, Any]:
    """One timed series run (in a child process: ``--child WORKERS``)."""
    from decloud.archive import Archive
    from decloud.distributed import Execution
    from decloud.processors.timeseries import GapFillDates, SeriesOptions, run_series

    archive = Archive.from_root(scene)
    method = GapFillDates(window_days=WINDOW_DAYS, buffer=2, bands=BANDS_10M)
    execution = Execution(workers=workers) if workers else None
    last = FIRST + timedelta(days=STEP_DAYS * (N_DATES - 1))
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    reports = run_series(archive, TILE, FIRST, last, method, out,
                         SeriesOptions(quicklooks=False, execution=execution))
    seconds = time.perf_counter() - t0
    statuses = sorted({r.status for r in reports})
    if statuses != ["done"] or len(reports) != N_DATES:
        raise RuntimeError(f"expected {N_DATES} dates done, got {statuses}")
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu0,
            "engine_seconds": [r.seconds for r in reports]}


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_child(workers: int, scene: Path, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(workers),
           "--scene", str(scene), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"child {workers} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _markdown(res: dict[str, Any]) -> str:
    r, s = res["results"], res["summary"]
    lines = [
        "# Time series on Dask: 1 and 2 workers", "",
        f"{res['date']}, commit {res['git_commit']}; {machine_line(res['machine'])}; load "
        f"average before {res['load_average']['before']}, after "
        f"{res['load_average']['after']}.", "",
        f"Scene: {N_DATES} S2 dates of a {res['size']} x {res['size']} px tile built from "
        f"real patches (see bench_scale.py), gap-filled (4 bands, 15-day window, 2 px "
        f"buffer), STAC items and collection, no quicklooks; median of {res['repeat']} "
        "runs each, cluster start-up included.", "",
        "| configuration | workers | median wall (s) | CPU (s) | throughput (Mpx/s) "
        "| per worker (Mpx/s) | vs sequential |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, workers in CONFIGS.items():
        x = r[name]
        lines.append(f"| {name} | {workers} | {x['median_seconds']:.1f} | "
                     f"{x['median_cpu_seconds']:.1f} | {x['mpx_per_s']:.2f} | "
                     f"{x['mpx_per_s_per_worker']:.2f} | "
                     f"{r['sequential']['median_seconds'] / x['median_seconds']:.2f}x |")
    lines += ["",
              f"Scaling efficiency, 2 workers against 1: **{s['scaling_efficiency']:.2f}** "
              f"(speed-up {s['speedup_2_over_1']:.2f}x); 1-worker cluster against the "
              f"in-process run: {s['cluster_overhead']:.2f}x the time.",
              "", "Runs (s): " + "; ".join(f"{n} {r[n]['runs_seconds']}" for n in CONFIGS)]
    if res["other_benchmarks_running"]:
        lines += ["", "Other benchmarks were running: timings are pessimistic."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the scene, run each configuration, write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"scene side at 10 m, px (default {DEFAULT_SIZE}; a full tile "
                             f"is {TILE_PX})")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.scene, args.out)))
        return 0
    if args.repeat < 1 or args.size < 256 or args.size % 2:
        parser.error("--repeat must be >= 1, --size even and >= 256")
    digest = source_digest()
    others = others_running((*OTHER_BENCHMARKS, "bench_engine", "bench_scale"))
    scene = build_scene(args.cache, args.size)
    before = load_average()
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for i in range(args.repeat):
            for name, workers in CONFIGS.items():
                out = Path(tmp) / f"{name}-{i}"
                log(f"run {i + 1}/{args.repeat}: {name} ...")
                x = _run_child(workers, scene, out)
                runs[name].append(x)
                log(f"  {name}: {x['seconds']:.1f} s wall, {x['cpu_seconds']:.1f} CPU s")
                shutil.rmtree(out)
    after = load_average()
    mpx = N_DATES * args.size ** 2 / 1e6
    results: dict[str, Any] = {}
    for name, workers in CONFIGS.items():
        secs = [x["seconds"] for x in runs[name]]
        wall = median(secs)
        results[name] = {
            "workers": workers, "runs_seconds": secs, "median_seconds": wall,
            "median_cpu_seconds": median([x["cpu_seconds"] for x in runs[name]]),
            "mpx_per_s": mpx / wall, "mpx_per_s_per_worker": mpx / wall / max(1, workers),
            "median_engine_seconds_per_date": median(runs[name][-1]["engine_seconds"]),
        }
    one, two = results["workers1"]["mpx_per_s"], results["workers2"]["mpx_per_s"]
    summary = {"scaling_efficiency": two / (2 * one), "speedup_2_over_1": two / one,
               "cluster_overhead": results["workers1"]["median_seconds"]
               / results["sequential"]["median_seconds"]}
    if source_digest() != digest:
        log("warning: decloud's source changed during the run; results mix two versions")
        digest += "+changed-during-run"
    res = {
        "benchmark": "scale", "scene_version": SCENE_VERSION, "date": now_utc(),
        "git_commit": git_commit(), "decloud_source_sha256": digest,
        "machine": machine_info(),
        "versions": package_versions(("numpy", "rasterio", "decloud", "dask", "distributed")),
        "size": args.size, "dates": N_DATES, "repeat": args.repeat,
        "baseline": "sequential (in-process, --workers 0)",
        "load_average": {"before": before, "after": after},
        "other_benchmarks_running": others, "cloud_covers": cloud_covers(),
        "results": results, "summary": summary,
    }
    json_path, md_path = write_results("scale", res, _markdown(res), args.results)
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
