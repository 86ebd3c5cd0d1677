"""Reference grids and reading any raster window onto them.

A :class:`Grid` is a CRS, an affine transform and a size: typically the 10 m (or
20 m) grid of a Sentinel-2 tile. :func:`read_on_grid` reads one window of any raster
(another resolution, another CRS, another origin) onto a window of a grid, reading
from the source only the pixels that window needs plus a small margin, so that
streaming a full tile window by window gives the same result as warping it whole.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from collections import OrderedDict
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
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from decloud.env import ensure_env
from decloud.errors import (
    ArgumentError,
    CorruptRasterError,
    CrsMismatchError,
    ExtentError,
    GridError,
    PoolThreadError,
)
from decloud.windows import round_up

try:  # the compiled loops (setup.py); without them the numpy path gives the same bits
    from decloud import _kernels as _compiled
except ImportError as exc:  # installed without a C compiler
    _compiled = None  # type: ignore[assignment]
    # Once, at import: same results, slower reads (run records say so, COMPILED_LOOPS).
    logging.getLogger(__name__).debug("decloud._kernels not built (%s): numpy read loops", exc)
#: The compiled loops of decloud/_kernels.c, or None (tests set it to None as well).
_kernels: Any = _compiled
#: Whether reads use the compiled loops of decloud/_kernels.c (False: the numpy path,
#: same bits, slower); run records and benchmarks record it.
COMPILED_LOOPS: bool = _compiled is not None

__all__ = [
    "COMPILED_LOOPS",
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

# Error threshold of GDAL's approximate transformer when warping, in source pixels.
# GDAL's default (0.125 px) interpolates coordinates linearly along each chunk's rows,
# so the result depends on the chunk (a window is not a crop of the whole warp: up to
# 0.58 m on a real DEM). At 1e-9 px every point is transformed exactly; rasterio's
# WarpedVRT rejects 0 itself. Exactness costs time: a 1" DEM onto 1500 x 1500 px of a
# 10 m UTM grid takes 0.9 s instead of 0.11 s (1e-5 px would take 0.26 s and leave
# windows 0.2 mm off the whole warp).
_EXACT_TRANSFORM = 1e-9


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
        """The grid of a window of this grid (the window may extend past the edges).

        The transform is :func:`rasterio.windows.transform`'s, operation for operation
        (so the same to the bit), without its two calls of affine's deprecated ``*``
        and their warnings: this runs once per band read.
        """
        t = self.transform
        col, row = window.col_off or 0.0, window.row_off or 0.0
        # rasterio: (x, y) = transform * (col, row), then
        # Affine.translation(x - c, y - f) @ transform, written out.
        x = col * t.a + row * t.b + t.c
        y = col * t.d + row * t.e + t.f
        transform = Affine(t.a + 0.0 * t.d, t.b + 0.0 * t.e, t.c + 0.0 * t.f + (x - t.c),
                           0.0 * t.a + t.d, 0.0 * t.b + t.e, 0.0 * t.c + t.f + (y - t.f))
        return Grid(self.crs, transform, int(window.width), int(window.height))

    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.width, self.height)

    def windows(self, size: int, margin: int = 0,
                multiple: int = 1) -> Iterator[tuple[Window, Window]]:
        """Tile the grid into windows, row-major.

        Every padded window can be fed to a model whose input sides must be a multiple
        of ``multiple``: it is the core plus ``margin`` on each side, grown at the
        bottom and on the right up to the next multiple (edge windows too, whatever
        the grid's size). With ``size`` and ``margin`` multiples of ``multiple``,
        every padded window starts on the lattice of ``multiple`` pixels that starts
        at ``(-margin, -margin)``: a U-Net's pooling sees the same pixel groups in
        every block as in the whole image padded by ``margin``, which is what makes a
        block-wise prediction equal the whole-image one. The core of a padded window's
        result is :func:`decloud.windows.core_crop` ``(core, padded)``.

        Args:
            size: Side of the core windows (the last row and column are smaller).
            margin: Pixels added on each side of a core window, for models that need
                context (:attr:`decloud.models.ModelSpec.margin`); padded windows may
                extend past the grid (read as nodata).
            multiple: Size multiple of the padded windows' sides.

        Yields:
            ``(core, padded)`` window pairs.

        Raises:
            GridError: A size, margin or multiple that is not positive, or a size or
                margin that is not a multiple of ``multiple``.
        """
        if size <= 0 or margin < 0 or multiple < 1:
            raise GridError(f"invalid window size {size}, margin {margin} or multiple "
                            f"{multiple}", field="size")
        if size % multiple or margin % multiple:
            raise GridError(f"window size {size} and margin {margin} must be multiples of "
                            f"{multiple}, so that every block lies on the model's lattice",
                            field="multiple")
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                core = Window(col, row, min(size, self.width - col), min(size, self.height - row))
                padded = Window(
                    col - margin, row - margin,
                    round_up(int(core.width) + 2 * margin, multiple),
                    round_up(int(core.height) + 2 * margin, multiple),
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

    At most ``max_open`` datasets stay open: opening one more closes the least
    recently used (LRU), so a pool holds a bounded number of file handles and GDAL
    dataset caches however many products a long job visits. A dataset returned by
    :meth:`get` stays valid until ``max_open`` other files have been asked for since.

    A pool belongs to the thread that created it: GDAL datasets must not be used by
    two threads, so :meth:`get` from any other thread raises
    :class:`~decloud.errors.PoolThreadError`. Each thread (each Dask task, each
    reader thread) creates its own pool.

    Use as a context manager; every dataset it opened is closed on exit.

    Args:
        max_open: Datasets kept open at most.
    """

    def __init__(self, max_open: int = 64) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ArgumentError(f"max_open must be a positive integer, not {max_open!r}",
                                field="max_open")
        self.max_open = max_open
        self._open: OrderedDict[str, DatasetReader] = OrderedDict()
        self._owner = threading.get_ident()

    def get(self, path: str | PathLike[str]) -> DatasetReader:
        """Return the open dataset of ``path``, opening it on first use.

        Raises:
            PoolThreadError: Called from a thread other than the pool's.
        """
        if threading.get_ident() != self._owner:
            raise PoolThreadError(
                f"this RasterPool belongs to thread {self._owner}, not to "
                f"{threading.current_thread().name}: create one pool per thread", path=path)
        key = str(path)
        src = self._open.get(key)
        if src is not None:
            self._open.move_to_end(key)
            return src
        src = open_raster(key)
        self._open[key] = src
        while len(self._open) > self.max_open:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        return src

    def __len__(self) -> int:
        return len(self._open)

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


@ensure_env
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
    scale: float = 1.0,
    offset: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read bands of a raster onto a window of a grid.

    Continuous kinds come back as float32 with NaN where there is no data (the
    source's nodata, or outside the source); masks keep their dtype with ``fill``
    outside the source. When the source shares the grid's CRS, pixel size and pixel
    alignment the pixels are read as they are; when its pixels are k x k target
    pixels on the same lattice (20 m onto 10 m) they are upsampled in numpy, exactly
    as GDAL's warper would; otherwise only the source pixels that the window needs,
    plus a margin, are read and warped with ``resampling``.

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
        scale: Continuous kinds: the result is ``value * scale + offset`` (float32
            arithmetic, after resampling), applied while the pixels are in cache.
        offset: See ``scale``.
        out: An array to fill (every pixel is written) and return instead of a new
            one: shape ``(len(indexes), window.height, window.width)``, float32 for
            continuous kinds, the source's type for masks. A view of a larger array
            works, so a caller can read each band straight into its own output.

    Returns:
        An array of shape ``(len(indexes), window.height, window.width)``: ``out``
        when it is given.

    Raises:
        ArgumentError: ``out`` has the wrong shape or type, or a scale is given for
            a mask.
    """
    if isinstance(source, DatasetReader):
        return _read(source, grid, window, indexes, kind, resampling, src_nodata, fill,
                     _Finish(scale, offset), out)
    with open_raster(source) as src:
        return _read(src, grid, window, indexes, kind, resampling, src_nodata, fill,
                     _Finish(scale, offset), out)


@dataclass(frozen=True)
class _Finish:
    """The last step of a continuous read: ``value * scale + offset``, in place."""

    scale: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def __call__(self, a: np.ndarray, divisor: int = 1) -> None:
        """Scale and offset ``a`` in place; ``divisor`` (a power of 2) divides it first.

        ``(a / divisor) * scale`` and ``a * (scale / divisor)`` round the same exact
        value once (dividing by a power of 2 is exact), so the division is free.
        """
        # Each is skipped when it changes nothing: a pass costs memory bandwidth.
        if self.scale != 1.0 or divisor != 1:
            np.multiply(a, np.float32(self.scale) / np.float32(divisor), out=a)
        if self.offset != 0.0:
            np.add(a, np.float32(self.offset), out=a)


def _read(
    src: DatasetReader,
    grid: Grid,
    window: Window | None,
    indexes: Sequence[int],
    kind: RasterKind,
    resampling: Resampling | None,
    src_nodata: float | None,
    fill: float | int,
    finish: _Finish,
    out: np.ndarray | None,
) -> np.ndarray:
    window = window if window is not None else grid.full_window()
    dst_grid = grid.subgrid(window)
    if src.crs is None:
        raise CrsMismatchError("raster has no CRS: it cannot be put on a grid", path=src.name)
    missing = [i for i in indexes if not 1 <= i <= src.count]
    if missing:
        raise CorruptRasterError(f"has {src.count} band(s), band {missing[0]} asked for",
                                 path=src.name)
    if not kind.continuous and not finish.identity:
        raise ArgumentError("a mask cannot be scaled", path=src.name, field="scale")
    nodata = src.nodata if src.nodata is not None else src_nodata
    dtype = np.dtype(np.float32 if kind.continuous else src.dtypes[indexes[0] - 1])
    shape = (len(indexes), dst_grid.height, dst_grid.width)
    if out is not None and (out.shape != shape or out.dtype != dtype):
        raise ArgumentError(f"out is {out.dtype} {out.shape}, the window needs {dtype} {shape}",
                            path=src.name, field="out")
    try:
        src_grid = Grid.from_dataset(src)
        method = resampling if resampling is not None else kind.resampling
        if src_grid.is_aligned_with(dst_grid):
            target = out if out is not None else np.empty(shape, dtype)
            return _read_aligned(src, src_grid, dst_grid, indexes, kind, nodata, fill,
                                 finish, target)
        factor = _integer_upsampling(src_grid, dst_grid)
        if factor and method in (Resampling.nearest, Resampling.bilinear):
            target = out if out is not None else np.empty(shape, dtype)
            return _read_upsampled(src, src_grid, dst_grid, factor, indexes, kind, method,
                                   nodata, fill, finish, target)
        warped = _read_warped(src, dst_grid, indexes, kind, resampling, nodata, fill)
    except RasterioError as err:
        raise CorruptRasterError(f"read failed, the file may be truncated or corrupt ({err})",
                                 path=src.name) from err
    if out is None:
        out = warped
    else:
        out[...] = warped
    if kind.continuous:
        finish(out)
    return out


#: Pixels are processed in strips of about this many bytes of output, so that the
#: passes of a read (cast, nodata test, interpolation, scale, offset) run in the CPU's
#: cache instead of streaming a whole window through memory once per pass.
_STRIP_BYTES = 1 << 19


def _strip_rows(out: np.ndarray, k: int = 1) -> int:
    """Rows of ``out`` per strip, a multiple of ``k``."""
    row_bytes = max(out.shape[0] * out.shape[2] * out.itemsize, 1)
    return max(k, _STRIP_BYTES // row_bytes // k * k)


def _fill_outside(out: np.ndarray, rows: slice, cols: slice, value: float | int) -> None:
    """Set every pixel of ``out`` outside the block ``[rows, cols]`` to ``value``."""
    out[:, : rows.start] = value
    out[:, rows.stop :] = value
    out[:, rows, : cols.start] = value
    out[:, rows, cols.stop :] = value


@functools.lru_cache(maxsize=256)
def _comparable_nodata(nodata: float | None, dtype: np.dtype[Any]) -> Any:
    """``nodata`` as a scalar of ``dtype``, or None when no value of that type equals it.

    Pixels are compared with nodata in their own type: int16 against an int16 scalar
    reads a quarter of the bytes of a float64 comparison and gives the same answer
    (an integer type holds the nodata value exactly or not at all). A NaN nodata
    equals nothing, as in a float comparison.
    """
    if nodata is None or math.isnan(nodata):
        return None
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            return None
        return dtype.type(int(nodata))
    return dtype.type(nodata)


def _decode(
    src: DatasetReader,
    indexes: Sequence[int],
    window: Window,
    target: np.ndarray,
    nodata: float | None,
    continuous: bool,
    finish: _Finish | None = None,
) -> np.ndarray | None:
    """Read a source window into ``target``, a view of any strides.

    Continuous values end as float32 with NaN at nodata (then ``finish``-ed). The
    pixels are decoded in the source's type and cast by numpy (several times faster
    than GDAL's conversion while decoding), strip by strip with the nodata test and
    ``finish`` (for 16-bit sources with ``finish``, one compiled pass of
    :mod:`decloud._kernels` instead), or decoded straight into ``target`` when the
    types match.

    Returns:
        The nodata mask of the window when any pixel is nodata and no ``finish`` is
        given, else None.
    """
    dtype = np.dtype(src.dtypes[indexes[0] - 1])
    if not continuous or target.dtype == dtype:
        src.read(list(indexes), window=window, out=target)
        data = target
    else:
        data = src.read(list(indexes), window=window)
    nd = _comparable_nodata(nodata, dtype) if continuous else None
    if not continuous or (nd is None and data is target and (finish is None or finish.identity)):
        return None
    if finish is None:  # the whole mask is wanted (upsampling): one pass, no strips
        if data is not target:
            target[...] = data
        missing = data == nd if nd is not None else None
        if missing is None or not missing.any():
            return None
        np.copyto(target, np.float32(np.nan), where=missing)
        return missing
    if _kernels is not None and dtype in _KERNEL_TYPES and target.dtype == np.float32:
        # One compiled pass per band: cast, scale, offset and nodata test together.
        for band, values in zip(target, data, strict=True):
            _kernels.scale_nodata(values, band, 0 if nd is None else int(nd), nd is not None,
                                  finish.scale, finish.scale != 1.0, finish.offset)
        return None
    step = _strip_rows(target)
    for r in range(0, target.shape[1], step):
        part, raw = target[:, r : r + step], data[:, r : r + step]
        # Compared before finish: raw is part itself when the source is float32.
        missing = raw == nd if nd is not None else None
        count = np.count_nonzero(missing) if missing is not None else 0
        if count == part.size:  # all nodata (outside a swath): no arithmetic
            part[...] = np.float32(np.nan)
            continue
        if raw is not part:
            part[...] = raw  # faster than casting inside the multiplication's loop
        finish(part)
        if count:
            np.copyto(part, np.float32(np.nan), where=missing)
    return None


#: Source types the compiled loops take (Sentinel-2 DN: THEIA int16, ESA uint16).
_KERNEL_TYPES = (np.dtype(np.int16), np.dtype(np.uint16))


def _read_aligned(
    src: DatasetReader,
    src_grid: Grid,
    dst: Grid,
    indexes: Sequence[int],
    kind: RasterKind,
    nodata: float | None,
    fill: float | int,
    finish: _Finish,
    out: np.ndarray,
) -> np.ndarray:
    """Copy pixels between aligned grids into ``out``.

    The part of the window outside the source is nodata (``fill`` for masks).
    """
    col0 = round((dst.transform.c - src_grid.transform.c) / src_grid.resolution)
    row0 = round((src_grid.transform.f - dst.transform.f) / src_grid.resolution)
    r0, r1 = max(row0, 0), min(row0 + dst.height, src_grid.height)
    c0, c1 = max(col0, 0), min(col0 + dst.width, src_grid.width)
    empty: float | int = np.nan if kind.continuous else fill
    if r0 >= r1 or c0 >= c1:
        out[...] = empty
        return out
    rows, cols = slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0)
    _fill_outside(out, rows, cols, empty)
    _decode(src, indexes, Window(c0, r0, c1 - c0, r1 - r0), out[:, rows, cols], nodata,
            kind.continuous, finish)
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


#: One phase of an upsampled axis: (first target pixel, count, first source pixel,
#: weight w of the second neighbour); its targets are k apart, its sources 1 apart.
_Phase = tuple[int, int, int, float]


@dataclass(frozen=True)
class _Axis:
    """How one axis of a window is upsampled by an integer factor k, as slices.

    Target pixels ``lo:hi`` of the window have their centre inside the source (the
    others are nodata) and use source pixels ``src_lo:src_hi``; that range passes the
    source's edge by one pixel where a neighbour is clamped to the edge (such pixels
    are edge copies). Target pixels k apart share a *phase*: the same weights and
    source pixels one apart. Phases count target pixels from ``lo`` and source pixels
    from ``src_lo``.
    """

    lo: int
    hi: int
    src_lo: int
    src_hi: int
    phases: tuple[_Phase, ...]


# Cached: a tile's windows repeat a few offsets and sizes, and planning costs numpy calls.
@functools.lru_cache(maxsize=1024)
def _axis(offset: int, size: int, k: int, length: int, bilinear: bool) -> _Axis | None:
    """Plan the upsampling by k of one axis, or None when no pixel falls in the source.

    The window's ``size`` pixels start ``offset`` target pixels after the source's
    origin; the source is ``length`` pixels long. A target pixel centre ``j`` lies at
    source coordinate ``u = (offset + j + 0.5) / k - 0.5`` (pixel-is-area, as GDAL).
    Bilinear weights source pixels ``floor(u)`` and the next by ``1 - w`` and ``w``,
    ``w = u - floor(u)``; nearest takes ``floor(u + 0.5)``; both clamped to the source.
    Along a phase ``u`` grows by exactly 1, so its weight is one number (computed like
    the per-pixel weights, float64 then float32).
    """
    u = (offset + np.arange(size) + 0.5) / k - 0.5
    inside = np.flatnonzero((u >= -0.5) & (u <= length - 0.5))
    if inside.size == 0:
        return None
    lo, hi = int(inside[0]), int(inside[-1]) + 1
    u = u[lo:hi]
    first = np.floor(u) if bilinear else np.floor(u + 0.5)
    w = u - first if bilinear else np.zeros_like(u)
    i0 = first.astype(np.int64)
    src_lo, src_hi = int(i0[0]), int(i0[-1]) + (2 if bilinear else 1)
    phases = tuple((p, len(range(p, hi - lo, k)), int(i0[p]) - src_lo, float(w[p]))
                   for p in range(min(k, hi - lo)))
    return _Axis(lo, hi, src_lo, src_hi, phases)


@functools.lru_cache(maxsize=4096)
def _strip_phases(phases: tuple[_Phase, ...], k: int, s0: int,
                  s1: int) -> tuple[tuple[_Phase, ...], int, int]:
    """Restrict phases to the target pixels ``s0:s1`` (``s0`` a multiple of k).

    Cached (every window of a tile cuts the same strips).

    Returns:
        The phases, targets counted from ``s0`` and sources from ``lo``, and the
        source pixels ``lo:hi`` they use.
    """
    cut: list[_Phase] = []
    for first, count, i, w in phases:
        m0, m1 = max(0, -(-(s0 - first) // k)), min(count, -(-(s1 - first) // k))
        if m1 > m0:
            cut.append((first + k * m0 - s0, m1 - m0, i + m0, w))
    lo = min(i for _, _, i, _ in cut)
    hi = max(i + n for _, n, i, _ in cut) + 1
    return tuple((f, n, i - lo, w) for f, n, i, w in cut), lo, hi


@functools.lru_cache(maxsize=1024)
def _kernel_axis(axis: _Axis) -> tuple[np.ndarray, np.ndarray]:
    """An axis's phases for :func:`decloud._kernels.upsample2`, per target pixel.

    Returns:
        The first source pixel of each target pixel of ``lo:hi`` (int32, from
        ``src_lo``), and whether the second one weighs 3/4 (uint8); read-only (cached).
    """
    index = np.empty(axis.hi - axis.lo, np.int32)
    far = np.empty(axis.hi - axis.lo, np.uint8)
    for first, count, i, w in axis.phases:
        index[_every(2, first, count)] = np.arange(i, i + count)
        far[_every(2, first, count)] = w >= 0.5
    index.flags.writeable = False
    far.flags.writeable = False
    return index, far


def _read_padded(
    src: DatasetReader,
    indexes: Sequence[int],
    rows: _Axis,
    cols: _Axis,
    dtype: Any,
    nodata: float | None,
    continuous: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the source pixels an upsampling uses, and their nodata mask.

    These are rows ``rows.src_lo:src_hi`` and columns ``cols.src_lo:src_hi``; where the
    ranges pass the source's edges the edge pixels are repeated (clamped neighbours).
    """
    buf = np.empty((len(indexes), rows.src_hi - rows.src_lo, cols.src_hi - cols.src_lo), dtype)
    top, left = max(-rows.src_lo, 0), max(-cols.src_lo, 0)
    bottom, right = max(rows.src_hi - src.height, 0), max(cols.src_hi - src.width, 0)
    inner = (slice(None), slice(top, buf.shape[1] - bottom), slice(left, buf.shape[2] - right))
    window = Window(cols.src_lo + left, rows.src_lo + top,
                    buf.shape[2] - left - right, buf.shape[1] - top - bottom)
    missing = _decode(src, indexes, window, buf[inner], nodata, continuous)
    if top or bottom or left or right:
        if missing is not None:
            whole = np.zeros(buf.shape, bool)
            whole[inner] = missing
            missing = whole
        arrays: tuple[np.ndarray, ...] = (buf,) if missing is None else (buf, missing)
        for a in arrays:
            h, w = a.shape[1], a.shape[2]
            a[:, :top] = a[:, top : top + 1]
            a[:, h - bottom :] = a[:, h - bottom - 1 : h - bottom]
            a[:, :, :left] = a[:, :, left : left + 1]
            a[:, :, w - right :] = a[:, :, w - right - 1 : w - right]
    return buf, missing


def _every(k: int, first: int, count: int) -> slice:
    """Every k-th index from ``first``, ``count`` of them."""
    return slice(first, first + (count - 1) * k + 1, k)


def _interpolate_axis(a: np.ndarray, phases: Sequence[_Phase], k: int, axis: int,
                      out: np.ndarray) -> None:
    """Linear interpolation of ``a`` along ``axis`` (1 rows, 2 columns) into ``out``.

    Each phase is one sum of two shifted views, ``a[i] * (1 - w) + a[i + 1] * w``,
    written into every k-th element of ``out``: slices only, no index arrays and no
    gathers. The products of ``a`` by each weight are computed once and shared by the
    phases (for k = 2 both phases use the weights 0.25 and 0.75). Each output value is
    rounded exactly as in the per-pixel formula, so the result is the same to the bit.
    """
    products: dict[float, np.ndarray] = {}

    def times(weight: np.float32) -> np.ndarray:
        if float(weight) not in products:
            products[float(weight)] = a * weight
        return products[float(weight)]

    def along(index: slice) -> tuple[slice, ...]:
        return (slice(None), index) if axis == 1 else (slice(None), slice(None), index)

    for first, count, i, w in phases:
        w32 = np.float32(w)
        near = times(np.float32(1) - w32)[along(slice(i, i + count))]
        far = times(w32)[along(slice(i + 1, i + 1 + count))]
        np.add(near, far, out=out[along(_every(k, first, count))])


def _dyadic_exact(k: int, dtype: np.dtype[Any]) -> bool:
    """Whether upsampling integers of ``dtype`` by k is exact in float32 arithmetic.

    For k = 2 the bilinear weights are 1/4 and 3/4: with 8- and 16-bit integers every
    product and sum has at most 4 fractional bits and 21 bits in all, so float32
    holds it exactly, and any order of operations gives the same bits.
    """
    return k == 2 and np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2


def _sum_axis(a: np.ndarray, phases: Sequence[_Phase], axis: int, out: np.ndarray) -> None:
    """Upsample ``a`` by 2 along ``axis`` as exact sums: 4 times the interpolation.

    The weights 1/4 and 3/4 become 1 and 3, so each phase is ``a[i] + 3 a[i + 1]`` or
    ``3 a[i] + a[i + 1]`` with ``3 a`` computed once: three passes instead of the four
    of weighted products, and no rounding as long as :func:`_dyadic_exact` holds.
    """
    triple = a * np.float32(3)
    # Plain slicing per axis: this runs once per strip and phase, so Python overhead
    # (helper calls building index tuples) is a visible part of a small window's read.
    for first, count, i, w in phases:
        near, far = (triple, a) if w < 0.5 else (a, triple)
        stop = first + 2 * count - 1
        if axis == 1:
            np.add(near[:, i : i + count], far[:, i + 1 : i + 1 + count],
                   out=out[:, first:stop:2])
        else:
            np.add(near[:, :, i : i + count], far[:, :, i + 1 : i + 1 + count],
                   out=out[:, :, first:stop:2])


def _upsample2_exact(data: np.ndarray, missing: np.ndarray | None, rows: _Axis, cols: _Axis,
                     finish: _Finish, block: np.ndarray) -> None:
    """Bilinear upsampling by 2 of 8- or 16-bit values (NaN at nodata) into ``block``.

    Strip by strip of output rows so that the passes run in cache: columns then rows
    as exact integer-valued sums (:func:`_sum_axis`), then one scale that also divides
    by 16. A strip whose source pixels are all nodata (outside a swath) is NaN without
    arithmetic; where valid pixels touch nodata the columns concerned are redone with
    renormalised weights (:func:`_fix_nodata_borders`).
    """
    step = _strip_rows(block, 2)
    width = block.shape[2]
    for s0 in range(0, block.shape[1], step):
        phases, lo, hi = _strip_phases(rows.phases, 2, s0, min(s0 + step, block.shape[1]))
        strip = block[:, s0 : s0 + step]
        source, col_phases = data[:, lo:hi], cols.phases
        part = missing[:, lo:hi] if missing is not None else None
        if part is not None:
            valid = np.flatnonzero(~part.all(axis=(0, 1)))
            if valid.size == 0:
                strip[...] = np.float32(np.nan)
                continue
            # Output columns whose two source neighbours are both nodata columns are
            # NaN: compute only between the first and last valid source columns (with
            # a margin of 3 source pixels, as in _fix_nodata_borders).
            c0 = max(0, 2 * (int(valid[0]) - 3))
            c1 = min(width, 2 * (int(valid[-1]) + 3))
            if c1 - c0 < width:
                strip[:, :, :c0] = np.float32(np.nan)
                strip[:, :, c1:] = np.float32(np.nan)
                col_phases, c_lo, c_hi = _strip_phases(cols.phases, 2, c0, c1)
                source, part = source[:, :, c_lo:c_hi], part[:, :, c_lo:c_hi]
                strip = strip[:, :, c0:c1]
        half = np.empty((data.shape[0], hi - lo, strip.shape[2]), np.float32)
        _sum_axis(source, col_phases, 2, half)
        _sum_axis(half, phases, 1, strip)
        finish(strip, divisor=16)
        if part is not None:
            _fix_nodata_borders(source, part, phases, col_phases, finish, strip)


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
    finish: _Finish,
    out: np.ndarray,
) -> np.ndarray:
    """Upsample by an integer factor on a shared lattice into ``out``.

    Bilinear weights are renormalised over valid neighbours, like GDAL's warper, so a
    pixel next to nodata keeps a value and only pixels with no valid neighbour (or
    whose own nearest source pixel is nodata) are nodata. The interpolation is
    separable (columns, then rows) and written with strided slices, each phase a
    weighted sum of two shifted views of the source (no index gathers), strip by
    strip of output rows so that its passes run in cache. For 8- and 16-bit sources
    and k = 2 (20 m onto 10 m) the arithmetic is exact, so it runs as integer-valued
    sums (:func:`_sum_axis`) and only the columns where valid pixels touch nodata are
    redone with renormalised weights (:func:`_fix_nodata_borders`); the result is the
    same to the bit as the general path's. With :mod:`decloud._kernels` built, the
    16-bit k = 2 bilinear case (Sentinel-2's 20 m bands) runs as one compiled pass per
    output pixel from the decoded integers, with the same arithmetic and bits.
    """
    col_off = round((dst.transform.c - src_grid.transform.c) / dst.resolution)
    row_off = round((src_grid.transform.f - dst.transform.f) / dst.resolution)
    bilinear = resampling == Resampling.bilinear and kind.continuous
    empty: float | int = np.nan if kind.continuous else fill
    cols = _axis(col_off, dst.width, k, src_grid.width, bilinear)
    rows = _axis(row_off, dst.height, k, src_grid.height, bilinear)
    if cols is None or rows is None:
        out[...] = empty
        return out
    _fill_outside(out, slice(rows.lo, rows.hi), slice(cols.lo, cols.hi), empty)
    block = out[:, rows.lo : rows.hi, cols.lo : cols.hi]
    src_dtype = np.dtype(src.dtypes[indexes[0] - 1])
    if bilinear and k == 2 and _kernels is not None and src_dtype in _KERNEL_TYPES:
        # The integers as stored (edge copies past the source's edges), then one
        # compiled pass per band: interpolation, renormalisation, scale and offset.
        raw, _ = _read_padded(src, indexes, rows, cols, src_dtype, None, False)
        nd = _comparable_nodata(nodata, src_dtype)
        row_index, row_far = _kernel_axis(rows)
        col_index, col_far = _kernel_axis(cols)
        for band, values in zip(block, raw, strict=True):
            _kernels.upsample2(values, band, row_index, row_far, col_index, col_far,
                               0 if nd is None else int(nd), nd is not None, finish.scale,
                               finish.scale != 1.0, finish.offset)
        return out
    dtype: Any = np.float32 if kind.continuous else out.dtype
    data, missing = _read_padded(src, indexes, rows, cols, dtype, nodata, kind.continuous)
    if not bilinear:
        for r_first, r_count, ri, _ in rows.phases:
            for c_first, c_count, ci, _ in cols.phases:
                block[:, _every(k, r_first, r_count), _every(k, c_first, c_count)] = \
                    data[:, ri : ri + r_count, ci : ci + c_count]
        if kind.continuous:
            finish(block)
        return out
    if _dyadic_exact(k, src_dtype):
        _upsample2_exact(data, missing, rows, cols, finish, block)
        return out
    step = _strip_rows(block, k)
    for s0 in range(0, block.shape[1], step):
        phases, lo, hi = _strip_phases(rows.phases, k, s0, min(s0 + step, block.shape[1]))
        strip = block[:, s0 : s0 + step]
        part = missing[:, lo:hi] if missing is not None else None
        if part is None:
            half = np.empty((data.shape[0], hi - lo, strip.shape[2]), np.float32)
            _interpolate_axis(data[:, lo:hi], cols.phases, k, 2, half)
            _interpolate_axis(half, phases, k, 1, strip)
        else:
            _renormalised(data[:, lo:hi], part, phases, cols.phases, k, strip)
        finish(strip)
    return out


