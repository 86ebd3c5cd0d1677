"""Benchmark: the streaming engine against an OTBTF-faithful baseline and the I/O floor.

The scene (built once under ``benchmarks/.cache/engine/<size>``) has three dates of
Sentinel-2 (``tm1``, ``t``, ``tp1``: THEIA L2A folders of COG FRE bands B2, B3, B4, B8
with ``MASKS/`` CLM and EDG layers), one S1Tiling VV/VH pair per date and a DEM, all on
one 10 m grid:

* S2: the mosaic of real patches of ``bench_read_tile.py`` (its builder functions are
  imported, not copied), the same ground every date, with a per-date gain and noise,
  the read benchmark's swath edge (nodata west of it, EDG = 1) and cloud blobs from a
  smoothed random field (about 35 % of ``t``, 15 % of ``tm1`` and ``tp1``), brightened
  and flagged in CLM (bits 0 and 1);
* S1: a mosaic of the six real BigEarthNet-S1 patches (dB to linear sigma0), float32
  COGs, nodata 0;
* DEM: the real 34 x 48 px DEM fixture of tests/data zoomed (bilinear) to 30 m over
  the scene, so the reader resamples it as it would a real DEM.

Methods (each in its own subprocess, so that its peak RSS is its own; the model is
built and the scene opened before the clock starts; runs alternate between methods):

* ``engine``: :func:`decloud.inference.run` with ``msop_small`` (seeded untrained
  weights: speed does not depend on training) as a :class:`KerasMethod`, the default
  block size and halo (the spec's margin), composite on ``t``;
* ``engine_bf16``: the same with the engine's bfloat16 option (validated for
  ``msop_small``, :mod:`decloud.inference.precision`);
* ``baseline``: what OTBTF does with CNES decloud's parameters, in the reference
  chain's two passes: (1) the model server, 256 x 256 output blocks with a 64 px
  margin on each side (``-output.efieldx 256``, the ``s2_target_crop64`` crop), batch
  1, every block, one after another in one thread (read with the same reader,
  predict, crop, write the float32 reconstruction to a GeoTIFF); (2) post-processing
  as a separate pass: that raster read back with the target date and its mask,
  composited, encoded and written with the same synchronous COG writer;
* ``compute``: the model alone on the engine's padded blocks (each read untimed
  first): the pure compute of the engine's run;
* ``floor``: reading the same inputs over the output's core windows (no halo) and
  writing the same outputs (reflectance int16 + quality uint8 COGs): the pure I/O;
* ``gapfill``: :class:`decloud.processors.gapfill.GapFillMethod` (4 bands, per-pixel
  masks dilated by 2 px, ``tm1`` and ``tp1`` around ``t``) through the engine;
* ``gapfill_floor``: reading its inputs over the core windows and writing its three
  outputs (reflectance, quality, days).

Usage::

    cd benchmarks && ../.venv/bin/python bench_engine.py [--size PX] [--repeat N]

``--size`` (default 4096, the issue's setting; 10980 is a full tile) sets the side of
the square scene.
Mpx/s = output pixels (10 m grid) / wall second.
"""

from __future__ import annotations

import argparse
import json
import resource
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
    median,
    now_utc,
    others_running,
    package_versions,
    source_digest,
    write_results,
)
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
from rasterio.transform import from_origin

SHARED_DATA = Path("/work/shared/data")
BIGEARTHNET_S1 = SHARED_DATA / "bigearthnet_examples" / "BigEarthNet-S1-Example"
FIXTURE_S2 = REPO_ROOT / "tests" / "data" / "archive" / "S2" / "T33TVM"
FIXTURE_DEM = REPO_ROOT / "tests" / "data" / "archive" / "DEM" / "T33TVM.tif"
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "engine"
SCENE_VERSION = 1
SEED = 0
MODEL = "msop_small"
#: The real THEIA products whose names and metadata the three dates take.
DATES = {
    "tm1": "SENTINEL2A_20150711-100008-000_L2A_T33TVM_D_V1-8",
    "t": "SENTINEL2A_20150731-100009-000_L2A_T33TVM_D_V1-8",
    "tp1": "SENTINEL2A_20150909-100017-000_L2A_T33TVM_D_V1-8",
}
S1_TIMES = {"tm1": "20150711t050000", "t": "20150731t050000", "tp1": "20150909t050000"}
CLOUD_COVER = {"tm1": 0.15, "t": 0.35, "tp1": 0.15}
GAIN = {"tm1": 0.97, "t": 1.0, "tp1": 1.04}
#: The OTBTF strategy of CNES decloud: 256 px output blocks, 64 px margin, batch 1.
OTBTF_BLOCK, OTBTF_MARGIN = 256, 64
THEIA_BAND = {"B02": "B2", "B03": "B3", "B04": "B4", "B08": "B8"}
DEM_RES = 30.0
METHODS = ("engine", "engine_bf16", "baseline", "compute", "floor", "gapfill",
           "gapfill_floor")
