"""Evaluation: metrics of any model over a dataset split, pooled exactly.

:func:`evaluate_model` runs a model (trained, or the weightless gap filling) over a
split batch by batch and returns :func:`decloud.models.metrics.evaluate`'s metrics as
one call on the entire split would give them (:class:`PooledMetrics`).
:func:`check_dataset` says whether a dataset fits a model (keys, bands, patch size).

This package needs Keras only through the model it is given; it never imports
:mod:`decloud.training` (training imports it, for its final metrics).
"""

from decloud.evaluation.pooled import PooledMetrics, cloud_at
from decloud.evaluation.split import check_dataset, evaluate_model, predict_outputs

__all__ = ["PooledMetrics", "check_dataset", "cloud_at", "evaluate_model", "predict_outputs"]