def _renormalised(data: np.ndarray, missing: np.ndarray, rows: Sequence[_Phase],
                  cols: Sequence[_Phase], k: int, out: np.ndarray) -> None:
    """Bilinear upsampling with weights renormalised over valid neighbours, as GDAL.

    The result is ``sum(w * value) / sum(w)`` over the valid neighbours; a pixel whose
    own (nearest) source pixel is nodata stays nodata, whatever its neighbours.
    """
    total = np.where(missing, np.float32(0), data)
    valid = (~missing).astype(np.float32)
    half = np.empty((data.shape[0], data.shape[1], out.shape[2]), np.float32)
    _interpolate_axis(total, cols, k, 2, half)
    _interpolate_axis(half, rows, k, 1, out)
    weights = np.empty_like(out)
    _interpolate_axis(valid, cols, k, 2, half)
    _interpolate_axis(half, rows, k, 1, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, weights, out=out)
    for r_first, r_count, ri, rw in rows:
        for c_first, c_count, ci, cw in cols:
            own_r, own_c = ri + int(rw >= 0.5), ci + int(cw >= 0.5)
            np.copyto(out[:, _every(k, r_first, r_count), _every(k, c_first, c_count)],
                      np.float32(np.nan),
                      where=missing[:, own_r : own_r + r_count, own_c : own_c + c_count])


