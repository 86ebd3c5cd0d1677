"""Sentinel-1 images as written by S1Tiling, and decloud's prepared S1 rasters.

Names: ``s1a_31TEJ_vv_DES_110_20170101t054437.tif`` with its ``vh`` twin, or one
two-band ``_vvvh_`` stack (band 1 VV, band 2 VH). The time may be ``txxxxxx`` when
S1Tiling merged several acquisitions of the day. Values are linear sigma0 (float32,
nodata 0), or decloud's prepared uint16 encoding (:mod:`decloud.s1`) when the file
carries the ``DECLOUD_S1_ENCODING`` tag. :meth:`S1Product.read` returns dB by default.

Values are sanity-checked: a file whose band unit, description or ``UNIT`` tag says dB
is read as dB (``encoding`` ``db``); a file named like a linear one whose values are
mostly negative (linear sigma0 never is: it is a dB file) is refused with a
:class:`~decloud.errors.SuspectValuesError` naming it, when opened (a few sampled
windows) and on every read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from decloud.env import ensure_env
from decloud.errors import (
    ArgumentError,
    CorruptRasterError,
    ProductFormatError,
    SuspectValuesError,
)
from decloud.grid import Grid, RasterKind, RasterPool, open_raster
from decloud.products.base import BandFile, Product, register
from decloud.s1 import PREPARED_ENCODING_TAG, db_to_linear, decode_prepared, linear_to_db

__all__ = ["S1Product", "group_s1_files", "parse_s1_name"]

_NAME = re.compile(
    r"^(?P<platform>s1[a-d])_(?P<tile>\d{2}[a-z]{3})_(?P<pol>vv|vh|vvvh)_(?P<dir>asc|des)"
    r"_(?P<orbit>\d{3})_(?P<date>\d{8})t(?P<time>\d{6}|x{6})(?P<rest>_[^.]*)?\.tiff?$",
    re.IGNORECASE,
)


def parse_s1_name(path: Path) -> dict[str, Any] | None:
    """Fields of an S1Tiling file name, or None when the name is not one.

    Raises:
        ProductFormatError: The name has the S1Tiling form but an impossible date.
    """
    match = _NAME.match(path.name)
    if match is None:
        return None
    time = match["time"].lower()
    try:
        acquired = datetime.strptime(
            match["date"] + ("000000" if time == "xxxxxx" else time), "%Y%m%d%H%M%S"
        ).replace(tzinfo=UTC)
    except ValueError as err:
        raise ProductFormatError(f"{match['date']}t{time} in the name is not a date-time",
                                 path=path, field="date") from err
    return {
        "platform": match["platform"].upper(),
        "tile": "T" + match["tile"].upper(),
        "pol": match["pol"].upper(),
        "pass_direction": match["dir"].upper(),
        "relative_orbit": int(match["orbit"]),
        "acquired": acquired,
        # The key that makes a VV file and its VH twin one acquisition.
        "key": (match["platform"].lower(), match["tile"].upper(), match["dir"].upper(),
                match["orbit"], match["date"], time, match["rest"] or ""),
    }


@register
@dataclass(kw_only=True)
class S1Product(Product):
    """One S1 acquisition on an S2 tile: VV and/or VH backscatter."""

    kind: ClassVar[str] = "s1tiling"
    sensor: ClassVar[str] = "S1"
    raster_kind: ClassVar[RasterKind] = RasterKind.BACKSCATTER
    encoding: str = "linear"

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return parse_s1_name(path) is not None

    @classmethod
    def open(cls, path: Path) -> S1Product:
        """Open one S1Tiling file: a ``_vvvh_`` stack, or a single polarisation."""
        return cls.from_files([path])

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> S1Product:
        """Build one acquisition from its files (a VV/VH pair, a stack, or one file)."""
        if not paths:
            raise ProductFormatError("an S1 product needs at least one file", field="paths")
        fields: list[dict[str, Any]] = []
        for p in paths:
            parsed = parse_s1_name(p)
            if parsed is None:
                raise ProductFormatError("name is not an S1Tiling name", path=p)
            fields.append(parsed)
        keys = {f["key"] for f in fields}
        if len(keys) != 1:
            raise ProductFormatError("files of different acquisitions cannot be one product",
                                     path=paths[0])
        bands: dict[str, BandFile] = {}
        encoding = "linear"
        for path, f in zip(paths, fields, strict=True):
            pols = ["VV", "VH"] if f["pol"] == "VVVH" else [f["pol"]]
            header = _checked_header(path, f["pol"], len(pols))
            encoding = header.encoding
            for index, pol in enumerate(pols, start=1):
                if pol in bands:
                    raise ProductFormatError(f"{pol} is given twice", path=path, field=pol)
                bands[pol] = BandFile(name=pol, path=str(path), resolution=header.resolution,
                                      index=index, nodata=header.nodata)
        first = fields[0]
        return cls(
            path=paths[0], platform=first["platform"], tile=first["tile"],
            acquired=first["acquired"], bands=bands, relative_orbit=first["relative_orbit"],
            pass_direction=first["pass_direction"], encoding=encoding,
        )

    @property
    def name(self) -> str:
        """The file name, with ``vv+vh`` for a pair of files."""
        names = [Path(f).name for f in self.files]
        if len(names) == 1:
            return names[0]
        return re.sub(r"_(vv|vh)_", "_vv+vh_", names[0], count=1, flags=re.IGNORECASE)

    @property
    def files(self) -> list[str]:
        """The files of this acquisition."""
        return sorted({b.path for b in self.bands.values()})

    @ensure_env
    def read(  # noqa: D417
        self,
        bands: Sequence[str] = ("VV", "VH"),
        grid: Grid | None = None,
        window: Window | None = None,
        *,
        resampling: Resampling | None = None,
        pool: RasterPool | None = None,
        out: np.ndarray | None = None,
        unit: str = "db",
    ) -> np.ndarray:
        """Read polarisations onto a grid window, in dB (default) or linear sigma0.

        Resampling is done on the stored values (linear sigma0, or the log-domain
        prepared DN), then converted. Other arguments are those of
        :meth:`Product.read`.

        Args:
            unit: ``db`` or ``linear``.

        Raises:
            ArgumentError: ``unit`` is neither (named with the product).
        """
        if unit not in ("db", "linear"):
            raise ArgumentError(f"unit must be 'db' or 'linear', not {unit!r}",
                                path=self.path, field="unit")
        if out is not None:  # the conversion makes new arrays: copy the result
            result = self.read(bands, grid, window, resampling=resampling, pool=pool,
                               unit=unit)
            if out.shape != result.shape or out.dtype != result.dtype:
                raise ArgumentError(f"out is {out.dtype} {out.shape}, the read needs "
                                    f"{result.dtype} {result.shape}", path=self.path,
                                    field="out")
            out[...] = result
            return out
        raw = super().read(bands, grid, window, resampling=resampling, pool=pool)
        if self.encoding == "linear":
            _refuse_negative(raw, self.files[0])
        linear = decode_prepared(raw) if self.encoding == "prepared" else (
            db_to_linear(raw) if self.encoding == "db" else raw)
        if unit == "linear":
            np.copyto(linear, np.float32(np.nan), where=~(linear > 0))
            return linear
        return linear_to_db(linear)

    def describe(self) -> dict[str, Any]:  # noqa: D102
        out = super().describe()
        out["encoding"] = self.encoding
        return out


@dataclass(frozen=True)
class _Header:
    """What an S1 product needs from one of its files, once the file passed its checks."""

    encoding: str
    nodata: float | None
    resolution: float


# Headers of files that passed _checked_header, by (absolute path, size, mtime_ns): every
# dataset shard opens its products again, and a file that did not change need not be opened
# and sampled again (0.2-0.4 s per dataset write). A rewritten file has a new key.
_HEADERS: dict[tuple[str, int, int], _Header] = {}
_HEADERS_MAX = 4096


def _checked_header(path: Path, pol: str, bands_needed: int) -> _Header:
    """Check one S1 file (bands, CRS, linear values) and read its header, once per version.

    Args:
        path: The file.
        pol: The polarisation field of its name (``VV``, ``VH`` or ``VVVH``).
        bands_needed: How many bands the name implies.

    Raises:
        ProductFormatError: Too few bands, or no CRS.
        SuspectValuesError: Most sampled values of a linear file are negative.
        CorruptRasterError: The sample cannot be read.
    """
    try:
        stat = path.stat()
    except OSError:
        key = None  # open_raster below reports the missing or unreadable file
    else:
        key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
        cached = _HEADERS.get(key)
        if cached is not None:
            return cached
    with open_raster(path) as src:
        if src.count < bands_needed:
            raise ProductFormatError(
                f"a {pol} file needs {bands_needed} band(s), it has {src.count}",
                path=path, field=pol)
        if src.crs is None:
            raise ProductFormatError("raster has no CRS", path=path)
        prepared = src.tags().get(PREPARED_ENCODING_TAG) is not None
        encoding = "prepared" if prepared else _declared_unit(src)
        # 0 is S1Tiling's linear nodata; in dB it is a valid value.
        nodata = src.nodata if src.nodata is not None or encoding == "db" else 0.0
        header = _Header(encoding=encoding, nodata=nodata, resolution=float(src.res[0]))
        if encoding == "linear":
            check_linear_sample(src, path, nodata)
    if key is not None:
        if len(_HEADERS) >= _HEADERS_MAX:
            del _HEADERS[next(iter(_HEADERS))]  # the oldest entry
        _HEADERS[key] = header
    return header


def _declared_unit(src: Any) -> str:
    """``db`` when the file says its values are dB (band unit, description or a tag)."""
    said = [*(u or "" for u in src.units), *(d or "" for d in src.descriptions)]
    said += [v for k, v in src.tags().items() if k.upper() in ("UNIT", "UNITS")]
    return "db" if any(re.search(r"\bdb\b", t, re.IGNORECASE) for t in said) else "linear"


def _refuse_negative(values: np.ndarray, path: str | Path) -> None:
    """Refuse values of which most are negative: linear sigma0 never is (dB mostly is)."""
    valid = np.isfinite(values)
    count = int(np.count_nonzero(valid))
    # Counted without gathering the finite values: of the non-finite ones only -inf is < 0.
    negative = int(np.count_nonzero(values < 0)) - int(np.count_nonzero(values == -np.inf))
    if count and negative > count // 2:
        raise SuspectValuesError(
            f"{negative} of {count} values are negative, so they cannot be linear sigma0 "
            "(S1Tiling's unit): is this a dB file? Convert it to linear (10^(dB/10)) or set "
            "its band unit to dB", path=path, field="values")


def check_linear_sample(src: Any, path: Path, nodata: float | None, *, size: int = 64) -> None:
    """Check a sample of a linear-sigma0 file cheaply: its smallest overview, else windows.

    A file with overviews (a COG) is sampled whole through its smallest overview, a few
    small blocks; otherwise a few small windows (centre and quarters) are read, and a
    small file is read whole.

    Raises:
        SuspectValuesError: Most sampled values are negative (a dB file under a linear name).
        CorruptRasterError: The sample cannot be read (truncated or corrupt file).
    """
    h, w = src.height, src.width
    overviews = src.overviews(1)
    if overviews and h * w > 5 * size * size:
        factor = max(overviews)
        # The overview's own size, so that GDAL reads that level as it is stored.
        shape = (-(-h // factor), -(-w // factor))
        try:
            data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        except RasterioIOError as err:
            raise CorruptRasterError(f"cannot be read ({err})", path=path) from err
        sample = data.astype(np.float32).ravel()
        if nodata is not None:
            sample[sample == nodata] = np.nan
        _refuse_negative(sample, path)
        return
    centres = ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))
    corners = [(max(0, int(fy * h) - size // 2), max(0, int(fx * w) - size // 2))
               for fy, fx in centres]
    windows = [Window(0, 0, w, h)] if h * w <= len(centres) * size * size else [
        Window(col, row, min(size, w - col), min(size, h - row)) for row, col in corners]
    samples = []
    for window in windows:
        try:
            data = src.read(1, window=window).astype(np.float32)
        except RasterioIOError as err:
            raise CorruptRasterError(f"cannot be read ({err})", path=path) from err
        if nodata is not None:
            data[data == nodata] = np.nan
        samples.append(data.ravel())
    _refuse_negative(np.concatenate(samples), path)


def group_s1_files(paths: Iterable[Path]) -> list[list[Path]]:
    """Group S1Tiling files into acquisitions (a VV file with its VH twin)."""
    groups: dict[tuple[str, ...], list[Path]] = {}
    for path in sorted(paths):
        fields = parse_s1_name(path)
        if fields is not None:
            groups.setdefault(fields["key"], []).append(path)
    return list(groups.values())
