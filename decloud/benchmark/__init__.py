"""Benchmarks of the reconstruction methods on real clouds (``decloud benchmark``).

* :mod:`.quality`: cut real cloud and shadow masks into clear dates (a working copy of
  the archive), run every method that fits through the engine and the processors,
  score against the withheld truth per cloud-cover bucket (:func:`run_quality`), and
  write tables, plots and an HTML report (:func:`write_quality_outputs`). Methods live
  in a registry (:data:`METHODS`, :func:`register_method`).
* :mod:`.landcover`: a seeded random forest trained on a clear date classifies the
  truth, the cloudy image and each reconstruction of another date
  (:func:`landcover_benchmark`).

This stage sits with the processors: it runs them. Names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.benchmark.landcover import (
        LandcoverResult,
        landcover_benchmark,
        run_landcover,
        split_pixels,
    )
    from decloud.benchmark.quality import (
        METHODS,
        BenchmarkInputs,
        BenchmarkMethod,
        CutFill,
        CutMask,
        CutScene,
        EngineBenchmarkMethod,
        ModelMethod,
        QualityOptions,
        QualityResult,
        clear_references,
        cut_mask,
        masks_from_archive,
        masks_from_csmask,
        register_method,
        run_quality,
        write_cut_archive,
        write_quality_outputs,
    )

__all__ = [
    "METHODS",
    "BenchmarkInputs",
    "BenchmarkMethod",
    "CutFill",
    "CutMask",
    "CutScene",
    "EngineBenchmarkMethod",
    "LandcoverResult",
    "ModelMethod",
    "QualityOptions",
    "QualityResult",
    "clear_references",
    "cut_mask",
    "landcover_benchmark",
    "masks_from_archive",
    "masks_from_csmask",
    "register_method",
    "run_landcover",
    "run_quality",
    "split_pixels",
    "write_cut_archive",
    "write_quality_outputs",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(("LandcoverResult", "landcover_benchmark", "run_landcover",
                     "split_pixels"), "landcover"),
    **dict.fromkeys(("METHODS", "BenchmarkInputs", "BenchmarkMethod", "CutFill", "CutMask",
                     "CutScene", "EngineBenchmarkMethod", "ModelMethod", "QualityOptions",
                     "QualityResult", "clear_references", "cut_mask", "masks_from_archive",
                     "masks_from_csmask", "register_method", "run_quality",
                     "write_cut_archive", "write_quality_outputs"), "quality"),
}, __all__)
