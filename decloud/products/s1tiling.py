"""Sentinel-1 images as written by S1Tiling, and decloud's prepared S1 rasters.

Names: ``s1a_31TEJ_vv_DES_110_20170101t054437.tif`` with its ``vh`` twin, or one
two-band ``_vvvh_`` stack (band 1 VV, band 2 VH). The time may be ``txxxxxx`` when
S1Tiling merged several acquisitions of the day. Values are linear sigma0 (float32,
nodata 0), or decloud's prepared uint16 encoding (:mod:`decloud.s1`) when the file
carries the ``DECLOUD_S1_ENCODING`` tag. :meth:`S1Product.read` returns dB by default.
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
from rasterio.windows import Window

from decloud.errors import ProductFormatError
from decloud.grid import Grid, RasterKind, RasterPool, open_raster
from decloud.products.base import BandFile, Product, register
from decloud.s1 import PREPARED_ENCODING_TAG, decode_prepared, linear_to_db

__all__ = ["S1Product", "group_s1_files", "parse_s1_name"]

_NAME = re.compile(
    r"^(?P<platform>s1[a-d])_(?P<tile>\d{2}[a-z]{3})_(?P<pol>vv|vh|vvvh)_(?P<dir>asc|des)"
    r"_(?P<orbit>\d{3})_(?P<date>\d{8})t(?P<time>\d{6}|x{6})(?P<rest>_[^.]*)?\.tiff?$",
    re.IGNORECASE,
)


def parse_s1_name(path: Path) -> dict[str, Any] | None:
    """Fields of an S1Tiling file name, or None when the name is not one."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    time = match["time"].lower()
    acquired = datetime.strptime(
        match["date"] + ("000000" if time == "xxxxxx" else time), "%Y%m%d%H%M%S"
    ).replace(tzinfo=UTC)
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
        fields = [parse_s1_name(p) for p in paths]
        for p, f in zip(paths, fields, strict=True):
            if f is None:
                raise ProductFormatError("name is not an S1Tiling name", path=p)
        keys = {f["key"] for f in fields if f}
        if len(keys) != 1:
            raise ProductFormatError("files of different acquisitions cannot be one product",
                                     path=paths[0])
        bands: dict[str, BandFile] = {}
        encoding = "linear"
        for path, f in zip(paths, fields, strict=True):
            assert f is not None
            pols = ["VV", "VH"] if f["pol"] == "VVVH" else [f["pol"]]
            with open_raster(path) as src:
                if src.count < len(pols):
                    raise ProductFormatError(
                        f"a {f['pol']} file needs {len(pols)} band(s), it has {src.count}",
                        path=path, field=f["pol"])
                if src.crs is None:
                    raise ProductFormatError("raster has no CRS", path=path)
                prepared = src.tags().get(PREPARED_ENCODING_TAG) is not None
                nodata = src.nodata if src.nodata is not None else 0.0
                res = float(src.res[0])
            encoding = "prepared" if prepared else "linear"
            for index, pol in enumerate(pols, start=1):
                if pol in bands:
                    raise ProductFormatError(f"{pol} is given twice", path=path, field=pol)
                bands[pol] = BandFile(name=pol, path=str(path), resolution=res, index=index,
                                      nodata=nodata)
        first = fields[0]
        assert first is not None
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

    def read(  # noqa: D417
        self,
        bands: Sequence[str] = ("VV", "VH"),
        grid: Grid | None = None,
        window: Window | None = None,
        *,
        resampling: Resampling | None = None,
        pool: RasterPool | None = None,
        unit: str = "db",
    ) -> np.ndarray:
        """Read polarisations onto a grid window, in dB (default) or linear sigma0.

        Resampling is done on the stored values (linear sigma0, or the log-domain
        prepared DN), then converted. Other arguments are those of
        :meth:`Product.read`.

        Args:
            unit: ``db`` or ``linear``.
        """
        if unit not in ("db", "linear"):
            raise ValueError(f"unit must be 'db' or 'linear', not {unit!r}")
        raw = super().read(bands, grid, window, resampling=resampling, pool=pool)
        linear = decode_prepared(raw) if self.encoding == "prepared" else raw
        if unit == "linear":
            linear[~(linear > 0)] = np.nan
            return linear
        return linear_to_db(linear)

    def describe(self) -> dict[str, Any]:  # noqa: D102
        out = super().describe()
        out["encoding"] = self.encoding
        return out


def group_s1_files(paths: Iterable[Path]) -> list[list[Path]]:
    """Group S1Tiling files into acquisitions (a VV file with its VH twin)."""
    groups: dict[tuple[str, ...], list[Path]] = {}
    for path in sorted(paths):
        fields = parse_s1_name(path)
        if fields is not None:
            groups.setdefault(fields["key"], []).append(path)
    return list(groups.values())
