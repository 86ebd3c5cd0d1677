"""Reconstruction metrics, per region: Keras metrics for training, numpy for evaluation.

Every metric exists in three regions of the target's valid pixels (see the packed
``y_true`` of :mod:`decloud.models.losses`):

* all valid pixels (``mae``, ``ssim``...);
* ``masked``: valid pixels under cloud, cirrus or shadow in the cloudy input, the
  *reconstruction* (``mae_masked``...);
* ``clear``: valid pixels clear in the cloudy input, the *reproduction*
  (``mae_clear``...).

Kinds, all in normalised reflectance (data range 1):

============== =========================================================================
``mae``        mean |P - T| over the region's pixels and bands
``mse``        mean (P - T)^2
``rmse``       sqrt(mse)
``psnr``       10 log10(1 / mse), mse over the region of the whole batch (or epoch)
``psnr_image`` the PSNR of each image over its region, averaged over images (an image
               whose region is empty does not count)
``ssim``       SSIM with an 11 x 11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03),
               per band then averaged, on the *valid interior* (no padding: the map is
               5 px smaller on each side), as scikit-image's
               ``structural_similarity(gaussian_weights=True, sigma=1.5,
               use_sample_covariance=False, data_range=1)``; the region is taken at
               each window's centre, and windows holding an invalid pixel are left out
``sam``        spectral angle between P and T per pixel, degrees, averaged over pixels
============== =========================================================================

Conventions: in the Keras metrics (logged per epoch, kept numeric for the curves and
early stopping) an empty region gives 0 (never NaN), and so does SSIM on images smaller
than its window. :func:`evaluate` instead gives None for a metric with nothing to
average, and the pixel count of each region beside the values (``pixels``,
``pixels_masked``, ``pixels_clear``): an empty region reads "no pixels", not a perfect
0.0. The MSE entering a PSNR is floored at
``1e-10``, so a perfect prediction gives 100 dB (not infinity); a pixel whose
prediction or target is the zero vector has a spectral angle of 90 degrees.

The Keras metrics (:class:`ReconstructionMetric`, :func:`get_metrics`) accumulate sums
over the epoch, so that ``psnr`` and ``rmse`` are those of the epoch's pooled errors
rather than means of per-batch values. :func:`evaluate` computes the same quantities
with numpy (float64) on full images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import keras
import numpy as np
from keras import ops
from scipy import ndimage

from decloud.constants import S2_NODATA, S2_SCALE
from decloud.errors import ArgumentError
from decloud.keys import CLOUD_CLASSES
from decloud.models.losses import unpack

__all__ = [
    "KINDS",
    "METRIC_NAMES",
    "PIXEL_COUNTS",
    "REGIONS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_RADIUS",
    "SSIM_SIGMA",
    "ReconstructionMetric",
    "batch_metric",
    "evaluate",
    "get_metrics",
    "metric_name",
    "parse_metric_name",
    "pixel_count_name",
]

#: Metric kinds, in logging order.
KINDS: Final = ("mae", "mse", "rmse", "psnr", "psnr_image", "ssim", "sam")
#: Regions: all valid pixels, reconstruction (under clouds), reproduction (clear).
REGIONS: Final = ("all", "masked", "clear")

#: SSIM constants (Wang et al. 2004, as scikit-image with ``gaussian_weights=True``).
SSIM_SIGMA: Final = 1.5
#: Window radius: scipy's ``int(truncate * sigma + 0.5)`` with truncate 3.5, so 11 x 11.
SSIM_RADIUS: Final = 5
SSIM_K1: Final = 0.01
SSIM_K2: Final = 0.03

#: Floor of the MSE inside a PSNR: a perfect prediction gives 100 dB, not infinity.
_MSE_FLOOR: Final = 1e-10


def metric_name(kind: str, region: str = "all") -> str:
    """The logged name of a metric: ``mae``, ``mae_masked``, ``mae_clear``..."""
    if kind not in KINDS or region not in REGIONS:
        raise ArgumentError(f"unknown metric {kind!r} in region {region!r} (kinds: "
                            f"{', '.join(KINDS)}; regions: {', '.join(REGIONS)})",
                            field="metric")
    return kind if region == "all" else f"{kind}_{region}"


def pixel_count_name(region: str = "all") -> str:
    """The name of a region's valid-pixel count in :func:`evaluate`: ``pixels_masked``..."""
    if region not in REGIONS:
        raise ArgumentError(f"unknown region {region!r} (regions: {', '.join(REGIONS)})",
                            field="region")
    return "pixels" if region == "all" else f"pixels_{region}"


