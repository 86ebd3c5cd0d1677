"""Reference grids and reading any raster window onto them.

A :class:`Grid` is a CRS, an affine transform and a size: typically the 10 m (or
20 m) grid of a Sentinel-2 tile. :func:`read_on_grid` reads one window of any raster
(another resolution, another CRS, another origin) onto a window of a grid, reading
from the source only the pixels that window needs plus a small margin, so that
streaming a full tile window by window gives the same result as warping it whole.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from os import PathLike
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from decloud.errors import CorruptRasterError, CrsMismatchError, ExtentError, GridError

__all__ = [
    "Grid",
    "RasterKind",
    "RasterPool",
    "Resampling",
    "Window",
    "open_raster",
    "read_on_grid",
]

# rasterio warns spuriously that in-memory arrays are not georeferenced when several
# threads warp at once (a known rasterio/GDAL quirk, see odc-geo issue 131); the arrays
# always carry their transform here.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.warp")

# Source pixels read around a window: cubic needs 2, average/mode when downsampling
# by up to 6 (60 m onto 10 m... the other way) need the whole footprint, which the
# bounds transform gives; 3 leaves room for rounding.
_SOURCE_MARGIN = 3


class RasterKind(StrEnum):
    """What a raster holds, which decides its resampling and nodata handling."""

    REFLECTANCE = "reflectance"
    BACKSCATTER = "backscatter"
    ELEVATION = "elevation"
    MASK = "mask"

    @property
    def resampling(self) -> Resampling:
        """Default resampling: bilinear for physical quantities, nearest for masks."""
        return Resampling.nearest if self is RasterKind.MASK else Resampling.bilinear

    @property
    def continuous(self) -> bool:
        """Whether values are physical quantities read as float32 with NaN nodata."""
        return self is not RasterKind.MASK


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: CRS, affine transform, width and height.

    Invariants: square pixels, no rotation.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0:
            raise GridError(f"rotated grids are not supported (transform {tuple(t)[:6]})")
        if not math.isclose(t.a, -t.e, rel_tol=1e-6) or t.a <= 0:
            raise GridError(f"pixels must be square and north-up (transform {tuple(t)[:6]})")
        if self.width <= 0 or self.height <= 0:
            raise GridError(f"empty grid {self.width} x {self.height}")

    @classmethod
    def from_raster(cls, path: str | PathLike[str]) -> Grid:
        """Return the grid of a raster file."""
        with open_raster(path) as src:
            return cls.from_dataset(src)

    @classmethod
    def from_dataset(cls, src: DatasetReader) -> Grid:
        """Return the grid of an open dataset."""
        if src.crs is None:
            raise CrsMismatchError("raster has no CRS", path=src.name)
        return cls(CRS.from_user_input(src.crs), src.transform, src.width, src.height)

    @classmethod
    def from_bounds(
        cls, crs: CRS | str | int, bounds: tuple[float, float, float, float], resolution: float
    ) -> Grid:
        """Return the grid of ``resolution`` whose top-left corner is the bounds' corner."""
        left, bottom, right, top = bounds
        width = round((right - left) / resolution)
        height = round((top - bottom) / resolution)
        return cls(
            CRS.from_user_input(crs),
            Affine(resolution, 0, left, 0, -resolution, top),
            width,
            height,
        )

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units."""
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        left, top = self.transform.c, self.transform.f
        return (
            left,
            top - self.height * self.resolution,
            left + self.width * self.resolution,
            top,
        )

    def footprint(self) -> Polygon:
        """The grid's extent as a polygon in its CRS."""
        return box(*self.bounds)

    def at_resolution(self, resolution: float) -> Grid:
        """The grid with the same corner and extent at another resolution (e.g. 20 m)."""
        factor = self.resolution / resolution
        return Grid(
            self.crs,
            Affine(resolution, 0, self.transform.c, 0, -resolution, self.transform.f),
            max(1, math.ceil(self.width * factor - 1e-9)),
            max(1, math.ceil(self.height * factor - 1e-9)),
        )

    def subgrid(self, window: Window) -> Grid:
        """The grid of a window of this grid (the window may extend past the edges)."""
        return Grid(
            self.crs,
            rasterio.windows.transform(window, self.transform),
            int(window.width),
            int(window.height),
        )

    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.width, self.height)

    def windows(self, size: int, margin: int = 0) -> Iterator[tuple[Window, Window]]:
        """Tile the grid into windows, row-major.

        Args:
            size: Side of the core windows (the last row and column are smaller).
            margin: Pixels added on each side of a core window, for models that need
                context; padded windows may extend past the grid (read as nodata).

        Yields:
            ``(core, padded)`` window pairs.
        """
        if size <= 0 or margin < 0:
            raise GridError(f"invalid window size {size} or margin {margin}")
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                core = Window(col, row, min(size, self.width - col), min(size, self.height - row))
                padded = Window(
                    col - margin, row - margin, core.width + 2 * margin, core.height + 2 * margin
                )
                yield core, padded

    def is_aligned_with(self, other: Grid) -> bool:
        """Whether ``other`` has the same CRS and pixel size and an integer pixel offset."""
        if self.crs != other.crs or not math.isclose(self.resolution, other.resolution):
            return False
        dx = (other.transform.c - self.transform.c) / self.resolution
        dy = (self.transform.f - other.transform.f) / self.resolution
        return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def open_raster(path: str | PathLike[str]) -> DatasetReader:
    """Open a raster for reading, turning GDAL's errors into :class:`CorruptRasterError`."""
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise CorruptRasterError(f"cannot be opened as a raster ({err})", path=path) from err


