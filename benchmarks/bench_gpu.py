"""Benchmark: a full tile through ``msop_unet`` on the JAX backend (GPU), read+infer+write.

The scene (built once under ``benchmarks/.cache/gpu/<size>``) is made from the
repository's real-data fixtures only (a GPU machine gets a copy of the working tree,
not ``../shared``), laid out as ``bench_engine.py``'s scene so that its product loader
is reused:

* S2 ``tm1``, ``t``, ``tp1``: the three T33TVM THEIA fixtures (FRE B2, B3, B4, B8 and
  their CLM/EDG masks, 100 x 100 px of real data) mirror-tiled to ``size`` px, with a
  +-4 DN per-date noise so that the COGs compress like real data;
* S1: the T31UFS VV/VH fixtures (real S1Tiling sigma0) mirror-tiled, one pair per date;
* DEM: the real DEM fixture zoomed to 30 m over the scene (``bench_engine._dem``).

Runs (in this process; the model is built and the scene opened before the clock):

* ``engine/<precision>``: :func:`decloud.inference.run` with ``msop_unet`` (S1+S2 at
  t-1, t, t+1 and DEM; seeded weights: speed does not depend on training) as a
  :class:`KerasMethod`, blocks of ``--block`` px (2048 on a GPU), ``--readers`` reader
  threads (default: every core) decoding inputs in parallel, prefetching
  ``--prefetch`` blocks ahead while the device computes, composite on ``t``, COG
  outputs; float32 and bfloat16 (:mod:`decloud.inference.precision`). The first run
  of each precision compiles the model for each block shape (reported apart); the
  figure is the median of the ``--repeat`` warm runs after it;
* ``floor``: reading the same inputs over the output's core windows with the same
  reader threads and writing the same outputs (reflectance int16 + quality uint8
  COGs): the pure I/O, the best the engine can do.

GPU utilisation: ``nvidia-smi --query-gpu=utilization.gpu --format=csv -lms 200`` in a
background process during each timed run; busy = the share of samples >= 80 %.
Goal (issue 10): <= 20 s per tile with the GPU busy >= 80 % of the run.

Usage (one command; ``KERAS_BACKEND=jax`` is set when unset; TensorFlow is not needed)::

    python benchmarks/bench_gpu.py                # GPU: full tile; CPU: --size 512
    python benchmarks/bench_gpu.py --size 256 --repeat 1 --results /tmp/r   # a quick check

Mpx/s = output pixels (10 m grid) / wall second.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports Keras

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
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
    package_versions,
    source_digest,
    write_results,
)
from bench_engine import (
    DATES,
    FIXTURE_S2,
    S1_TIMES,
    THEIA_BAND,
    _cog,
    _dem,
    _grid,
    _plan_keys,
    _products,
)

FIXTURE_S1 = REPO_ROOT / "tests" / "data" / "archive" / "S1" / "T31UFS"
#: One real S1 pair per date (their pixels; the scene renames them onto T33TVM).
S1_FIXTURES = {"tm1": "ASC_088_20230405t172500", "t": "DES_110_20230415t055800",
               "tp1": "ASC_088_20230429t172500"}
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "gpu"
SCENE_VERSION = 1
SEED = 0
MODEL = "msop_unet"
TILE_PX = 10980
CPU_SIZE = 512
BUSY = 80  # percent: a sample counts as busy at or above it
GOAL_SECONDS, GOAL_BUSY = 20.0, 0.80


# --------------------------------------------------------------------------------------
# Scene


def _tiled(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` (H, W) mirror-tiled to ``size`` x ``size`` (no seams at the joins)."""
    reps = (-(-size // array.shape[0]), -(-size // array.shape[1]))
    # Reflect every other copy so that neighbouring copies meet on equal pixels.
    row = np.concatenate([array if j % 2 == 0 else array[:, ::-1] for j in range(reps[1])],
                         axis=1)
    full = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    return np.ascontiguousarray(full[:size, :size])


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(1), src.nodata


def build_scene(cache: Path, size: int) -> Path:
    """Build the scene under ``cache/<size>`` unless an identical one is there.

    Built in a temporary folder renamed into place: an interrupted build is never
    taken for a finished one.
    """
    folder = cache / str(size)
    manifest = {"scene_version": SCENE_VERSION, "size": size, "seed": SEED,
                "s1": S1_FIXTURES}
    stamp = folder / "scene.json"
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == manifest:
        log(f"scene: reusing {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    t0 = time.perf_counter()
    first = FIXTURE_S2 / DATES["t"] / f"{DATES['t']}_FRE_B2.tif"
    with rasterio.open(first) as src:
        crs, origin = src.crs, (src.bounds.left, src.bounds.top)
    try:
        for k, (acq, name) in enumerate(DATES.items()):
            rng = np.random.default_rng([SEED, k])
            source, product = FIXTURE_S2 / name, tmp / "S2" / name
            product.mkdir(parents=True)
            shutil.copy2(source / f"{name}_MTD_ALL.xml", product)
            for band in THEIA_BAND.values():
                values, nodata = _read(source / f"{name}_FRE_{band}.tif")
                tiled = _tiled(values, size)
                noise = rng.integers(-4, 5, tiled.shape, dtype=np.int16)
                tiled = np.where(tiled == nodata, tiled, tiled + noise)
                _cog(product / f"{name}_FRE_{band}.tif", tiled, "int16", nodata, 10, crs,
                     origin)
            for mask in ("CLM", "EDG"):
                for res, step in (("R1", 1), ("R2", 2)):
                    values, _ = _read(source / "MASKS" / f"{name}_{mask}_{res}.tif")
                    _cog(product / "MASKS" / f"{name}_{mask}_{res}.tif",
                         _tiled(values, -(-size // step)), "uint8", None, 10 * step, crs,
                         origin)
            for pol in ("vv", "vh"):
                values, nodata = _read(FIXTURE_S1 / f"s1a_31UFS_{pol}_{S1_FIXTURES[acq]}.tif")
                _cog(tmp / "S1" / f"s1a_33TVM_{pol}_DES_022_{S1_TIMES[acq]}.tif",
                     _tiled(values, size), "float32", nodata, 10, crs, origin)
            log(f"scene: {acq} written ({time.perf_counter() - t0:.0f} s)")
        _cog(tmp / "DEM" / "T33TVM.tif", _dem(size), "float32", -32768.0, 30.0, crs, origin)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"scene: built {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


# --------------------------------------------------------------------------------------
# Measurements


class GpuSampler:
    """``nvidia-smi`` utilisation samples every 200 ms while the block runs (none on a CPU)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            self._proc = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self.samples = [int(v) for v in out.split() if v.strip().isdigit()]

    def summary(self) -> dict[str, Any]:
        """Samples, mean utilisation and the share of samples >= :data:`BUSY` %."""
        if not self.samples:
            return {"samples": 0, "mean_percent": None, "busy_fraction": None}
        return {"samples": len(self.samples),
                "mean_percent": float(np.mean(self.samples)),
                "busy_fraction": float(np.mean(np.array(self.samples) >= BUSY))}


def _engine_run(method: Any, products: Any, grid: Any, out: Path, args: argparse.Namespace,
                precision: str) -> dict[str, Any]:
    from decloud.env import gdal_env
    from decloud.inference import EngineOptions, run

    options = EngineOptions(block_size=args.block, batch_size=args.batch, readers=args.readers,
                            prefetch=args.prefetch, cog_threads=args.readers, target="t",
                            overwrite=True, stac=False, precision=precision)
    with gdal_env(), GpuSampler() as gpu:
        t0 = time.perf_counter()
        record = run(method, products, grid, out, options)
        wall = time.perf_counter() - t0
    return {"seconds": wall, "gpu": gpu.summary(), "timing": record.timing,
            "blocks": record.blocks, "block_size": record.parameters["block_size"],
            "margin": record.parameters["margin"]}


def _floor_run(method: Any, products: Any, grid: Any, out: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Read the inputs over the core windows (same threads) and write the outputs."""
    from decloud.constants import S2_NODATA
    from decloud.env import gdal_env
    from decloud.grid import RasterPool
    from decloud.inputs import read_inputs
    from decloud.writers import CogWriter

    keys = _plan_keys(method)
    bands = list(method.output_bands)
    block = args.block or 2048
    pools: list[RasterPool] = []
    local = threading.local()
    lock = threading.Lock()

    def read(core: Any) -> tuple[Any, dict[str, np.ndarray]]:
        pool = getattr(local, "pool", None)
        if pool is None:
            pool = local.pool = RasterPool()
            with lock:
                pools.append(pool)
        with gdal_env():
            return core, read_inputs(keys, products, grid, core, dem_policy="partial",
                                     pool=pool)

    refl = CogWriter(out.with_suffix(".tif"), grid, len(bands), "int16", S2_NODATA,
                     band_names=bands, overwrite=True, threads=args.readers)
    qual = CogWriter(Path(f"{out}_quality.tif"), grid, 1, "uint8", 255,
                     band_names=["quality"], overwrite=True, threads=args.readers)
    t0 = time.perf_counter()
    try:
        with gdal_env(), refl, qual, ThreadPoolExecutor(args.readers) as ex:
            queue: collections.deque[Future[Any]] = collections.deque()
            todo = iter([core for core, _ in grid.windows(block)])
            for core in todo:
                queue.append(ex.submit(read, core))
                if len(queue) >= args.prefetch:
                    break
            while queue:
                core, inputs = queue.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    queue.append(ex.submit(read, nxt))
                s2 = np.moveaxis(inputs["s2_t"][..., :len(bands)], -1, 0)
                refl.write(np.ascontiguousarray(s2), core)
                qual.write(np.ascontiguousarray(inputs["s2_mask_t"][..., 0][None]), core)
    finally:
        for pool in pools:
            pool.close()
    return {"seconds": time.perf_counter() - t0}


def _devices() -> list[str]:
    import jax

    return [f"{d.platform}:{d.device_kind}" for d in jax.devices()]


def _on_gpu() -> bool:
    import jax

    return any(d.platform == "gpu" for d in jax.devices())


# --------------------------------------------------------------------------------------
# Driver


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the scene, run the floor and the engine in each precision; the results."""
    import keras

    from decloud.processors.single_date import load_method

    if keras.backend.backend() != "jax":
        raise SystemExit(f"KERAS_BACKEND={keras.backend.backend()}: this benchmark runs JAX")
    scene = build_scene(args.cache, args.size)
    products, grid = _products(scene), _grid(scene)
    method = load_method(MODEL, untrained=True, seed=SEED)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    runs: dict[str, Any] = {}
    try:
        floors = []
        for i in range(args.repeat):
            floors.append(_floor_run(method, products, grid, work / "floor", args))
            log(f"floor {i + 1}/{args.repeat}: {floors[-1]['seconds']:.1f} s")
        runs["floor"] = {"seconds": median([f["seconds"] for f in floors]),
                         "runs": floors}
        for precision in args.precision:
            cold = _engine_run(method, products, grid, work / precision, args, precision)
            log(f"engine {precision} cold (compiles): {cold['seconds']:.1f} s")
            warm = []
            for i in range(args.repeat):
                warm.append(_engine_run(method, products, grid, work / precision, args,
                                        precision))
                log(f"engine {precision} {i + 1}/{args.repeat}: {warm[-1]['seconds']:.1f} s, "
                    f"GPU busy {warm[-1]['gpu']['busy_fraction']}")
            best = min(warm, key=lambda r: abs(r["seconds"] - median(
                [w["seconds"] for w in warm])))
            runs[f"engine/{precision}"] = {
                "seconds": median([w["seconds"] for w in warm]),
                "cold_seconds": cold["seconds"], "gpu": best["gpu"], "timing": best["timing"],
                "blocks": best["blocks"], "block_size": best["block_size"],
                "margin": best["margin"], "runs": warm}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mpx = args.size * args.size / 1e6
    for run in runs.values():
        run["mpx_per_s"] = mpx / run["seconds"]
        run["ratio_to_floor"] = run["seconds"] / runs["floor"]["seconds"]
    return runs


def markdown(data: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    p = data["parameters"]
    lines = [
        "# GPU benchmark: a tile through msop_unet on JAX, read + infer + write", "",
        f"{data['finished']} - commit {data['commit']} - {machine_line(data['machine'])}",
        f"Devices: {', '.join(data['devices'])}; load average before: {data['load_before']}",
        "",
        f"Scene {p['size']} x {p['size']} px (real fixtures mirror-tiled), model {MODEL} "
        f"(seeded), blocks {p['block'] or 'default'} px, batch {p['batch']}, "
        f"{p['readers']} reader threads, prefetch {p['prefetch']}; median of "
        f"{p['repeat']} warm run(s) after a cold one.", "",
        "| run | seconds | Mpx/s | x floor | GPU busy >= 80 % | mean GPU % | cold s | "
        "model s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, run in data["runs"].items():
        gpu = run.get("gpu", {})
        busy = gpu.get("busy_fraction")
        mean = gpu.get("mean_percent")
        lines.append(
            f"| {name} | {run['seconds']:.2f} | {run['mpx_per_s']:.2f} | "
            f"{run['ratio_to_floor']:.2f} | {'-' if busy is None else f'{busy:.0%}'} | "
            f"{'-' if mean is None else f'{mean:.0f}'} | "
            f"{run.get('cold_seconds', float('nan')):.1f} | "
            f"{run.get('timing', {}).get('method_s', float('nan')):.1f} |")
    full = p["size"] == TILE_PX
    lines += ["", f"Goal (issue 10): <= {GOAL_SECONDS:.0f} s per full tile with the GPU busy "
              f">= {GOAL_BUSY:.0%} of the run."]
    for name, run in data["runs"].items():
        if not name.startswith("engine/"):
            continue
        busy = run["gpu"]["busy_fraction"]
        seconds_ok = run["seconds"] <= GOAL_SECONDS
        if not full or busy is None:
            verdict = "not applicable (not a full tile on a GPU)"
        else:
            verdict = "met" if seconds_ok and busy >= GOAL_BUSY else "not met"
        lines.append(f"- {name}: {run['seconds']:.1f} s, GPU busy "
                     f"{'n/a (no GPU)' if busy is None else f'{busy:.0%}'}: goal {verdict}.")
    lines += ["", "The floor reads the same inputs and writes the same outputs with the same "
              "threads and nothing else: no run can be faster.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size", type=int, default=None,
                        help=f"scene side, px (default: {TILE_PX} on a GPU, {CPU_SIZE} else)")
    parser.add_argument("--repeat", type=int, default=2, help="warm runs of each (median)")
    parser.add_argument("--precision", default="float32,bfloat16",
                        type=lambda s: [p for p in s.split(",") if p],
                        help="comma-separated precisions")
    parser.add_argument("--block", type=int, default=None,
                        help="core block side (default: the engine's, 2048 on a GPU)")
    parser.add_argument("--batch", type=int, default=1, help="blocks per model call")
    parser.add_argument("--readers", type=int, default=os.cpu_count() or 1,
                        help="reader threads (default: every core)")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="blocks read ahead (default: readers + 2)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="gpu", help="result file name")
    args = parser.parse_args(argv)
    gpu = _on_gpu()
    args.size = args.size or (TILE_PX if gpu else CPU_SIZE)
    args.prefetch = args.prefetch or args.readers + 2
    load_before = load_average()
    started = time.perf_counter()
    runs = measure(args)
    data = {"benchmark": "gpu", "finished": now_utc(), "commit": git_commit(),
            "source_digest": source_digest(), "machine": machine_info(),
            "versions": package_versions(("numpy", "rasterio", "decloud", "jax", "keras")),
            "devices": _devices(), "on_gpu": gpu, "load_before": load_before,
            "load_after": load_average(), "total_seconds": time.perf_counter() - started,
            "parameters": {"size": args.size, "repeat": args.repeat, "block": args.block,
                           "batch": args.batch, "readers": args.readers,
                           "prefetch": args.prefetch, "precision": args.precision,
                           "model": MODEL, "seed": SEED},
            "runs": runs}
    write_results(args.name, data, markdown(data), args.results)
    log(f"results: {args.results / args.name}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
