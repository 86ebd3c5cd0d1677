"""Acceptance run: a full 10980 x 10980 tile through ``decloud process multi-temporal``.

The scene is the engine benchmark's (:func:`bench_engine.build_scene`: three THEIA S2
dates of real-patch mosaics with clouds, S1 VV/VH per date, the real DEM zoomed to
30 m), built at ``--size`` px (default 10980, a full tile). The run is what a user
types, end to end, each step a child process:

1. ``decloud index build`` of the scene (S2, S1, DEM) into a catalog;
2. ``/usr/bin/time -v decloud process multi-temporal`` with ``msop_small`` (seeded
   untrained weights: speed and memory do not depend on training) on the middle date,
   t-1 and t+1 chosen per block from the catalog (windows widened by ``--widen-hours``
   because the scene's t+1 is 40 days after t): its wall time and peak RSS (the
   kernel's maximum resident set of the process, TensorFlow included);
3. a quicklook of a block corner: a 512 px crop centred on the intersection of four
   engine blocks (the one with the most reconstructed pixels around it), input /
   output / output stretched under the clouds / quality side by side (PNG), to look at
   for seams.

Usage::

    cd benchmarks && ../.venv/bin/python bench_fulltile.py [--size PX] [--out DIR] \
        [--gdal-cache-mb MIB]

writes ``<out>/fulltile_<size>.json`` and ``.md`` and the quicklook
``<out>/fulltile_<size>_corner.png`` (``--out`` defaults to ``benchmarks/results``).
Running it at two smaller sizes (``--size 2048``, ``--size 4096``) shows how peak
RSS grows with the scene: the engine's queues bound the blocks in memory, so it
should not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
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
    now_utc,
    package_versions,
    source_digest,
    write_results,
)
from bench_engine import DATES, DEFAULT_CACHE, MODEL, SEED, build_scene
from bench_read_tile import TILE_PX
from rasterio.windows import Window

DECLOUD = REPO_ROOT / ".venv" / "bin" / "decloud"
TILE = "T33TVM"
TARGET_DATE = "2015-07-31"
CORNER_PX = 512
#: Seconds between the outputs' completion and the end of the process (record, STAC
#: item, TensorFlow's exit), counted in the outputs phase of the RSS timeline.
EXIT_S = 5.0
#: Colours of the quality layer in the quicklook (clear, reconstructed, feathered, nodata).
QUALITY_COLOURS = {0: (40, 160, 40), 1: (220, 60, 60), 2: (240, 200, 40), 255: (0, 0, 0)}


def _rss_kib(pid: int) -> int | None:
    """Resident set of a process now (KiB, ``VmRSS``), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _timed(cmd: list[str], log_path: Path, sample_s: float = 1.0
           ) -> tuple[float, str, list[tuple[float, int]]]:
    """Run a command under ``/usr/bin/time -v``: wall seconds, output, RSS timeline.

    The timeline samples the command's resident set every ``sample_s`` seconds
    (``(seconds since start, bytes)``, from ``/proc``; empty where there is none): it
    shows in which phase the peak that ``time`` reports falls.
    """
    t0 = time.perf_counter()
    timeline: list[tuple[float, int]] = []
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=out, stderr=err,
                                text=True)
        while proc.poll() is None:
            for child in _children(proc.pid):  # time's child: the command itself
                rss = _rss_kib(child)
                if rss is not None:
                    timeline.append((round(time.perf_counter() - t0, 1), rss * 1024))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(sample_s)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = out.read() + err.read()
    log_path.write_text(" ".join(cmd) + "\n\n" + text, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}), see {log_path}:\n"
                           f"{text[-3000:]}")
    return seconds, text, timeline


def _time_field(text: str, name: str) -> float:
    """A field of ``/usr/bin/time -v``'s report (``Maximum resident set size (kbytes)``)."""
    found = re.search(rf"{re.escape(name)}: ([0-9.:]+)", text)
    if found is None:
        raise RuntimeError(f"no {name!r} in /usr/bin/time's report")
    value = found.group(1)
    if ":" in value:  # elapsed h:mm:ss or m:ss.ss
        parts = [float(p) for p in value.split(":")]
        return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return float(value)


