"""Benchmark: read a full Sentinel-2 tile with decloud versus a raw decode of the same files.

Two scenes with the same pixels are built once under ``benchmarks/.cache/read_tile``:

* **cog**: a THEIA L2A folder whose FRE bands are Cloud-Optimized GeoTIFFs (DEFLATE,
  512 px blocks, overviews, int16, nodata -10000), as decloud's own writers make them;
* **jp2**: an ESA SAFE L2A folder (processing baseline 04.00: DN = reflectance x 10000
  + 1000, DN 0 nodata) whose bands are lossless JPEG 2000 files written by GDAL's
  JP2OpenJPEG driver (1024 px tiles), the format of ESA's products.

The pixels are a **mosaic of real Sentinel-2 patches**, not a real tile: 96 x 96 px cells
(48 x 48 at 20 m) cut at random from the 11 real multispectral patches of
``/work/shared/data`` (six BigEarthNet L2A patches, five eo-learn Slovenia dates), each
turned by a random rotation or flip, plus Gaussian noise of 3 DN so that no two copies
of a patch are identical (mirror tiling, the previous recipe, let DEFLATE find the
repetition and made the raw read about 3x too cheap). A straight swath edge crosses
the tile: west of it every band is nodata, as on a real edge tile, so decloud's
nodata path runs. The achieved compression ratios are measured and reported.

Methods, each over every ``--window`` px window of the 10 m grid, all 10 bands (B02,
B03, B04, B08 at 10 m; B05, B06, B07, B8A, B11, B12 at 20 m), inside the same GDAL
environment (``GDAL_NUM_THREADS`` = ``--threads``), files warm in the page cache:

* **raw**: rasterio ``DatasetReader.read`` of the same files over the same ground (the
  10 m window, the 20 m window of half its size), as stored: the decode cost alone;
* **floor**: the raw reads plus writing each band once into a float32 output of the
  10 m window (20 m bands by repeating pixels, no interpolation, no nodata, no
  scaling): the least any reader producing decloud's output must spend;
* **decloud**: ``Product.read`` of the 10 bands with a ``RasterPool``: float32
  reflectance, NaN nodata, 20 m bands bilinear onto 10 m.

The headline is decloud's median time over raw's (goal: at most 1.5).

Usage::

    cd benchmarks && ../.venv/bin/python bench_read_tile.py
        [--size PX] [--formats cog,jp2] [--repeat N] [--window PX] [--threads N]
        [--cache DIR] [--profile]

``--size`` (default 10980, a full tile) makes quick runs on a smaller square scene.
Each run updates the formats it measured in ``results/read_tile.json`` and ``.md``
and keeps the others (each format records its own date, size and load).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import Window

from decloud.env import gdal_env
from decloud.grid import Grid, RasterPool
from decloud.products import open_product

SHARED_DATA = Path("/work/shared/data")
BIGEARTHNET = SHARED_DATA / "bigearthnet_examples" / "BigEarthNet-S2-Example"
EOLEARN = SHARED_DATA / "eolearn_slovenia" / "eolearn_bundle.npz"
FIXTURES = REPO_ROOT / "tests" / "data" / "archive" / "S2"
THEIA_NAME = "SENTINEL2A_20150711-100008-000_L2A_T33TVM_D_V1-8"
THEIA_FIXTURE = FIXTURES / "T33TVM" / THEIA_NAME
SAFE_NAME = "S2A_MSIL2A_20170617T113321_N0400_R080_T29UPU_20170617T140000.SAFE"
SAFE_FIXTURE = FIXTURES / "T29UPU" / SAFE_NAME
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "read_tile"
OTHER_BENCHMARKS = ("bench_read_tile", "bench_stats", "bench_index", "bench_dataset",
                    "bench_train", "train_real")

#: Bump when the scene recipe changes, so that an old cache is rebuilt instead of reused.
SCENE_VERSION = 2
TILE_PX = 10980
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
CELL = 96  # mosaic cell side at 10 m (even, so that 20 m cells align)
NOISE_DN = 3.0
SEED = 0
#: The swath edge runs from this fraction of the width at the top to the other at the
#: bottom; nodata lies west of it (about 25 % of the tile).
EDGE_TOP, EDGE_BOTTOM = 0.35, 0.15


@dataclass(frozen=True)
class SceneFormat:
    """One on-disk form of the scene."""

    key: str
    label: str
    crs: CRS
    origin: tuple[float, float]
    nodata: int
    dn_offset: int  # stored DN = reflectance x 10000 + dn_offset
    dtype: str


FORMATS = {
    "cog": SceneFormat("cog", "THEIA L2A, COG (DEFLATE, 512 px blocks, overviews), int16",
                       CRS.from_epsg(32633), (399960.0, 5109840.0), -10000, 0, "int16"),
    "jp2": SceneFormat("jp2", "ESA SAFE L2A PB 04.00, lossless JPEG 2000 (JP2OpenJPEG, "
                       "1024 px tiles), uint16", CRS.from_epsg(32629), (600000.0, 5900040.0),
                       0, 1000, "uint16"),
}


# --------------------------------------------------------------------------------------
# Scene


def load_patches() -> list[tuple[np.ndarray, np.ndarray]]:
    """The real multispectral patches: (10 m bands, 20 m bands) as float32 reflectance x 10000.

    Six BigEarthNet L2A patches (120 px at 10 m, 60 at 20 m, as delivered) and the five
    eo-learn Slovenia L1C dates (101 x 100 px, every band at 10 m: cut to 100 x 100, the
    20 m bands averaged over 2 x 2 pixels back to 20 m).
    """
    patches = []
    for folder in sorted(p for p in BIGEARTHNET.iterdir() if p.is_dir()):
        def band(name: str, folder: Path = folder) -> np.ndarray:
            with rasterio.open(folder / f"{folder.name}_{name}.tif") as src:
                return src.read(1).astype(np.float32)
        patches.append((np.stack([band(b) for b in BANDS_10M]),
                        np.stack([band(b) for b in BANDS_20M])))
    with np.load(EOLEARN) as bundle:
        names = [str(n) for n in bundle["band_names"]]
        cubes = bundle["bands_l1c"][:, :100, :100] * np.float32(10000)
    for cube in cubes:
        b10 = np.stack([cube[..., names.index(b)] for b in BANDS_10M])
        b20 = np.stack([cube[..., names.index(b)].reshape(50, 2, 50, 2).mean(axis=(1, 3))
                        for b in BANDS_20M])
        patches.append((b10, b20))
    return patches


def mosaic_layout(size: int, n_patches: int) -> np.ndarray:
    """Per cell: patch, crop row, crop column (10 m px, even), rotation, flip."""
    rng = np.random.default_rng(SEED)
    n = -(-size // CELL)
    layout = np.empty((n, n, 5), np.int64)
    layout[..., 0] = rng.integers(0, n_patches, (n, n))
    layout[..., 1:3] = rng.integers(0, 3, (n, n, 2)) * 2  # crop offsets 0, 2, 4 px
    layout[..., 3] = rng.integers(0, 4, (n, n))
    layout[..., 4] = rng.integers(0, 2, (n, n))
    return layout


def render_band(patches: list[tuple[np.ndarray, np.ndarray]], layout: np.ndarray, size: int,
                band: str) -> tuple[np.ndarray, np.ndarray]:
    """One band of the scene at its resolution, and its nodata mask.

    Returns:
        Reflectance x 10000 (float32, with noise, not rounded) and the mask of the
        pixels west of the swath edge.
    """
    res20 = band in BANDS_20M
    which = 1 if res20 else 0
    b = (BANDS_20M if res20 else BANDS_10M).index(band)
    f = 2 if res20 else 1
    cell, n = CELL // f, layout.shape[0]
    out = np.empty((n * cell, n * cell), np.float32)
    for i in range(n):
        for j in range(n):
            p, oy, ox, rot, flip = (int(v) for v in layout[i, j])
            a = patches[p][which][b, oy // f : oy // f + cell, ox // f : ox // f + cell]
            a = np.rot90(a, rot)
            out[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell] = a[:, ::-1] if flip else a
    side = size // f
    out = out[:side, :side]
    rng = np.random.default_rng([SEED, 1 + (BANDS_10M + BANDS_20M).index(band)])
    out += rng.normal(0.0, NOISE_DN, out.shape).astype(np.float32)
    # Pixel centres in 10 m pixel units; nodata west of the line.
    centres = (np.arange(side) + 0.5) * f
    edge = (EDGE_TOP + (EDGE_BOTTOM - EDGE_TOP) * centres / size) * size
    nodata = centres[None, :] < edge[:, None]
    return out, nodata


def _encode(values: np.ndarray, nodata: np.ndarray, fmt: SceneFormat) -> np.ndarray:
    """Reflectance x 10000 to the format's stored DN (rounded, valid DN kept off nodata)."""
    dn = np.rint(values + fmt.dn_offset)
    info = np.iinfo(fmt.dtype)
    low = max(info.min, fmt.nodata + 1) if fmt.nodata <= 0 else info.min
    out = np.clip(dn, low, info.max).astype(fmt.dtype)
    out[nodata] = fmt.nodata
    return out