class RasterPool:
    """Keeps rasters open across many window reads (streaming a tile window by window).

    Use as a context manager; every dataset it opened is closed on exit.
    """

    def __init__(self) -> None:
        self._open: dict[str, DatasetReader] = {}

    def get(self, path: str | PathLike[str]) -> DatasetReader:
        """Return the open dataset of ``path``, opening it on first use."""
        key = str(path)
        if key not in self._open:
            self._open[key] = open_raster(key)
        return self._open[key]

    def close(self) -> None:
        """Close every dataset."""
        for src in self._open.values():
            src.close()
        self._open.clear()

    def __enter__(self) -> RasterPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_on_grid(
    source: str | PathLike[str] | DatasetReader,
    grid: Grid,
    window: Window | None = None,
    *,
    indexes: Sequence[int] = (1,),
    kind: RasterKind = RasterKind.REFLECTANCE,
    resampling: Resampling | None = None,
    src_nodata: float | None = None,
    fill: float | int = 0,
) -> np.ndarray:
    """Read bands of a raster onto a window of a grid.

    Continuous kinds come back as float32 with NaN where there is no data (the
    source's nodata, or outside the source); masks keep their dtype with ``fill``
    outside the source. When the source shares the grid's CRS, pixel size and pixel
    alignment the pixels are read as they are; otherwise only the source pixels that
    the window needs, plus a margin, are read and warped with ``resampling``.

    Args:
        source: A raster path or an open dataset (see :class:`RasterPool`).
        grid: The target grid.
        window: The window of ``grid`` to fill (may extend past the grid's edges);
            the whole grid when None.
        indexes: 1-based band indexes of the source.
        kind: What the raster holds; sets the default resampling and output type.
        resampling: Overrides the kind's default resampling.
        src_nodata: Nodata of the source when the file does not declare it.
        fill: Value of mask pixels outside the source.

    Returns:
        An array of shape ``(len(indexes), window.height, window.width)``.
    """
    if isinstance(source, DatasetReader):
        return _read(source, grid, window, indexes, kind, resampling, src_nodata, fill)
    with open_raster(source) as src:
        return _read(src, grid, window, indexes, kind, resampling, src_nodata, fill)


def _read(
    src: DatasetReader,
    grid: Grid,
    window: Window | None,
    indexes: Sequence[int],
    kind: RasterKind,
    resampling: Resampling | None,
    src_nodata: float | None,
    fill: float | int,
) -> np.ndarray:
    window = window if window is not None else grid.full_window()
    dst_grid = grid.subgrid(window)
    if src.crs is None:
        raise CrsMismatchError("raster has no CRS: it cannot be put on a grid", path=src.name)
    missing = [i for i in indexes if not 1 <= i <= src.count]
    if missing:
        raise CorruptRasterError(f"has {src.count} band(s), band {missing[0]} asked for",
                                 path=src.name)
    nodata = src.nodata if src.nodata is not None else src_nodata
    try:
        src_grid = Grid.from_dataset(src)
        method = resampling if resampling is not None else kind.resampling
        factor = _integer_upsampling(src_grid, dst_grid)
        if src_grid.is_aligned_with(dst_grid):
            out = _read_aligned(src, src_grid, dst_grid, indexes, kind, nodata, fill)
        elif factor and method in (Resampling.nearest, Resampling.bilinear):
            out = _read_upsampled(src, src_grid, dst_grid, factor, indexes, kind, method,
                                  nodata, fill)
        else:
            out = _read_warped(src, dst_grid, indexes, kind, resampling, nodata, fill)
    except RasterioError as err:
        raise CorruptRasterError(f"read failed, the file may be truncated or corrupt ({err})",
                                 path=src.name) from err
    return out


