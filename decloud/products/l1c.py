"""Sentinel-2 L1C products: top-of-atmosphere reflectance, with the computed cloud mask.

Two forms are read:

* **SAFE L1C** folders or zips, ``S2B_MSIL1C_20170216T102101_N0204_R065_T33UUU_
  20170216T102204.SAFE``: JPEG 2000 bands ``GRANULE/*/IMG_DATA/T33UUU_20170216T102101_B02
  .jp2`` (one file per band, at its native resolution) and ``MTD_MSIL1C.xml``.
  Reflectance is ``(DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE``: from processing
  baseline 04.00 on the offset is -1000 DN and a product whose metadata lacks it (or one
  band's entry) is a :class:`~decloud.errors.MetadataError`; before 04.00 there is none.
* **Loose band files** ``T33UUU_20170216T102101_B02.jp2`` (as unpacked from a SAFE or
  downloaded band by band): the files of one folder sharing tile and time are one
  product. With an ``MTD_MSIL1C.xml`` in the same folder its quantification and offsets
  are used. Without it the processing baseline is unknown and decloud applies the
  documented default: quantification 10000, offset -1000 DN for acquisitions from
  2022-01-25 (the start of baseline 04.00), none before; the product then says so in
  :attr:`L1CBandFiles.warnings` (``describe()``, the inventory). Reprocessed
  (Collection-1) files of earlier dates do carry the offset: give them their
  ``MTD_MSIL1C.xml``.

DN 0 is nodata. L1C products have no scene classification: their cloud mask is the one
computed from the bands (:mod:`decloud.masks`, ``mask_origin`` = ``computed``). Their
:attr:`level` is ``L1C`` and their ``kind`` ``safe-l1c`` or ``l1c-bands``.

Acquisition time, as for SAFE L2A (:mod:`decloud.products.safe`): the tile's sensing
time (``GRANULE/*/MTD_TL.xml`` ``SENSING_TIME``), else the datatake sensing start
(``PRODUCT_START_TIME``, else the time in the name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rasterio.windows import Window

from decloud.constants import S2_ALL_BANDS, S2_NATIVE_RESOLUTION
from decloud.errors import MetadataError, ProductFormatError
from decloud.grid import Grid, RasterPool
from decloud.products._files import FolderFiles, ProductFiles
from decloud.products._metadata import (
    XmlDocument,
    band_offsets,
    baseline_has_offsets,
    parse_baseline,
    require_offsets,
)
from decloud.products.base import BandFile, S2Product, register
from decloud.products.safe import (
    acquisition_time,
    declared_images,
    declared_missing,
    open_safe,
)

__all__ = ["OFFSET_START", "L1CBandFiles", "SafeL1CProduct", "parse_band_file_name"]

#: Acquisitions from this day on are processed with baseline >= 04.00 (radiometric offset).
OFFSET_START = datetime(2022, 1, 25, tzinfo=UTC)
_DEFAULT_QUANTIFICATION = 10000.0
_DEFAULT_OFFSET = -1000.0

_SAFE_NAME = re.compile(
    r"^(?P<platform>S2[A-D])_MSIL1C_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_(?P<tile>T\d{2}[A-Z]{3})_(?P<generated>\d{8}T\d{6})$"
)
# GRANULE/<granule>/IMG_DATA/T33UUU_20170216T102101_B02.jp2 (TCI is not a band).
_SAFE_IMAGE = re.compile(r"^GRANULE/[^/]+/IMG_DATA/[^/]*_(?P<band>B\d[\dA])\.jp2$")
_BAND_FILE = re.compile(
    r"^(?P<tile>T\d{2}[A-Z]{3})_(?P<sensing>\d{8}T\d{6})_(?P<band>B\d[\dA]|TCI)\.jp2$"
)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".zip", ".SAFE"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _bands(images: dict[str, str], files: ProductFiles, scale: float,
           offsets: dict[str, float], nodata: float) -> dict[str, BandFile]:
    """Band files of decloud's bands (B10, at 60 m and without surface use, is left out)."""
    return {
        band: BandFile(name=band, path=files.gdal_path(name),
                       resolution=S2_NATIVE_RESOLUTION[band], scale=scale,
                       offset=offsets.get(band, 0.0) * scale, nodata=nodata)
        for band, name in sorted(images.items()) if band in S2_ALL_BANDS
    }


@dataclass(kw_only=True)
class _L1CProduct(S2Product):
    """What both L1C forms share: no product mask, the L1C level, warnings."""

    level: ClassVar[str] = "L1C"
    processing_baseline: str = ""
    warnings: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)

    def _mask_name(self) -> str | None:
        return None

    def _product_mask(self, grid: Grid, window: Window | None,
                      pool: RasterPool | None) -> np.ndarray:
        raise ProductFormatError("an L1C product has no product mask", path=self.path,
                                 field="mask")

    def describe(self) -> dict[str, Any]:
        """The product model, with its level, baseline and warnings."""
        out = super().describe()
        out["level"] = self.level
        out["processing_baseline"] = self.processing_baseline or None
        out["warnings"] = list(self.warnings)
        return out


