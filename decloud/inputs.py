"""The one input reader: products of each acquisition to the encoded arrays of every key.

The stack builder (:func:`decloud.stack.build_stack`), the dataset writer
(:func:`decloud.datasets.write_dataset`) and the inference engine all read their inputs
here, so that a key holds the same values whoever reads it:

* ``s2_<a>``, ``s2_20m_<a>``: the key's bands of acquisition ``a``'s S2 product, on the
  grid at the key's resolution, encoded by :func:`decloud.keys.encode_s2`;
* ``s2_mask_<a>``: the product's :class:`~decloud.constants.MaskClass` layer, nodata
  where the product mask says so **or where any band of ``a`` read for this request is
  nodata** (the bands of its ``s2``/``s2_20m`` keys; a 20 m pixel counts for the four
  10 m pixels it covers). A request with a mask key and no band key of its
  acquisition reads the product's finest band for it. This is decloud's only
  definition of S2 mask nodata: :meth:`~decloud.products.S2Product.mask` is the
  product's own layer;
* ``s1_<a>``: VV and VH of ``a``'s S1 image, linear sigma0 encoded by
  :func:`decloud.keys.encode_s1`;
* ``dem``: metres (nodata -32768), with a :class:`~decloud.products.dem.DemPolicy`:
  ``require`` (the DEM must cover the window, else a
  :class:`~decloud.errors.DemCoverageError` naming the file) or ``partial`` (nodata
  where it does not);
* ``dt_<a>``: float32 ``(1,)``, days from the reference acquisition's date to ``a``'s
  (:func:`decloud.keys.day_offset`; the date of an acquisition is its S2 product's,
  else its S1 image's).

Windows are given on a reference grid (the tile's 10 m grid). A key whose resolution
is ``k`` times coarser (``s2_20m``: ``k = 2``) is read on the grid at that resolution
over the same footprint: offsets and sizes divided by ``k``, which must divide them
(:func:`coarse_window`). A margin widens the window by that many reference pixels on
each side; the window may extend past the grid's edges (S2 and S1 are nodata there).

Arrays come back channels last, ``(H, W, C)``, as the datasets store them and the models
take them. They are views of channels-first buffers: ``np.moveaxis(a, -1, 0)`` gives a
contiguous ``(C, H, W)`` array for raster writers without a copy.

A window read equals the same window cut out of a read of the whole grid (tested
for every key kind), so that windows stream without seams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
from rasterio.windows import Window

from decloud.constants import DEM_NODATA, S1_POLARISATIONS, S2_NODATA, S2_SCALE, MaskClass
from decloud.env import ensure_env
from decloud.errors import InputError, KeyGrammarError, WindowAlignmentError
from decloud.grid import Grid, RasterKind, RasterPool, read_on_grid
from decloud.keys import (
    KINDS,
    KeyKind,
    day_offset,
    encode_s1,
    encode_s2,
    parse_key,
)
from decloud.products import Dem, S1Product, S2Product
from decloud.products.dem import DemPolicy

#: The DN scale of products that store the s2 key encoding (THEIA): 1 / S2_SCALE.
_S2_DN_SCALE = 1 / S2_SCALE

__all__ = [
    "AcquisitionProducts",
    "DemPolicy",
    "InputKey",
    "InputProducts",
    "KeyRequest",
    "coarse_window",
    "pad_window",
    "read_inputs",
]


class KeyRequest(Protocol):
    """What the reader needs of a key: :class:`InputKey` and the datasets' ``KeySpec``."""

    @property
    def name(self) -> str:
        """The key (``s2_t``)."""

    @property
    def kind(self) -> str:
        """Its :class:`~decloud.keys.KeyKind`."""

    @property
    def acquisition(self) -> str | None:
        """Its acquisition, None for ``dem`` and single-date stack keys."""

    @property
    def bands(self) -> tuple[str, ...]:
        """Channel names (S2 bands; fixed for the other kinds)."""

    @property
    def resolution(self) -> float:
        """Pixel size in metres (0 for ``dt``)."""


@dataclass(frozen=True)
class InputKey:
    """A key to read: its name, kind, acquisition, bands and resolution.

    Build one with :meth:`of`, which fills in what :data:`decloud.keys.KINDS` says.
    """

    name: str
    kind: KeyKind
    acquisition: str | None
    bands: tuple[str, ...]
    resolution: float

    @classmethod
    def of(cls, key: str, bands: Sequence[str] | None = None,
           resolution: float | None = None) -> InputKey:
        """The request of a key, with its kind's default bands and resolution.

        Args:
            key: A key of the grammar (:func:`decloud.keys.parse_key`).
            bands: S2 bands (other kinds have fixed channels).
            resolution: Another pixel size (the 20 m stacks read every key at 20 m).

        Raises:
            KeyGrammarError: ``key`` is not a key.
        """
        kind, acquisition = parse_key(key)
        spec = KINDS[kind]
        return cls(key, kind, acquisition,
                   tuple(bands) if bands is not None else spec.default_bands,
                   spec.resolution if resolution is None else float(resolution))


