"""Normalisation inside the models: they take raw dataset values and return raw values.

Inputs are the encodings of :mod:`decloud.constants` (the dataset keys' dtypes):

========== ====================== ================================= ==========
source     raw value              normalised                        nodata -> 0
========== ====================== ================================= ==========
S2         reflectance x 10000    raw / 10000 (reflectance)         -10000
S1         prepared uint16        raw / 65535 (ln sigma0 in [0, 1]) 0
DEM        metres                 raw / 1000 (km)                   -32768
========== ====================== ================================= ==========

Outputs are normalised reflectance, multiplied by 10000 on the way out, so a model's
output is directly comparable to (and stored like) the ``s2_*`` keys.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from decloud.constants import S2_SCALE
from decloud.keys import KINDS

__all__ = ["NORMALISATION", "Denormalize", "Normalize"]

#: (scale, nodata) per key kind (``s2``, ``s2_20m``, ``s1``, ``dem``), from
#: :data:`decloud.keys.KINDS`: normalised = raw * scale, nodata pixels become 0.
NORMALISATION: dict[str, tuple[float, float]] = {
    str(kind): (spec.norm_scale, float(spec.nodata))
    for kind, spec in KINDS.items() if spec.norm_scale is not None
}


@keras.saving.register_keras_serializable(package="decloud")
class Normalize(keras.layers.Layer):
    """``raw * scale``, with nodata pixels set to 0 (cast to float32 first)."""

    def __init__(self, scale: float, nodata: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.nodata = float(nodata)

    def call(self, x: Any) -> Any:  # noqa: D102
        x = ops.cast(x, "float32")
        return ops.where(ops.equal(x, self.nodata), ops.zeros_like(x), x * self.scale)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "scale": self.scale, "nodata": self.nodata}


@keras.saving.register_keras_serializable(package="decloud")
class Denormalize(keras.layers.Layer):
    """Normalised reflectance back to reflectance x 10000 (float32)."""

    def call(self, x: Any) -> Any:  # noqa: D102
        return ops.cast(x, "float32") * S2_SCALE
