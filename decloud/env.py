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
    # No GDAL_CACHEMAX here: rasterio passes it to GDALSetCacheMax64 in bytes, and the
    # block cache is process-wide, so a per-thread Env restoring it races with others.
    # GDAL's own default (5 % of RAM) is what every thread shares.
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
