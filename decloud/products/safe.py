"""ESA SAFE L2A products (Sen2Cor), as ``.SAFE`` folders or zips.

Name: ``S2B_MSIL2A_20220615T103629_N0400_R008_T31TEJ_20220615T135020.SAFE``. Bands are
JPEG 2000 files under ``GRANULE/*/IMG_DATA/R10m|R20m|R60m``; each band is taken at its
finest resolution. Reflectance is ``(DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE``,
both read from ``MTD_MSIL2A.xml``: from processing baseline 04.00 on the offset is -1000
DN, before it there is no offset list and the offset is 0. DN 0 is nodata.

The mask comes from the scene classification ``SCL`` (20 m, 60 m) with
:data:`SCL_CLASSES`:

===== ===========================  =================
value Sen2Cor class                decloud MaskClass
===== ===========================  =================
0     NO_DATA                      NODATA
1     SATURATED_OR_DEFECTIVE       NODATA
2     DARK_AREA_PIXELS             CLEAR
3     CLOUD_SHADOWS                SHADOW
4     VEGETATION                   CLEAR
5     NOT_VEGETATED                CLEAR
6     WATER                        CLEAR
7     UNCLASSIFIED                 CLEAR
8     CLOUD_MEDIUM_PROBABILITY     CLOUD
9     CLOUD_HIGH_PROBABILITY       CLOUD
10    THIN_CIRRUS                  CIRRUS
11    SNOW                         CLEAR
===== ===========================  =================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from defusedxml import ElementTree
from rasterio.windows import Window

from decloud.constants import S2_ALL_BANDS, MaskClass
from decloud.errors import ProductFormatError
from decloud.grid import Grid, RasterPool
from decloud.products._files import ProductFiles, product_files
from decloud.products.base import (
    BandFile,
    MaskFile,
    S2Product,
    classes_from_values,
    read_mask,
    register,
)

__all__ = ["SCL_CLASSES", "SafeProduct"]

#: SCL values making each mask class (see the module docstring).
SCL_CLASSES: dict[MaskClass, tuple[int, ...]] = {
    MaskClass.NODATA: (0, 1),
    MaskClass.SHADOW: (3,),
    MaskClass.CLOUD: (8, 9),
    MaskClass.CIRRUS: (10,),
}

_NAME = re.compile(
    r"^(?P<platform>S2[A-D])_MSIL2A_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_(?P<tile>T\d{2}[A-Z]{3})_(?P<generated>\d{8}T\d{6})$"
)
_IMAGE = re.compile(r"IMG_DATA/R(?P<res>\d{2})m/[^/]*_(?P<band>B\d[\dA]|SCL)_(?P=res)m\.jp2$")
# physicalBand names in the metadata against band_id 0..12.
_PHYSICAL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


@register
@dataclass(kw_only=True)
class SafeProduct(S2Product):
    """An ESA SAFE L2A product.

    Attributes:
        processing_baseline: e.g. ``04.00``.
        scl_classes: SCL values of each mask class.
    """

    kind: ClassVar[str] = "safe"
    processing_baseline: str = ""
    scl_classes: Mapping[MaskClass, Sequence[int]] = field(
        default_factory=lambda: dict(SCL_CLASSES)
    )

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return _NAME.match(_stem(path)) is not None

    @classmethod
    def open(cls, path: Path) -> SafeProduct:
        """Open a SAFE L2A product folder or zip."""
        stem = _stem(path)
        match = _NAME.match(stem)
        if match is None:
            raise ProductFormatError("name is not a SAFE L2A product name", path=path)
        files = product_files(path, stem + ".SAFE")
        if "MTD_MSIL2A.xml" not in files.names():
            raise ProductFormatError(
                "MTD_MSIL2A.xml is missing at the product's top level: is this the .SAFE "
                "folder itself, not its parent or a subfolder?", path=path,
                field="MTD_MSIL2A.xml",
            )
        meta = _read_metadata(files, path)
        bands: dict[str, BandFile] = {}
        masks: dict[str, MaskFile] = {}
        for name in files.names():
            image = _IMAGE.search(name)
            if image is None:
                continue
            band, res = image["band"], float(image["res"])
            if band == "SCL":
                key = f"SCL_{image['res']}m"
                masks[key] = MaskFile(key, files.gdal_path(name), res)
                continue
            if band not in S2_ALL_BANDS or (band in bands and bands[band].resolution <= res):
                continue
            offset = meta["offsets"].get(band, 0.0)
            bands[band] = BandFile(
                name=band, path=files.gdal_path(name), resolution=res,
                scale=1.0 / meta["quantification"], offset=offset / meta["quantification"],
                nodata=meta["nodata"],
            )
        if not bands:
            raise ProductFormatError("no band image under GRANULE/*/IMG_DATA/R*m", path=path)
        baseline = meta["baseline"] or f"{match['baseline'][:2]}.{match['baseline'][2:]}"
        return cls(
            path=path, platform=match["platform"], tile=match["tile"],
            acquired=meta["start"] or datetime.strptime(match["sensing"], "%Y%m%dT%H%M%S")
            .replace(tzinfo=UTC),
            bands=bands, masks=masks, relative_orbit=int(match["orbit"]),
            pass_direction=meta["direction"], processing_baseline=baseline,
        )

    def _mask_name(self) -> str | None:
        return "SCL" if self.masks else None

    def _product_mask(self, grid: Grid, window: Window | None,
                      pool: RasterPool | None) -> np.ndarray:
        scl = self.masks.get("SCL_20m") or next(iter(self.masks.values()))
        return classes_from_values(read_mask(scl, grid, window, pool, fill=0), self.scl_classes)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".zip", ".SAFE"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _read_metadata(files: ProductFiles, path: Path) -> dict[str, Any]:
    """Quantification, BOA offsets, nodata, start time and pass from MTD_MSIL2A.xml."""
    where = f"{path}/MTD_MSIL2A.xml"
    try:
        root = ElementTree.fromstring(files.read_bytes("MTD_MSIL2A.xml"))
    except ElementTree.ParseError as err:
        raise ProductFormatError(f"metadata is not valid XML ({err})", path=where) from err

    def text(tag: str) -> str | None:
        node = next(root.iter(tag), None)
        return node.text.strip() if node is not None and node.text else None

    quantification = text("BOA_QUANTIFICATION_VALUE")
    if quantification is None:
        raise ProductFormatError("BOA_QUANTIFICATION_VALUE is missing", path=where,
                                 field="BOA_QUANTIFICATION_VALUE")
    physical = {
        node.get("bandId"): node.get("physicalBand")
        for node in root.iter("Spectral_Information")
    }
    offsets: dict[str, float] = {}
    for node in root.iter("BOA_ADD_OFFSET"):
        band_id = node.get("band_id", "")
        band = physical.get(band_id) or (
            _PHYSICAL[int(band_id)] if band_id.isdigit() and int(band_id) < 13 else None)
        if band is None or node.text is None:
            raise ProductFormatError(f"BOA_ADD_OFFSET for unknown band_id {band_id!r}",
                                     path=where, field="BOA_ADD_OFFSET")
        canonical = f"B{int(band[1:]):02d}" if band[1:].isdigit() else band
        offsets[canonical] = float(node.text)
    nodata = 0.0
    for node in root.iter("Special_Values"):
        if (text_of(node, "SPECIAL_VALUE_TEXT") or "").upper() == "NODATA":
            nodata = float(text_of(node, "SPECIAL_VALUE_INDEX") or 0)
    start = text("PRODUCT_START_TIME")
    direction = (text("SENSING_ORBIT_DIRECTION") or "").upper()
    return {
        "quantification": float(quantification),
        "offsets": offsets,
        "nodata": nodata,
        "baseline": text("PROCESSING_BASELINE"),
        "start": datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None,
        "direction": {"ASCENDING": "ASC", "DESCENDING": "DES"}.get(direction),
    }


def text_of(node: Any, tag: str) -> str | None:
    """Text of the first child ``tag`` of ``node``."""
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text else None
