"""The checked entry point that runs a zoo model on raw inputs.

:func:`predict` is how library code runs a model on arrays: it checks the inputs
against the model's spec first (:meth:`ModelSpec.check_inputs`), so that a window of
a size the model cannot take fails with :class:`~decloud.errors.ModelInputSizeError`
(naming the model, the input, its size and the size multiple) rather than with the
backend's raw shape error deep in a pooling layer. With ``pad=True`` any size runs:
the inputs are padded with their nodata up to the size multiple
(:func:`decloud.windows.pad_to_multiple`) and the outputs cropped back.

A seamless tiled run combines it with :meth:`decloud.grid.Grid.windows`::

    for core, padded in grid.windows(512, spec.margin, spec.size_multiple):
        outputs = predict(model, spec, read(padded))           # raw NHWC inputs
        tile = crop(outputs[key], core_crop(core, padded), axes=(1, 2))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from decloud.keys import parse_key
from decloud.models.normalization import NORMALISATION
from decloud.models.zoo import ModelSpec
from decloud.windows import Crop, crop, pad_to_multiple

__all__ = ["input_nodata", "predict"]


def input_nodata(key: str) -> float:
    """The raw nodata value of an input key (what padding fills it with)."""
    return NORMALISATION[parse_key(key).kind][1]


def predict(
    model: keras.Model,
    spec: ModelSpec,
    inputs: Mapping[str, Any],
    *,
    pad: bool = False,
) -> dict[str, np.ndarray]:
    """Run a model on raw NHWC inputs after checking their sizes.

    Args:
        model: A zoo model (raw dataset values in, reflectance x 10000 out).
        spec: Its spec.
        inputs: Arrays by dataset key: ``(batch, height, width, channels)`` images in
            the keys' raw encodings, ``(batch, 1)`` for ``dt_*`` days.
        pad: Pad images of any size with their nodata up to the size multiple
            (bottom and right) and crop the outputs back to the inputs' size.
            Pixels near the padded edges then see nodata beyond them.

    Returns:
        float32 outputs by output key, NHWC.

    Raises:
        ModelInputSizeError: Without ``pad``, sides that are not multiples of the
            size multiple; in any case a missing input, wrong channels or inputs that
            do not cover the same area.
    """
    k = spec.size_multiple
    arrays = {key: np.asarray(value) for key, value in inputs.items()}
    where: Crop | None = None
    if pad:
        padded = dict(arrays)
        for key, s in spec.inputs.items():
            if s.is_image and key in arrays:
                # A 20 m input is padded to half the multiple: both stay on one area.
                step = max(1, round(k / s.ratio))
                padded[key], _ = pad_to_multiple(arrays[key].astype(np.float32, copy=False),
                                                 step, fill=input_nodata(key), axes=(1, 2))
        height, width = spec.check_inputs(arrays, any_size=True)
        where = Crop(0, 0, height, width)
        arrays = padded
    spec.check_inputs(arrays)
    raw = model.predict_on_batch({key: arrays[key] for key in spec.inputs})
    if not isinstance(raw, Mapping):  # a reloaded model may give a list, in spec order
        values = list(raw) if isinstance(raw, list | tuple) else [raw]
        raw = dict(zip(spec.outputs, values, strict=True))
    outputs = {key: np.asarray(keras.ops.convert_to_numpy(raw[key]), dtype=np.float32)
               for key in spec.outputs}
    if where is None:
        return outputs
    cropped = {}
    for key, y in outputs.items():
        # A 20 m output of an odd 10 m side keeps its last, partly covered pixel.
        ratio = spec.outputs[key].ratio
        area = Crop(0, 0, math.ceil(where.height / ratio), math.ceil(where.width / ratio))
        cropped[key] = np.ascontiguousarray(crop(y, area, axes=(1, 2)))
    return cropped

