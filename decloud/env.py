"""GDAL configuration held in one place.

All raster I/O of decloud runs inside :func:`gdal_env`, a :class:`rasterio.Env` with
decloud's defaults; callers pass overrides explicitly instead of setting hidden
environment variables.
"""

from __future__ import annotations

from typing import Any

import rasterio

__all__ = ["GDAL_DEFAULTS", "gdal_env"]

#: Defaults tuned for many small windowed reads of tiled rasters.
GDAL_DEFAULTS: dict[str, Any] = {
    # Block cache in MB: enough for a few 1024-px windows of ten bands with margins.
    "GDAL_CACHEMAX": 1024,
    # Listing sibling files at every open is slow on big archives and network drives.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CHECK_DISK_FREE_SPACE": "YES",
}


def gdal_env(**overrides: Any) -> rasterio.Env:
    """Return a :class:`rasterio.Env` with decloud's GDAL defaults and ``overrides``.

    Args:
        **overrides: GDAL configuration options that replace the defaults.

    Returns:
        The environment, to be used as a context manager.
    """
    return rasterio.Env(**{**GDAL_DEFAULTS, **overrides})