def _band_file(product: Path, fmt: SceneFormat, band: str) -> Path:
    """Where a band lives in the scene's product folder."""
    if fmt.key == "cog":
        theia = band.replace("B0", "B")
        return product / f"{THEIA_NAME}_FRE_{theia}.tif"
    res = 20 if band in BANDS_20M else 10
    granule = next((SAFE_FIXTURE / "GRANULE").iterdir()).name
    return (product / "GRANULE" / granule / "IMG_DATA" / f"R{res}m"
            / f"T29UPU_20170617T113321_{band}_{res}m.jp2")


def _write_band(path: Path, data: np.ndarray, fmt: SceneFormat, res: int) -> None:
    """Write one band in the scene's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": fmt.dtype,
        "crs": fmt.crs, "transform": from_origin(*fmt.origin, res, res),
    }
    if fmt.key == "cog":
        profile.update(driver="COG", nodata=fmt.nodata, COMPRESS="DEFLATE", BLOCKSIZE=512,
                       NUM_THREADS="ALL_CPUS")  # threads only speed up the build
    else:  # SAFE declares its nodata in MTD_MSIL2A.xml, not in the files
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES", BLOCKXSIZE=1024,
                       BLOCKYSIZE=1024, NUM_THREADS="ALL_CPUS")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _manifest(fmt: SceneFormat, size: int) -> dict[str, Any]:
    """What identifies a built scene; a cached scene is reused only if this matches."""
    return {"scene_version": SCENE_VERSION, "format": fmt.key, "size": size, "cell": CELL,
            "noise_dn": NOISE_DN, "seed": SEED, "edge": [EDGE_TOP, EDGE_BOTTOM]}


def build_scene(cache: Path, fmt: SceneFormat, size: int) -> Path:
    """Build the scene's product folder in ``cache`` unless an identical one is there.

    The product is assembled in a temporary folder and renamed into place at the end,
    so an interrupted build is never mistaken for a finished one.

    Returns:
        The product folder.
    """
    folder = cache / f"{fmt.key}-{size}"
    target = folder / (THEIA_NAME if fmt.key == "cog" else SAFE_NAME)
    manifest_path = folder / "scene.json"
    manifest = _manifest(fmt, size)
    if target.is_dir() and manifest_path.is_file():
        if json.loads(manifest_path.read_text(encoding="utf-8")) == manifest:
            log(f"scene {fmt.key}: reusing {target}")
            return target
        log(f"scene {fmt.key}: cached scene is from another recipe, rebuilding")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder)) / target.name
    t0 = time.perf_counter()
    try:
        tmp.mkdir()
        if fmt.key == "cog":
            shutil.copy2(THEIA_FIXTURE / f"{THEIA_NAME}_MTD_ALL.xml", tmp)
        else:
            shutil.copy2(SAFE_FIXTURE / "MTD_MSIL2A.xml", tmp)
        patches = load_patches()
        layout = mosaic_layout(size, len(patches))
        for k, band in enumerate(BANDS_10M + BANDS_20M, 1):
            res = 20 if band in BANDS_20M else 10
            log(f"scene {fmt.key}: [{k}/10] {band} at {res} m "
                f"({time.perf_counter() - t0:.0f} s)")
            values, nodata = render_band(patches, layout, size, band)
            _write_band(_band_file(tmp, fmt, band), _encode(values, nodata, fmt), fmt, res)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"scene {fmt.key}: built {target} in {time.perf_counter() - t0:.0f} s")
    return target


def band_paths(product: Path, fmt: SceneFormat) -> tuple[list[Path], list[Path]]:
    """The 10 m and 20 m band files, in the order every method reads them."""
    return ([_band_file(product, fmt, b) for b in BANDS_10M],
            [_band_file(product, fmt, b) for b in BANDS_20M])


def _stored_bytes(path: Path, fmt: SceneFormat) -> int:
    """Bytes of a band's full-resolution pixels as stored.

    A COG's overviews are left out (its full-resolution blocks are summed); a JPEG 2000
    codestream holds its resolutions inside the one image, so the whole file counts.
    """
    if fmt.key != "cog":
        return path.stat().st_size
    with rasterio.open(path) as src:
        bh, bw = src.block_shapes[0]
        return sum(src.block_size(1, i, j) for i in range(-(-src.height // bh))
                   for j in range(-(-src.width // bw)))


def reference_ratio(fmt: SceneFormat) -> float:
    """Compression ratio of the real patches alone (10 m bands), stored in the format.

    What real data compresses to with the same codec and settings, to compare the
    scene's ratio with (each patch a small file of its own: DEFLATE GeoTIFF or
    lossless JPEG 2000).
    """
    decoded = stored = 0
    for b10, _ in load_patches():
        for band in b10:
            data = _encode(band, np.zeros(band.shape, bool), fmt)
            profile: dict[str, Any] = {"width": data.shape[1], "height": data.shape[0],
                                       "count": 1, "dtype": fmt.dtype, "crs": fmt.crs,
                                       "transform": from_origin(*fmt.origin, 10, 10)}
            if fmt.key == "cog":
                profile.update(driver="GTiff", compress="deflate")
            else:
                profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
            with MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    dst.write(data, 1)
                stored += len(mem.read())
            decoded += data.nbytes
    return round(decoded / stored, 2)


def scene_facts(product: Path, fmt: SceneFormat) -> dict[str, Any]:
    """Bytes on disk, compression ratios (decoded / stored) and the nodata fraction."""
    paths10, paths20 = band_paths(product, fmt)
    decoded = stored = on_disk = 0
    per_res: dict[str, float] = {}
    for res, paths in (("10m", paths10), ("20m", paths20)):
        d = s = 0
        for path in paths:
            with rasterio.open(path) as src:
                d += src.width * src.height * np.dtype(src.dtypes[0]).itemsize
            s += _stored_bytes(path, fmt)
            on_disk += path.stat().st_size
        per_res[res] = round(d / s, 2)
        decoded, stored = decoded + d, stored + s
    with rasterio.open(paths10[0]) as src:
        step = max(1, src.width // 1000)
        sample = src.read(1, out_shape=(src.height // step, src.width // step))
    nodata_fraction = float(np.mean(sample == fmt.nodata))
    valid = 1 - nodata_fraction
    return {
        "bytes_on_disk": on_disk,
        "compression_ratio": round(decoded / stored, 2),
        "compression_ratio_by_resolution": per_res,
        # Nodata areas compress to almost nothing: the ratio over the valid pixels.
        "compression_ratio_valid_pixels": round(decoded * valid / stored, 2),
        "real_patches_compression_ratio": reference_ratio(fmt),
        "nodata_fraction": round(nodata_fraction, 3),
    }


# --------------------------------------------------------------------------------------
# The read methods


def _grid(product: Path, fmt: SceneFormat) -> Grid:
    paths10, _ = band_paths(product, fmt)
    return Grid.from_raster(paths10[0])


def _windows(grid: Grid, window: int) -> Iterator[Window]:
    """The core windows of the 10 m grid, row-major, as decloud tiles it."""
    for core, _ in grid.windows(window):
        yield core


def _half(window: Window, limit: int) -> Window:
    """The 20 m window covering the same ground as a 10 m window (even offsets)."""
    col, row = int(window.col_off) // 2, int(window.row_off) // 2
    width = min((int(window.width) + 1) // 2, limit - col)
    height = min((int(window.height) + 1) // 2, limit - row)
    return Window(col, row, width, height)


def _decloud(product: Path, window: int, reuse: bool) -> int:
    """Read the whole tile through decloud; return the pixels of the 10 m grid read."""
    names = list(BANDS_10M + BANDS_20M)
    image = open_product(product)
    buffer = np.empty((len(names), window, window), np.float32) if reuse else None
    pixels = 0
    with RasterPool() as pool:
        grid = image.grid(pool=pool)
        for core in _windows(grid, window):
            h, w = int(core.height), int(core.width)
            out = image.read(names, grid, core, pool=pool,
                             out=None if buffer is None else buffer[:, :h, :w])
            pixels += out.shape[1] * out.shape[2]
    return pixels


def read_decloud(product: Path, fmt: SceneFormat, window: int) -> int:
    """Read with decloud into one output buffer reused across windows (``out=``)."""
    return _decloud(product, window, reuse=True)


def read_decloud_new_arrays(product: Path, fmt: SceneFormat, window: int) -> int:
    """Read with decloud's default call: a new output array per window."""
    return _decloud(product, window, reuse=False)


