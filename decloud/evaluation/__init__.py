"""Evaluation: metrics of models over dataset splits, and of full images, and reports.

* :mod:`.split` and :mod:`.pooled`: :func:`evaluate_model` runs a model (trained, or
  the weightless gap filling) over a split batch by batch and returns
  :func:`decloud.models.metrics.evaluate`'s metrics as one call on the entire split
  would give them (:class:`PooledMetrics`); :func:`check_dataset` says whether a
  dataset fits a model (keys, bands, patch size).
* :mod:`.metrics`: full-image metrics per region and band (:func:`score_arrays`,
  :func:`score_rasters`, streamed in bounded memory; :class:`Scores`).
* :mod:`.report`: self-contained HTML reports (:func:`write_report`).

Names are imported lazily: the full-image metrics and reports never import Keras;
this package needs Keras only through the model given to :func:`evaluate_model`, and
never imports :mod:`decloud.training` (training imports it, for its final metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.evaluation.metrics import (
        REGIONS,
        Metrics,
        RegionScores,
        ScoreAccumulator,
        Scores,
        regions_from_mask,
        regions_from_quality,
        score_arrays,
        score_rasters,
    )
    from decloud.evaluation.pooled import PooledMetrics, cloud_at
    from decloud.evaluation.report import (
        FigureSection,
        ImagesSection,
        Panel,
        ScoresSection,
        TableSection,
        TextSection,
        error_panel,
        quality_panel,
        true_colour_panels,
        write_report,
    )
    from decloud.evaluation.split import check_dataset, evaluate_model, predict_outputs

__all__ = [
    "REGIONS",
    "FigureSection",
    "ImagesSection",
    "Metrics",
    "Panel",
    "PooledMetrics",
    "RegionScores",
    "ScoreAccumulator",
    "Scores",
    "ScoresSection",
    "TableSection",
    "TextSection",
    "check_dataset",
    "cloud_at",
    "error_panel",
    "evaluate_model",
    "predict_outputs",
    "quality_panel",
    "regions_from_mask",
    "regions_from_quality",
    "score_arrays",
    "score_rasters",
    "true_colour_panels",
    "write_report",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(("REGIONS", "Metrics", "RegionScores", "ScoreAccumulator", "Scores",
                     "regions_from_mask", "regions_from_quality", "score_arrays",
                     "score_rasters"), "metrics"),
    **dict.fromkeys(("PooledMetrics", "cloud_at"), "pooled"),
    **dict.fromkeys(("FigureSection", "ImagesSection", "Panel", "ScoresSection",
                     "TableSection", "TextSection", "error_panel", "quality_panel",
                     "true_colour_panels", "write_report"), "report"),
    **dict.fromkeys(("check_dataset", "evaluate_model", "predict_outputs"), "split"),
}, __all__)
