"""Digital elevation models: one GeoTIFF per tile (``DEM_ROOT/<TILE>.tif``), any CRS.

A DEM is read onto a tile grid with bilinear (or cubic) resampling, in metres, after
checking that it covers the whole window asked for (:attr:`DemPolicy.REQUIRE`), or
reading what it covers, nodata elsewhere (:attr:`DemPolicy.PARTIAL`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from decloud.env import ensure_env
from decloud.errors import ArgumentError, DemCoverageError, ExtentError
from decloud.grid import Grid, RasterKind, RasterPool, open_raster, read_on_grid, require_coverage

__all__ = ["Dem", "DemPolicy", "dem_tile"]

_TILE = re.compile(r"^T?(?P<tile>\d{2}[A-Z]{3})$", re.IGNORECASE)


class DemPolicy(StrEnum):
    """What reading a DEM window does where the DEM does not cover it."""

    #: Refuse: :class:`~decloud.errors.DemCoverageError` naming the DEM file.
    REQUIRE = "require"
    #: Read what the DEM covers; the rest is nodata (NaN). For windows that extend past
    #: a tile whose coverage was checked as a whole.
    PARTIAL = "partial"


def dem_tile(path: Path) -> str | None:
    """The tile a DEM file is named after (``T31TEJ.tif`` or ``31TEJ.tif``), if any."""
    match = _TILE.match(path.stem)
    return "T" + match["tile"].upper() if match else None


@dataclass
class Dem:
    """A DEM raster (metres) and the tile it is for, if its name says."""

    path: Path
    tile: str | None = None

    @classmethod
    def open(cls, path: Path) -> Dem:
        """Open a DEM file, checking it is a georeferenced raster."""
        with open_raster(path) as src:
            if src.crs is None:
                raise DemCoverageError("DEM has no CRS", path=path)
        return cls(path=path, tile=dem_tile(path))

    @ensure_env
    def read(
        self,
        grid: Grid,
        window: Window | None = None,
        *,
        resampling: Resampling = Resampling.bilinear,
        pool: RasterPool | None = None,
        policy: DemPolicy | str = DemPolicy.REQUIRE,
    ) -> np.ndarray:
        """Elevation (float32 metres, NaN nodata) on a grid window, shape ``(h, w)``.

        Args:
            grid: The target grid.
            window: Window of ``grid``; all of it when None.
            resampling: Resampling of the elevations.
            pool: Keeps files open across calls.
            policy: Where the DEM does not cover the window: refuse (``require``) or
                read it as nodata (``partial``).

        Raises:
            DemCoverageError: The DEM does not cover the window (``require``).
        """
        try:
            policy = DemPolicy(policy)
        except ValueError as err:
            raise ArgumentError(f"DEM policy must be one of {', '.join(DemPolicy)}, not "
                                f"{policy!r}", path=self.path, field="policy") from err
        src: Any = pool.get(self.path) if pool is not None else open_raster(self.path)
        try:
            target = grid.subgrid(window) if window is not None else grid
            if policy is DemPolicy.REQUIRE:
                try:
                    require_coverage(src.bounds, src.crs, target, path=str(self.path),
                                     what="DEM")
                except ExtentError as err:
                    raise DemCoverageError(err.message, path=self.path) from err
            return read_on_grid(src, grid, window, kind=RasterKind.ELEVATION,
                                resampling=resampling)[0]
        finally:
            if pool is None:
                src.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        with open_raster(self.path) as src:
            return {"path": str(self.path), "tile": self.tile, "crs": src.crs.to_string(),
                    "resolution": list(src.res), "bounds": list(src.bounds)}