def _stretch(rgb: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` DN to uint8 ``(H, W, 3)`` between per-channel limits, nodata black."""
    lo, hi = limits[:, 0, None, None], limits[:, 1, None, None]
    out = np.clip((rgb - lo) / np.maximum(hi - lo, 1.0) * 255.0, 0, 255).astype(np.uint8)
    out[:, (rgb == -10000).any(axis=0)] = 0
    return np.moveaxis(out, 0, -1)


def corner_quicklook(scene: Path, out: Path, block: int, png: Path) -> dict[str, Any]:
    """Input / output / output under clouds / quality of a 512 px crop at a block corner.

    The intersection is the one with the most pixels reconstructed under clouds around
    it, so the crop shows the model's output, not the kept clear pixels. Input and output share
    one stretch (2-98 % of the output's clear pixels per channel); the third panel is
    the output stretched on its reconstructed pixels. Block edges are
    marked by one-pixel ticks outside the panels (not over the data).
    """
    from PIL import Image

    name = DATES["t"]
    with rasterio.open(out) as src:
        width, height = src.width, src.height
        names = [str(d) for d in src.descriptions]
    quality_path = out.with_name(out.stem + "_quality.tif")
    half = CORNER_PX // 2
    corners = [(r, c) for r in range(block, height - half + 1, block)
               for c in range(block, width - half + 1, block) if r >= half and c >= half]
    if not corners:
        raise RuntimeError(f"the scene ({width} px) has no block corner {half} px inside")
    best, best_count = corners[0], -1
    # Reconstructed under the date's clouds (the target has values there), not in its
    # nodata, where the output comes from S1 alone.
    with rasterio.open(quality_path) as src, rasterio.open(
            scene / "S2" / name / f"{name}_FRE_B4.tif") as red:
        for r, c in corners:
            crop = Window(c - half, r - half, CORNER_PX, CORNER_PX)
            q = src.read(1, window=crop)
            count = int(np.count_nonzero((q == 1) & (red.read(1, window=crop) != red.nodata)))
            if count > best_count:
                best, best_count = (r, c), count
    r, c = best
    window = Window(c - half, r - half, CORNER_PX, CORNER_PX)
    rgb_idx = [names.index(b) + 1 for b in ("B04", "B03", "B02")]
    with rasterio.open(out) as src:
        output = src.read(rgb_idx, window=window).astype(np.float32)
    with rasterio.open(quality_path) as src:
        quality = src.read(1, window=window)
    bands = []
    for b in ("B4", "B3", "B2"):
        with rasterio.open(scene / "S2" / name / f"{name}_FRE_{b}.tif") as src:
            bands.append(src.read(1, window=window).astype(np.float32))
    inputs = np.stack(bands)
    valid = (output != -10000).all(axis=0)
    # Stretched on the clear pixels when there are some: clouds would wash the ground out.
    ground = valid & (quality == 0) if (valid & (quality == 0)).any() else valid
    limits = np.array([np.percentile(output[i][ground], [2.0, 98.0]) for i in range(3)],
                      dtype=np.float32)
    colours = np.zeros((CORNER_PX, CORNER_PX, 3), dtype=np.uint8)
    for value, colour in QUALITY_COLOURS.items():
        colours[quality == value] = colour
    # The output stretched on its reconstructed pixels: the model's own texture, where
    # a seam between blocks would show (clouds saturate the common stretch).
    recon = valid & (quality == 1)
    own = np.array([np.percentile(output[i][recon], [2.0, 98.0]) if recon.any()
                    else limits[i] for i in range(3)], dtype=np.float32)
    panels = [_stretch(inputs, limits), _stretch(output, limits), _stretch(output, own),
              colours]
    # A white frame of 8 px around each panel, with black ticks where the block edges are.
    framed = []
    for p in panels:
        f = np.full((CORNER_PX + 16, CORNER_PX + 16, 3), 255, dtype=np.uint8)
        f[8:-8, 8:-8] = p
        f[:6, 8 + half] = f[-6:, 8 + half] = 0
        f[8 + half, :6] = f[8 + half, -6:] = 0
        framed.append(f)
    Image.fromarray(np.concatenate(framed, axis=1)).save(png)
    # Seam check in numbers, on reconstructed pixels: the output's jump between adjacent
    # columns (rows) beyond the input's own jump there, at the block edge against the
    # same excess at every other column (row) of the crop. A seam stands out.
    recon_px = quality == 1
    steps: dict[str, dict[str, float]] = {}
    for axis, (out_a, in_a, rec) in {
            "vertical_edge": (output, inputs, recon_px),
            "horizontal_edge": (np.swapaxes(output, 1, 2), np.swapaxes(inputs, 1, 2),
                                recon_px.T)}.items():
        excess = np.full(CORNER_PX, np.nan)
        for k in range(1, CORNER_PX):
            pair = rec[:, k] & rec[:, k - 1]
            if pair.sum() >= 16:
                d_out = np.abs(out_a[:, :, k] - out_a[:, :, k - 1])[:, pair].mean()
                d_in = np.abs(in_a[:, :, k] - in_a[:, :, k - 1])[:, pair].mean()
                excess[k] = d_out - d_in
        others = np.delete(excess, half)
        steps[axis] = {"excess_at_edge_dn": float(excess[half]),
                       "excess_elsewhere_median_dn": float(np.nanmedian(others)),
                       "excess_elsewhere_p95_dn": float(np.nanpercentile(others, 95))}
    return {"corner_row_col": [r, c], "reconstructed_pixels_in_crop": best_count,
            "steps": steps, "png": str(png)}


def _phases(timeline: list[tuple[float, int]], record: dict[str, Any]
            ) -> dict[str, float]:
    """Sampled peak RSS (bytes) while blocks ran and while the outputs were finished.

    The record's ``outputs_s`` times the COG conversions after the last block; the
    samples of the process's last ``outputs_s`` + :data:`EXIT_S` seconds (the
    conversions, the record, the exit) are the outputs phase, the earlier ones the
    blocks (and start-up).
    """
    if not timeline:
        return {}
    split = timeline[-1][0] - float(record["timing"].get("outputs_s", 0.0)) - EXIT_S
    return {"split_s": split,
            "peak_blocks_bytes": max((r for t, r in timeline if t < split), default=0),
            "peak_outputs_bytes": max((r for t, r in timeline if t >= split), default=0)}


def _markdown(res: dict[str, Any]) -> str:
    p = res["process"]
    q = res["quicklook"]
    rec = p["record"]
    lines = [
        f"# Full-tile run: `decloud process multi-temporal` with {MODEL}, "
        f"{res['size']} x {res['size']} px",
        "",
        f"Run {res['date']} at commit `{res['git_commit']}` (decloud source "
        f"`{res['decloud_source_sha256']}`) on {machine_line(res['machine'])}; load "
        f"average (1 min) before / after: {res['load_average']['before']} / "
        f"{res['load_average']['after']}.",
        "",
        "Scene: the engine benchmark's (bench_engine.py build_scene: three THEIA S2 dates "
        "of real-patch mosaics with clouds, S1 VV/VH per date, the real DEM zoomed to "
        f"30 m), {res['size'] ** 2 / 1e6:.1f} Mpx; scene build {res['scene_seconds']:.0f} s "
        f"({'reused' if res['scene_reused'] else 'built'}), index build "
        f"{res['index_seconds']:.0f} s.",
        "",
        f"- **Peak RSS of `decloud process multi-temporal`: {p['peak_rss_bytes'] / 1e9:.2f} "
        "GB** (goal <= 6 GB; /usr/bin/time -v, the whole process with TensorFlow); "
        f"GDAL block cache {rec['parameters'].get('gdal_cache_bytes', 0) / 2**20:.0f} MiB "
        "(as GDAL reported it; 0: not recorded, GDAL's default of 5 % of the RAM).",
        *([f"- RSS sampled every second: peak {ph['peak_blocks_bytes'] / 1e9:.2f} GB while "
           f"blocks ran, {ph['peak_outputs_bytes'] / 1e9:.2f} GB while the COG outputs "
           f"were finished (the last {rec['timing'].get('outputs_s', 0):.0f} s of the "
           f"engine); the timeline is in the JSON."] if (ph := p.get("rss_phases")) else []),
        f"- Wall {p['seconds']:.0f} s, CPU {p['cpu_seconds']:.0f} s (user + system), "
        f"{res['size'] ** 2 / 1e6 / p['seconds']:.3f} Mpx/s; inside the engine: wall "
        f"{rec['timing']['wall_s']:.0f} s, read {rec['timing']['read_s']:.0f} s (summed over "
        f"reader threads), method {rec['timing']['method_s']:.0f} s; blocks "
        f"{rec['blocks']} ({rec['parameters']['block_size']} px, margin "
        f"{rec['parameters']['margin']} px).",
        f"- Pixels: {rec['pixels']}.",
        f"- Block corner quicklook `{Path(q['png']).name}` (input / output / output "
        "stretched on its reconstructed pixels / quality, "
        f"{CORNER_PX} px around the corner at row, col {q['corner_row_col']}; ticks mark "
        "the block edges). On its reconstructed pixels, the output's mean jump between "
        "adjacent columns (rows) beyond the input's there: "
        + "; ".join(f"{k.replace('_', ' ')} {v['excess_at_edge_dn']:.1f} DN, elsewhere "
                    f"median {v['excess_elsewhere_median_dn']:.1f} DN, 95th percentile "
                    f"{v['excess_elsewhere_p95_dn']:.1f} DN" for k, v in q["steps"].items())
        + " (a seam would stand out at the edge).",
        "",
        f"Command: `{' '.join(p['command'])}`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the scene, index it, process it, look at a block corner."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size", type=int, default=TILE_PX,
                        help=f"scene side at 10 m, px (default {TILE_PX}, a full tile)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder of the result files and the quicklook")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the catalog and outputs go (a temporary folder, "
                             "removed at the end, when not given)")
    parser.add_argument("--block-size", type=int, default=None,
                        help="engine block size (the CLI's default when not given)")
    parser.add_argument("--widen-hours", type=float, default=480.0)
    parser.add_argument("--gdal-cache-mb", type=int, default=None,
                        help="GDAL block cache of the run, MiB (the CLI's default when "
                             "not given; GDAL's own default is 5 %% of the RAM)")
    args = parser.parse_args(argv)
    if args.size < 1024 or args.size % 2:
        parser.error("--size must be even and >= 1024")
    digest = source_digest()
    t0 = time.perf_counter()
    stamp = args.cache / str(args.size) / "scene.json"
    reused = stamp.is_file()
    scene = build_scene(args.cache, args.size)
    scene_s = time.perf_counter() - t0
    before = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    keep = args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fulltile-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        catalog = work / "catalog"
        shutil.rmtree(catalog, ignore_errors=True)
        log("index build ...")
        index_s, _, _ = _timed([str(DECLOUD), "index", "build", "--s2-root", str(scene / "S2"),
                             "--s1-root", str(scene / "S1"), "--dem-root", str(scene / "DEM"),
                             "--catalog", str(catalog), "--strict"],
                            work / "index.log")
        out = work / "out.tif"
        cmd = [str(DECLOUD), "process", "multi-temporal", "--catalog", str(catalog),
               "--tile", TILE, "--date", TARGET_DATE, "--model", MODEL, "--allow-untrained",
               "--seed", str(SEED), "--out", str(out), "--dem",
               str(scene / "DEM" / f"{TILE}.tif"), "--widen-hours", str(args.widen_hours),
               "--overwrite"]
        if args.block_size:
            cmd += ["--block-size", str(args.block_size)]
        if args.gdal_cache_mb:
            cmd += ["--gdal-cache-mb", str(args.gdal_cache_mb)]
        log(f"process multi-temporal ({args.size} px) ...")
        seconds, text, timeline = _timed(cmd, work / "process.log")
        record = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        rss = int(_time_field(text, "Maximum resident set size (kbytes)")) * 1024
        cpu = _time_field(text, "User time (seconds)") + _time_field(
            text, "System time (seconds)")
        log(f"  {seconds:.0f} s, peak RSS {rss / 1e9:.2f} GB; quicklook ...")
        png = args.out / f"fulltile_{args.size}_corner.png"
        quick = corner_quicklook(scene, out, int(record["parameters"]["block_size"]), png)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    after = load_average()
    if source_digest() != digest:
        digest += "+changed-during-run"
    res = {
        "benchmark": "fulltile", "date": now_utc(), "git_commit": git_commit(),
        "decloud_source_sha256": digest, "machine": machine_info(),
        "versions": package_versions(("numpy", "rasterio", "decloud", "keras",
                                      "tensorflow")),
        "size": args.size, "model": MODEL, "scene_seconds": scene_s, "scene_reused": reused,
        "index_seconds": index_s, "load_average": {"before": before, "after": after},
        "goals": {"peak_rss": "<= 6 GB"},
        "process": {"command": [Path(c).name if i == 0 else c for i, c in enumerate(cmd)],
                    "seconds": seconds, "cpu_seconds": cpu, "peak_rss_bytes": rss,
                    "rss_timeline": timeline, "rss_phases": _phases(timeline, record),
                    "record": {k: record[k] for k in ("timing", "blocks", "pixels",
                                                      "parameters")}},
        "quicklook": quick,
    }
    paths = write_results(f"fulltile_{args.size}", res, _markdown(res), args.out)
    log(f"peak RSS {rss / 1e9:.2f} GB, {seconds:.0f} s; results: {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