def _fix_nodata_borders(data: np.ndarray, missing: np.ndarray, rows: Sequence[_Phase],
                        cols: tuple[_Phase, ...], finish: _Finish, strip: np.ndarray) -> None:
    """Redo, renormalised, the columns of a k = 2 strip where valid pixels touch nodata.

    ``strip`` holds the plain interpolation of ``data`` (NaN at nodata), so every pixel
    with a nodata neighbour is NaN. Renormalised weights only change those pixels:
    elsewhere the weights sum to exactly 1 and both computations are exact. Only the
    columns around valid pixels next to nodata (a few along a swath edge) are redone.
    """
    has_missing: np.ndarray = np.asarray(missing.any(axis=(0, 1)))
    has_valid: np.ndarray = np.asarray((~missing).any(axis=(0, 1)))
    near = has_missing.copy()
    near[1:] |= has_missing[:-1]
    near[:-1] |= has_missing[1:]
    needed = np.flatnonzero(has_valid & near)
    if needed.size == 0:
        return
    # Targets using source columns j0 - 1 .. j1 + 1, as even block offsets (k = 2).
    c0 = max(0, 2 * (int(needed[0]) - 3))
    c1 = min(strip.shape[2], 2 * (int(needed[-1]) + 3))
    sub, lo, hi = _strip_phases(cols, 2, c0, c1)
    # Numerators (values, 0 at nodata) and denominators (1 at valid pixels) are
    # upsampled together as exact sums, stacked along the band axis: 16 times the
    # weighted sum and 16 times the sum of the weights, so their quotient rounds
    # exactly as _renormalised's. The own (nearest) pixel weighs 9 of 16, the three
    # others 7 together: a denominator under 8 means the own pixel is nodata (NaN).
    bands, gone = data.shape[0], missing[:, :, lo:hi]
    both = np.empty((2 * bands, *gone.shape[1:]), np.float32)
    np.copyto(both[:bands], data[:, :, lo:hi])
    np.copyto(both[:bands], np.float32(0), where=gone)
    np.logical_not(gone, out=both[bands:], casting="unsafe")
    half = np.empty((2 * bands, gone.shape[1], c1 - c0), np.float32)
    _sum_axis(both, sub, 2, half)
    sums = np.empty((2 * bands, strip.shape[1], c1 - c0), np.float32)
    _sum_axis(half, rows, 1, sums)
    weights = sums[bands:]
    np.copyto(weights, np.float32(np.nan), where=weights < 8)
    fixed = strip[:, :, c0:c1]
    np.divide(sums[:bands], weights, out=fixed)
    finish(fixed)


