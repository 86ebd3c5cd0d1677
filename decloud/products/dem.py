"""Digital elevation models: one GeoTIFF per tile (``DEM_ROOT/<TILE>.tif``), any CRS.

A DEM is read onto a tile grid with bilinear (or cubic) resampling, in metres, after
checking that it covers the whole window asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from decloud.errors import DemCoverageError, ExtentError
from decloud.grid import Grid, RasterKind, RasterPool, open_raster, read_on_grid, require_coverage

__all__ = ["Dem", "dem_tile"]

_TILE = re.compile(r"^T?(?P<tile>\d{2}[A-Z]{3})$", re.IGNORECASE)


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

    def read(
        self,
        grid: Grid,
        window: Window | None = None,
        *,
        resampling: Resampling = Resampling.bilinear,
        pool: RasterPool | None = None,
    ) -> np.ndarray:
        """Elevation (float32 metres, NaN nodata) on a grid window, shape ``(h, w)``.

        Raises:
            DemCoverageError: The DEM does not cover the window.
        """
        src: Any = pool.get(self.path) if pool is not None else open_raster(self.path)
        try:
            target = grid.subgrid(window) if window is not None else grid
            try:
                require_coverage(src.bounds, src.crs, target, path=str(self.path), what="DEM")
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