def read_decloud_numpy(product: Path, fmt: SceneFormat, window: int) -> int:
    """Read with decloud into a reused buffer through its numpy path (no compiled loops).

    decloud.grid falls back to numpy when decloud._kernels is not built; the same bits,
    more passes over the pixels. Measured here to show what the compiled loops save.
    """
    import decloud.grid

    compiled = decloud.grid._kernels
    decloud.grid._kernels = None
    try:
        return _decloud(product, window, reuse=True)
    finally:
        decloud.grid._kernels = compiled


def _raw(product: Path, fmt: SceneFormat, window: int, floor: bool) -> int:
    """The raw reads, and with ``floor`` the float32 output written once per band."""
    paths10, paths20 = band_paths(product, fmt)
    srcs10 = [rasterio.open(p) for p in paths10]
    srcs20 = [rasterio.open(p) for p in paths20]
    grid = Grid.from_dataset(srcs10[0])
    limit = srcs20[0].width
    buffer = np.empty((10, window, window), np.float32) if floor else None
    pixels = 0
    try:
        for core in _windows(grid, window):
            half = _half(core, limit)
            h, w = int(core.height), int(core.width)
            out = None if buffer is None else buffer[:, :h, :w]
            for i, src in enumerate(srcs10):
                data = src.read(1, window=core)
                if out is not None:
                    out[i] = data
            for i, src in enumerate(srcs20, len(srcs10)):
                data = src.read(1, window=half)
                if out is not None:  # one write per output pixel: nearest, by slices
                    for dr in (0, 1):
                        for dc in (0, 1):
                            part = out[i, dr::2, dc::2]
                            part[...] = data[: part.shape[0], : part.shape[1]]
            pixels += h * w
    finally:
        for src in srcs10 + srcs20:
            src.close()
    return pixels