def parse_metric_name(name: str) -> tuple[str, str]:
    """``(kind, region)`` of a metric name (inverse of :func:`metric_name`)."""
    for region in REGIONS[1:]:
        kind = name.removesuffix(f"_{region}")
        if kind != name and kind in KINDS:
            return kind, region
    if name in KINDS:
        return name, "all"
    raise ArgumentError(f"unknown metric {name!r} (known: {', '.join(METRIC_NAMES)})",
                        field="metric")


#: Every metric name, kind by kind: ``mae``, ``mae_masked``, ``mae_clear``, ``mse``...
METRIC_NAMES: Final = tuple(metric_name(k, r) for k in KINDS for r in REGIONS)
#: The names of the regions' pixel counts in :func:`evaluate`'s result.
PIXEL_COUNTS: Final = tuple(pixel_count_name(r) for r in REGIONS)


def _gaussian_1d() -> np.ndarray:
    """The normalised 1-D Gaussian of scipy's ``gaussian_filter`` (sigma 1.5, 11 taps)."""
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


# ---------------------------------------------------------------- Keras (keras.ops)


def _region_weight(cloud: Any, valid: Any, region: str) -> Any:
    if region == "masked":
        return valid * cloud
    if region == "clear":
        return valid * (1.0 - cloud)
    return valid


def _ssim_map(pred: Any, target: Any) -> Any:
    """SSIM map of every full 11 x 11 window, ``(N, H - 10, W - 10, C)`` (separable)."""
    channels = int(pred.shape[-1])
    # The five local statistics filtered at once: one depthwise convolution per axis.
    stack = ops.concatenate([pred, target, pred * pred, target * target, pred * target],
                            axis=-1)
    g = _gaussian_1d().astype(np.float32)
    n = 5 * channels
    ky = ops.convert_to_tensor(np.tile(g[:, None, None, None], (1, 1, n, 1)))
    kx = ops.convert_to_tensor(np.tile(g[None, :, None, None], (1, 1, n, 1)))
    f = ops.depthwise_conv(ops.depthwise_conv(stack, ky, padding="valid"), kx,
                           padding="valid")
    c = channels
    mx, my = f[..., :c], f[..., c : 2 * c]
    vx = f[..., 2 * c : 3 * c] - mx * mx
    vy = f[..., 3 * c : 4 * c] - my * my
    vxy = f[..., 4 * c :] - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _spectral_angle(pred: Any, target: Any) -> Any:
    """Angle between pixel spectra, degrees, ``(N, H, W, 1)``.

    Kahan's ``2 atan2(|a - b|, |a + b|)`` of the unit vectors: unlike ``arccos`` of the
    cosine, it stays accurate for the small angles of good reconstructions.
    """
    eps = 1e-12
    a = pred / ops.maximum(ops.sqrt(ops.sum(pred * pred, axis=-1, keepdims=True)), eps)
    b = target / ops.maximum(ops.sqrt(ops.sum(target * target, axis=-1, keepdims=True)), eps)
    diff = ops.sqrt(ops.sum(ops.square(a - b), axis=-1, keepdims=True))
    summ = ops.sqrt(ops.sum(ops.square(a + b), axis=-1, keepdims=True))
    return ops.arctan2(diff, summ) * (360.0 / np.pi)


def _batch_stats(kind: str, region: str, y_true: Any, y_pred: Any,
                 sample_weight: Any = None) -> tuple[Any, Any]:
    """``(numerator, denominator)`` of a metric on one batch, to be accumulated."""
    pred = ops.cast(y_pred, "float32") * (1.0 / S2_SCALE)
    channels = int(pred.shape[-1])
    target, _, cloud, valid = unpack(y_true, channels)
    weight = _region_weight(cloud, valid, region)
    if sample_weight is not None:
        weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1, 1, 1))
    if kind == "ssim":
        # Padding by the radius with invalid pixels keeps the map the size of the image
        # (one window per centre pixel) and lets images smaller than a window through;
        # windows reaching an invalid or padded pixel are dropped (erosion of valid), so
        # only the valid interior counts, as in scikit-image.
        pad = [[0, 0], [SSIM_RADIUS, SSIM_RADIUS], [SSIM_RADIUS, SSIM_RADIUS], [0, 0]]
        invalid = ops.pad(1.0 - valid, pad, constant_values=1.0)
        window_ok = 1.0 - ops.max_pool(invalid, pool_size=2 * SSIM_RADIUS + 1, strides=1,
                                       padding="valid")
        w = weight * window_ok
        ssim = _ssim_map(ops.pad(pred, pad), ops.pad(target, pad))
        return ops.sum(ssim * w), ops.sum(w) * channels
    if kind == "sam":
        return ops.sum(_spectral_angle(pred, target) * weight), ops.sum(weight)
    err = ops.abs(pred - target) if kind == "mae" else ops.square(pred - target)
    if kind == "psnr_image":
        sums = ops.sum(err * weight, axis=(1, 2, 3))
        counts = ops.sum(weight, axis=(1, 2, 3)) * channels
        mse = sums / ops.maximum(counts, 1e-12)
        psnr = -10.0 * ops.log10(ops.maximum(mse, _MSE_FLOOR))
        has = ops.cast(ops.greater(counts, 0.0), "float32")
        return ops.sum(psnr * has), ops.sum(has)
    return ops.sum(err * weight), ops.sum(weight) * channels


