"""decloud: remove clouds from Sentinel-2 images with SAR-optical networks.

The foundation layer reads Sentinel products (THEIA, SAFE, S1Tiling, generic stacks,
DEMs) into one product model, aligns them on the Sentinel-2 grid and writes COGs.

The names below load on first use (as odc-stac does): ``import decloud`` or
``import decloud.grid`` costs no matplotlib, tqdm, TensorFlow or Keras; a Dask worker or
an engine process pays only for the modules it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes
from decloud._version import __version__

if TYPE_CHECKING:
    from decloud.archive import Archive, normalize_tile
    from decloud.env import gdal_env
    from decloud.grid import Grid, RasterPool, read_on_grid
    from decloud.products import Dem, Product, S1Product, S2Product, open_product
    from decloud.stack import build_stack

__all__ = [
    "Archive",
    "Dem",
    "Grid",
    "Product",
    "RasterPool",
    "S1Product",
    "S2Product",
    "__version__",
    "build_stack",
    "gdal_env",
    "normalize_tile",
    "open_product",
    "read_on_grid",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Archive": "archive",
    "normalize_tile": "archive",
    "gdal_env": "env",
    "Grid": "grid",
    "RasterPool": "grid",
    "read_on_grid": "grid",
    **dict.fromkeys(("Dem", "Product", "S1Product", "S2Product", "open_product"),
                    "products"),
    "build_stack": "stack",
}, __all__)