#: The issue's setting: a 4096 x 4096 scene.
DEFAULT_SIZE = 4096


# --------------------------------------------------------------------------------------
# Scene


def _cog(path: Path, data: np.ndarray, dtype: str, nodata: float | None, res: float,
         crs: Any, origin: tuple[float, float]) -> None:
    """Write one band as a DEFLATE COG (512 px blocks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="COG", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=dtype, nodata=nodata, crs=crs,
                       transform=from_origin(*origin, res, res), COMPRESS="DEFLATE",
                       BLOCKSIZE=512, NUM_THREADS="ALL_CPUS") as dst:
        dst.write(data.astype(dtype), 1)


def _clouds(size: int, cover: float, seed: int) -> np.ndarray:
    """Cloud blobs: a random field smoothed at about 1 km, thresholded to ``cover``."""
    rng = np.random.default_rng([SEED, seed])
    coarse = rng.normal(size=(-(-size // 64) + 2, -(-size // 64) + 2)).astype(np.float32)
    # Bilinear upsampling by 64 gives blobs of a few hundred metres to kilometres.
    ys = np.linspace(0, coarse.shape[0] - 1.001, size)
    xs = np.linspace(0, coarse.shape[1] - 1.001, size)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
             + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    return field > np.quantile(field, 1 - cover)


def _s1_patches() -> list[np.ndarray]:
    """The six real BigEarthNet-S1 patches as linear sigma0 ``(2, 120, 120)`` (VV, VH)."""
    out = []
    for folder in sorted(p for p in BIGEARTHNET_S1.iterdir() if p.is_dir()):
        bands = []
        for pol in ("VV", "VH"):
            with rasterio.open(folder / f"{folder.name}_{pol}.tif") as src:
                bands.append(10 ** (src.read(1).astype(np.float32) / 10))
        out.append(np.stack(bands))
    return out


def _s1_mosaic(size: int, seed: int) -> np.ndarray:
    """VV and VH ``(2, size, size)``: 96 px cells of the real patches, rotated or flipped."""
    patches = _s1_patches()
    rng = np.random.default_rng([SEED, 100 + seed])
    cell = 96
    n = -(-size // cell)
    out = np.empty((2, n * cell, n * cell), np.float32)
    for i in range(n):
        for j in range(n):
            p = patches[int(rng.integers(len(patches)))]
            oy, ox = (int(v) for v in rng.integers(0, 120 - cell + 1, 2))
            a = np.rot90(p[:, oy:oy + cell, ox:ox + cell], int(rng.integers(4)), axes=(1, 2))
            out[:, i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = a
    speckle = rng.gamma(20.0, 1 / 20.0, (2, size, size)).astype(np.float32)
    return out[:, :size, :size] * speckle


def _dem(size: int) -> np.ndarray:
    """The real DEM fixture's elevations zoomed (bilinear) to 30 m over the scene."""
    from scipy.ndimage import zoom

    with rasterio.open(FIXTURE_DEM) as src:
        dem = src.read(1)
    side = -(-size * 10 // int(DEM_RES))
    return zoom(dem, (side / dem.shape[0], side / dem.shape[1]), order=1)[:side, :side]


def _manifest(size: int) -> dict[str, Any]:
    return {"scene_version": SCENE_VERSION, "size": size, "seed": SEED,
            "clouds": CLOUD_COVER, "gain": GAIN}


def build_scene(cache: Path, size: int) -> Path:
    """Build the three-date scene under ``cache/<size>`` unless an identical one is there.

    Built in a temporary folder renamed into place at the end: an interrupted build is
    never taken for a finished one.

    Returns:
        The scene folder (``S2/<date product>``, ``S1/``, ``DEM/T33TVM.tif``).
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
    crs, origin = fmt.crs, fmt.origin
    try:
        patches = load_patches()
        layout = mosaic_layout(size, len(patches))
        bands = {b: render_band(patches, layout, size, b) for b in BANDS_10M}
        nodata = bands[BANDS_10M[0]][1]
        for k, (acq, name) in enumerate(DATES.items()):
            product = tmp / "S2" / name
            product.mkdir(parents=True)
            shutil.copy2(FIXTURE_S2 / name / f"{name}_MTD_ALL.xml", product)
            clouds = _clouds(size, CLOUD_COVER[acq], k) & ~nodata
            rng = np.random.default_rng([SEED, 10 + k])
            for band in BANDS_10M:
                values = bands[band][0] * np.float32(GAIN[acq]) + rng.normal(
                    0.0, 3.0, (size, size)).astype(np.float32)
                values = np.where(clouds, 0.4 * values + 5000.0, values)
                _cog(product / f"{name}_FRE_{THEIA_BAND[band]}.tif",
                     _encode(values, nodata, fmt), "int16", fmt.nodata, 10, crs, origin)
            clm = np.where(clouds, 3, 0).astype(np.uint8)  # bits 0 and 1: clouds
            half = (size // 2) * 2
            for res, step in (("R1", 1), ("R2", 2)):
                c = clm if step == 1 else clm[:half:2, :half:2]
                e = nodata if step == 1 else nodata[:half:2, :half:2]
                _cog(product / "MASKS" / f"{name}_CLM_{res}.tif", c, "uint8", None,
                     10 * step, crs, origin)
                _cog(product / "MASKS" / f"{name}_EDG_{res}.tif", e.astype(np.uint8),
                     "uint8", None, 10 * step, crs, origin)
            s1 = _s1_mosaic(size, k)
            for i, pol in enumerate(("vv", "vh")):
                _cog(tmp / "S1" / f"s1a_33TVM_{pol}_DES_022_{S1_TIMES[acq]}.tif", s1[i],
                     "float32", 0.0, 10, crs, origin)
            log(f"scene: {acq} written ({time.perf_counter() - t0:.0f} s)")
        _cog(tmp / "DEM" / "T33TVM.tif", _dem(size), "float32", -32768.0, DEM_RES, crs,
             origin)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"scene: built {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


# --------------------------------------------------------------------------------------
# The methods (each runs in a child process: ``bench_engine.py --child METHOD``)


def _products(scene: Path) -> Any:
    from decloud.inputs import AcquisitionProducts, InputProducts
    from decloud.products import Dem, S1Product, open_product

    acqs = {}
    for acq, name in DATES.items():
        s1 = S1Product.from_files([scene / "S1" / f"s1a_33TVM_{pol}_DES_022_{S1_TIMES[acq]}.tif"
                                   for pol in ("vv", "vh")])
        acqs[acq] = AcquisitionProducts(open_product(scene / "S2" / name), s1)  # type: ignore[arg-type]
    return InputProducts(acqs, Dem.open(scene / "DEM" / "T33TVM.tif"), reference="t")


def _grid(scene: Path) -> Any:
    from decloud.grid import Grid

    return Grid.from_raster(scene / "S2" / DATES["t"] / f"{DATES['t']}_FRE_B2.tif")


def _keras_method() -> Any:
    from decloud.processors.single_date import load_method

    return load_method(MODEL, untrained=True, seed=SEED)


def _gapfill_method() -> Any:
    from decloud.processors.gapfill import GapFillMethod

    return GapFillMethod(list(DATES), 0.0, bands=BANDS_10M, buffer=2, max_days=60.0)


def _plan_keys(method: Any) -> list[Any]:
    """The keys the engine reads for a method with the composite on ``t``."""
    from decloud.inputs import InputKey

    keys = list(method.input_keys)
    names = {k.name for k in keys}
    if "s2_t" not in names:
        keys.append(InputKey.of("s2_t", method.output_bands))
    if "s2_mask_t" not in names:
        keys.append(InputKey.of("s2_mask_t"))
    return keys


def _engine(method: Any, products: Any, grid: Any, out: Path,
            precision: str = "float32") -> dict[str, Any]:
    from decloud.inference import EngineOptions, run

    record = run(method, products, grid, out, EngineOptions(target="t", overwrite=True,
                                                            precision=precision))
    return {"record_timing": record.timing, "blocks": record.blocks,
            "block_size": record.parameters["block_size"],
            "margin": record.parameters["margin"]}


def _baseline(method: Any, products: Any, grid: Any, out: Path) -> dict[str, Any]:
    """OTBTF's strategy as CNES decloud runs it, in two passes like its chain.

    1. ``TensorflowModelServe``: 256 px output blocks with a 64 px margin, batch 1,
       every block (OTBTF skips none), one thread: read (the same reader), predict,
       crop, write the float32 reconstruction to a GeoTIFF (tiled, uncompressed, as
       OTB writes its ``.tif`` outputs), block after block;
    2. post-processing, a separate pass over that raster (the reference chain's
       composite and encoding outside the model): read the reconstruction back with the
       target date and its mask (1024 px blocks with the composite's 6 px halo: a
       generous streaming size for OTB's applications), composite, encode, write the
       same COGs as the engine (synchronous writer).
    """
    from decloud.constants import S2_NODATA
    from decloud.grid import RasterPool
    from decloud.inference.composite import QUALITY_NODATA, CompositeOptions, composite
    from decloud.inputs import InputKey, read_inputs
    from decloud.keys import decode_s2, encode_s2
    from decloud.windows import core_crop, crop
    from decloud.writers import CogWriter

    keys = list(method.input_keys)
    dynamic = [k.name for k in keys if k.name.startswith(("s2_", "s1_"))]
    bands = list(method.output_bands)
    options = CompositeOptions()
    seconds = dict.fromkeys(("read", "method", "write_model", "post_read", "post",
                             "write"), 0.0)
    calls = 0
    model_tif = out.with_name(out.stem + "_model.tif")
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height,
               "count": len(bands), "dtype": "float32", "crs": grid.crs,
               "transform": grid.transform, "nodata": float("nan"), "tiled": True,
               "blockxsize": OTBTF_BLOCK, "blockysize": OTBTF_BLOCK}
    # Pass 1: the model server. OTB keeps its readers open across blocks.
    with rasterio.open(model_tif, "w", **profile) as dst, RasterPool() as pool:
        for core, padded in grid.windows(OTBTF_BLOCK, OTBTF_MARGIN, method.size_multiple):
            t0 = time.perf_counter()
            inputs = read_inputs(keys, products, grid, padded, dem_policy="partial",
                                 pool=pool)
            t1 = time.perf_counter()
            result = method({k.name: inputs[k.name][None] for k in method.input_keys})
            calls += 1
            where = core_crop(core, padded)
            seen = np.zeros((int(padded.height), int(padded.width)), bool)
            for name in dynamic:
                seen |= (inputs[name] != (S2_NODATA if name.startswith("s2_") else 0)
                         ).any(axis=-1)
            recon = np.where(seen[..., None], result.reflectance[0], np.nan)
            recon = np.moveaxis(crop(recon, where, axes=(0, 1)), -1, 0).astype(np.float32)
            t2 = time.perf_counter()
            dst.write(recon, window=core)
            t3 = time.perf_counter()
            seconds["read"] += t1 - t0
            seconds["method"] += t2 - t1
            seconds["write_model"] += t3 - t2
    # Pass 2: post-processing of the model's raster.
    post_keys = [InputKey.of("s2_t", method.output_bands), InputKey.of("s2_mask_t")]
    refl = CogWriter(out.with_suffix(".tif"), grid, len(bands), "int16", S2_NODATA,
                     band_names=bands, overwrite=True)
    qual = CogWriter(Path(f"{out}_quality.tif"), grid, 1, "uint8", QUALITY_NODATA,
                     band_names=["quality"], overwrite=True)
    with refl, qual, RasterPool() as pool, rasterio.open(model_tif) as src:
        for core, padded in grid.windows(1024, options.halo, 1):
            t0 = time.perf_counter()
            inputs = read_inputs(post_keys, products, grid, padded, dem_policy="partial",
                                 pool=pool)
            recon = np.moveaxis(src.read(window=padded, boundless=True,
                                         fill_value=np.nan), 0, -1)
            t1 = time.perf_counter()
            target = decode_s2(inputs["s2_t"]) * np.float32(10000.0)
            values, quality = composite(target, inputs["s2_mask_t"][..., 0], recon, options)
            where = core_crop(core, padded)
            values = crop(values, where, axes=(0, 1))
            quality = crop(quality, where, axes=(0, 1))
            encoded = encode_s2(np.moveaxis(values, -1, 0) / np.float32(10000.0))
            t2 = time.perf_counter()
            refl.write(encoded, core)
            qual.write(np.ascontiguousarray(quality)[None], core)
            t3 = time.perf_counter()
            seconds["post_read"] += t1 - t0
            seconds["post"] += t2 - t1
            seconds["write"] += t3 - t2
    model_tif.unlink()
    return {"parts_seconds": seconds, "method_calls": calls}


def _compute(method: Any, products: Any, grid: Any, out: Path, block: int | None
             ) -> tuple[float, dict[str, Any]]:
    """Time the method alone on the engine's padded blocks (reads untimed)."""
    from decloud.inference.engine import default_block_size
    from decloud.inputs import read_inputs
    from decloud.windows import round_up

    k = method.size_multiple
    margin = round_up(max(method.margin, 6), k)  # the composite's halo is 6 px
    size = round_up(block or default_block_size(), k)
    method_s = read_s = 0.0
    calls = 0
    for _, padded in grid.windows(size, margin, k):
        t0 = time.perf_counter()
        inputs = read_inputs(method.input_keys, products, grid, padded, dem_policy="partial")
        read_s += time.perf_counter() - t0
        seen = any((v != (-10000 if n.startswith("s2_") else 0)).any()
                   for n, v in inputs.items() if n.startswith(("s2_", "s1_")))
        if not seen:
            continue
        t0 = time.perf_counter()
        method({n: v[None] for n, v in inputs.items()})
        method_s += time.perf_counter() - t0
        calls += 1
    return method_s, {"padded_read_seconds": read_s, "method_calls": calls,
                      "block_size": size, "margin": margin}


def _floor(method: Any, products: Any, grid: Any, out: Path, with_days: bool,
           block: int) -> dict[str, Any]:
    """Read the inputs over the core windows and write the outputs, nothing else."""
    from decloud.constants import S2_NODATA
    from decloud.grid import RasterPool
    from decloud.inputs import read_inputs
    from decloud.writers import CogWriter

    keys = _plan_keys(method)
    bands = list(method.output_bands)
    read_s = 0.0
    writers = [CogWriter(out.with_suffix(".tif"), grid, len(bands), "int16", S2_NODATA,
                         band_names=bands, overwrite=True),
               CogWriter(Path(f"{out}_quality.tif"), grid, 1, "uint8", 255,
                         band_names=["quality"], overwrite=True)]
    if with_days:
        writers.append(CogWriter(Path(f"{out}_days.tif"), grid, 1, "uint16", 65535,
                                 band_names=["days"], overwrite=True))
    with RasterPool() as pool:
        for w in writers:
            w.__enter__()
        try:
            for core, _ in grid.windows(block):
                t0 = time.perf_counter()
                inputs = read_inputs(keys, products, grid, core, dem_policy="partial",
                                     pool=pool)
                read_s += time.perf_counter() - t0
                s2 = np.moveaxis(inputs["s2_t"][..., :len(bands)], -1, 0)
                writers[0].write(np.ascontiguousarray(s2), core)
                q = np.ascontiguousarray(inputs["s2_mask_t"][..., 0][None]).astype(np.uint8)
                for w in writers[1:]:
                    w.write(q.astype(np.uint16) if w is writers[-1] and with_days else q,
                            core)
        finally:
            for w in writers:
                w.__exit__(None, None, None)
    return {"read_seconds": read_s}


def child(name: str, scene: Path, workdir: Path, block: int | None) -> dict[str, Any]:
    """Run one method once; return its wall seconds, CPU seconds and peak RSS."""
    from decloud.env import gdal_env

    # Importing Keras (TensorFlow) is a one-time process cost, measured apart: the engine
    # imports it even for gap-filling (default_block_size), which would swamp small runs.
    t0 = time.perf_counter()
    import keras  # noqa: F401

    keras_import = time.perf_counter() - t0
    products, grid = _products(scene), _grid(scene)
    method = _gapfill_method() if name.startswith("gapfill") else _keras_method()
    out = workdir / f"{name}.tif"
    extra: dict[str, Any] = {}
    with gdal_env():
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if name in ("engine", "engine_bf16", "gapfill"):
            extra = _engine(method, products, grid, out,
                            "bfloat16" if name == "engine_bf16" else "float32")
        elif name == "baseline":
            extra = _baseline(method, products, grid, out)
        elif name == "compute":
            method_s, extra = _compute(method, products, grid, out, block)
        else:
            extra = _floor(method, products, grid, out, name == "gapfill_floor",
                           block or 1024)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    if name == "compute":
        wall = method_s  # the model alone
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_bytes": rss,
            "keras_import_seconds": keras_import, **extra}


# --------------------------------------------------------------------------------------
# Driver


def _halo_overcompute(size: int, block: int, margin: int, multiple: int) -> float:
    """Padded pixels computed per output pixel when tiling a size x size grid."""
    from affine import Affine

    from decloud.grid import Grid

    grid = Grid(crs=FORMATS["cog"].crs, transform=Affine(10, 0, 0, 0, -10, 0), width=size,
                height=size)
    total = sum(int(p.width) * int(p.height) for _, p in grid.windows(block, margin, multiple))
    return total / (size * size)


def _seams(scene: Path, workdir: Path, size: int) -> dict[str, Any]:
    """Compare the engine's and the baseline's int16 outputs, by distance to a seam."""
    with rasterio.open(workdir / "engine.tif") as a, rasterio.open(workdir / "baseline.tif") as b:
        x, y = a.read().astype(np.int32), b.read().astype(np.int32)
        nodata = a.nodata
    valid = (x != nodata) & (y != nodata)
    diff = np.where(valid, np.abs(x - y), 0).max(axis=0)
    idx = np.arange(size) % OTBTF_BLOCK
    dist1 = np.minimum(idx, OTBTF_BLOCK - 1 - idx)
    dist = np.minimum(dist1[:, None], dist1[None, :])  # px to the nearest 256 px block edge
    out: dict[str, Any] = {
        "max_abs_difference_dn": int(diff.max()),
        "pixels_differing_fraction": float(np.mean(diff > 0)),
        "nodata_mismatch_pixels": int(np.count_nonzero((x == nodata) != (y == nodata))),
    }
    for lo, hi in ((0, 8), (8, 32), (32, 64), (64, 128)):
        sel = (dist >= lo) & (dist < hi)
        if sel.any():
            out[f"max_abs_difference_dn_{lo}_{hi}px_from_seam"] = int(diff[sel].max())
    return out


def _run_child(name: str, scene: Path, workdir: Path, block: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--scene",
           str(scene), "--workdir", str(workdir)]
    if block:
        cmd += ["--block", str(block)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _markdown(res: dict[str, Any]) -> str:
    r, s = res["results"], res["summary"]
    px = res["size"] ** 2 / 1e6
    cpu = {n: r[n]["median_cpu_seconds"] for n in METHODS}
    et = r["engine"]["last_run"]["record_timing"]
    gt = r["gapfill"]["last_run"]["record_timing"]
    bp = r["baseline"]["last_run"]["parts_seconds"]
    full = TILE_PX ** 2 / res["size"] ** 2
    lines = [
        "# Engine: msop_small and gap-filling over a scene, against OTBTF's strategy",
        "",
        f"Run {res['date']} at commit `{res['git_commit']}` (decloud source "
        f"`{res['decloud_source_sha256']}`) on {machine_line(res['machine'])}; scene "
        f"{res['size']} x {res['size']} px ({px:.1f} Mpx), {res['repeat']} runs per "
        f"method; load average (1 min) before / after: {res['load_average']['before']} / "
        f"{res['load_average']['after']}; other benchmarks running: "
        f"{', '.join(res['other_benchmarks_running']) or 'none'}.",
        "",
        res["scene_description"],
        "",
    ]
    loads = [x[0] for x in res["load_average"].values() if x]
    if loads and max(loads) > res["machine"]["cpu_cores"]:
        lines += [f"**The machine was overloaded (1-min load up to {max(loads)} on "
                  f"{res['machine']['cpu_cores']} cores): wall times are inflated and noisy, "
                  "the CPU-second figures are the steadier ones.**", ""]
    lines += [
        "| method | median s | Mpx/s | runs (s) | median CPU s | peak RSS (MiB) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name in METHODS:
        x = r[name]
        runs = ", ".join(f"{t:.1f}" for t in x["runs_seconds"])
        lines.append(f"| {name} | {x['median_seconds']:.1f} | {x['mpx_per_s']:.3f} | {runs} | "
                     f"{x['median_cpu_seconds']:.1f} | {x['peak_rss_bytes'] / 2**20:.0f} |")
    seams = s["seams"]
    lines += [
        "",
        f"- **Speed-up of the engine over the OTBTF-style baseline: {s['speedup']:.2f}x** "
        f"(goal >= 3); with the engine's bfloat16 option (validated for msop_small, "
        f"`EngineOptions(precision='bfloat16')`): {s['speedup_bf16']:.2f}x.",
        f"- **Overlap: engine / max(compute, floor) = {s['overlap_ratio']:.2f}** (goal <= "
        f"1.15; compute {r['compute']['median_seconds']:.1f} s, floor "
        f"{r['floor']['median_seconds']:.1f} s; engine / (compute + floor) = "
        f"{s['engine_over_serial']:.2f}).",
        f"- Inside the last engine run: read {et['read_s']:.1f} s (summed over its reader "
        f"threads), method {et['method_s']:.1f} s, wall {et['wall_s']:.1f} s; inside the "
        f"last baseline run: " + ", ".join(f"{k} {v:.1f} s" for k, v in bp.items())
        + f" ({r['baseline']['last_run']['method_calls']} model calls); gap-filling engine: "
        f"read {gt['read_s']:.1f} s, method {gt['method_s']:.1f} s.",
        f"- Halo overcompute (padded px per output px at this size): engine "
        f"{s['halo_engine']:.2f}x ({s['engine_block']} px blocks, {s['engine_margin']} px "
        f"halo), baseline {s['halo_baseline']:.2f}x (256 px blocks, 64 px margin); on a "
        f"full tile {s['halo_engine_tile']:.2f}x and {s['halo_baseline_tile']:.2f}x.",
        f"- Seams: the baseline's 64 px margin is below msop_small's receptive field "
        f"({s['receptive_field_px']} px): its output differs from the engine's (seamless: "
        "equal to a whole-image run, tested in tests/inference) by up to "
        f"{seams['max_abs_difference_dn']} DN (reflectance x 10000), on "
        f"{100 * seams['pixels_differing_fraction']:.2f} % of the pixels; by distance "
        "to the nearest 256 px block edge: "
        + ", ".join(f"{k.split('_dn_')[1].replace('_from_seam', '')}: {v} DN"
                    for k, v in seams.items() if "_from_seam" in k) + ". The weights are "
        "untrained (seeded): their output varies little with far context, so these "
        "differences are a lower bound of a trained model's; the composite also keeps "
        "t's clear pixels, where both outputs are the input.",
        f"- **Gap-filling: engine / floor = {s['gapfill_ratio']:.2f}** (goal <= 1.5).",
        f"- In CPU seconds (steadier on a loaded machine): speed-up "
        f"{cpu['baseline'] / cpu['engine']:.2f}x (bfloat16 "
        f"{cpu['baseline'] / cpu['engine_bf16']:.2f}x), gap-filling / floor "
        f"{cpu['gapfill'] / cpu['gapfill_floor']:.2f}.",
        f"- Peak RSS: engine {r['engine']['peak_rss_bytes'] / 2**30:.2f} GiB at this size "
        "(goal <= 6 GB on a full tile; the engine's queues bound it, independent of the "
        "scene size except for the COG writer's temporary file, which is on disk).",
        "",
        f"Importing Keras/TensorFlow costs {s['keras_import_seconds']:.1f} s per process, "
        "outside the timings (each child imports it before the clock; gap-filling "
        "itself never loads it).",
        "",
        "Per-Mpx costs (median s / output Mpx): "
        + ", ".join(f"{n} {r[n]['median_seconds'] / px:.2f}" for n in METHODS) + ".",
        "",
        f"The full-tile run is the same command with `--size {TILE_PX}` ({TILE_PX} x {TILE_PX} px, "
        f"{TILE_PX ** 2 / 1e6:.1f} Mpx): extrapolating these per-Mpx costs on this 2-core "
        f"machine, one run of every method takes about {s['full_tile_minutes_one_repeat']:.0f}"
        f" min (engine {s['full_tile_engine_minutes']:.0f} min, baseline "
        f"{s['full_tile_baseline_minutes']:.0f} min), plus building the scene; with "
        "`--repeat 3`, three times that. From the CPU seconds instead (steadier when "
        f"the machine is shared), the engine needs {cpu['engine'] * full / 60:.0f} CPU-min "
        f"and the baseline {cpu['baseline'] * full / 60:.0f} CPU-min per tile; every "
        f"method once, {sum(cpu.values()) * full / 60:.0f} CPU-min, i.e. about half that "
        "in wall time on 2 idle cores.",
        "",
        res["method_description"],
    ]
    return "\n".join(lines)


METHOD_DESCRIPTION = (
    "Each method runs in its own subprocess (model built and products opened before the "
    "clock; peak RSS = ru_maxrss of that process); runs alternate between methods; "
    "outputs go to a temporary folder. engine: decloud.inference.run(KerasMethod "
    "msop_small, EngineOptions(target='t')), default block size and halo = spec margin, "
    "2 reader threads, crop and composite in a post-processing thread, background "
    "writer; engine_bf16: the same with EngineOptions(precision='bfloat16'). baseline "
    "(OTBTF as CNES decloud runs it, two passes): 256 px blocks + 64 px "
    "margin, batch 1, every block, one thread, read (same read_inputs) -> predict -> "
    "crop -> float32 GeoTIFF, block after block; then a separate post-processing pass "
    "reads that raster back with t and its mask -> composite -> encode -> synchronous "
    "CogWriter (Keras tracing of a new shape is in both). "
    "compute: the model alone on the engine's padded blocks (reads untimed). floor: "
    "read_inputs of the same keys over the core windows (no halo) + writing the same "
    "outputs. gapfill: GapFillMethod (tm1, t, tp1; 4 bands; buffer 2) through run; "
    "gapfill_floor: its inputs read over the core windows + its three outputs written. "
    "Mpx/s = output pixels / wall second."
)

SCENE_DESCRIPTION = (
    "Scene: a mosaic of real data, not a real tile: three S2 dates (THEIA COG FRE "
    "B2/B3/B4/B8, the real-patch mosaic of bench_read_tile.py with per-date gain and "
    "noise, its swath edge with nodata to the west, cloud blobs about 15 / 35 / 15 % of "
    "tm1 / t / tp1 in CLM), S1 VV/VH per date from the real BigEarthNet-S1 patches "
    "(linear sigma0, speckled), the real DEM fixture zoomed to 30 m."
)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the scene, run every method, write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"scene side at 10 m, px (default {DEFAULT_SIZE}; {TILE_PX} is "
                             "a full tile)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.scene, args.workdir, args.block)))
        return 0
    if args.repeat < 1 or args.size < 512 or args.size % 2:
        parser.error("--repeat must be >= 1, --size even and >= 512")
    digest = source_digest()
    others = others_running((*OTHER_BENCHMARKS, "bench_engine"))
    scene = build_scene(args.cache, args.size)
    before = load_average()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        workdir = Path(tmp)
        for i in range(args.repeat):
            for name in METHODS:
                log(f"run {i + 1}/{args.repeat}: {name} ...")
                x = _run_child(name, scene, workdir, None)
                runs[name].append(x)
                log(f"  {name}: {x['seconds']:.1f} s, RSS {x['peak_rss_bytes'] / 2**20:.0f} MiB")
        seams = _seams(scene, workdir, args.size)
    after = load_average()
    px = args.size ** 2
    results: dict[str, Any] = {}
    for name, xs in runs.items():
        secs = [x["seconds"] for x in xs]
        results[name] = {
            "runs_seconds": secs, "median_seconds": median(secs),
            "mpx_per_s": px / 1e6 / median(secs),
            "median_cpu_seconds": median([x["cpu_seconds"] for x in xs]),
            "peak_rss_bytes": max(x["peak_rss_bytes"] for x in xs),
            "last_run": {k: v for k, v in xs[-1].items()
                         if k not in ("seconds", "cpu_seconds", "peak_rss_bytes")},
        }
    m = {n: results[n]["median_seconds"] for n in METHODS}
    eng = runs["engine"][-1]
    from decloud.models.registry import get_config
    from decloud.models.zoo import build

    spec = build(get_config(MODEL))[1]
    full = TILE_PX ** 2 / px
    summary = {
        "speedup": m["baseline"] / m["engine"],
        "speedup_bf16": m["baseline"] / m["engine_bf16"],
        "overlap_ratio": m["engine"] / max(m["compute"], m["floor"]),
        "engine_over_serial": m["engine"] / (m["compute"] + m["floor"]),
        "gapfill_ratio": m["gapfill"] / m["gapfill_floor"],
        "engine_block": eng["block_size"], "engine_margin": eng["margin"],
        "receptive_field_px": spec.receptive_field,
        "halo_engine": _halo_overcompute(args.size, eng["block_size"], eng["margin"],
                                         spec.size_multiple),
        "halo_baseline": _halo_overcompute(args.size, OTBTF_BLOCK, OTBTF_MARGIN,
                                           spec.size_multiple),
        "halo_engine_tile": _halo_overcompute(TILE_PX, eng["block_size"], eng["margin"],
                                              spec.size_multiple),
        "halo_baseline_tile": _halo_overcompute(TILE_PX, OTBTF_BLOCK, OTBTF_MARGIN,
                                                spec.size_multiple),
        "seams": seams,
        "keras_import_seconds": median([x["keras_import_seconds"] for x in runs["gapfill"]]),
        "full_tile_engine_minutes": m["engine"] * full / 60,
        "full_tile_baseline_minutes": m["baseline"] * full / 60,
        "full_tile_minutes_one_repeat": sum(m.values()) * full / 60,
    }
    if source_digest() != digest:
        log("warning: decloud's source changed during the run; results mix two versions")
        digest += "+changed-during-run"
    res = {
        "benchmark": "engine", "scene_version": SCENE_VERSION, "date": now_utc(),
        "git_commit": git_commit(), "decloud_source_sha256": digest,
        "machine": machine_info(), "versions": package_versions(("numpy", "rasterio",
                                                                 "decloud", "keras",
                                                                 "tensorflow")),
        "size": args.size, "repeat": args.repeat, "model": MODEL,
        "load_average": {"before": before, "after": after},
        "other_benchmarks_running": others,
        "scene_description": SCENE_DESCRIPTION, "method_description": METHOD_DESCRIPTION,
        "goals": {"speedup": ">= 3", "overlap_ratio": "<= 1.15", "gapfill_ratio": "<= 1.5",
                  "peak_rss_full_tile": "<= 6 GB"},
        "results": results, "summary": summary,
    }
    paths = write_results("engine", res, _markdown(res), args.results)
    log(f"speed-up {summary['speedup']:.2f}, overlap {summary['overlap_ratio']:.2f}, "
        f"gap-fill {summary['gapfill_ratio']:.2f}; results: {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