@dataclass(frozen=True)
class AcquisitionProducts:
    """The products chosen for one acquisition (either may be None)."""

    s2: S2Product | None = None
    s1: S1Product | None = None

    @property
    def acquired(self) -> datetime | None:
        """The acquisition's date: its S2 product's, else its S1 image's."""
        if self.s2 is not None:
            return self.s2.acquired
        return self.s1.acquired if self.s1 is not None else None


@dataclass(frozen=True)
class InputProducts:
    """Everything a request reads from.

    Attributes:
        acquisitions: The products of each acquisition, by name (None: the single date
            of a stack, read by keys without an acquisition).
        dem: The DEM, if the keys ask for one.
        reference: The acquisition ``dt_<a>`` counts days from.
    """

    acquisitions: Mapping[str | None, AcquisitionProducts] = field(default_factory=dict)
    dem: Dem | None = None
    reference: str | None = None


def pad_window(window: Window, margin: int) -> Window:
    """``window`` widened by ``margin`` pixels on each side."""
    if margin < 0:
        raise WindowAlignmentError(f"negative margin {margin}", field="margin")
    return Window(int(window.col_off) - margin, int(window.row_off) - margin,
                  int(window.width) + 2 * margin, int(window.height) + 2 * margin)


def coarse_window(window: Window, factor: int, *, key: str = "") -> Window:
    """The window of the same footprint on a grid ``factor`` times coarser.

    The coarser grid shares the corner of the fine one (``Grid.at_resolution``), so
    fine pixel ``i`` lies in coarse pixel ``i // factor``: offsets and sizes must be
    multiples of ``factor`` for the footprints to be equal.

    Args:
        window: A window of the fine grid (integer offsets and sizes).
        factor: Resolution ratio (2 from 10 m to 20 m).
        key: The key being read, named in the error.

    Raises:
        WindowAlignmentError: An offset or size is not a multiple of ``factor``.
    """
    values = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    if factor == 1:
        return Window(*values)
    if any(v % factor for v in values):
        raise WindowAlignmentError(
            f"window (col {values[0]}, row {values[1]}, {values[2]} x {values[3]}) has an "
            f"offset or size that is not a multiple of {factor}: the {factor}x coarser "
            "window would not have the same footprint (use even offsets and sizes, "
            "margin included)", field=key or None)
    return Window(*(v // factor for v in values))


def _factor(resolution: float, grid: Grid, key: str) -> int:
    """The integer ratio of a key's pixel size to the reference grid's."""
    ratio = resolution / grid.resolution
    factor = round(ratio)
    if factor < 1 or not math.isclose(ratio, factor, rel_tol=1e-9):
        raise InputError(f"resolution {resolution:g} m is not a whole multiple of the "
                         f"grid's {grid.resolution:g} m", field=key)
    return factor


def _kind(key: KeyRequest) -> KeyKind:
    try:
        return KeyKind(key.kind)
    except ValueError as err:
        raise KeyGrammarError(f"unknown key kind {key.kind!r} (kinds: {', '.join(KeyKind)})",
                              field=key.name) from err


def _channels_last(array: np.ndarray) -> np.ndarray:
    return np.moveaxis(array, 0, -1)


def _any_band_equal(bands: np.ndarray, value: int) -> np.ndarray:
    """Per pixel, whether any band of ``(C, H, W)`` equals ``value``, fast in both layouts.

    Bands read into a channels-last array (a dataset shard's) are strided: numpy's
    ``any(axis=0)`` over them, or over the short last axis of the ``(H, W, C)`` array,
    runs an element at a time (about 60x slower than contiguous). There a pixel's C
    booleans are adjacent bytes, tested as a few wider integers instead.
    """
    if bands.shape[0] == 1 or bands.strides[0] != bands.itemsize:
        return (bands == value).any(axis=0)
    equal = np.ascontiguousarray(np.moveaxis(bands, 0, -1) == value)
    width = min(bands.shape[0] & -bands.shape[0], 8)  # bytes per word: divides C
    words = equal.view(np.dtype(f"u{width}"))
    found = words[..., 0] != 0
    for i in range(1, words.shape[-1]):
        found |= words[..., i] != 0
    return found


@dataclass
class _Reader:
    """One request: the products, the reference grid and the padded window."""

    products: InputProducts
    grid: Grid
    window: Window
    pool: RasterPool | None
    dem_policy: DemPolicy | str
    grids: dict[int, Grid] = field(default_factory=dict)
    # Band nodata of each acquisition, at the factor it was read at.
    nodata: dict[str | None, list[tuple[int, np.ndarray]]] = field(default_factory=dict)

    def at(self, factor: int, key: str) -> tuple[Grid, Window]:
        if factor not in self.grids:
            self.grids[factor] = self.grid if factor == 1 else \
                self.grid.at_resolution(self.grid.resolution * factor)
        return self.grids[factor], coarse_window(self.window, factor, key=key)

    def acquisition(self, key: KeyRequest) -> AcquisitionProducts:
        found = self.products.acquisitions.get(key.acquisition)
        if found is None:
            raise InputError(f"no products for acquisition {key.acquisition!r} (products "
                             f"of: {', '.join(map(str, self.products.acquisitions))})",
                             field=key.name)
        return found

    def s2(self, key: KeyRequest) -> S2Product:
        product = self.acquisition(key).s2
        if product is None:
            raise InputError(f"acquisition {key.acquisition!r} has no S2 product",
                             field=key.name)
        return product

    def read_bands(self, key: KeyRequest, factor: int,
                   dest: np.ndarray | None = None) -> np.ndarray:
        grid, window = self.at(factor, key.name)
        product = self.s2(key)
        encoded = self.read_encoded(product, key.bands, grid, window, dest)
        if encoded is not None:
            self.nodata.setdefault(key.acquisition, []).append(
                (factor, _any_band_equal(encoded, S2_NODATA)))
            return encoded
        reflectance = product.read(key.bands, grid, window, pool=self.pool)
        self.nodata.setdefault(key.acquisition, []).append(
            (factor, np.isnan(reflectance).any(axis=0)))
        return encode_s2(reflectance)

    def read_encoded(self, product: S2Product, bands: Sequence[str], grid: Grid,
                     window: Window, dest: np.ndarray | None = None) -> np.ndarray | None:
        """The bands' stored integers as they are, when they already are the s2 encoding.

        THEIA stores int16 reflectance x 10000 with nodata -10000, the keys' encoding:
        on an aligned grid (no resampling) decoding to float32 and encoding back gives
        the stored integers again (tested over every int16 value), but for values
        below the nodata, which the encoding clips to -9999. Reading them straight
        skips two float passes. None when a band is stored otherwise or needs
        resampling (or no pool keeps the files open): the float path then. The bands
        are read straight into ``dest`` (``(C, H, W)``, any strides) when it fits.
        """
        if self.pool is None:
            return None
        files = [product.band(b) for b in bands]
        if any(bf.scale != _S2_DN_SCALE or bf.offset != 0.0 for bf in files):
            return None
        sources = [self.pool.get(bf.path) for bf in files]
        target = grid.subgrid(window)
        for bf, src in zip(files, sources, strict=True):
            nodata = src.nodata if src.nodata is not None else bf.nodata
            if (src.dtypes[bf.index - 1] != "int16" or nodata != S2_NODATA
                    or not Grid.from_dataset(src).is_aligned_with(target)):
                return None
        shape = (len(files), target.height, target.width)
        out: np.ndarray = (dest if dest is not None and dest.shape == shape
                           and dest.dtype == np.int16 else np.empty(shape, np.int16))
        for i, (bf, src) in enumerate(zip(files, sources, strict=True)):
            # As a mask: the integers as stored, S2_NODATA outside the source.
            read_on_grid(src, grid, window, indexes=(bf.index,), kind=RasterKind.MASK,
                         fill=S2_NODATA, out=out[i : i + 1])
        if out.min(initial=0) < S2_NODATA:  # rare: below nodata clips to nodata + 1
            np.copyto(out, np.int16(S2_NODATA + 1), where=out < S2_NODATA)
        return out

    def read_mask(self, key: KeyRequest, factor: int) -> np.ndarray:
        grid, window = self.at(factor, key.name)
        product = self.s2(key)
        layer = product.mask(grid, window, pool=self.pool)
        missing = self.nodata.get(key.acquisition)
        if not missing:
            finest = product.band_names[0]
            missing = [(factor, np.isnan(product.read([finest], grid, window,
                                                      pool=self.pool)[0]))]
        for band_factor, nodata in missing:
            ratio = band_factor / factor
            repeat = round(ratio)
            if repeat < 1 or ratio != repeat:
                raise InputError(
                    f"a mask at {key.resolution:g} m cannot take the nodata of bands read at "
                    f"{band_factor * self.grid.resolution:g} m (bands must be as coarse or "
                    "coarser by a whole factor)", field=key.name)
            if repeat > 1:
                # A coarse pixel covers repeat x repeat mask pixels: all are nodata.
                nodata = np.repeat(np.repeat(nodata, repeat, axis=0), repeat, axis=1)
            np.copyto(layer, layer.dtype.type(MaskClass.NODATA), where=nodata)
        return layer[None]

    def read_s1(self, key: KeyRequest, factor: int,
                dest: np.ndarray | None = None) -> np.ndarray:
        product = self.acquisition(key).s1
        if product is None:
            raise InputError(f"acquisition {key.acquisition!r} has no S1 image",
                             field=key.name)
        grid, window = self.at(factor, key.name)
        linear = product.read(S1_POLARISATIONS, grid, window, pool=self.pool, unit="linear")
        fits = dest is not None and dest.shape == linear.shape and dest.dtype == np.uint16
        return encode_s1(linear, out=dest if fits else None)

    def read_dem(self, key: KeyRequest, factor: int) -> np.ndarray:
        dem = self.products.dem
        if dem is None:
            raise InputError("no DEM was given", field=key.name)
        grid, window = self.at(factor, key.name)
        elevation = dem.read(grid, window, pool=self.pool, policy=self.dem_policy)
        return np.nan_to_num(elevation, nan=DEM_NODATA)[None]

    def read_dt(self, key: KeyRequest) -> np.ndarray:
        if self.products.reference is None:
            raise InputError("dt keys need a reference acquisition", field=key.name)
        reference = self.products.acquisitions.get(self.products.reference)
        when = self.acquisition(key).acquired
        value = day_offset(when, reference.acquired if reference is not None else None)
        return np.array([value], dtype=np.float32)


@ensure_env
def read_inputs(
    keys: Sequence[KeyRequest],
    products: InputProducts,
    grid: Grid,
    window: Window | None = None,
    *,
    margin: int = 0,
    dem_policy: DemPolicy | str = DemPolicy.REQUIRE,
    pool: RasterPool | None = None,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Read the encoded arrays of keys on a window of a grid (inside decloud's GDAL settings).

    Args:
        keys: The keys to read (:class:`InputKey`, or the datasets' ``KeySpec``).
        products: The products of each acquisition, the DEM and the reference.
        grid: The reference grid (the tile's 10 m grid); every key's resolution is a
            whole multiple of its pixel size.
        window: A window of ``grid`` (whole grid when None); it may extend past the
            edges.
        margin: Reference pixels added on each side of the window.
        dem_policy: ``require`` (the DEM must cover the window) or ``partial``.
        pool: Keeps files open across windows.
        out: Arrays to read keys into, by key name (any strides: a sample of a
            dataset shard), each of the shape and dtype the key returns; they are
            then the arrays returned. Stored S2 integers are read straight into
            them; other keys are copied in.

    Returns:
        By key name, ``(H, W, C)`` arrays in the key's dtype (``(1,)`` float32 for
        ``dt_<a>``), where ``H x W`` is the padded window at the key's resolution.

    Raises:
        InputError: A key asks for a product that was not given, or for a resolution
            that is not a multiple of the grid's, or its ``out`` array has another
            shape or dtype.
        WindowAlignmentError: A coarser key's window would not have the same footprint.
        DemCoverageError: ``require`` and the DEM does not cover the window.
        KeyGrammarError: A key's kind is not a key kind.
    """
    padded = pad_window(window if window is not None else grid.full_window(), margin)
    reader = _Reader(products, grid, padded, pool, dem_policy)
    result: dict[str, np.ndarray] = {}
    dests = out if out is not None else {}
    kinds = [_kind(k) for k in keys]
    # Bands before masks: a mask takes the nodata of the bands read for its acquisition.
    order = sorted(range(len(keys)), key=lambda i: kinds[i] is KeyKind.S2_MASK)
    for i in order:
        key, kind = keys[i], kinds[i]
        dest = dests.get(key.name)
        if kind is KeyKind.DT:
            result[key.name] = _into(reader.read_dt(key), dest, key.name)
            continue
        factor = _factor(key.resolution, grid, key.name)
        if kind in (KeyKind.S2, KeyKind.S2_20M, KeyKind.S1):
            # Read (stored S2 integers) or encoded (S1) straight into dest where it
            # fits: no copy below.
            view = None if dest is None else np.moveaxis(dest, -1, 0)
            data = (reader.read_s1(key, factor, view) if kind is KeyKind.S1
                    else reader.read_bands(key, factor, view))
            if dest is not None and data is view:
                result[key.name] = dest
                continue
        elif kind is KeyKind.S2_MASK:
            data = reader.read_mask(key, factor)
        else:
            data = reader.read_dem(key, factor)
        result[key.name] = _into(_channels_last(data), dest, key.name)
    return {k.name: result[k.name] for k in keys}


def _into(data: np.ndarray, dest: np.ndarray | None, key: str) -> np.ndarray:
    """``data`` copied into ``dest``, or ``data`` when there is no dest."""
    if dest is None:
        return data
    if dest.shape != data.shape or dest.dtype != data.dtype:
        raise InputError(f"out array is {dest.dtype} {dest.shape}, the key reads "
                         f"{data.dtype} {data.shape}", field=key)
    dest[...] = data
    return dest