def _read_warped(
    src: DatasetReader,
    dst: Grid,
    indexes: Sequence[int],
    kind: RasterKind,
    resampling: Resampling | None,
    nodata: float | None,
    fill: float | int,
) -> np.ndarray:
    """Warp a source onto ``dst`` with GDAL, so that any window equals the whole warp.

    Two GDAL defaults make a warped window differ from the same window of a whole-grid
    warp, and both are pinned here: the approximate transformer (coordinates
    interpolated along each chunk's rows; :data:`_EXACT_TRANSFORM` makes every point
    exact) and the resampling scale, which GDAL estimates per chunk from the chunk's
    shape (a 1-pixel-wide edge window looks like a downsampling and gets a wider
    kernel). The scale is set from the source and target pixel sizes
    (:func:`_warp_scale`), the same for every window. GDAL reads only the source
    pixels the window needs.
    """
    dtype: Any = np.float32 if kind.continuous else src.dtypes[indexes[0] - 1]
    dst_nodata: float | int = np.nan if kind.continuous else fill
    left, bottom, right, top = transform_bounds(dst.crs, src.crs, *dst.bounds, densify_pts=21)
    s_left, s_bottom, s_right, s_top = src.bounds
    pad_x, pad_y = abs(src.transform.a), abs(src.transform.e)
    if (left > s_right + pad_x or right < s_left - pad_x
            or bottom > s_top + pad_y or top < s_bottom - pad_y):
        return np.full((len(indexes), dst.height, dst.width), dst_nodata, dtype=dtype)
    xscale, yscale = _warp_scale(src, dst)
    options: dict[str, Any] = {} if nodata is None else {"src_nodata": nodata}
    with WarpedVRT(
        src,
        crs=dst.crs,
        transform=dst.transform,
        width=dst.width,
        height=dst.height,
        resampling=resampling if resampling is not None else kind.resampling,
        nodata=dst_nodata,
        dtype=np.dtype(dtype).name,
        tolerance=_EXACT_TRANSFORM,
        XSCALE=f"{xscale:.12g}",
        YSCALE=f"{yscale:.12g}",
        **options,
    ) as vrt:
        return np.asarray(vrt.read(list(indexes)), dtype=dtype)


def _warp_scale(src: DatasetReader, dst: Grid) -> tuple[float, float]:
    """GDAL's resampling scale (target pixels per source pixel) along x and y.

    Measured on the source's central pixel, so that it depends on the source and the
    target CRS and pixel size only, never on the window being warped.
    """
    row, col = src.height // 2, src.width // 2
    pixel = rasterio.windows.bounds(Window(col, row, 1, 1), src.transform)
    left, bottom, right, top = transform_bounds(src.crs, dst.crs, *pixel, densify_pts=21)
    return (right - left) / dst.resolution, (top - bottom) / dst.resolution


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
