"""Product readers (THEIA, SAFE L2A and L1C, L1C band files, S1Tiling, stacks, DEMs).

:func:`open_product` opens any of them by its name.
"""

from __future__ import annotations

from pathlib import Path

from decloud.errors import UnknownProductError
from decloud.products.base import READERS, BandFile, MaskFile, Product, S2Product, register
from decloud.products.dem import Dem
from decloud.products.generic import GenericStack
from decloud.products.l1c import L1CBandFiles, SafeL1CProduct
from decloud.products.s1tiling import S1Product
from decloud.products.safe import SafeProduct
from decloud.products.theia import TheiaProduct

__all__ = [
    "READERS",
    "BandFile",
    "Dem",
    "GenericStack",
    "L1CBandFiles",
    "MaskFile",
    "Product",
    "S1Product",
    "S2Product",
    "SafeL1CProduct",
    "SafeProduct",
    "TheiaProduct",
    "open_product",
    "register",
]


def open_product(path: str | Path) -> Product:
    """Open a product with the reader whose naming scheme its name follows.

    Raises:
        UnknownProductError: No reader recognises the name.
        ProductFormatError: The entry is not the product its name says.
    """
    path = Path(path)
    if not path.exists():
        raise UnknownProductError("does not exist", path=path)
    for reader in READERS:
        if reader.matches(path):
            return reader.open(path)
    raise UnknownProductError(
        "unknown naming scheme: expected a THEIA L2A name (SENTINEL2B_20180619-103559-594_L2A_"
        "T31TEJ_D_V1-8), a SAFE L2A name (S2B_MSIL2A_20220615T103629_N0400_R008_T31TEJ_"
        "20220615T135020.SAFE), a SAFE L1C name (S2B_MSIL1C_20170216T102101_N0204_R065_"
        "T33UUU_20170216T102204.SAFE), an L1C band file (T33UUU_20170216T102101_B02.jp2), "
        "an S1Tiling name (s1a_31TEJ_vv_DES_110_20170101t054437.tif) "
        "or a .tif with a .yaml stack sidecar",
        path=path,
    )
