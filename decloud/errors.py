"""Typed exceptions raised by decloud.

Every error carries the file (``path``) and, where it applies, the field or band
(``field``) that is wrong, so that the CLI can print one clear message and exit
non-zero. Library code raises these and never calls ``sys.exit``.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "ArgumentError",
    "BrokenSourceError",
    "CatalogError",
    "CloudyReferenceError",
    "ClusterConfigError",
    "CorruptRasterError",
    "CrsMismatchError",
    "DatasetError",
    "DecloudError",
    "DemCoverageError",
    "EvaluationError",
    "ExportError",
    "ExtentError",
    "GdalConfigError",
    "GridError",
    "InferenceError",
    "InputError",
    "KeyGrammarError",
    "LayoutError",
    "LocatedValueError",
    "LossyCastError",
    "MarginTooSmallError",
    "MetadataError",
    "MissingBandError",
    "ModelCardError",
    "ModelConfigError",
    "ModelInputSizeError",
    "NoProductError",
    "OutputExistsError",
    "OutputWriteError",
    "PoolThreadError",
    "PrecisionError",
    "ProcessorRerunError",
    "ProductError",
    "ProductFormatError",
    "RerunError",
    "SchedulerError",
    "SkippedSourceWarning",
    "StacError",
    "SuspectValuesError",
    "TrainingError",
    "UnknownProductError",
    "WindowAlignmentError",
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


class ArgumentError(DecloudError, ValueError):
    """An argument of a library call is invalid (an array's shape or dtype, a list's length).

    Also a ``ValueError``, so that code catching Python's usual error still catches it.
    """


class ProductError(DecloudError):
    """A product (folder, zip or file) cannot be used."""


class UnknownProductError(ProductError):
    """The name matches no supported naming scheme (THEIA, SAFE, S1Tiling, DEM, stack)."""


class ProductFormatError(ProductError):
    """The entry is not the product its name says (wrong folder level, missing metadata...)."""


class MissingBandError(ProductError):
    """A requested band or mask is absent from the product."""


class MetadataError(ProductFormatError):
    """A product's metadata is missing, unreadable or holds an impossible value.

    ``path`` is the metadata file (``.../MTD_MSIL2A.xml``, a sidecar) and ``field``
    the element or key (``BOA_ADD_OFFSET``, ``PRODUCT_START_TIME``...).
    """


class SuspectValuesError(ProductError):
    """A raster's values cannot be what its name says (e.g. dB under a linear sigma0 name)."""


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


class WindowAlignmentError(GridError):
    """A window cannot be carried to a coarser grid: odd offsets or sizes for 20 m keys."""


class InferenceError(DecloudError):
    """A scene cannot be processed as asked (a method, its options or a block failed)."""


class ProcessorRerunError(InferenceError):
    """An output folder holds a processor run made with other settings.

    ``field`` names the setting that differs and the message gives both values: a
    rerun resumes a run, it never mixes outputs of two settings in one folder.
    """


class InputError(DecloudError):
    """The inputs asked of the input reader cannot be read (no product for a key...)."""


class KeyGrammarError(DecloudError):
    """A string is not a decloud key (``s2_<acq>``, ``dem``...) or a kind/acquisition is bad."""


class LayoutError(DecloudError):
    """An acquisition layout is invalid."""


class LocatedValueError(ValueError):
    """A layout validation problem at a position below the pydantic model that raises it.

    A ``ValueError`` on purpose, not a :class:`DecloudError`: pydantic wraps the
    ``ValueError`` raised by a validator in its ``ValidationError`` and keeps it as the
    cause, and :mod:`decloud.layouts.loader` turns that into a :class:`LayoutError`
    naming the file, the line and the key. It never reaches a user on its own.

    Args:
        message: What is wrong.
        loc: Keys (str) and list indices (int) from the raising model to the value.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class CatalogError(DecloudError):
    """The catalog folder is missing, of another version, or inconsistent."""


class ClusterConfigError(DecloudError):
    """A cluster configuration (dask-jobqueue YAML) is invalid, or its cluster cannot be made."""


class DatasetError(DecloudError):
    """A training dataset is invalid, incomplete or inconsistent."""


class ModelConfigError(DecloudError):
    """A model configuration is invalid."""


class ModelCardError(DecloudError):
    """A model or its card cannot be read."""


class ModelInputSizeError(ArgumentError):
    """A model was given inputs of a size it cannot take.

    A side that is not a multiple of the model's size multiple, or inputs whose
    sizes disagree. Raised before the model runs (instead of the backend's raw shape error); the
    message names the model, the input, its size and the multiple, and
    :func:`decloud.windows.pad_to_multiple` is the fix.
    """


class ExportError(DecloudError):
    """A model cannot be exported or its export does not agree with it."""


class MarginTooSmallError(ExportError):
    """A serving margin below half the model's receptive field: tiles would show seams."""


class StacError(DecloudError):
    """A STAC item or collection cannot be built (no item, an unreadable item...)."""


class OutputExistsError(DecloudError):
    """The output exists already and overwriting was not asked for."""


class OutputWriteError(DecloudError):
    """Writing an output failed (full disk, permission...); nothing was left behind."""


class BrokenSourceError(DecloudError):
    """A source that would have been used (an S1 image, a DEM) exists but cannot be read."""


class SkippedSourceWarning(UserWarning):
    """A broken source was left out on request (``--skip-broken-sources``)."""


class SchedulerError(DecloudError):
    """A Dask scheduler could not be reached."""


class LossyCastError(ArgumentError):
    """Data would lose values when cast to a raster's dtype.

    Float into an integer type, or integers out of the type's range: encode the data
    first, or give the writer its encoder.
    """


class GdalConfigError(ArgumentError):
    """A GDAL configuration option cannot be set as asked (e.g. a process-wide one per thread)."""


class PrecisionError(InferenceError):
    """A compute precision (``bfloat16``) not validated for the model it was asked for."""


class PoolThreadError(DecloudError):
    """A :class:`~decloud.grid.RasterPool` was used from a thread other than its owner's.

    GDAL datasets must not be shared across threads: each thread creates its own pool.
    """


class EvaluationError(DecloudError):
    """A prediction and its reference cannot be compared (different bands, regions...)."""


class CloudyReferenceError(EvaluationError):
    """A benchmark reference acquisition is itself cloudy: it cannot be the truth.

    ``path`` names the product and the message its cloud (and shadow) fraction.
    """


class TrainingError(DecloudError):
    """A model cannot be trained as asked (no weights, another run in the folder...)."""


class RerunError(TrainingError):
    """A run folder holds a run made with other settings than those asked for.

    ``field`` names the setting that differs (``loss``, ``dataset``, ``epochs``...) and
    the message gives the folder's value and the new one: a rerun never rewrites the
    record of how the weights in the folder were made.
    """
