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
manifest of the inputs. The folder appears only once complete: a failed write (a full
disk) is one :class:`~decloud.errors.OutputWriteError` naming the stack folder and the
cause, and leaves no partial folder.

**Broken sources fail by default.** A source the stack would have used that exists
but cannot be read (an S1 file within the time gap that is truncated, a DEM without a
CRS) is a :class:`~decloud.errors.BrokenSourceError` naming the file and the cause:
that is not the same as no S1 image within the gap, and a stack silently without it
would look like one. With ``skip_broken_sources`` (``--skip-broken-sources``) the
stack is written without that source, the skip is warned about
(:class:`~decloud.errors.SkippedSourceWarning`) and recorded in ``stack.json``
(``skipped_sources``) and in every COG's ``DECLOUD_SKIPPED_SOURCES`` tag.
"""

from __future__ import annotations

import errno
import json
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from tqdm import tqdm

from decloud.archive import PRODUCT_FAULTS, Archive, fault_reason, normalize_tile
from decloud.constants import (
    DEM_NODATA,
    MASK_NODATA,
    S1_NODATA,
    S1_POLARISATIONS,
    S2_10M_BANDS,
    S2_20M_BANDS,
    S2_BANDS,
    S2_NODATA,
    S2_RGB,
    S2_SCALE,
    normalize_band_name,
)
from decloud.env import ensure_env
from decloud.errors import (
    BrokenSourceError,
    DecloudError,
    MissingBandError,
    OutputWriteError,
    SkippedSourceWarning,
)
from decloud.grid import Grid, RasterPool
from decloud.inputs import AcquisitionProducts, InputKey, InputProducts, read_inputs
from decloud.keys import KeyKind, make_key
from decloud.products import Dem, S1Product, S2Product
from decloud.products.checks import check_files
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
    #: Sources that exist but could not be read, left out (``skip_broken_sources``):
    #: ``{"sensor": "s1" | "dem", "file": ..., "reason": ...}``.
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Sources:
    """The S1 image and DEM a stack uses, and the broken ones it leaves out."""

    s1: S1Product | None
    dem: Dem | None
    skipped: list[dict[str, str]]


def _usable(source: S1Product | Dem, sensor: str) -> dict[str, str] | None:
    """Why a chosen source cannot be read (header and last block of each file), or None.

    The file named is the one that failed (the VV file, not its VH twin).
    """
    try:
        check_files(source)
    except PRODUCT_FAULTS as err:
        where = err.path if isinstance(err, DecloudError) and err.path else str(source.path)
        return {"sensor": sensor, "file": where, "reason": fault_reason(where, err)}
    return None


def _sources(archive: Archive, tile: str, s2: S2Product, max_gap: timedelta,
             skip_broken: bool) -> _Sources:
    """Choose the S1 image and DEM; a broken one fails, or is skipped and recorded."""
    hours = max_gap.total_seconds() / 3600
    broken: list[dict[str, str]] = []
    s1 = archive.nearest_s1(tile, s2.acquired, max_gap)
    gap = abs(s1.acquired - s2.acquired) if s1 is not None else None
    # A broken S1 file closer than the one chosen would have been used instead.
    for problem in archive.broken_s1(tile, s2.acquired, max_gap):
        parsed_gap = _s1_gap(problem.path, s2)
        if gap is None or parsed_gap < gap:
            broken.append({"sensor": "s1", "file": str(problem.path),
                           "reason": problem.reason})
    if s1 is not None:
        bad = _usable(s1, "s1")
        if bad is not None:
            broken.append(bad)
            s1 = None
    dem = archive.dem(tile)
    if dem is None:
        broken += [{"sensor": "dem", "file": str(p.path), "reason": p.reason}
                   for p in archive.broken_dems(tile)]
    else:
        bad = _usable(dem, "dem")
        if bad is not None:
            broken.append(bad)
            dem = None
    if broken and not skip_broken:
        first = broken[0]
        within = f" within {hours:g} h" if first["sensor"] == "s1" else ""
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise BrokenSourceError(
            f"{first['sensor'].upper()} {Path(first['file']).name}{within} cannot be read: "
            f"{first['reason']}{more}; repair or remove it, or pass --skip-broken-sources "
            "(skip_broken_sources=True) to stack without it", path=first["file"],
            field=first["sensor"])
    for item in broken:
        warnings.warn(f"stack of {tile} on {s2.acquired:%Y-%m-%d}: {item['sensor'].upper()} "
                      f"{item['file']} cannot be read ({item['reason']}); stacked without it",
                      SkippedSourceWarning, stacklevel=3)
    # The closest readable S1 image among the others, when the chosen one was broken.
    if s1 is None and any(b["sensor"] == "s1" for b in broken):
        unreadable = {b["file"] for b in broken}
        candidates = [p for p in archive.s1 if p.tile == tile and not set(p.files) & unreadable
                      and abs(p.acquired - s2.acquired) <= max_gap
                      and _usable(p, "s1") is None]
        s1 = min(candidates, key=lambda p: abs(p.acquired - s2.acquired), default=None)
    return _Sources(s1, dem, broken)


def _default_bands(s2: S2Product) -> tuple[str, ...]:
    """The bands a product has, when they form a whole set: 10 m only, or all ten.

    A product with part of the 10 m or of the 20 m bands has lost a file (a deleted
    band): that is a :class:`~decloud.errors.MissingBandError` naming what is missing,
    not a stack quietly without it.
    """
    missing_files = list(getattr(s2, "missing_files", None) or [])
    if missing_files:
        names = ", ".join(Path(m).name for m in missing_files)
        raise MissingBandError(f"the metadata declares {len(missing_files)} image file(s) the "
                               f"product lacks: {names} (pass --bands to stack the others)",
                               path=s2.path, field=Path(missing_files[0]).name)
    has = set(s2.bands)
    for group in (S2_10M_BANDS, S2_20M_BANDS):
        absent = [b for b in group if b not in has]
        if absent and (group is S2_10M_BANDS or len(absent) < len(group)):
            raise MissingBandError(
                f"band {absent[0]!r} is not in this product (it has "
                f"{', '.join(b for b in S2_BANDS if b in has)}; missing: {', '.join(absent)}): "
                "a product has the four 10 m bands, or all ten; pass --bands to stack the "
                "others", path=s2.path, field=absent[0])
    return tuple(b for b in S2_BANDS if b in has)


def _s1_gap(path: Path, s2: S2Product) -> timedelta:
    from decloud.products.s1tiling import parse_s1_name

    parsed = parse_s1_name(path)
    return abs(parsed["acquired"] - s2.acquired) if parsed else timedelta.max


def _write_failure(folder: Path, err: OutputWriteError) -> OutputWriteError:
    """One error naming the stack folder and the cause (a full disk: "no space left").

    GDAL reports a full disk in its own words: its message is searched too.
    """
    causes: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in causes:
        causes.append(current)
        current = current.__cause__ or current.__context__
    full = any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT)
               for c in causes) or any("no space left" in str(c).lower() for c in causes)
    inner = f"{Path(err.path).name}: " if err.path and Path(err.path) != folder else ""
    cause = "no space left on device" if full else f"{inner}{err.message}"
    return OutputWriteError(f"writing the stack failed, nothing was written: {cause}",
                            path=folder)


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
    skip_broken_sources: bool = False,
) -> StackResult:
    """Write the aligned stack of a tile and date.

    Args:
        archive: A scanned archive.
        tile: Tile id.
        day: Acquisition date of the S2 product.
        out_dir: Parent folder of the stack folder.
        resolution: 10 (the S2 10 m grid) or 20 m.
        s1_max_gap: Largest S1-S2 time gap; the closest S1 image within it is used.
        bands: S2 bands to stack; when None, the bands the product has: all ten, or the
            four 10 m ones of a 10 m-only product (B02, B03, B04, B08). A product with
            part of either set (a deleted band file) is then a
            :class:`~decloud.errors.MissingBandError` naming the missing bands.
        window_size: Side of the windows streamed.
        overwrite: Replace an existing stack folder.
        progress: Show a progress bar.
        skip_broken_sources: Stack without an S1 image or DEM that exists but cannot be
            read (warned about and recorded) instead of failing.

    Returns:
        The written files and the products used.

    Raises:
        BrokenSourceError: An S1 file within the gap, or the tile's DEM, exists but
            cannot be read (without ``skip_broken_sources``).
        OutputWriteError: Writing failed (a full disk); the stack folder is not there.
    """
    tile = normalize_tile(tile)
    s2 = archive.find_s2(tile, day)
    sources = _sources(archive, tile, s2, s1_max_gap, skip_broken_sources)
    s1, dem = sources.s1, sources.dem
    if bands is None:
        bands = _default_bands(s2)
    bands = tuple(normalize_band_name(b) for b in bands)
    for b in bands:
        s2.band(b)  # raises MissingBandError naming the product and band
    grid = s2.grid(resolution)
    name = f"{tile}_{s2.acquired:%Y%m%d}"
    inputs = [str(s2.path)] + ([*s1.files] if s1 else []) + ([str(dem.path)] if dem else [])
    dates = [s2.acquired.isoformat()] + ([s1.acquired.isoformat()] if s1 else [])
    result = StackResult(folder=Path(out_dir) / name, s2=s2, s1=s1, dem=dem, bands=list(bands),
                         skipped=sources.skipped)
    # The stack's keys carry no acquisition and are all read at the stack's resolution.
    keys = [InputKey.of(KEY_S2, bands, resolution), InputKey.of(KEY_S2_MASK, resolution=resolution)]
    keys += [InputKey.of(KEY_S1, resolution=resolution)] if s1 else []
    keys += [InputKey.of(KEY_DEM, resolution=resolution)] if dem else []
    products = InputProducts({None: AcquisitionProducts(s2, s1)}, dem)
    try:
        files = _write(result, grid, keys, products, inputs, dates, window_size, overwrite,
                       progress)
    except OutputWriteError as err:  # atomic_dir and the COG writers turn OSErrors into it
        raise _write_failure(result.folder, err) from err
    result.files = {k: result.folder / v.name for k, v in files.items()}
    return result


def _write(
    result: StackResult, grid: Grid, keys: list[InputKey], products: InputProducts,
    inputs: list[str], dates: list[str], window_size: int, overwrite: bool, progress: bool,
) -> dict[str, Path]:
    """Write the stack folder atomically; returns its files (temporary paths)."""
    s2, s1, dem, bands = result.s2, result.s1, result.dem, tuple(result.bands)
    name = result.folder.name
    with atomic_dir(result.folder, overwrite=overwrite) as tmp, RasterPool() as pool:
        writers = _writers(tmp, grid, bands, s2, s1, dem, inputs, dates, result.skipped)
        windows = list(grid.windows(window_size))
        # Every COG is finalised when the block ends, or discarded if it raises.
        with ExitStack() as open_writers:
            for writer in writers.values():
                open_writers.enter_context(writer)
            for window, _ in tqdm(windows, desc=name, unit="window",
                                  disable=None if progress else True):
                arrays = read_inputs(keys, products, grid, window, pool=pool)
                for key, array in arrays.items():
                    # Channels-last views of channels-first reads: back to (C, H, W).
                    writers[key].write(np.moveaxis(array, -1, 0), window)
        files = {key: tmp / f"{key}.tif" for key in writers}
        files.update(_quicklooks(tmp, files, bands))
        manifest = _manifest(name, grid, bands, s2, s1, dem, files)
        manifest["skipped_sources"] = result.skipped
        (tmp / "stack.json").write_text(json.dumps(manifest, indent=2))
        files["manifest"] = tmp / "stack.json"
    return files


def _writers(
    folder: Path, grid: Grid, bands: tuple[str, ...], s2: S2Product, s1: S1Product | None,
    dem: Dem | None, inputs: list[str], dates: list[str], skipped: list[dict[str, str]],
) -> dict[str, CogWriter]:
    tags = provenance_tags(inputs, dates, tile=s2.tile or "", grid=grid.crs.to_string(),
                           s2_level=s2.level, skipped_sources=skipped)
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

