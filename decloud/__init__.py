"""decloud: remove clouds from Sentinel-2 images with SAR-optical networks.

The foundation layer reads Sentinel products (THEIA, SAFE, S1Tiling, generic stacks,
DEMs) into one product model, aligns them on the Sentinel-2 grid and writes COGs.

The names below load on first use (as odc-stac does): ``import decloud`` or
``import decloud.grid`` costs no matplotlib, tqdm, TensorFlow or Keras; a Dask worker or
an engine process pays only for the modules it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

#: Where each lazily loaded name lives.
_WHERE = {
    "Archive": "decloud.archive",
    "normalize_tile": "decloud.archive",
    "gdal_env": "decloud.env",
    "Grid": "decloud.grid",
    "RasterPool": "decloud.grid",
    "read_on_grid": "decloud.grid",
    "Dem": "decloud.products",
    "Product": "decloud.products",
    "S1Product": "decloud.products",
    "S2Product": "decloud.products",
    "open_product": "decloud.products",
    "build_stack": "decloud.stack",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