def read_raw(product: Path, fmt: SceneFormat, window: int) -> int:
    """Decode the same files over the same windows with rasterio only; return 10 m pixels."""
    return _raw(product, fmt, window, floor=False)


def read_floor(product: Path, fmt: SceneFormat, window: int) -> int:
    """The raw reads plus one float32 write of every output pixel; return 10 m pixels."""
    return _raw(product, fmt, window, floor=True)


METHODS: dict[str, Callable[[Path, SceneFormat, int], int]] = {
    "raw": read_raw, "floor": read_floor, "decloud": read_decloud,
    "decloud_new_arrays": read_decloud_new_arrays, "decloud_numpy": read_decloud_numpy,
}


def check_same_data(product: Path, fmt: SceneFormat, window: int) -> None:
    """Make sure decloud and raw read the same pixels (else the comparison means nothing).

    On a window crossing the swath edge, decloud's 10 m bands must equal raw DN x
    scale + offset with NaN exactly at nodata, and its 20 m bands must be NaN only
    near nodata and have the raw window's mean over valid pixels to within 1 %.
    """
    grid = _grid(product, fmt)
    size = grid.width
    row = (size // 2) // window * window
    edge = int((EDGE_TOP + EDGE_BOTTOM) / 2 * size)
    core = Window(max(0, edge - window // 2) // 2 * 2, row, min(window, size), min(window, size))
    image = open_product(product)
    got = image.read(list(BANDS_10M + BANDS_20M), grid, core)
    paths10, paths20 = band_paths(product, fmt)
    nodata_seen = 0
    for k, path in enumerate(paths10):
        with rasterio.open(path) as src:
            dn = src.read(1, window=core)
        expected = (dn.astype(np.float32) - np.float32(fmt.dn_offset)) * np.float32(1e-4)
        missing = dn == fmt.nodata
        nodata_seen += int(missing.sum())
        if not (np.array_equal(np.isnan(got[k]), missing)
                and np.allclose(got[k][~missing], expected[~missing], rtol=1e-6, atol=1e-6)):
            raise RuntimeError(f"decloud and raw disagree on {path.name}")
    for k, path in enumerate(paths20, len(paths10)):
        with rasterio.open(path) as src:
            dn = src.read(1, window=_half(core, src.width)).astype(np.float64)
        valid = dn != fmt.nodata
        raw_mean = ((dn[valid] - fmt.dn_offset) * 1e-4).mean()
        if not np.isclose(np.nanmean(got[k]), raw_mean, rtol=0.01):
            raise RuntimeError(f"decloud's resampled {path.name} does not match the raw read")
    if nodata_seen == 0 and fmt.nodata is not None:
        log(f"check {fmt.key}: warning, the check window has no nodata")
    log(f"check {fmt.key}: decloud and raw read the same pixels "
        f"({nodata_seen} nodata px at 10 m in the check window)")


def warm_files(product: Path) -> None:
    """Read every file once, so all timed runs find them in the OS page cache."""
    for path in sorted(p for p in product.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass


def profile_window(product: Path, fmt: SceneFormat, window: int, out: Path) -> str:
    """Profile decloud's read of one interior window (files already open); save the report."""
    names = list(BANDS_10M + BANDS_20M)
    image = open_product(product)
    with RasterPool() as pool:
        grid = image.grid(pool=pool)
        cores = list(_windows(grid, window))
        image.read(names, grid, cores[0], pool=pool)  # opens the files outside the profile
        core = cores[len(cores) // 2]
        prof = cProfile.Profile()
        prof.enable()
        image.read(names, grid, core, pool=pool)
        prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    text = f"# {fmt.key}: decloud's read of window {core}\n" + buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        f.write(text)
    return text


# --------------------------------------------------------------------------------------
# Running and reporting


def _time(method: str, product: Path, fmt: SceneFormat, window: int, size: int) -> dict[str, float]:
    """Run one full-tile read; return wall and CPU seconds."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    pixels = METHODS[method](product, fmt, window)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if pixels != size * size:
        raise RuntimeError(f"{method} covered {pixels} px, not the whole tile")
    return {"seconds": wall, "cpu_seconds": cpu}


def measure(fmt: SceneFormat, product: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Time the methods on one scene; return that format's result record."""
    size = args.size
    check_same_data(product, fmt, args.window)
    warm_files(product)
    # One untimed raw pass: first-use costs (GDAL drivers, the check above has done
    # decloud's imports and PROJ) are not what is measured.
    read_raw(product, fmt, args.window)
    load_before = load_average()
    others_before = others_running(OTHER_BENCHMARKS)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    order = list(METHODS)
    for i in range(args.repeat):
        # Rotate the order so that drift (thermal, neighbours) hits every method alike.
        for method in order[i % len(order):] + order[: i % len(order)]:
            t = _time(method, product, fmt, args.window, size)
            runs[method].append(t)
            log(f"{fmt.key} run {i + 1}/{args.repeat} {method}: {t['seconds']:.2f} s "
                f"(CPU {t['cpu_seconds']:.2f} s)")
    load_after = load_average()
    others = sorted(set(others_before) | set(others_running(OTHER_BENCHMARKS)))
    px = size * size
    results: dict[str, Any] = {}
    for name, ts in runs.items():
        secs = [t["seconds"] for t in ts]
        med = median(secs)
        results[name] = {
            "runs_seconds": [round(x, 4) for x in secs],
            "runs_cpu_seconds": [round(t["cpu_seconds"], 4) for t in ts],
            "median_seconds": round(med, 4),
            "median_cpu_seconds": round(median([t["cpu_seconds"] for t in ts]), 4),
            "mpx_per_s": round(px / med / 1e6, 3),
        }
    raw = results["raw"]["median_seconds"]
    # CPU time is what the process itself spent: on a loaded machine it is the fairer
    # measure (wall time includes waiting for the CPU).
    raw_cpu = results["raw"]["median_cpu_seconds"]
    results["ratio"] = round(results["decloud"]["median_seconds"] / raw, 3)
    results["ratio_cpu"] = round(results["decloud"]["median_cpu_seconds"] / raw_cpu, 3)
    results["floor_ratio"] = round(results["floor"]["median_seconds"] / raw, 3)
    results["decloud_over_floor"] = round(results["decloud"]["median_seconds"]
                                          / results["floor"]["median_seconds"], 3)
    results["decloud_extra_seconds"] = round(results["decloud"]["median_seconds"] - raw, 3)
    results["decloud_extra_cpu_seconds"] = round(
        results["decloud"]["median_cpu_seconds"] - raw_cpu, 3)
    results["floor_ratio_cpu"] = round(results["floor"]["median_cpu_seconds"] / raw_cpu, 3)
    results["numpy_ratio"] = round(results["decloud_numpy"]["median_seconds"] / raw, 3)
    results["numpy_ratio_cpu"] = round(results["decloud_numpy"]["median_cpu_seconds"]
                                       / raw_cpu, 3)
    import decloud.grid

    results["compiled_loops"] = decloud.grid._kernels is not None
    return {
        "date": now_utc(),
        "size": size,
        "window": args.window,
        "n_windows": sum(1 for _ in _windows(_grid(product, fmt), args.window)),
        "repeat": args.repeat,
        "gdal_num_threads": args.threads,
        "load_average": {"before": load_before, "after": load_after},
        "other_benchmarks_running": others,
        "scene": {"format": fmt.label, "product": product.name, "crs": fmt.crs.to_string(),
                  "origin": list(fmt.origin), "nodata_dn": fmt.nodata,
                  "dn_offset": fmt.dn_offset, **scene_facts(product, fmt),
                  "cache": str(product)},
        "results": results,
    }


def _markdown(res: dict[str, Any]) -> str:
    """Render the results as a Markdown report."""
    m, v = res["machine"], res["versions"]
    lines = [
        "# Benchmark: read a full Sentinel-2 tile",
        "",
        f"- Git commit: `{res['git_commit']}`, decloud source SHA-256 "
        f"`{res['decloud_source_sha256']}` (its `*.py` files, as measured)",
        f"- Machine: {machine_line(m)}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "## Scene",
        "",
        res["scene_description"],
        "",
        "## Method",
        "",
        res["method_description"],
        "",
        "## Results",
        "",
        "| format | size px | date | load (1 min) before / after | method | median s "
        "| Mpx/s | runs (s) | CPU s (median) |",
        "|---|---:|---|---|---|---:|---:|---|---:|",
    ]
    for key, f in res["formats"].items():
        r = f["results"]
        load = f"{f['load_average']['before'][0]} / {f['load_average']['after'][0]}" \
            if f["load_average"]["before"] and f["load_average"]["after"] else "n/a"
        for name in (n for n in METHODS if n in r):
            x = r[name]
            runs = ", ".join(f"{t:.2f}" for t in x["runs_seconds"])
            lines.append(f"| {key} | {f['size']} | {f['date']} | {load} | {name} | "
                         f"{x['median_seconds']:.2f} | {x['mpx_per_s']:.1f} | {runs} | "
                         f"{x['median_cpu_seconds']:.2f} |")
    lines.append("")
    for key, f in res["formats"].items():
        r, s = f["results"], f["scene"]
        verdict = "met" if r["ratio"] <= 1.5 else "NOT met"
        verdict_cpu = "met" if r["ratio_cpu"] <= 1.5 else "NOT met"
        lines += [
            f"**{key}: decloud takes {r['ratio']:.2f}x the raw decode's wall time and "
            f"{r['ratio_cpu']:.2f}x its CPU time** (goal <= 1.5: {verdict} in wall time, "
            f"{verdict_cpu} in CPU time, the steadier figure on a loaded machine); the "
            "physical floor (raw + one "
            f"float32 write per output pixel) is {r['floor_ratio']:.2f}x raw, decloud is "
            f"{r['decloud_over_floor']:.2f}x the floor (wall time; in CPU time the floor is "
            f"{r.get('floor_ratio_cpu', float('nan')):.2f}x raw) and adds "
            f"{r.get('decloud_extra_cpu_seconds', float('nan')):.2f} CPU s "
            f"({r['decloud_extra_seconds']:.2f} s wall) per tile to the decode.",
            f"- decloud's compiled loops (decloud._kernels): "
            f"{'used' if r.get('compiled_loops') else 'NOT BUILT, numpy path measured'}; "
            f"its numpy path alone (decloud_numpy) takes {r.get('numpy_ratio', float('nan')):.2f}x "
            f"raw ({r.get('numpy_ratio_cpu', float('nan')):.2f}x in CPU time).",
            f"- Scene: {s['format']}; {s['bytes_on_disk'] / 2**20:.0f} MiB on disk, "
            f"full-resolution compression ratio {s['compression_ratio']}:1 overall "
            f"({s['compression_ratio_valid_pixels']}:1 over the valid pixels; by "
            f"resolution {s['compression_ratio_by_resolution']}; the real patches alone: "
            f"{s.get('real_patches_compression_ratio', 'n/a')}:1), nodata "
            f"{100 * s['nodata_fraction']:.0f} % of the tile.",
            f"- {f['n_windows']} windows of {f['window']} px, {f['repeat']} runs of each "
            f"method, GDAL_NUM_THREADS={f['gdal_num_threads']}; other benchmarks running: "
            f"{', '.join(f['other_benchmarks_running']) or 'none'}.",
            "",
        ]
    if res.get("profile_file"):
        lines += [f"Profile of one decloud window: `{res['profile_file']}`.", ""]
    return "\n".join(lines)


SCENE_DESCRIPTION = (
    "A mosaic of real Sentinel-2 patches, not a real tile: 96 x 96 px cells (48 x 48 at "
    "20 m) cut at random from the 11 real multispectral patches in /work/shared/data (six "
    "BigEarthNet L2A patches from tiles 33UUP, 29UPU, 29SND, 35VPK; five eo-learn Slovenia "
    "L1C dates, 20 m bands averaged back to 20 m), each rotated or flipped at random, with "
    "Gaussian noise of 3 DN (0.0003 reflectance, below the sensor's own noise) so that no "
    "two copies are identical, and a straight swath edge with nodata to its west. The "
    "same pixels are written as a THEIA folder of COGs (cog) and as a SAFE folder of "
    "lossless JPEG 2000 files (jp2), each with the real product's DN encoding. The "
    "compression ratios below are measured on the files; the real 1 km fixture bands "
    "compress about 1.3:1 with DEFLATE."
)

METHOD_DESCRIPTION = (
    "All methods run in one process inside decloud's GDAL environment with the same "
    "GDAL_NUM_THREADS, files warm in the OS page cache (read once, plus one untimed raw "
    "pass), each run opening its datasets afresh; wall-clock and CPU seconds; "
    "runs alternate between methods.\n\n"
    "- raw: rasterio DatasetReader.read(1, window) of the 10 m window and of the 20 m "
    "window covering the same ground, for the 10 bands, as stored (no conversion): the "
    "decode alone.\n"
    "- floor: raw plus writing every output pixel once into a float32 (10, h, w) buffer "
    "reused across windows (20 m bands by repeating pixels): the least any reader "
    "producing float32 on the 10 m grid must spend.\n"
    "- decloud: open_product, then Product.read(10 bands, grid, window, pool=RasterPool, "
    "out=buffer) for each window, into one float32 buffer reused across windows (as a "
    "streaming engine does): float32 reflectance, NaN nodata, 20 m bands bilinear onto "
    "10 m.\n"
    "- decloud_new_arrays: the same without out=, a new array per window (the default "
    "call); the difference is the cost of allocating, and the system zeroing, 40 MiB "
    "per window.\n"
    "- decloud_numpy: decloud with its compiled loops (decloud._kernels: cast, scale, "
    "nodata and the 20 m upsampling in one pass per pixel) switched off: the numpy path, "
    "the same bits in more passes.\n"
    "- Mpx/s = output pixels of the 10 m grid (all 10 bands together) / second; ratio = "
    "decloud median seconds / raw median seconds."
)


def _previous(path: Path) -> dict[str, Any]:
    """Formats measured by an earlier run of this version of the benchmark."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    formats = old.get("formats")
    return dict(formats) if old.get("scene_version") == SCENE_VERSION and formats else {}


def _previous_profile(path: Path) -> str | None:
    """The profile report an earlier run wrote, kept by runs that do not profile."""
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("profile_file")
    except (OSError, ValueError):
        return None
    return found if isinstance(found, str) else None


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the scenes, time the methods, write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size", type=int, default=TILE_PX,
                        help=f"scene side at 10 m, px (default {TILE_PX}, a full tile; even)")
    parser.add_argument("--formats", default="cog,jp2",
                        help="comma-separated scene formats: cog, jp2 (default both)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method (default 3)")
    parser.add_argument("--window", type=int, default=1024,
                        help="window side on the 10 m grid, px (default 1024, even)")
    parser.add_argument("--threads", type=int, default=1,
                        help="GDAL_NUM_THREADS for every method (default 1)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="scene cache folder (default benchmarks/.cache/read_tile)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile decloud's read of one window per format")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if any(f not in FORMATS for f in formats) or not formats:
        parser.error(f"--formats takes {', '.join(FORMATS)}")
    if args.repeat < 1 or args.window < 2 or args.window % 2 or args.size < 2 or args.size % 2:
        parser.error("--repeat must be >= 1, --window and --size even and >= 2")
    if args.threads < 1:
        parser.error("--threads must be >= 1")

    digest = source_digest()  # before and after: others may edit decloud meanwhile
    json_path = args.results / "read_tile.json"
    measured = _previous(json_path)
    profile_file = _previous_profile(json_path) if measured else None
    if args.profile:
        profile_path = args.results / "read_tile_profile.txt"
        profile_path.unlink(missing_ok=True)
        profile_file = str(profile_path.relative_to(REPO_ROOT)) \
            if profile_path.is_relative_to(REPO_ROOT) else str(profile_path)
    for key in formats:
        fmt = FORMATS[key]
        product = build_scene(args.cache, fmt, args.size)
        with gdal_env(GDAL_NUM_THREADS=str(args.threads)):
            record = measure(fmt, product, args)
            if args.profile:
                print(profile_window(product, fmt, args.window, profile_path))
        record["decloud_source_sha256"] = digest
        measured[key] = record
        r = record["results"]
        log(f"{key}: ratio {r['ratio']:.2f} (floor {r['floor_ratio']:.2f}), decloud "
            f"{r['decloud']['mpx_per_s']:.1f} Mpx/s, raw {r['raw']['mpx_per_s']:.1f} Mpx/s")
    if source_digest() != digest:
        log("warning: decloud's source changed during the run; results mix two versions")
        digest += "+changed-during-run"
        for key in formats:
            measured[key]["decloud_source_sha256"] = digest
    res: dict[str, Any] = {
        "benchmark": "read_tile",
        "scene_version": SCENE_VERSION,
        "git_commit": git_commit(),
        "decloud_source_sha256": digest,
        "machine": machine_info(),
        "versions": package_versions(),
        "scene_description": SCENE_DESCRIPTION,
        "method_description": METHOD_DESCRIPTION,
        "goal": "decloud median time <= 1.5 x raw decode time, on both formats",
        "formats": {k: measured[k] for k in FORMATS if k in measured},
        "profile_file": profile_file,
    }
    paths = write_results("read_tile", res, _markdown(res), args.results)
    log(f"results: {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
