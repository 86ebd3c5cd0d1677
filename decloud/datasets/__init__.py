"""Training datasets: plans drawn from the patch index, sharded numpy files, loaders.

``plan_dataset`` draws the samples (tuples of products at patch positions, by split)
from a catalog and an acquisition layout (:class:`PlanOptions`); ``write_dataset``
(:class:`WriteOptions`) reads their patches into
``.npz`` shards, resumably and on Dask; ``TrainingDataset`` reads them back with numpy
only (batches, augmentation; Keras training goes through
:class:`decloud.training.data.Batches`); ``preview`` draws a PNG contact sheet.
The folder format is described in :mod:`decloud.datasets.format`.

The names are imported on first use (module ``__getattr__``), so that importing
``decloud.datasets.reader`` in a training worker does not load the writer's
dependencies (Dask, tqdm) or the preview's (matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.datasets.format import FORMAT_NAME, FORMAT_VERSION, KeySpec, dataset_keys
    from decloud.datasets.plan import DatasetPlan, PlanOptions, PlanSample, plan_dataset
    from decloud.datasets.preview import preview
    from decloud.datasets.reader import TrainingDataset, augment_sample, load_manifest
    from decloud.datasets.writer import WriteOptions, write_dataset

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DatasetPlan",
    "KeySpec",
    "PlanOptions",
    "PlanSample",
    "TrainingDataset",
    "WriteOptions",
    "augment_sample",
    "dataset_keys",
    "load_manifest",
    "plan_dataset",
    "preview",
    "write_dataset",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "FORMAT_NAME": "format", "FORMAT_VERSION": "format", "KeySpec": "format",
    "dataset_keys": "format", "DatasetPlan": "plan", "PlanOptions": "plan",
    "PlanSample": "plan", "plan_dataset": "plan", "preview": "preview",
    "TrainingDataset": "reader", "augment_sample": "reader", "load_manifest": "reader",
    "WriteOptions": "writer", "write_dataset": "writer",
}, __all__)
