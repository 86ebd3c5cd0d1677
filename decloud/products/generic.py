"""Generic GeoTIFF/COG stacks of S2 reflectance, for any other source.

A stack is one multi-band raster with a band list and, optionally, a mask raster. It
is described either in code (:meth:`GenericStack.from_file`) or by a YAML sidecar
``<stem>.yaml`` next to ``<stem>.tif`` so that archive discovery finds it::

    platform: S2B
    tile: T31TEJ
    acquired: 2022-06-15T10:36:29Z
    bands: [B02, B03, B04, B08]      # band order in the file
    scale: 0.0001                    # reflectance = DN * scale + offset
    offset: 0.0
    nodata: 0                        # when the file does not declare it
    mask:                            # optional
      path: stack_mask.tif           # relative to the sidecar
      cloud: [1]                     # mask values of each class
      shadow: [2]
      cirrus: []
      nodata: [255]

Without a mask, the computed fallback mask of :mod:`decloud.masks` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rasterio.windows import Window

from decloud.constants import S2_ALL_BANDS, MaskClass, normalize_band_name
from decloud.errors import MetadataError, ProductFormatError
from decloud.grid import Grid, RasterPool, open_raster
from decloud.products.base import (
    BandFile,
    MaskFile,
    S2Product,
    classes_from_values,
    read_mask,
    register,
)

__all__ = ["GenericStack", "StackMaskSpec", "StackSpec"]


class StackMaskSpec(BaseModel):
    """The mask raster of a stack and the values of each class."""

    model_config = ConfigDict(extra="forbid")
    path: str
    cloud: list[int] = Field(default_factory=list)
    shadow: list[int] = Field(default_factory=list)
    cirrus: list[int] = Field(default_factory=list)
    nodata: list[int] = Field(default_factory=list)


class StackSpec(BaseModel):
    """The YAML sidecar of a generic stack."""

    model_config = ConfigDict(extra="forbid")
    platform: str = "S2"
    tile: str | None = None
    acquired: datetime
    bands: list[str]
    scale: float = 1.0 / 10000
    offset: float = 0.0
    nodata: float | None = None
    mask: StackMaskSpec | None = None

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, bands: list[str]) -> list[str]:
        names = [normalize_band_name(b) for b in bands]
        unknown = [b for b in names if b not in S2_ALL_BANDS]
        if unknown:
            raise ValueError(f"unknown S2 band(s) {unknown}; use {', '.join(S2_ALL_BANDS)}")
        if len(set(names)) != len(names):
            raise ValueError("a band is listed twice")
        return names

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, scale: float) -> float:
        if scale == 0 or scale != scale:  # a zero (or NaN) scale erases every pixel
            raise ValueError("scale must be a non-zero number")
        return scale

    @field_validator("acquired")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@register
@dataclass(kw_only=True)
class GenericStack(S2Product):
    """A multi-band reflectance raster with a band list and an optional mask raster."""

    kind: ClassVar[str] = "stack"
    mask_classes: dict[MaskClass, list[int]] = field(default_factory=dict)

    @classmethod
    def matches(cls, path: Path) -> bool:  # noqa: D102
        return path.suffix.lower() in (".tif", ".tiff") and path.with_suffix(".yaml").is_file()

    @classmethod
    def open(cls, path: Path) -> GenericStack:
        """Open a stack described by its ``<stem>.yaml`` sidecar."""
        sidecar = path.with_suffix(".yaml")
        try:
            raw = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
            spec = StackSpec.model_validate(raw)
        except UnicodeDecodeError as err:
            raise MetadataError(f"not UTF-8 text ({err.reason} at byte {err.start})",
                                path=sidecar) from err
        except OSError as err:
            raise MetadataError(f"cannot be read ({err.strerror or err})", path=sidecar) from err
        except yaml.YAMLError as err:
            raise MetadataError(f"invalid YAML ({err})", path=sidecar) from err
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MetadataError(first["msg"], path=sidecar, field=where) from err
        mask = None
        if spec.mask is not None:
            mask = (sidecar.parent / spec.mask.path, {
                MaskClass.CLOUD: spec.mask.cloud, MaskClass.SHADOW: spec.mask.shadow,
                MaskClass.CIRRUS: spec.mask.cirrus, MaskClass.NODATA: spec.mask.nodata,
            })
        return cls.from_file(path, spec.bands, spec.acquired, platform=spec.platform,
                             tile=spec.tile, scale=spec.scale, offset=spec.offset,
                             nodata=spec.nodata, mask=mask)

    @classmethod
    def from_file(
        cls,
        path: Path,
        bands: list[str],
        acquired: datetime,
        *,
        platform: str = "S2",
        tile: str | None = None,
        scale: float = 1.0 / 10000,
        offset: float = 0.0,
        nodata: float | None = None,
        mask: tuple[Path, dict[MaskClass, list[int]]] | None = None,
    ) -> GenericStack:
        """Describe a stack in code.

        Args:
            path: The multi-band raster.
            bands: S2 band names in file order.
            acquired: Acquisition date-time (naive means UTC).
            platform: e.g. ``S2A``.
            tile: Tile id, e.g. ``T31TEJ``.
            scale: Reflectance = DN * scale + offset.
            offset: See ``scale``.
            nodata: Nodata DN when the file does not declare it.
            mask: A mask raster and the values of each class.
        """
        with open_raster(path) as src:
            if src.count != len(bands):
                raise ProductFormatError(
                    f"the band list names {len(bands)} band(s), the raster has {src.count}",
                    path=path, field="bands")
            res = float(src.res[0])
            nodata = src.nodata if src.nodata is not None else nodata
        files = {
            normalize_band_name(b): BandFile(name=normalize_band_name(b), path=str(path),
                                             resolution=res, index=i, scale=scale,
                                             offset=offset, nodata=nodata)
            for i, b in enumerate(bands, start=1)
        }
        masks: dict[str, MaskFile] = {}
        classes: dict[MaskClass, list[int]] = {}
        if mask is not None:
            mask_path, classes = mask
            with open_raster(mask_path) as src:
                masks["mask"] = MaskFile("mask", str(mask_path), float(src.res[0]))
        when = acquired.replace(tzinfo=UTC) if acquired.tzinfo is None else acquired
        return cls(path=path, platform=platform, tile=tile, acquired=when, bands=files,
                   masks=masks, mask_classes=classes)

    def _mask_name(self) -> str | None:
        return "mask" if self.masks else None

    def _product_mask(self, grid: Grid, window: Window | None,
                      pool: RasterPool | None) -> np.ndarray:
        raw = read_mask(self.masks["mask"], grid, window, pool, fill=0)
        return classes_from_values(raw, self.mask_classes)

    def describe(self) -> dict[str, Any]:  # noqa: D102
        out = super().describe()
        out["mask_classes"] = {c.name.lower(): v for c, v in self.mask_classes.items()}
        return out