@register
@dataclass(kw_only=True)
class SafeL1CProduct(_L1CProduct):
    """An ESA SAFE L1C product (folder or zip): top-of-atmosphere reflectance."""

    kind: ClassVar[str] = "safe-l1c"

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return _SAFE_NAME.match(_stem(path)) is not None

    @classmethod
    def open(cls, path: Path) -> SafeL1CProduct:
        """Open a SAFE L1C product folder or zip.

        Raises:
            ProductFormatError: Not a SAFE L1C folder or zip, or no band image.
            MetadataError: ``MTD_MSIL1C.xml`` is not XML, or a value is missing, not a
                number, zero where it divides, or (PB >= 04.00) an offset is missing.
        """
        match, files = open_safe(path, _SAFE_NAME, "L1C", "MTD_MSIL1C.xml")
        doc = XmlDocument(files.read_bytes("MTD_MSIL1C.xml"), f"{path}/MTD_MSIL1C.xml")
        baseline = doc.text("PROCESSING_BASELINE") or \
            f"{match['baseline'][:2]}.{match['baseline'][2:]}"
        quantification = doc.number("QUANTIFICATION_VALUE", nonzero=True)
        offsets = band_offsets(doc, "RADIO_ADD_OFFSET")
        images = {m["band"]: n for n in files.names() if (m := _SAFE_IMAGE.match(n))}
        bands = _bands(images, files, 1.0 / quantification, offsets, doc.nodata())
        if not bands:
            raise ProductFormatError("no band image GRANULE/*/IMG_DATA/*_B<nn>.jp2", path=path)
        if baseline_has_offsets(parse_baseline(baseline, doc.where)):
            require_offsets(offsets, bands, doc.where, "RADIO_ADD_OFFSET", baseline)
        direction = (doc.text("SENSING_ORBIT_DIRECTION") or "").upper()
        return cls(
            path=path, platform=match["platform"], tile=match["tile"],
            acquired=acquisition_time(files, path, doc.time("PRODUCT_START_TIME"),
                                      match["sensing"]),
            bands=bands, relative_orbit=int(match["orbit"]),
            pass_direction={"ASCENDING": "ASC", "DESCENDING": "DES"}.get(direction),
            processing_baseline=baseline,
            missing_files=declared_missing(declared_images(doc), files),
        )


def parse_band_file_name(path: Path) -> dict[str, str] | None:
    """``tile``, ``sensing`` and ``band`` of a loose L1C band file name, or None."""
    match = _BAND_FILE.match(path.name)
    return None if match is None else match.groupdict()


@register
@dataclass(kw_only=True)
class L1CBandFiles(_L1CProduct):
    """Loose L1C band files ``T<tile>_<yyyymmddThhmmss>_B<nn>.jp2`` of one acquisition.

    ``path`` is the first band file; :attr:`files` lists every file of the group.
    """

    kind: ClassVar[str] = "l1c-bands"
    files: list[Path] = field(default_factory=list)

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return path.is_file() and parse_band_file_name(path) is not None

    @classmethod
    def open(cls, path: Path) -> L1CBandFiles:
        """Open the acquisition a band file belongs to (its siblings in the same folder).

        Raises:
            ProductFormatError: The name is not a band file name, or the time is invalid.
            MetadataError: A sibling ``MTD_MSIL1C.xml`` is unreadable or inconsistent.
        """
        fields = parse_band_file_name(path)
        if fields is None:
            raise ProductFormatError("name is not an L1C band file name "
                                     "(like T33UUU_20170216T102101_B02.jp2)", path=path)
        prefix = f"{fields['tile']}_{fields['sensing']}_"
        siblings = sorted(p for p in path.parent.iterdir()
                          if p.name.startswith(prefix) and parse_band_file_name(p))
        try:
            sensed = datetime.strptime(fields["sensing"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        except ValueError as err:
            raise ProductFormatError(f"{fields['sensing']!r} is not a date-time", path=path,
                                     field="sensing time") from err
        folder = FolderFiles(path.parent)
        images = {f["band"]: p.name for p in siblings
                  if (f := parse_band_file_name(p)) is not None and f["band"] != "TCI"}
        warnings: list[str] = []
        mtd = path.parent / "MTD_MSIL1C.xml"
        baseline = ""
        if mtd.is_file():
            doc = XmlDocument(mtd.read_bytes(), str(mtd))
            baseline = doc.text("PROCESSING_BASELINE") or ""
            if not baseline:
                raise MetadataError("the element is missing", path=mtd,
                                    field="PROCESSING_BASELINE")
            quantification = doc.number("QUANTIFICATION_VALUE", nonzero=True)
            offsets = band_offsets(doc, "RADIO_ADD_OFFSET")
            nodata = doc.nodata()
            bands = _bands(images, folder, 1.0 / quantification, offsets, nodata)
            if baseline_has_offsets(parse_baseline(baseline, doc.where)):
                require_offsets(offsets, bands, doc.where, "RADIO_ADD_OFFSET", baseline)
        else:
            offset = _DEFAULT_OFFSET if sensed >= OFFSET_START else 0.0
            offsets = dict.fromkeys(images, offset)
            bands = _bands(images, folder, 1.0 / _DEFAULT_QUANTIFICATION, offsets, 0.0)
            warnings.append(
                f"no MTD_MSIL1C.xml beside the band files: assumed quantification 10000 and "
                f"offset {offset:g} DN (acquisitions from {OFFSET_START.date()} carry the "
                "baseline 04.00 offset); put the product's MTD_MSIL1C.xml beside them to "
                "use its values")
        if not bands:
            raise ProductFormatError(f"no band file {prefix}B<nn>.jp2 beside this one",
                                     path=path)
        return cls(path=Path(bands[sorted(bands)[0]].path), tile=fields["tile"],
                   platform="S2", acquired=sensed, bands=bands,
                   processing_baseline=baseline, warnings=warnings, files=siblings)

    @property
    def name(self) -> str:
        """``T33UUU_20170216T102101_B*.jp2``."""
        fields = parse_band_file_name(self.path)
        if fields is None:
            return self.path.name
        return f"{fields['tile']}_{fields['sensing']}_B*.jp2"