def _read_aligned(
    src: DatasetReader,
    src_grid: Grid,
    dst: Grid,
    indexes: Sequence[int],
    kind: RasterKind,
    nodata: float | None,
    fill: float | int,
) -> np.ndarray:
    """Copy pixels between aligned grids; the part outside the source is nodata."""
    col0 = round((dst.transform.c - src_grid.transform.c) / src_grid.resolution)
    row0 = round((src_grid.transform.f - dst.transform.f) / src_grid.resolution)
    r0, r1 = max(row0, 0), min(row0 + dst.height, src_grid.height)
    c0, c1 = max(col0, 0), min(col0 + dst.width, src_grid.width)
    dtype = np.float32 if kind.continuous else src.dtypes[indexes[0] - 1]
    out = np.full((len(indexes), dst.height, dst.width), np.nan if kind.continuous else fill,
                  dtype=dtype)
    if r0 >= r1 or c0 >= c1:
        return out
    data = src.read(list(indexes), window=Window(c0, r0, c1 - c0, r1 - r0))
    target = out[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
    if kind.continuous:
        target[...] = data
        if nodata is not None:
            target[data == nodata] = np.nan
    else:
        target[...] = data
    return out


def _integer_upsampling(src: Grid, dst: Grid) -> int:
    """The factor k when source pixels are k x k target pixels on one lattice, else 0.

    20 m onto 10 m gives 2; other CRS, non-integer ratios or offsets give 0.
    """
    if src.crs != dst.crs:
        return 0
    ratio = src.resolution / dst.resolution
    k = round(ratio)
    if k < 2 or abs(ratio - k) > 1e-9:
        return 0
    dx = (dst.transform.c - src.transform.c) / dst.resolution
    dy = (src.transform.f - dst.transform.f) / dst.resolution
    return k if abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6 else 0


def _axis(offset: int, size: int, k: int, length: int,
          bilinear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indexes and weights along one axis for upsampling by k.

    A target pixel centre ``j`` lies at source coordinate ``u = (offset + j + 0.5) / k
    - 0.5`` (pixel-is-area, as GDAL). Returns the two neighbours (clamped), the weight
    of the second, and whether the centre falls inside the source.
    """
    u = (offset + np.arange(size) + 0.5) / k - 0.5
    inside = (u >= -0.5) & (u <= length - 0.5)
    if not bilinear:
        i0 = np.floor(u + 0.5).astype(np.int64)
        return np.clip(i0, 0, length - 1), np.clip(i0, 0, length - 1), np.zeros(size), inside
    i0 = np.floor(u).astype(np.int64)
    w = u - i0
    return np.clip(i0, 0, length - 1), np.clip(i0 + 1, 0, length - 1), w, inside


def _read_upsampled(
    src: DatasetReader,
    src_grid: Grid,
    dst: Grid,
    k: int,
    indexes: Sequence[int],
    kind: RasterKind,
    resampling: Resampling,
    nodata: float | None,
    fill: float | int,
) -> np.ndarray:
    """Upsample by an integer factor on a shared lattice, in numpy (no GDAL warper).

    Bilinear weights are renormalised over valid neighbours, like GDAL's warper, so a
    pixel next to nodata keeps a value and only pixels with no valid neighbour are
    nodata. Much faster than warping for the common 20 m onto 10 m case.
    """
    col_off = round((dst.transform.c - src_grid.transform.c) / dst.resolution)
    row_off = round((src_grid.transform.f - dst.transform.f) / dst.resolution)
    bilinear = resampling == Resampling.bilinear and kind.continuous
    c0, c1, wc, cin = _axis(col_off, dst.width, k, src_grid.width, bilinear)
    r0, r1, wr, rin = _axis(row_off, dst.height, k, src_grid.height, bilinear)
    dtype: Any = np.float32 if kind.continuous else src.dtypes[indexes[0] - 1]
    out = np.full((len(indexes), dst.height, dst.width), np.nan if kind.continuous else fill,
                  dtype=dtype)
    if not (cin.any() and rin.any()):
        return out
    cmin, cmax = int(c0.min()), int(c1.max())
    rmin, rmax = int(r0.min()), int(r1.max())
    data = src.read(list(indexes), window=Window(cmin, rmin, cmax - cmin + 1, rmax - rmin + 1))
    c0, c1, r0, r1 = c0 - cmin, c1 - cmin, r0 - rmin, r1 - rmin
    # Target pixels inside the source form one block: copy it by slicing, not masking.
    rows, cols = np.flatnonzero(rin), np.flatnonzero(cin)
    block = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    if not bilinear:
        picked = data[:, r0[block[1]]][:, :, c0[block[2]]]
        if kind.continuous:
            picked = picked.astype(np.float32)
            if nodata is not None:
                picked[picked == nodata] = np.nan
        out[block] = picked
        return out
    c0, c1, wc = c0[block[2]], c1[block[2]], wc[block[2]].astype(np.float32)
    r0, r1, wr = r0[block[1]], r1[block[1]], wr[block[1]].astype(np.float32)

    def interpolate(a: np.ndarray) -> np.ndarray:
        cols = a[:, :, c0] * (1 - wc) + a[:, :, c1] * wc
        return cols[:, r0, :] * (1 - wr)[:, None] + cols[:, r1, :] * wr[:, None]

    missing = None if nodata is None else data == nodata
    if missing is None or not missing.any():
        out[block] = interpolate(data.astype(np.float32))
        return out
    valid = (~missing).astype(np.float32)
    total = interpolate(np.where(missing, np.float32(0), data.astype(np.float32)))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = total / interpolate(valid)
    # Like GDAL's warper: a pixel whose own (nearest) source pixel is nodata stays nodata.
    n0, _, _, _ = _axis(col_off, dst.width, k, src_grid.width, bilinear=False)
    m0, _, _, _ = _axis(row_off, dst.height, k, src_grid.height, bilinear=False)
    own = missing[:, (m0 - rmin)[block[1]]][:, :, (n0 - cmin)[block[2]]]
    result[own] = np.nan
    out[block] = result
    return out


def _read_warped(
    src: DatasetReader,
    dst: Grid,
    indexes: Sequence[int],
    kind: RasterKind,
    resampling: Resampling | None,
    nodata: float | None,
    fill: float | int,
) -> np.ndarray:
    """Warp the source pixels that cover ``dst`` (plus a margin) onto it."""
    dtype: Any = np.float32 if kind.continuous else src.dtypes[indexes[0] - 1]
    dst_nodata: float | int = np.nan if kind.continuous else fill
    out = np.full((len(indexes), dst.height, dst.width), dst_nodata, dtype=dtype)
    left, bottom, right, top = transform_bounds(dst.crs, src.crs, *dst.bounds, densify_pts=21)
    src_win = rasterio.windows.from_bounds(left, bottom, right, top, src.transform)
    col_off = math.floor(src_win.col_off) - _SOURCE_MARGIN
    row_off = math.floor(src_win.row_off) - _SOURCE_MARGIN
    col_end = math.ceil(src_win.col_off + src_win.width) + _SOURCE_MARGIN
    row_end = math.ceil(src_win.row_off + src_win.height) + _SOURCE_MARGIN
    col_off, row_off = max(col_off, 0), max(row_off, 0)
    col_end, row_end = min(col_end, src.width), min(row_end, src.height)
    if col_off >= col_end or row_off >= row_end:
        return out
    read_win = Window(col_off, row_off, col_end - col_off, row_end - row_off)
    data = src.read(list(indexes), window=read_win)
    reproject(
        source=data,
        destination=out,
        src_transform=rasterio.windows.transform(read_win, src.transform),
        src_crs=src.crs,
        src_nodata=nodata,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=dst_nodata,
        resampling=resampling if resampling is not None else kind.resampling,
    )
    return out


def require_coverage(
    source_bounds: tuple[float, float, float, float],
    source_crs: CRS,
    grid: Grid,
    *,
    path: str,
    what: str = "raster",
) -> None:
    """Raise :class:`ExtentError` unless a raster's bounds cover the grid's extent."""
    left, bottom, right, top = transform_bounds(source_crs, grid.crs, *source_bounds,
                                                densify_pts=21)
    covered = box(left, bottom, right, top)
    tolerance = grid.resolution / 2
    if not covered.buffer(tolerance).contains(grid.footprint()):
        raise ExtentError(
            f"{what} covers {covered.bounds} but the grid needs {grid.bounds} "
            f"({grid.crs.to_string()})",
            path=path,
        )