def _finish(kind: str, total: Any, count: Any) -> Any:
    """The metric from accumulated sums; 0 when nothing was accumulated."""
    # Counts are whole numbers (pixels x bands, images) unless sample weights are
    # fractional: max(count, tiny) keeps 0 / 0 at 0.
    mean = total / ops.maximum(count, 1e-12)
    if kind == "rmse":
        return ops.sqrt(mean)
    if kind == "psnr":
        psnr = -10.0 * ops.log10(ops.maximum(mean, _MSE_FLOOR))
        return ops.where(ops.greater(count, 0.0), psnr, ops.zeros_like(psnr))
    return mean


def batch_metric(name: str, y_true: Any, y_pred: Any) -> Any:
    """A metric on one batch (``keras.ops``): packed ``y_true``, raw ``y_pred``.

    Args:
        name: One of :data:`METRIC_NAMES`.
        y_true: Packed targets ``(N, H, W, 2C + 2)`` (:func:`~decloud.models.losses.pack_targets`).
        y_pred: Raw predictions (reflectance x 10000) ``(N, H, W, C)``.

    Returns:
        A scalar tensor.
    """
    kind, region = parse_metric_name(name)
    return _finish(kind, *_batch_stats(kind, region, y_true, y_pred))


@keras.saving.register_keras_serializable(package="decloud")
class ReconstructionMetric(keras.metrics.Metric):
    """One metric kind in one region, accumulated over the epoch.

    Takes packed ``y_true`` and raw ``y_pred`` like the losses. ``sample_weight``, if
    given, weighs each sample (shape ``(N,)``).

    Args:
        kind: One of :data:`KINDS`.
        region: One of :data:`REGIONS`.
        name: Logged name; :func:`metric_name` by default.
        dtype: Dtype of the accumulators.
    """

    def __init__(self, kind: str, region: str = "all", name: str | None = None,
                 dtype: Any = None) -> None:
        default = metric_name(kind, region)
        super().__init__(name=name or default, dtype=dtype)
        self.kind, self.region = kind, region
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add one batch's sums."""
        total, count = _batch_stats(self.kind, self.region, y_true, y_pred, sample_weight)
        self.total.assign_add(ops.cast(total, self.total.dtype))
        self.count.assign_add(ops.cast(count, self.count.dtype))

    def result(self) -> Any:
        """The metric over everything accumulated since the last reset."""
        return _finish(self.kind, self.total, self.count)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {"name": self.name, "dtype": self.dtype, "kind": self.kind,
                "region": self.region}


def get_metrics(names: Sequence[str] | None = None) -> list[ReconstructionMetric]:
    """New Keras metrics for ``model.compile(metrics=...)``.

    Args:
        names: Metric names (:data:`METRIC_NAMES`); all of them by default.

    Raises:
        ValueError: An unknown or repeated name (Keras would log only one of twins).
    """
    names = list(METRIC_NAMES if names is None else names)
    if len(set(names)) != len(names):
        raise ArgumentError(f"repeated metric names in {names}", field="metrics")
    return [ReconstructionMetric(*parse_metric_name(n), name=n) for n in names]


# ---------------------------------------------------------------- numpy (evaluation)


def _np_ssim(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
             weight: np.ndarray) -> tuple[float, float]:
    """SSIM sums over a region, band by band (bounded memory on full tiles)."""
    r = SSIM_RADIUS
    g = _gaussian_1d()
    inner = (slice(None), slice(r, -r), slice(r, -r))
    # A window is kept when none of its pixels is invalid (erosion of valid).
    ok = ndimage.minimum_filter(valid.astype(np.uint8), size=(1, 2 * r + 1, 2 * r + 1))
    w = weight[inner] * ok[inner]
    if w.size == 0 or not w.any():
        return 0.0, 0.0

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(x, g, axis=1), g, axis=2)[inner]

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    total = 0.0
    for band in range(pred.shape[-1]):
        x, y = pred[..., band], target[..., band]
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        vxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        total += float((s * w).sum())
    return total, float(w.sum()) * pred.shape[-1]


