"""Constants defined once for the whole chain: band names and orders, scalings, nodata.

Names are shared by product readers, stacks, datasets and models: a band is always
called by its ESA name (``B02``, ``B8A``...), whatever the product calls it.

Encodings written by decloud:

* **S2 reflectance**: ``int16``, reflectance x :data:`S2_SCALE`, nodata
  :data:`S2_NODATA`. Reflectance can be slightly negative after the BOA offset of
  processing baseline 04.00 is removed, so the type is signed.
* **S1 backscatter ("prepared")**: ``uint16``, natural log of linear sigma0 clipped to
  [:data:`S1_LN_MIN`, :data:`S1_LN_MAX`] and stretched linearly onto 1..65535; 0 is
  nodata. See :mod:`decloud.s1`.
* **DEM**: ``float32`` metres, nodata :data:`DEM_NODATA`.
* **Masks**: ``uint8`` classes of :class:`MaskClass`, 255 = nodata.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "DEM_NODATA",
    "MASK_NODATA",
    "S1_LN_MAX",
    "S1_LN_MIN",
    "S1_NODATA",
    "S1_POLARISATIONS",
    "S2_10M_BANDS",
    "S2_20M_BANDS",
    "S2_60M_BANDS",
    "S2_ALL_BANDS",
    "S2_BANDS",
    "S2_NATIVE_RESOLUTION",
    "S2_NODATA",
    "S2_RGB",
    "S2_SCALE",
    "MaskClass",
    "normalize_band_name",
]

#: 10 m bands, in the order decloud stacks them.
S2_10M_BANDS: Final = ("B02", "B03", "B04", "B08")
#: 20 m bands, in the order decloud stacks them.
S2_20M_BANDS: Final = ("B05", "B06", "B07", "B8A", "B11", "B12")
#: 60 m atmospheric bands (read when present, not used by the networks).
S2_60M_BANDS: Final = ("B01", "B09")
#: The ten surface-reflectance bands used by decloud, 10 m then 20 m.
S2_BANDS: Final = S2_10M_BANDS + S2_20M_BANDS
#: Every L2A band a reader may expose.
S2_ALL_BANDS: Final = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"
)
#: Native resolution of each band, metres.
S2_NATIVE_RESOLUTION: Final = {
    **{b: 10.0 for b in S2_10M_BANDS},
    **{b: 20.0 for b in S2_20M_BANDS},
    **{b: 60.0 for b in S2_60M_BANDS},
}
#: True-colour quicklook bands (red, green, blue).
S2_RGB: Final = ("B04", "B03", "B02")

#: Reflectance x S2_SCALE is what stacks, datasets and models exchange.
S2_SCALE: Final = 10000.0
#: Nodata of decloud's int16 reflectance encoding (also THEIA's).
S2_NODATA: Final = -10000

#: Polarisations, in stacking order.
S1_POLARISATIONS: Final = ("VV", "VH")
#: Natural-log sigma0 range kept by the prepared uint16 S1 encoding.
S1_LN_MIN: Final = -10.0
S1_LN_MAX: Final = 3.0
#: Nodata of the prepared S1 encoding.
S1_NODATA: Final = 0

#: Nodata of decloud's float32 DEM encoding.
DEM_NODATA: Final = -32768.0

#: Nodata of decloud's uint8 mask encoding.
MASK_NODATA: Final = 255


class MaskClass(IntEnum):
    """Classes of decloud's uint8 mask layer, one value per pixel.

    When a pixel belongs to several classes (a THEIA pixel can be cloud and shadow
    flagged), the highest-priority one is kept: nodata, cloud, cirrus, shadow, clear.
    """

    CLEAR = 0
    CLOUD = 1
    CIRRUS = 2
    SHADOW = 3
    NODATA = MASK_NODATA


_THEIA_ALIASES: Final = {f"B{i}": f"B{i:02d}" for i in range(1, 10)}


def normalize_band_name(name: str) -> str:
    """Return decloud's name of an S2 band given any usual spelling.

    ``B2``, ``b2``, ``B02`` all give ``B02``; ``B8A`` and ``b8a`` give ``B8A``.
    Names that are not S2 band names (``VV``, ``elevation``) come back upper-cased
    for polarisations and unchanged otherwise.
    """
    upper = name.strip().upper()
    if upper in _THEIA_ALIASES:
        return _THEIA_ALIASES[upper]
    if upper in S2_ALL_BANDS or upper in ("B10",) or upper in S1_POLARISATIONS:
        return upper
    return name.strip()
