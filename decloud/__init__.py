"""decloud: remove clouds from Sentinel-2 images with SAR-optical networks.

The foundation layer reads Sentinel products (THEIA, SAFE, S1Tiling, generic stacks,
DEMs) into one product model, aligns them on the Sentinel-2 grid and writes COGs.
"""

from decloud._version import __version__
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