def _np_angle(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    eps = 1e-12
    a = pred / np.maximum(np.linalg.norm(pred, axis=-1, keepdims=True), eps)
    b = target / np.maximum(np.linalg.norm(target, axis=-1, keepdims=True), eps)
    return 2.0 * np.degrees(np.arctan2(np.linalg.norm(a - b, axis=-1),
                                       np.linalg.norm(a + b, axis=-1)))


def _np_finish(kind: str, total: float, count: float) -> float | None:
    if count <= 0:
        return None  # nothing to average: "no pixels", not a perfect score
    mean = total / count
    if kind == "rmse":
        return float(np.sqrt(mean))
    if kind == "psnr":
        return float(-10.0 * np.log10(max(mean, _MSE_FLOOR)))
    return float(mean)


def _as_mask(mask: np.ndarray | None, shape: tuple[int, ...], default: bool) -> np.ndarray:
    """A per-pixel boolean mask ``(N, H, W)`` from ``(H, W)``, ``(H, W, 1)``, batched..."""
    if mask is None:
        return np.full(shape, default)
    mask = np.asarray(mask)
    if mask.ndim >= 3 and mask.shape[-1] == 1 and mask.shape[:-1] in (shape, shape[1:]):
        mask = mask[..., 0]
    if mask.shape == shape[1:]:
        mask = mask[None]
    if mask.shape != shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit images {shape}")
    return mask


def evaluate(target: np.ndarray, prediction: np.ndarray, cloud: np.ndarray | None = None,
             valid: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Every metric in every region on full images (numpy, float64).

    The same definitions as the Keras metrics (module docstring), computed at once over
    all given pixels.

    Args:
        target: Reference, reflectance x 10000, ``(H, W, C)`` (or ``(N, H, W, C)``);
            -10000 is nodata.
        prediction: Prediction, same shape and scale.
        cloud: The cloudy input's mask ``(H, W)`` or ``(H, W, 1)``: a uint8
            :class:`~decloud.constants.MaskClass` mask (cloud, cirrus, shadow count as
            cloud) or a binary one. ``None``: every pixel is clear, so the ``masked``
            region is empty.
        valid: Extra validity (``True`` where usable), combined with the target's nodata
            (a pixel is valid only where every target band has data).

    Returns:
        ``{name: value}`` for every name of :data:`METRIC_NAMES` (None where there is
        nothing to average: an empty region, no complete SSIM window), then the valid
        pixels of each region (:data:`PIXEL_COUNTS`, ints).

    Raises:
        ArgumentError: The shapes differ or are not ``(H, W, C)`` / ``(N, H, W, C)``.
    """
    target = np.asarray(target)
    prediction = np.asarray(prediction)
    if target.shape != prediction.shape or target.ndim not in (3, 4):
        raise ArgumentError(f"target {target.shape} and prediction {prediction.shape} must "
                            "be equal (H, W, C) or (N, H, W, C)", field="shape")
    if target.ndim == 3:
        target, prediction = target[None], prediction[None]
    shape = target.shape[:-1]
    ok = ~(target == S2_NODATA).any(axis=-1) & _as_mask(valid, shape, True).astype(bool)
    # Binary masks work too: 1 is MaskClass.CLOUD.
    is_cloud = np.isin(_as_mask(cloud, shape, False), CLOUD_CLASSES)
    t = np.where(ok[..., None], target, 0).astype(np.float64) / S2_SCALE
    p = prediction.astype(np.float64) / S2_SCALE
    channels = t.shape[-1]
    err = p - t
    abs_err, sq_err = np.abs(err), err * err
    angle = _np_angle(p, t)
    regions = {"all": ok, "masked": ok & is_cloud, "clear": ok & ~is_cloud}
    out: dict[str, float | int | None] = {}
    for region, sel in regions.items():
        w = sel.astype(np.float64)
        n = float(w.sum()) * channels
        per_image = (sq_err * w[..., None]).sum(axis=(1, 2, 3))
        counts = w.sum(axis=(1, 2)) * channels
        has = counts > 0
        psnr_images = -10.0 * np.log10(np.maximum(per_image[has] / counts[has], _MSE_FLOOR))
        stats = {
            "mae": (float((abs_err * w[..., None]).sum()), n),
            "mse": (float(per_image.sum()), n),
            "rmse": (float(per_image.sum()), n),
            "psnr": (float(per_image.sum()), n),
            "psnr_image": (float(psnr_images.sum()), float(has.sum())),
            "ssim": _np_ssim(p, t, ok, w),
            "sam": (float((angle * w).sum()), float(w.sum())),
        }
        for kind in KINDS:
            out[metric_name(kind, region)] = _np_finish(kind, *stats[kind])
        out[pixel_count_name(region)] = int(sel.sum())
    return {name: out[name] for name in (*METRIC_NAMES, *PIXEL_COUNTS)}
