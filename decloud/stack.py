"""Aligned S1 + S2 (+ DEM) stacks of one tile and date, streamed window by window.

The stack of ``<TILE>`` on ``<date>`` is a folder ``<TILE>_<YYYYMMDD>/`` of COGs on
the S2 product's 10 m grid (or its 20 m grid), named by decloud's keys:

=============== ======= ========================================================
file            dtype   content
=============== ======= ========================================================
``s2.tif``      int16   reflectance x 10000 of the S2 bands, nodata -10000
``s2_mask.tif`` uint8   :class:`~decloud.constants.MaskClass` (255 = nodata)
``s1.tif``      uint16  VV, VH in the prepared encoding (:mod:`decloud.s1`)
``dem.tif``     float32 elevation in metres, nodata -32768
=============== ======= ========================================================

plus ``s2_rgb.png`` and ``s1_false_colour.png`` quicklooks and ``stack.json``, a
manifest of the inputs. The folder appears only once complete.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from tqdm import tqdm

from decloud.archive import Archive, normalize_tile
from decloud.constants import (
    DEM_NODATA,
    MASK_NODATA,
    S1_NODATA,
    S1_POLARISATIONS,
    S2_BANDS,
    S2_NODATA,
    S2_RGB,
    S2_SCALE,
    normalize_band_name,
)
from decloud.env import ensure_env
from decloud.grid import Grid, RasterPool
from decloud.inputs import AcquisitionProducts, InputKey, InputProducts, read_inputs
from decloud.keys import KeyKind, make_key
from decloud.products import Dem, S1Product, S2Product
from decloud.quicklook import s1_false_colour, s2_true_colour, write_png
from decloud.s1 import PREPARED_ENCODING_TAG, decode_prepared, linear_to_db
from decloud.writers import CogWriter, atomic_dir, provenance_tags

__all__ = ["StackResult", "build_stack"]

#: Longest side of a quicklook, pixels.
QUICKLOOK_SIZE = 1024

# The stack's keys: one date, so no acquisition.
KEY_S2, KEY_S2_MASK, KEY_S1, KEY_DEM = (
    make_key(k) for k in (KeyKind.S2, KeyKind.S2_MASK, KeyKind.S1, KeyKind.DEM))


@dataclass
class StackResult:
    """What :func:`build_stack` wrote."""

    folder: Path
    s2: S2Product
    s1: S1Product | None
    dem: Dem | None
    bands: list[str]
    files: dict[str, Path] = field(default_factory=dict)


@ensure_env
def build_stack(
    archive: Archive,
    tile: str,
    day: date,
    out_dir: Path,
    *,
    resolution: float = 10.0,
    s1_max_gap: timedelta = timedelta(hours=72),
    bands: tuple[str, ...] | None = None,
    window_size: int = 1024,
    overwrite: bool = False,
    progress: bool = False,
) -> StackResult:
    """Write the aligned stack of a tile and date.

    Args:
        archive: A scanned archive.
        tile: Tile id.
        day: Acquisition date of the S2 product.
        out_dir: Parent folder of the stack folder.
        resolution: 10 (the S2 10 m grid) or 20 m.
        s1_max_gap: Largest S1-S2 time gap; the closest S1 image within it is used.
        bands: S2 bands to stack, :data:`S2_BANDS` (all ten) when None.
        window_size: Side of the windows streamed.
        overwrite: Replace an existing stack folder.
        progress: Show a progress bar.

    Returns:
        The written files and the products used.
    """
    tile = normalize_tile(tile)
    s2 = archive.find_s2(tile, day)
    s1 = archive.nearest_s1(tile, s2.acquired, s1_max_gap)
    dem = archive.dem(tile)
    bands = tuple(normalize_band_name(b) for b in (bands or S2_BANDS))
    for b in bands:
        s2.band(b)  # raises MissingBandError naming the product and band
    grid = s2.grid(resolution)
    name = f"{tile}_{s2.acquired:%Y%m%d}"
    inputs = [str(s2.path)] + ([*s1.files] if s1 else []) + ([str(dem.path)] if dem else [])
    dates = [s2.acquired.isoformat()] + ([s1.acquired.isoformat()] if s1 else [])
    result = StackResult(folder=Path(out_dir) / name, s2=s2, s1=s1, dem=dem, bands=list(bands))
    # The stack's keys carry no acquisition and are all read at the stack's resolution.
    keys = [InputKey.of(KEY_S2, bands, resolution), InputKey.of(KEY_S2_MASK, resolution=resolution)]
    keys += [InputKey.of(KEY_S1, resolution=resolution)] if s1 else []
    keys += [InputKey.of(KEY_DEM, resolution=resolution)] if dem else []
    products = InputProducts({None: AcquisitionProducts(s2, s1)}, dem)
    with atomic_dir(result.folder, overwrite=overwrite) as tmp, RasterPool() as pool:
        writers = _writers(tmp, grid, bands, s2, s1, dem, inputs, dates)
        windows = list(grid.windows(window_size))
        # Every COG is finalised when the block ends, or discarded if it raises.
        with ExitStack() as open_writers:
            for writer in writers.values():
                open_writers.enter_context(writer)
            for window, _ in tqdm(windows, desc=name, disable=not progress, unit="window"):
                arrays = read_inputs(keys, products, grid, window, pool=pool)
                for key, array in arrays.items():
                    # Channels-last views of channels-first reads: back to (C, H, W).
                    writers[key].write(np.moveaxis(array, -1, 0), window)
        files = {key: tmp / f"{key}.tif" for key in writers}
        files.update(_quicklooks(tmp, files, bands))
        manifest = _manifest(name, grid, bands, s2, s1, dem, files)
        (tmp / "stack.json").write_text(json.dumps(manifest, indent=2))
        files["manifest"] = tmp / "stack.json"
    result.files = {k: result.folder / v.name for k, v in files.items()}
    return result


def _writers(
    folder: Path, grid: Grid, bands: tuple[str, ...], s2: S2Product, s1: S1Product | None,
    dem: Dem | None, inputs: list[str], dates: list[str],
) -> dict[str, CogWriter]:
    tags = provenance_tags(inputs, dates, tile=s2.tile or "", grid=grid.crs.to_string(),
                           s2_level=s2.level)
    writers = {
        KEY_S2: CogWriter(folder / "s2.tif", grid, len(bands), "int16", S2_NODATA,
                          band_names=list(bands),
                          tags={**tags, "DECLOUD_KEY": KEY_S2, "DECLOUD_SCALE": str(S2_SCALE)}),
        KEY_S2_MASK: CogWriter(folder / "s2_mask.tif", grid, 1, "uint8", MASK_NODATA,
                               band_names=["mask"],
                               tags={**tags, "DECLOUD_KEY": KEY_S2_MASK,
                                     "DECLOUD_MASK_ORIGIN": s2.mask_origin},
                               overview_resampling=Resampling.nearest),
    }
    if s1 is not None:
        writers[KEY_S1] = CogWriter(folder / "s1.tif", grid, 2, "uint16", S1_NODATA,
                                    band_names=list(S1_POLARISATIONS),
                                    tags={**tags, "DECLOUD_KEY": KEY_S1,
                                          PREPARED_ENCODING_TAG: "ln_clip"},
                                    overview_resampling=Resampling.nearest)
    if dem is not None:
        writers[KEY_DEM] = CogWriter(folder / "dem.tif", grid, 1, "float32", DEM_NODATA,
                                     band_names=["elevation"],
                                     tags={**tags, "DECLOUD_KEY": KEY_DEM})
    return writers


def _decimated(path: Path, indexes: list[int]) -> np.ndarray:
    """Read bands at most QUICKLOOK_SIZE px on a side (from overviews when present)."""
    with rasterio.open(path) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / QUICKLOOK_SIZE)))
        shape = (len(indexes), max(1, src.height // factor), max(1, src.width // factor))
        data = src.read(indexes, out_shape=shape, masked=True,
                        resampling=Resampling.nearest).astype(np.float32)
    return data.filled(np.nan)


def _quicklooks(folder: Path, files: dict[str, Path], bands: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if all(b in bands for b in S2_RGB):
        rgb = _decimated(files[KEY_S2], [bands.index(b) + 1 for b in S2_RGB]) / S2_SCALE
        out["s2_rgb"] = write_png(folder / "s2_rgb.png", s2_true_colour(rgb))
    if KEY_S1 in files:
        vv, vh = linear_to_db(decode_prepared(_decimated(files[KEY_S1], [1, 2])))
        out["s1_false_colour"] = write_png(folder / "s1_false_colour.png",
                                           s1_false_colour(vv, vh))
    return out


def _manifest(
    name: str, grid: Grid, bands: tuple[str, ...], s2: S2Product, s1: S1Product | None,
    dem: Dem | None, files: dict[str, Path],
) -> dict[str, Any]:
    return {
        "name": name,
        "tile": s2.tile,
        "grid": {"crs": grid.crs.to_string(), "transform": list(grid.transform)[:6],
                 "width": grid.width, "height": grid.height},
        "files": {k: v.name for k, v in files.items()},
        "s2": {"product": str(s2.path), "acquired": s2.acquired.isoformat(), "bands": bands,
               "scale": S2_SCALE, "nodata": S2_NODATA, "mask_origin": s2.mask_origin,
               "level": s2.level},
        "s1": None if s1 is None else {
            "files": s1.files, "acquired": s1.acquired.isoformat(),
            "gap_hours": round(abs(s1.acquired - s2.acquired).total_seconds() / 3600, 2),
            "pass_direction": s1.pass_direction, "relative_orbit": s1.relative_orbit,
            "encoding": "prepared uint16 (decloud.s1)", "bands": list(S1_POLARISATIONS),
        },
        "dem": None if dem is None else {"file": str(dem.path), "nodata": DEM_NODATA},
    }

