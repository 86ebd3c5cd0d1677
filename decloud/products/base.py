"""The common product model every reader returns.

A product is one acquisition: an S2 L2A product (THEIA, SAFE, generic stack), one S1
image (a VV/VH pair or stack) or a DEM. Readers are small subclasses registered with
:func:`register`; :func:`decloud.products.open_product` picks one by the entry's name.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from decloud.constants import MaskClass, normalize_band_name
from decloud.env import ensure_env
from decloud.errors import ArgumentError, MissingBandError, ProductFormatError
from decloud.grid import Grid, RasterKind, RasterPool, read_on_grid
from decloud.masks import compute_mask, fallback_origin

__all__ = [
    "READERS",
    "BandFile",
    "MaskFile",
    "Product",
    "S2Product",
    "register",
]


@dataclass(frozen=True)
class BandFile:
    """Where one band lives and how its numbers become physical values.

    ``physical = DN * scale + offset``; ``nodata`` is the DN of missing pixels.
    """

    name: str
    path: str
    resolution: float
    index: int = 1
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass(frozen=True)
class MaskFile:
    """A mask raster of a product (THEIA CLM/EDG, SAFE SCL, a generic mask)."""

    name: str
    path: str
    resolution: float
    index: int = 1


#: Reader classes tried in order by :func:`decloud.products.open_product`.
READERS: list[type[Product]] = []


def register(cls: type[Product]) -> type[Product]:
    """Class decorator adding a reader to :data:`READERS`."""
    READERS.append(cls)
    return cls


@dataclass(kw_only=True)
class Product(ABC):
    """One acquisition of one sensor, with its bands on disk.

    An abstract base: a reader subclasses it (or :class:`S2Product`), implements
    :meth:`matches` and :meth:`open`, and registers with :func:`register`.

    Attributes:
        path: The product folder, zip or file.
        platform: ``S2A``, ``S2B``, ``S1A``... or ``DEM``.
        tile: Sentinel-2 tile id, ``T31TEJ`` style, or None when unknown.
        acquired: Acquisition date-time, timezone-aware UTC.
        bands: Band files by decloud band name.
        masks: Mask files by name.
        relative_orbit: Relative orbit number (S1; S2 when the product says it).
        pass_direction: ``ASC`` or ``DES`` (S1).
    """

    kind: ClassVar[str] = ""
    sensor: ClassVar[str] = ""
    raster_kind: ClassVar[RasterKind] = RasterKind.REFLECTANCE

    path: Path
    platform: str
    tile: str | None
    acquired: datetime
    bands: dict[str, BandFile]
    masks: dict[str, MaskFile] = field(default_factory=dict)
    relative_orbit: int | None = None
    pass_direction: str | None = None

    def __post_init__(self) -> None:
        # Readers build products from names and metadata: a naive date or a product
        # without bands would be a reader bug or a bad file, not something to carry on.
        if self.acquired.tzinfo is None:
            raise ProductFormatError("acquisition time has no time zone (decloud uses UTC)",
                                     path=self.path, field="acquired")
        if not self.bands:
            raise ProductFormatError("the product has no band", path=self.path, field="bands")

    @classmethod
    @abstractmethod
    def matches(cls, path: Path) -> bool:
        """Whether ``path``'s name follows this reader's naming scheme."""

    @classmethod
    @abstractmethod
    def open(cls, path: Path) -> Product:
        """Read the product at ``path`` (its name must match)."""

    @property
    def name(self) -> str:
        """The product's file or folder name."""
        return self.path.name

    @property
    def band_names(self) -> list[str]:
        """Band names, finest resolution first, then by name."""
        return sorted(self.bands, key=lambda b: (self.bands[b].resolution, b))

    def band(self, name: str) -> BandFile:
        """The band file of ``name`` (any usual spelling: ``B2``, ``B02``)."""
        key = normalize_band_name(name)
        if key not in self.bands:
            raise MissingBandError(
                f"band {name!r} is not in this product (it has {', '.join(self.band_names)})",
                path=self.path,
                field=name,
            )
        return self.bands[key]

    def grid(self, resolution: float | None = None, pool: RasterPool | None = None) -> Grid:
        """The product's own grid, from its finest band, optionally at another resolution."""
        finest = self.bands[self.band_names[0]]
        grid = pool.get(finest.path) if pool else None
        native = Grid.from_dataset(grid) if grid is not None else Grid.from_raster(finest.path)
        if resolution is None or math.isclose(resolution, native.resolution):
            return native
        return native.at_resolution(resolution)

    @ensure_env
    def read(
        self,
        bands: Sequence[str],
        grid: Grid | None = None,
        window: Window | None = None,
        *,
        resampling: Resampling | None = None,
        pool: RasterPool | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read bands onto a grid window as physical values.

        Args:
            bands: Band names.
            grid: Target grid; the product's own 10 m (finest) grid when None.
            window: Window of ``grid``; all of it when None.
            resampling: Overrides the default (bilinear for continuous values).
            pool: Keeps files open across calls when streaming windows.
            out: A float32 array ``(len(bands), height, width)`` to fill and return
                instead of a new one: streaming a tile into one reused buffer saves
                allocating (and the system zeroing) a fresh array per window.

        Returns:
            float32 array ``(len(bands), height, width)``, NaN where there is no data.

        Raises:
            ArgumentError: ``out`` has the wrong shape or type.
        """
        grid = grid if grid is not None else self.grid(pool=pool)
        files = [self.band(b) for b in bands]
        window = window if window is not None else grid.full_window()
        shape = (len(files), int(window.height), int(window.width))
        if out is None:
            out = np.empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ArgumentError(f"out is {out.dtype} {out.shape}, the read needs float32 {shape}",
                                path=self.path, field="out")
        for i, bf in enumerate(files):
            src: Any = pool.get(bf.path) if pool is not None else bf.path
            # Each band is decoded, resampled and scaled straight into its slot of the
            # output, strip by strip while the pixels are in cache.
            read_on_grid(src, grid, window, indexes=(bf.index,), kind=self.raster_kind,
                         resampling=resampling, src_nodata=bf.nodata, scale=bf.scale,
                         offset=bf.offset, out=out[i : i + 1])
        return out

    def footprint(self, crs: CRS | str = "EPSG:4326") -> BaseGeometry:
        """The product's extent as a polygon, in ``crs`` (WGS84 longitude/latitude by default)."""
        grid = self.grid()
        geom = box(*grid.bounds)
        if CRS.from_user_input(crs) == grid.crs:
            return geom
        return shape(transform_geom(grid.crs, crs, mapping(geom)))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the product model."""
        return {
            "name": self.name,
            "kind": self.kind,
            "sensor": self.sensor,
            "platform": self.platform,
            "tile": self.tile,
            "acquired": self.acquired.isoformat().replace("+00:00", "Z"),
            "relative_orbit": self.relative_orbit,
            "pass_direction": self.pass_direction,
            "bands": {
                name: {
                    "resolution": b.resolution,
                    "path": b.path,
                    "index": b.index,
                    "scale": b.scale,
                    "offset": b.offset,
                    "nodata": b.nodata,
                }
                for name, b in ((n, self.bands[n]) for n in self.band_names)
            },
            "masks": {m.name: {"resolution": m.resolution, "path": m.path}
                      for m in self.masks.values()},
            "path": str(self.path),
        }


@dataclass(kw_only=True)
class S2Product(Product):
    """A Sentinel-2 L2A product: reflectance bands and a cloud/shadow/nodata mask.

    Abstract: a reader implements :meth:`matches`, :meth:`open`, :meth:`_mask_name`
    and :meth:`_product_mask`.

    Subclasses translate their own mask format (THEIA CLM/EDG bits, SAFE SCL classes,
    a generic class raster) into decloud's :class:`~decloud.constants.MaskClass`
    layer. Products without a usable mask get the computed fallback of
    :mod:`decloud.masks`, and say so in :attr:`mask_origin`.
    """

    sensor: ClassVar[str] = "S2"
    raster_kind: ClassVar[RasterKind] = RasterKind.REFLECTANCE
    #: Processing level: ``L2A`` (surface reflectance) or ``L1C`` (top of atmosphere).
    level: ClassVar[str] = "L2A"

    @property
    def mask_origin(self) -> str:
        """Where the cloud mask comes from: a product layer, or the computed test used.

        ``computed`` (full test) or ``computed-10m`` (10 m bands only, no SWIR tests):
        see :func:`decloud.masks.fallback_bands`.
        """
        return self._mask_name() or fallback_origin(self.bands)

    @abstractmethod
    def _mask_name(self) -> str | None:
        """The product mask used, e.g. ``CLM``/``SCL``, or None when there is none."""

    @abstractmethod
    def _product_mask(self, grid: Grid, window: Window | None,
                      pool: RasterPool | None) -> np.ndarray:
        """The product's own mask as a MaskClass uint8 layer (only if it has one)."""

    @ensure_env
    def mask(
        self,
        grid: Grid | None = None,
        window: Window | None = None,
        *,
        pool: RasterPool | None = None,
    ) -> np.ndarray:
        """The product's own :class:`MaskClass` layer (uint8) on a grid window.

        Nodata is what the product mask says (THEIA EDG, SCL 0 and 1, a generic
        class raster's nodata classes; the computed mask's band nodata). The
        ``s2_mask_<acq>`` key adds the nodata of every band read with it: that one
        definition lives in :mod:`decloud.inputs`.

        Args:
            grid: Target grid; the product's own grid when None.
            window: Window of ``grid``; all of it when None.
            pool: Keeps files open across calls.
        """
        grid = grid if grid is not None else self.grid(pool=pool)
        if self._mask_name() is not None:
            layer = self._product_mask(grid, window, pool)
        else:
            layer = compute_mask(self, grid, window, pool=pool)
        return layer

    def cloud_mask(
        self,
        grid: Grid | None = None,
        window: Window | None = None,
        *,
        classes: Sequence[MaskClass] = (MaskClass.CLOUD, MaskClass.CIRRUS, MaskClass.SHADOW),
        pool: RasterPool | None = None,
    ) -> np.ndarray:
        """Boolean mask of the pixels in any of ``classes`` (clouds, cirrus, shadows)."""
        return np.isin(self.mask(grid, window, pool=pool), [int(c) for c in classes])

    def cover(self, resolution: float = 60.0) -> dict[str, float]:
        """Fractions of cloud (incl. cirrus), shadow and nodata, on a coarse grid.

        Cloud and shadow fractions are relative to the valid pixels.
        """
        layer = self.mask(self.grid(resolution))
        total = int(layer.size)
        nodata = int(np.count_nonzero(layer == MaskClass.NODATA))
        valid = max(total - nodata, 1)
        cloud = np.count_nonzero((layer == MaskClass.CLOUD) | (layer == MaskClass.CIRRUS))
        shadow = np.count_nonzero(layer == MaskClass.SHADOW)
        return {
            "cloud": cloud / valid,
            "shadow": shadow / valid,
            "nodata": nodata / total,
        }

    def describe(self) -> dict[str, Any]:  # noqa: D102
        out = super().describe()
        out["mask_origin"] = self.mask_origin
        out["level"] = self.level
        return out


_PRIORITY = (MaskClass.SHADOW, MaskClass.CIRRUS, MaskClass.CLOUD, MaskClass.NODATA)


#: A mask translation: per class of _PRIORITY, the raster values (or bit numbers).
_Spec = tuple[tuple[int, ...], ...]


def _hits(values: np.ndarray, bits: bool, entry: tuple[int, ...]) -> np.ndarray:
    """Where ``values`` hold one of ``entry``'s values, or (``bits``) any of its bits."""
    if bits:
        flags = sum(1 << b for b in entry)
        return np.asarray((values.astype(np.int64) & flags) != 0)
    return np.isin(values, list(entry))


@functools.lru_cache(maxsize=64)
def _lookup(dtype: str, bits: bool, spec: _Spec) -> np.ndarray:
    """Class of every value of an 8- or 16-bit type, by priority (cached, read-only).

    Built once per mask type and table: a product's mask is read window after window.
    """
    values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    lut = np.zeros(values.shape, np.uint8)
    for cls, entry in zip(_PRIORITY, spec, strict=True):
        lut[_hits(values, bits, entry)] = cls
    lut.flags.writeable = False
    return lut


def _apply(raw: np.ndarray, bits: bool, spec: _Spec) -> np.ndarray:
    """Class layer by priority; through a lookup table for 8- and 16-bit masks (fast)."""
    if raw.dtype in (np.uint8, np.uint16):
        return _lookup(raw.dtype.str, bits, spec)[raw]
    layer = np.zeros(raw.shape, dtype=np.uint8)
    for cls, entry in zip(_PRIORITY, spec, strict=True):
        layer[_hits(raw, bits, entry)] = cls
    return layer


def _spec(table: Mapping[MaskClass, Sequence[int]]) -> _Spec:
    return tuple(tuple(int(v) for v in table.get(cls, ())) for cls in _PRIORITY)


def classes_from_values(raw: np.ndarray, table: Mapping[MaskClass, Sequence[int]]) -> np.ndarray:
    """Map the integer classes of a mask raster to a MaskClass layer, by priority."""
    return _apply(raw, False, _spec(table))


def classes_from_bits(raw: np.ndarray, table: Mapping[MaskClass, Sequence[int]]) -> np.ndarray:
    """Map the bit flags of a mask raster to a MaskClass layer, by priority."""
    return _apply(raw, True, _spec(table))


def read_mask(mask: MaskFile, grid: Grid, window: Window | None,
              pool: RasterPool | None, fill: int) -> np.ndarray:
    """Read a mask raster onto a grid window with nearest resampling."""
    src: Any = pool.get(mask.path) if pool is not None else mask.path
    return read_on_grid(src, grid, window, indexes=(mask.index,), kind=RasterKind.MASK,
                        fill=fill)[0]
