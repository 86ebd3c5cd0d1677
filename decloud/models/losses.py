"""Training losses on packed targets: L1, L2 and CARL (Meraner et al. 2020).

Models output raw reflectance x 10000 (``float32``). What a loss needs besides the
target (the cloudy image and its cloud mask for CARL, the target's validity for all)
travels in ``y_true``, *packed* along the channels, so that plain Keras losses and
metrics ``(y_true, y_pred)`` see everything. For an output of ``C`` bands, ``y_true``
is ``(N, H, W, 2C + 2)`` ``float32``, channels last:

================= =========== ==========================================================
channels          name        values
================= =========== ==========================================================
``0 .. C-1``      target      reflectance x 10000, nodata replaced by 0
``C .. 2C-1``     cloudy      the cloudy input (the image of the reconstructed
                              acquisition, e.g. ``s2_t``), reflectance x 10000, nodata
                              replaced by the target (see :func:`pack_targets`)
``2C``            cloud       1 where the cloudy input is cloud, cirrus or shadow, else 0
``2C + 1``        valid       1 where the target has data in every band, else 0
================= =========== ==========================================================

:func:`pack_targets` builds it from a dataset batch (numpy), :func:`unpack` splits it
inside a loss or metric (``keras.ops``, normalised reflectance). Losses are means over
the valid pixels and the bands of the whole batch, in normalised reflectance; a batch
without any valid pixel gives 0, not NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from decloud.constants import S2_NODATA, S2_SCALE
from decloud.errors import ArgumentError
from decloud.keys import CLOUD_CLASSES, KeyKind, make_key, parse_key
from decloud.models.config import ModelConfigError

__all__ = [
    "LOSS_NAMES",
    "CARLLoss",
    "L1Loss",
    "L2Loss",
    "carl",
    "carl_loss",
    "get_loss",
    "l1_loss",
    "l2_loss",
    "masked_l1",
    "masked_l2",
    "pack_targets",
    "packed_channels",
    "unpack",
]

#: Names accepted by :func:`get_loss` (and ``training.loss`` of a model configuration).
LOSS_NAMES: tuple[str, ...] = ("l1", "l2", "carl")



def packed_channels(channels: int) -> int:
    """Channels of a packed ``y_true`` for an output of ``channels`` bands (2C + 2)."""
    return 2 * channels + 2


def _key_parts(key: str) -> tuple[KeyKind, str]:
    """``(S2, tgt)`` or ``(S2_20M, tgt)`` from an output key."""
    kind, acq = parse_key(key)
    if kind not in (KeyKind.S2, KeyKind.S2_20M) or acq is None:
        raise ArgumentError(f"output key {key!r} is neither s2_<acq> nor s2_20m_<acq>",
                            field=key)
    return kind, acq


def _channels_last(array: np.ndarray) -> np.ndarray:
    """A mask as ``(N, H, W, 1)``, whether stored with a channel axis or not."""
    return array if array.ndim == 4 else array[..., None]


def _cloud_mask(mask: np.ndarray, prefix: str) -> np.ndarray:
    """Binary cloud/shadow mask (float32, ``(N, H, W, 1)``) at the output's resolution.

    Cloud is any of :data:`decloud.keys.CLOUD_CLASSES` (CARL's CSM = 1).
    """
    cloud = np.isin(_channels_last(mask), CLOUD_CLASSES).astype(np.float32)
    if prefix == KeyKind.S2_20M:
        # A 20 m pixel is cloudy if any of its four 10 m pixels is (2 x 2 max).
        n, h, w, _ = cloud.shape
        cloud = cloud[:, : h - h % 2, : w - w % 2]
        cloud = cloud.reshape(n, h // 2, 2, w // 2, 2, 1).max(axis=(2, 4))
    return cloud


def pack_targets(
    batch: Mapping[str, np.ndarray], outputs: Mapping[str, int], cloudy: str = "t"
) -> dict[str, np.ndarray]:
    """Pack, for each output, its target, the cloudy input, its cloud mask and validity.

    For an output ``s2_<tgt>`` (or ``s2_20m_<tgt>``) of ``C`` bands, the packed array is
    ``(N, H, W, 2C + 2)`` ``float32`` (layout in the module docstring), made of the batch
    keys:

    * target: ``s2_<tgt>`` (``s2_20m_<tgt>``); nodata (-10000) values become 0;
    * cloudy: ``s2_<cloudy>`` (``s2_20m_<cloudy>``), zeros if the batch lacks it. Where
      it has no data its values are replaced by the target's, so CARL's reproduction
      term ``|P - I|`` (the mask is 0 there) asks for the target rather than for
      -10000;
    * cloud: 1 where ``s2_mask_<cloudy>`` is cloud, cirrus or shadow (clear and nodata
      give 0); for 20 m outputs the 2 x 2 max of the 10 m mask. If the batch has no
      mask of the cloudy acquisition, it was not an input at all: every pixel counts
      as reconstructed (1);
    * valid: 1 where the target has data in every band.

    Args:
        batch: Dataset arrays ``(N, H, W, C)`` by key (raw encodings, channels last).
        outputs: Output keys of the model and their number of bands.
        cloudy: The acquisition being reconstructed (``training.cloudy``).

    Returns:
        The packed ``y_true`` of each output key.

    Raises:
        ArgumentError: The batch lacks an output's target key, an output key is not an
            S2 key, or shapes disagree (``field`` names the key).
    """
    packed: dict[str, np.ndarray] = {}
    for key, channels in outputs.items():
        prefix, _ = _key_parts(key)
        if key not in batch:
            raise ArgumentError(f"the batch has no target {key!r} (keys: "
                                f"{', '.join(batch) or 'none'})", field=key)
        raw = np.asarray(batch[key])
        if raw.shape[-1] != channels:
            raise ArgumentError(f"{key}: {raw.shape[-1]} bands in the batch, {channels} "
                                "expected", field=key)
        nodata = raw == S2_NODATA
        target = np.where(nodata, 0.0, raw).astype(np.float32)
        valid = (~nodata.any(axis=-1, keepdims=True)).astype(np.float32)
        cloudy_key = make_key(prefix, cloudy)
        if cloudy_key in batch:
            cloudy_raw = np.asarray(batch[cloudy_key])
            if cloudy_raw.shape != raw.shape:
                raise ArgumentError(f"{cloudy_key}: shape {cloudy_raw.shape}, {raw.shape} "
                                    "expected", field=cloudy_key)
            image = np.where(cloudy_raw == S2_NODATA, target, cloudy_raw).astype(np.float32)
        else:
            image = np.zeros_like(target)
        mask_key = make_key(KeyKind.S2_MASK, cloudy)
        if mask_key in batch:
            cloud = _cloud_mask(np.asarray(batch[mask_key]), prefix)
            if cloud.shape != valid.shape:
                raise ArgumentError(f"{mask_key}: mask {cloud.shape} does not fit {key} "
                                    f"{raw.shape}", field=mask_key)
        else:
            cloud = np.ones_like(valid)
        packed[key] = np.concatenate([target, image, cloud, valid], axis=-1)
    return packed


def unpack(y_true: Any, channels: int | None = None) -> tuple[Any, Any, Any, Any]:
    """Split a packed ``y_true`` into normalised target, cloudy input, cloud and valid.

    Args:
        y_true: Packed targets ``(N, H, W, 2C + 2)``.
        channels: ``C``; by default deduced from the (static) last dimension.

    Returns:
        ``(target, cloudy, cloud, valid)``: the images ``(N, H, W, C)`` in normalised
        reflectance (/ 10000), the masks ``(N, H, W, 1)`` as 0/1 floats.
    """
    y_true = ops.cast(y_true, "float32")
    c = (int(y_true.shape[-1]) - 2) // 2 if channels is None else int(channels)
    scale = 1.0 / S2_SCALE
    target = y_true[..., :c] * scale
    cloudy = y_true[..., c : 2 * c] * scale
    cloud = y_true[..., 2 * c : 2 * c + 1]
    valid = y_true[..., 2 * c + 1 : 2 * c + 2]
    return target, cloudy, cloud, valid


def _prepare(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Normalised prediction and the unpacked targets, channels taken from y_pred."""
    y_pred = ops.cast(y_pred, "float32") * (1.0 / S2_SCALE)
    target, cloudy, cloud, valid = unpack(y_true, int(y_pred.shape[-1]))
    return y_pred, target, cloudy, cloud, valid


def _valid_mean(values: Any, valid: Any) -> Any:
    """Mean of ``values`` (N, H, W, C) over valid pixels and bands; 0 if none is valid."""
    channels = float(values.shape[-1])
    total = ops.sum(values * valid)
    # max(count, 1): an empty batch gives 0 / 1 = 0 instead of NaN.
    return total / ops.maximum(ops.sum(valid) * channels, 1.0)


def masked_l1(y_true: Any, y_pred: Any) -> Any:
    """Mean absolute error over valid pixels and bands (normalised reflectance)."""
    pred, target, _, _, valid = _prepare(y_true, y_pred)
    return _valid_mean(ops.abs(pred - target), valid)


def masked_l2(y_true: Any, y_pred: Any) -> Any:
    """Mean squared error over valid pixels and bands (normalised reflectance)."""
    pred, target, _, _, valid = _prepare(y_true, y_pred)
    return _valid_mean(ops.square(pred - target), valid)


def carl(y_true: Any, y_pred: Any, lambda_: float = 1.0) -> Any:
    """Cloud-adaptive regularised loss (Meraner et al. 2020, eq. 3).

    ``mean(|CSM (P - T) + (1 - CSM) (P - I)|) + lambda mean(|P - T|)``: under clouds and
    shadows the prediction P is pulled to the target T, elsewhere to the cloudy input I
    (the clear pixels it saw), and everywhere to T with weight ``lambda``. Means over
    valid pixels and bands, normalised reflectance.
    """
    pred, target, cloudy, cloud, valid = _prepare(y_true, y_pred)
    adaptive = cloud * (pred - target) + (1.0 - cloud) * (pred - cloudy)
    return _valid_mean(ops.abs(adaptive), valid) + lambda_ * _valid_mean(
        ops.abs(pred - target), valid)


@keras.saving.register_keras_serializable(package="decloud")
class L1Loss(keras.losses.Loss):
    """:func:`masked_l1` as a serialisable Keras loss (packed ``y_true``, raw ``y_pred``)."""

    def __init__(self, name: str = "l1", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:  # noqa: D102
        return masked_l1(y_true, y_pred)


@keras.saving.register_keras_serializable(package="decloud")
class L2Loss(keras.losses.Loss):
    """:func:`masked_l2` as a serialisable Keras loss (packed ``y_true``, raw ``y_pred``)."""

    def __init__(self, name: str = "l2", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:  # noqa: D102
        return masked_l2(y_true, y_pred)


@keras.saving.register_keras_serializable(package="decloud")
class CARLLoss(keras.losses.Loss):
    """:func:`carl` as a serialisable Keras loss (packed ``y_true``, raw ``y_pred``).

    Args:
        lambda_: Weight of the global ``mean(|P - T|)`` term.
        name: Loss name.
        **kwargs: ``reduction``, ``dtype`` of :class:`keras.losses.Loss`.
    """

    def __init__(self, lambda_: float = 1.0, name: str = "carl", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.lambda_ = float(lambda_)

    def call(self, y_true: Any, y_pred: Any) -> Any:  # noqa: D102
        return carl(y_true, y_pred, self.lambda_)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "lambda_": self.lambda_}


def l1_loss() -> L1Loss:
    """A new :class:`L1Loss`."""
    return L1Loss()


def l2_loss() -> L2Loss:
    """A new :class:`L2Loss`."""
    return L2Loss()


def carl_loss(lambda_: float = 1.0) -> CARLLoss:
    """A new :class:`CARLLoss` with weight ``lambda_``."""
    return CARLLoss(lambda_=lambda_)


def get_loss(name: str, carl_lambda: float = 1.0) -> keras.losses.Loss:
    """The loss of a name (``l1``, ``l2`` or ``carl``), as a serialisable Keras loss.

    Args:
        name: One of :data:`LOSS_NAMES`.
        carl_lambda: CARL's ``lambda`` (ignored by the other losses).

    Raises:
        ModelConfigError: Unknown name.
    """
    key = name.strip().lower()
    if key == "l1":
        return l1_loss()
    if key == "l2":
        return l2_loss()
    if key == "carl":
        return carl_loss(carl_lambda)
    raise ModelConfigError(f"unknown loss {name!r} (known: {', '.join(LOSS_NAMES)})",
                           field="training.loss")
