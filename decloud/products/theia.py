"""THEIA / MUSCATE L2A products (MAJA), as folders or zips.

Name: ``SENTINEL2B_20180619-103559-594_L2A_T31TEJ_D_V1-8``. Bands are int16 GeoTIFFs
``<name>_FRE_B2.tif`` (flat-reflectance, slope-corrected, the default) or ``_SRE_``
(surface reflectance), reflectance x 10000 with nodata -10000. Masks sit in ``MASKS/``:

* ``CLM_R1`` / ``CLM_R2`` (10 m / 20 m) cloud mask, one bit per test:

  ==== ======================================================
  bit  meaning
  ==== ======================================================
  0    summary: all clouds except the thinnest, and all shadows
  1    all clouds except the thinnest
  2    clouds detected by mono-temporal thresholds
  3    clouds detected by multi-temporal thresholds
  4    thinnest clouds (cirrus)
  5    shadows of detected clouds
  6    shadows of clouds outside the image
  7    high clouds detected with the 1.38 um band
  ==== ======================================================

* ``EDG_R1`` / ``EDG_R2``: 1 outside the swath (nodata), 0 inside.

Which bits make clouds, cirrus and shadows is :data:`THEIA_CLM_BITS`, selectable per
product with ``clm_bits``.

Acquisition time: the time in the name (``ACQUISITION_DATE`` of ``*_MTD_ALL.xml``), which
is the sensing time of the tile: the definition SAFE products follow too (their
``GRANULE/*/MTD_TL.xml`` ``SENSING_TIME``, see :mod:`decloud.products.safe`). A metadata
document that is not valid XML is a :class:`~decloud.errors.MetadataError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
from rasterio.windows import Window

from decloud.constants import S2_NATIVE_RESOLUTION, S2_NODATA, S2_SCALE, MaskClass
from decloud.errors import MissingBandError, ProductFormatError
from decloud.grid import Grid, RasterPool
from decloud.products._files import product_files
from decloud.products._metadata import XmlDocument
from decloud.products.base import (
    BandFile,
    MaskFile,
    S2Product,
    classes_from_bits,
    read_mask,
    register,
)

__all__ = ["THEIA_BANDS", "THEIA_CLM_BITS", "TheiaProduct"]

#: THEIA's band names (file suffixes) and decloud's names for them.
THEIA_BANDS: dict[str, str] = {
    "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07",
    "B8": "B08", "B8A": "B8A", "B11": "B11", "B12": "B12",
}

#: CLM bits making each mask class (see the module docstring for the bit meanings).
THEIA_CLM_BITS: dict[MaskClass, tuple[int, ...]] = {
    MaskClass.CLOUD: (1, 2, 3, 7),
    MaskClass.CIRRUS: (4,),
    MaskClass.SHADOW: (5, 6),
}

_NAME = re.compile(
    r"^(?P<platform>SENTINEL2[A-D])_(?P<date>\d{8})-(?P<time>\d{6})-(?P<ms>\d{3})"
    r"_L2A_(?P<tile>T\d{2}[A-Z]{3})_(?P<level>[A-Z])_V(?P<version>\d+-\d+)$"
)


@register
@dataclass(kw_only=True)
class TheiaProduct(S2Product):
    """A THEIA/MUSCATE L2A product.

    Attributes:
        reflectance: ``FRE`` (flat reflectance, default) or ``SRE``.
        clm_bits: CLM bits of each mask class.
        missing_files: Rasters of the reflectance and masks used that ``MTD_ALL.xml``
            lists and the product lacks (reported by
            :func:`decloud.products.checks.check_files`).
    """

    kind: ClassVar[str] = "theia"
    reflectance: str = "FRE"
    clm_bits: Mapping[MaskClass, Sequence[int]] = field(
        default_factory=lambda: dict(THEIA_CLM_BITS)
    )
    missing_files: list[str] = field(default_factory=list)

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return _NAME.match(_stem(path)) is not None

    @classmethod
    def open(cls, path: Path, reflectance: str = "FRE") -> TheiaProduct:
        """Open a THEIA product folder or zip.

        Args:
            path: The product folder or ``.zip``.
            reflectance: ``FRE`` or ``SRE`` bands.
        """
        if reflectance not in ("FRE", "SRE"):
            raise ProductFormatError(f"reflectance must be FRE or SRE, not {reflectance!r}",
                                     path=path, field="reflectance")
        stem = _stem(path)
        match = _NAME.match(stem)
        if match is None:
            raise ProductFormatError("name is not a THEIA L2A product name", path=path)
        files = product_files(path, stem)
        bands: dict[str, BandFile] = {}
        for theia_name, name in THEIA_BANDS.items():
            found = [n for n in files.names() if n.endswith(f"_{reflectance}_{theia_name}.tif")
                     and "/" not in n]
            if found:
                bands[name] = BandFile(
                    name=name, path=files.gdal_path(found[0]),
                    resolution=S2_NATIVE_RESOLUTION[name], scale=1 / S2_SCALE,
                    nodata=S2_NODATA,
                )
        if not bands:
            inside = ", ".join(files.names()[:3]) or "nothing"
            raise ProductFormatError(
                f"no {reflectance} band (*_{reflectance}_B*.tif) at the product's top level; "
                f"found {inside}. Is this the product folder itself, not its parent or a "
                "subfolder?", path=path,
            )
        masks: dict[str, MaskFile] = {}
        for mask_name in ("CLM_R1", "CLM_R2", "EDG_R1", "EDG_R2"):
            found = [n for n in files.names() if n.startswith("MASKS/")
                     and n.endswith(f"_{mask_name}.tif")]
            if found:
                masks[mask_name] = MaskFile(mask_name, files.gdal_path(found[0]),
                                            10.0 if mask_name.endswith("R1") else 20.0)
        try:
            acquired = datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S").replace(
                microsecond=int(match["ms"]) * 1000, tzinfo=UTC)
        except ValueError as err:
            raise ProductFormatError(f"{match['date']}-{match['time']} in the name is not a "
                                     "date-time", path=path, field="acquisition time") from err
        docs = [XmlDocument(files.read_bytes(m), f"{path}/{m}")
                for m in files.find("_MTD_ALL.xml")[:1]]
        orbit = _relative_orbit(docs)
        # Files the metadata lists (Image_List, Mask_List) of the reflectance and masks used.
        used = (f"_{reflectance}_", "_CLM_", "_EDG_")
        present = set(files.names())
        missing = [name for doc in docs for name in _declared_files(doc)
                   if any(u in name for u in used) and name not in present]
        return cls(
            path=path, platform="S2" + match["platform"][-1], tile=match["tile"],
            acquired=acquired, bands=bands, masks=masks, relative_orbit=orbit,
            missing_files=missing,
            reflectance=reflectance,
        )

    def _mask_name(self) -> str | None:
        return "CLM" if any(k.startswith("CLM") for k in self.masks) else None

    def _pick(self, prefix: str, grid: Grid) -> MaskFile | None:
        """The mask of resolution closest to the grid's (R1 for 10 m, R2 for 20 m+)."""
        fine, coarse = self.masks.get(f"{prefix}_R1"), self.masks.get(f"{prefix}_R2")
        if grid.resolution >= 20 and coarse is not None:
            return coarse
        return fine or coarse

    def _product_mask(self, grid: Grid, window: Window | None,
                      pool: RasterPool | None) -> np.ndarray:
        clm = self._pick("CLM", grid)
        if clm is None:  # mask() only asks when _mask_name() found a CLM
            raise MissingBandError("the product has no CLM mask", path=self.path, field="CLM")
        layer = classes_from_bits(read_mask(clm, grid, window, pool, fill=0), self.clm_bits)
        edg = self._pick("EDG", grid)
        if edg is not None:
            layer[read_mask(edg, grid, window, pool, fill=1) != 0] = MaskClass.NODATA
        return layer


def _stem(path: Path) -> str:
    return path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.name


def _relative_orbit(documents: Iterable[XmlDocument]) -> int | None:
    """Relative orbit from the MTD_ALL.xml document, when present."""
    for doc in documents:
        for node in doc.nodes("ORBIT_NUMBER"):
            value = (node.text or "").strip()
            if node.get("type", "").lower() == "relative" and value.isdigit():
                return int(value)
    return None


def _declared_files(doc: XmlDocument) -> list[str]:
    """Rasters MTD_ALL.xml lists (``IMAGE_FILE``, ``MASK_FILE``), relative to the product."""
    return [node.text.strip() for tag in ("IMAGE_FILE", "MASK_FILE") for node in doc.nodes(tag)
            if node.text and node.text.strip().lower().endswith(".tif")]
