"""ESA SAFE L2A products (Sen2Cor), as ``.SAFE`` folders or zips.

Name: ``S2B_MSIL2A_20220615T103629_N0400_R008_T31TEJ_20220615T135020.SAFE``. Bands are
JPEG 2000 files under ``GRANULE/*/IMG_DATA/R10m|R20m|R60m``; each band is taken at its
finest resolution. Reflectance is ``(DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE``,
both read from ``MTD_MSIL2A.xml``: from processing baseline 04.00 on the offset is -1000
DN, before it there is no offset list and the offset is 0. DN 0 is nodata. Every value
is checked: a PB >= 04.00 product whose metadata lacks ``BOA_ADD_OFFSET`` (or one band's
entry), a missing, non-numeric or zero quantification value, or a time that is not a
date is a :class:`~decloud.errors.MetadataError` naming the file and the element.

Acquisition time (the same definition as THEIA's, which names products after it): the
sensing time of the tile, ``SENSING_TIME`` of ``GRANULE/*/MTD_TL.xml``; without that
document, the datatake sensing start ``PRODUCT_START_TIME`` (else the name's time),
which can be up to a few minutes earlier.

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
from rasterio.windows import Window

from decloud.constants import S2_ALL_BANDS, MaskClass
from decloud.errors import MetadataError, ProductFormatError
from decloud.grid import Grid, RasterPool
from decloud.products._files import ProductFiles, product_files
from decloud.products._metadata import (
    XmlDocument,
    band_offsets,
    baseline_has_offsets,
    parse_baseline,
    require_offsets,
)
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


def open_safe(path: Path, name: re.Pattern[str], level: str,
              metadata: str) -> tuple[re.Match[str], ProductFiles]:
    """The name match and the files of a SAFE folder or zip whose top level has ``metadata``.

    Raises:
        ProductFormatError: The name is not a SAFE ``level`` name, or ``metadata`` is not
            at the product's top level.
    """
    stem = _stem(path)
    match = name.match(stem)
    if match is None:
        raise ProductFormatError(f"name is not a SAFE {level} product name", path=path)
    files = product_files(path, stem + ".SAFE")
    if metadata not in files.names():
        raise ProductFormatError(
            f"{metadata} is missing at the product's top level: is this the .SAFE folder "
            "itself, not its parent or a subfolder?", path=path, field=metadata)
    return match, files


@register
@dataclass(kw_only=True)
class SafeProduct(S2Product):
    """An ESA SAFE L2A product.

    Attributes:
        processing_baseline: e.g. ``04.00``.
        scl_classes: SCL values of each mask class.
        missing_files: Images the metadata declares (``IMAGE_FILE``) that the product
            lacks; :func:`decloud.products.checks.check_files` reports them.
    """

    kind: ClassVar[str] = "safe"
    processing_baseline: str = ""
    missing_files: list[str] = field(default_factory=list)
    scl_classes: Mapping[MaskClass, Sequence[int]] = field(
        default_factory=lambda: dict(SCL_CLASSES)
    )

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return _NAME.match(_stem(path)) is not None

    @classmethod
    def open(cls, path: Path) -> SafeProduct:
        """Open a SAFE L2A product folder or zip."""
        match, files = open_safe(path, _NAME, "L2A", "MTD_MSIL2A.xml")
        meta = _read_metadata(files, path)
        baseline = meta["baseline"] or f"{match['baseline'][:2]}.{match['baseline'][2:]}"
        has_offsets = baseline_has_offsets(parse_baseline(baseline, meta["where"]))
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
        if has_offsets:
            # Offset 0 for a band of a PB >= 04.00 product would be silently wrong data.
            require_offsets(meta["offsets"], bands, meta["where"], "BOA_ADD_OFFSET", baseline)
        return cls(
            path=path, platform=match["platform"], tile=match["tile"],
            acquired=acquisition_time(files, path, meta["start"], match["sensing"]),
            bands=bands, masks=masks, relative_orbit=int(match["orbit"]),
            pass_direction=meta["direction"], processing_baseline=baseline,
            missing_files=declared_missing(meta["images"], files),
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
    """Quantification, BOA offsets, nodata, times and pass from MTD_MSIL2A.xml, checked.

    Raises:
        MetadataError: Naming ``MTD_MSIL2A.xml`` and the element: not XML, a missing,
            non-numeric or zero ``BOA_QUANTIFICATION_VALUE``, a non-numeric offset or
            nodata value, an unparseable ``PRODUCT_START_TIME``.
    """
    doc = XmlDocument(files.read_bytes("MTD_MSIL2A.xml"), f"{path}/MTD_MSIL2A.xml")
    direction = (doc.text("SENSING_ORBIT_DIRECTION") or "").upper()
    return {
        "where": doc.where,
        "quantification": doc.number("BOA_QUANTIFICATION_VALUE", nonzero=True),
        "offsets": band_offsets(doc, "BOA_ADD_OFFSET"),
        "nodata": doc.nodata(),
        "baseline": doc.text("PROCESSING_BASELINE"),
        "start": doc.time("PRODUCT_START_TIME"),
        "direction": {"ASCENDING": "ASC", "DESCENDING": "DES"}.get(direction),
        "images": declared_images(doc),
    }


def declared_images(doc: XmlDocument) -> list[str]:
    """The image files a SAFE metadata document declares (``IMAGE_FILE``, with ``.jp2``)."""
    return [f"{node.text.strip()}.jp2" for node in doc.nodes("IMAGE_FILE")
            if node.text and node.text.strip()]


def declared_missing(images: list[str], files: ProductFiles) -> list[str]:
    """Declared image files that the product does not hold."""
    present = set(files.names())
    return [name for name in images if name not in present]


def tile_sensing_time(files: ProductFiles, path: Path) -> datetime | None:
    """``SENSING_TIME`` of the granule's ``MTD_TL.xml`` (the tile's sensing time), if present.

    Raises:
        MetadataError: The document is not XML or the time is not a date-time.
    """
    found = [n for n in files.names() if n.startswith("GRANULE/") and n.endswith("/MTD_TL.xml")]
    if not found:
        return None
    doc = XmlDocument(files.read_bytes(found[0]), f"{path}/{found[0]}")
    return doc.time("SENSING_TIME")


def acquisition_time(files: ProductFiles, path: Path, start: datetime | None,
                     name_time: str) -> datetime:
    """The acquisition time of a SAFE product, by decloud's one definition.

    The sensing time of the tile: ``SENSING_TIME`` of ``GRANULE/*/MTD_TL.xml``, which is
    what THEIA names its products after. Without that document, the datatake sensing
    start (``PRODUCT_START_TIME``, else the time in the product name), which can be up
    to a few minutes earlier.

    Raises:
        MetadataError: A time is not a date-time.
    """
    tile_time = tile_sensing_time(files, path)
    if tile_time is not None:
        return tile_time
    if start is not None:
        return start
    try:
        return datetime.strptime(name_time, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError as err:
        raise MetadataError(f"{name_time!r} in the name is not a date-time", path=path,
                            field="sensing time") from err

