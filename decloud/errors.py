"""Typed exceptions raised by decloud.

Every error carries the file (``path``) and, where it applies, the field or band
(``field``) that is wrong, so that the CLI can print one clear message and exit
non-zero. Library code raises these and never calls ``sys.exit``.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "CorruptRasterError",
    "CrsMismatchError",
    "DatasetError",
    "DecloudError",
    "DemCoverageError",
    "ExportError",
    "ExtentError",
    "GridError",
    "LayoutError",
    "MissingBandError",
    "NoProductError",
    "OutputExistsError",
    "OutputWriteError",
    "ProductError",
    "ProductFormatError",
    "UnknownProductError",
]


class DecloudError(Exception):
    """Base class of every error decloud raises on purpose.

    Args:
        message: What is wrong, in words a user can act on.
        path: The file or folder concerned, if any.
        field: The field, band or option concerned, if any.
    """

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if self.field is not None:
            parts.append(f"[{self.field}]")
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class ProductError(DecloudError):
    """A product (folder, zip or file) cannot be used."""


class UnknownProductError(ProductError):
    """The name matches no supported naming scheme (THEIA, SAFE, S1Tiling, DEM, stack)."""


class ProductFormatError(ProductError):
    """The entry is not the product its name says (wrong folder level, missing metadata...)."""


class MissingBandError(ProductError):
    """A requested band or mask is absent from the product."""


class NoProductError(DecloudError):
    """No product in the archive matches the request (tile, date range, sensor)."""


class CorruptRasterError(DecloudError):
    """A raster cannot be opened or read: truncated, corrupt or not a raster at all."""


class GridError(DecloudError):
    """Rasters cannot be put on the requested grid."""


class CrsMismatchError(GridError):
    """Two rasters that must share a CRS do not, or a raster has no CRS."""


class ExtentError(GridError):
    """A raster does not cover the area asked for."""


class DemCoverageError(ExtentError):
    """A DEM does not cover the tile or window asked for."""


class LayoutError(DecloudError):
    """An acquisition layout is invalid."""


class DatasetError(DecloudError):
    """A training dataset is invalid, incomplete or inconsistent."""


class ExportError(DecloudError):
    """A model cannot be exported or its export does not agree with it."""


class OutputExistsError(DecloudError):
    """The output exists already and overwriting was not asked for."""


class OutputWriteError(DecloudError):
    """Writing an output failed (full disk, permission...); nothing was left behind."""
