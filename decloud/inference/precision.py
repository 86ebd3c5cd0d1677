"""Compute precision of a model in the engine: float32, or bfloat16 where it is validated.

``EngineOptions(precision="bfloat16")`` runs a zoo model's convolutions in bfloat16
(Keras's ``mixed_bfloat16`` policy: weights stay float32, activations are bfloat16),
about twice the throughput on GPUs with bfloat16 units. The layers that carry raw
values stay float32: the input normalisation (raw S2 up to 10000 would lose 3
significant bits), the residual addition, the denormalisation and the outputs, so the
written reflectance is rounded once, at the end, in float32.

bfloat16 is allowed only for the named models of :data:`BFLOAT16_MODELS`, for which
``tests/inference/test_precision.py`` shows the output within
:data:`BFLOAT16_TOLERANCE` (1e-2 reflectance) of float32 on real fixture inputs (the
T33TVM THEIA dates, S1 of T31UFS, the DEM fixture) on the JAX and TensorFlow backends.
No trained model ships with decloud: the check runs with seeded weights (the models'
initialisation). The allow-list goes by name, so a trained model of a named
configuration is allowed too, but its weights are NOT validated: every bfloat16 run
logs a WARNING saying so, with the bound measured on seeded weights, and the run record
keeps ``parameters.precision`` (a series folder refuses a rerun in another precision).
Any other model (or a non-Keras method) is refused with
:class:`~decloud.errors.PrecisionError`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from decloud.errors import PrecisionError

if TYPE_CHECKING:
    import keras

    from decloud.models.zoo import ModelSpec

__all__ = ["BFLOAT16_MODELS", "BFLOAT16_TOLERANCE", "PRECISIONS", "apply_precision",
           "check_precision", "set_precision"]

_log = logging.getLogger(__name__)

#: Precisions of :class:`~decloud.inference.engine.EngineOptions`.
PRECISIONS: Final = ("float32", "bfloat16")

#: Named models whose bfloat16 output is within :data:`BFLOAT16_TOLERANCE` of float32
#: (``tests/inference/test_precision.py``, JAX and TensorFlow).
BFLOAT16_MODELS: Final = frozenset({"msop_small", "msop_unet"})

#: Largest bfloat16 - float32 difference allowed, reflectance x 10000 (1e-2 reflectance).
BFLOAT16_TOLERANCE: Final = 100.0

#: Layer classes kept in float32: they carry raw or written values.
_FLOAT32_LAYERS: Final = frozenset({"InputLayer", "Normalize", "Denormalize"})
#: Layers of the zoo's U-Net kept in float32 by name (the residual path).
_FLOAT32_NAMES: Final = frozenset({"residual", "residual_input"})


def check_precision(precision: str, model_name: str | None) -> None:
    """Refuse a precision not validated for a model.

    Args:
        precision: ``float32`` or ``bfloat16``.
        model_name: The model's (configuration's) name; None for a method that is not
            a Keras model.

    Raises:
        PrecisionError: An unknown precision, or bfloat16 for another model.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                             f"{precision!r}", field="precision")
    if precision == "float32":
        return
    if model_name is None:
        raise PrecisionError("bfloat16 applies to Keras models only: this method computes "
                             "in float32", field="precision")
    if model_name not in BFLOAT16_MODELS:
        raise PrecisionError(
            f"bfloat16 is not validated for model {model_name!r}: it is allowed for "
            f"{', '.join(sorted(BFLOAT16_MODELS))} only, whose output a test shows within "
            "1e-2 reflectance of float32 with seeded weights (trained weights are not "
            "validated); use precision float32", field="precision")


def set_precision(model: keras.Model, spec: ModelSpec, precision: str) -> None:
    """Set a zoo model's compute precision in place (see the module doc).

    The model's compiled predict function is dropped so that the next call traces
    the new precision.

    Raises:
        PrecisionError: The precision is not validated for ``spec.name``.
    """
    check_precision(precision, spec.name)
    if precision == "bfloat16":
        _log.warning("model %s runs in bfloat16: validated on seeded weights only (output "
                     "within %g reflectance of float32 on fixture inputs, "
                     "tests/inference/test_precision.py); these weights are not validated",
                     spec.name, BFLOAT16_TOLERANCE / 10000)
    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    keep = _FLOAT32_NAMES | set(spec.outputs)
    changed = False
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ in _FLOAT32_LAYERS or layer.name in keep:
            continue
        if layer.dtype_policy.name != policy:
            layer.dtype_policy = policy
            changed = True
    if changed:
        model.predict_function = None


def apply_precision(method: Any, precision: str) -> None:
    """Give a block method the engine's precision (a Keras method's model is changed).

    Raises:
        PrecisionError: bfloat16 for a method that is not a validated Keras model.
    """
    model, spec = getattr(method, "model", None), getattr(method, "spec", None)
    if model is None or spec is None:
        check_precision(precision, None)
        return
    set_precision(model, spec, precision)
