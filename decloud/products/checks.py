"""Cheap checks that every file a product declares exists and can be read.

Opening a product reads names and metadata only; a truncated or deleted band would
otherwise fail much later, in ``stack`` or ``dataset create``. :func:`check_files`
opens every band and mask file with GDAL (for zipped products, through ``/vsizip``,
which also checks the member exists) and reads the last pixel: the header tells the
block layout and the last block lies at the end of the file, so a truncated file fails
here for the cost of one block per file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from decloud.errors import CorruptRasterError, MissingBandError
from decloud.products.base import Product
from decloud.products.dem import Dem

__all__ = ["check_files", "check_raster", "declared_files"]


def declared_files(product: Product | Dem) -> list[str]:
    """Every raster file (GDAL path) a product uses: bands and masks, each once."""
    if isinstance(product, Dem):
        return [str(product.path)]
    paths = [b.path for b in product.bands.values()]
    paths += [m.path for m in product.masks.values()]
    return list(dict.fromkeys(paths))


def check_raster(path: str) -> None:
    """Open a raster, read its header and its last pixel (its last block).

    Raises:
        CorruptRasterError: Naming the file: missing, not a raster, or truncated.
    """
    with warnings.catch_warnings():
        # A header cut short loses its georeferencing: reported below, not as a warning.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(path)
        except RasterioError as err:
            raise CorruptRasterError(f"missing or not a raster ({err})", path=path) from err
    with src:
        try:
            src.read(window=Window(src.width - 1, src.height - 1, 1, 1))
        except RasterioError as err:
            raise CorruptRasterError(f"truncated or corrupt: its last block cannot be read "
                                     f"({err})", path=path) from err
        if src.crs is None:
            raise CorruptRasterError("has no CRS: a truncated header, or not georeferenced",
                                     path=path)


def check_files(product: Product | Dem, *, extra: Iterable[str] = ()) -> None:
    """Check that every band and mask file of a product exists and opens.

    Args:
        product: The product (or DEM).
        extra: More files to check.

    Raises:
        MissingBandError: The product's metadata declares a file it does not hold.
        CorruptRasterError: A file cannot be opened, or its last block cannot be read.
    """
    missing: list[str] = list(getattr(product, "missing_files", []) or [])
    if missing:
        shown = ", ".join(Path(m).name for m in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise MissingBandError(f"the metadata declares {len(missing)} image file(s) the "
                               f"product lacks: {shown}{more}", path=product.path,
                               field=Path(missing[0]).name)
    for path in [*declared_files(product), *extra]:
        check_raster(path)

