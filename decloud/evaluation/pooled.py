"""Metrics of :func:`decloud.models.metrics.evaluate` pooled over batches.

Evaluating a whole split at once would hold every image in memory; pooling per-batch
values, each weighted by what it averages, gives the same numbers batch by batch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from decloud.constants import S2_NODATA
from decloud.keys import CLOUD_CLASSES
from decloud.models.metrics import (
    KINDS,
    METRIC_NAMES,
    PIXEL_COUNTS,
    REGIONS,
    SSIM_RADIUS,
    evaluate,
    metric_name,
    pixel_count_name,
)

__all__ = ["PooledMetrics", "cloud_at"]


def cloud_at(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Binary cloud mask ``(N, h, w)`` of a 10 m class mask, at an output's size.

    A pixel is cloud when its class is one of :data:`decloud.keys.CLOUD_CLASSES` (as the
    losses and metrics count it); a 20 m pixel is cloud if any of its four 10 m pixels
    is (as the packed targets of :mod:`decloud.models.losses`).

    Args:
        mask: Class masks ``(N, H, W)`` or ``(N, H, W, 1)``.
        shape: The output's shape ``(N, h, w, C)``; ``H`` must be a multiple of ``h``.
    """
    cloud: np.ndarray = np.isin(mask[..., 0] if mask.ndim == 4 else mask, CLOUD_CLASSES)
    n, h, w = cloud.shape
    if (h, w) != tuple(shape[1:3]):
        f = h // shape[1]
        blocks = cloud[:, :shape[1] * f, :shape[2] * f].reshape(n, shape[1], f, shape[2], f)
        cloud = np.asarray(blocks.any(axis=(2, 4)))
    return cloud.astype(np.uint8)


class PooledMetrics:
    """Accumulates :func:`~decloud.models.metrics.evaluate` over batches.

    Each batch's values are weighted by what they average (pixels x bands, images,
    SSIM windows, pixels for angles); RMSE and PSNR come from the pooled MSE. The
    result equals one :func:`evaluate` over all the batches at once.
    """

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, float] = {}
        self.pixels: dict[str, int] = {name: 0 for name in PIXEL_COUNTS}

    def add(self, target: np.ndarray, prediction: np.ndarray, cloud: np.ndarray | None) -> None:
        """Add one batch.

        Args:
            target: Raw targets ``(N, H, W, C)`` (reflectance x 10000, nodata -10000).
            prediction: Predictions, same shape and encoding.
            cloud: Binary cloud mask ``(N, H, W)`` of the cloudy input, or None.
        """
        values = evaluate(target, prediction, cloud=cloud)
        ok: np.ndarray = np.logical_not((target == S2_NODATA).any(axis=-1))
        is_cloud: np.ndarray = np.zeros_like(ok) if cloud is None else cloud.astype(bool)
        channels = target.shape[-1]
        r = SSIM_RADIUS
        inner = (slice(None), slice(r, -r), slice(r, -r))
        # SSIM counts the windows whose every pixel is valid (see models.metrics).
        window_ok = ndimage.minimum_filter(ok.astype(np.uint8), size=(1, 2 * r + 1, 2 * r + 1))
        regions = {"all": ok, "masked": ok & is_cloud, "clear": ok & ~is_cloud}
        for region, sel in regions.items():
            pixels = float(sel.sum())
            weights = {
                "mae": pixels * channels, "mse": pixels * channels,
                "psnr_image": float(sel.any(axis=(1, 2)).sum()),
                "ssim": float((sel[inner] * window_ok[inner]).sum()) * channels,
                "sam": pixels,
            }
            self.pixels[pixel_count_name(region)] += int(pixels)
            for kind, weight in weights.items():
                name = metric_name(kind, region)
                value = values[name]
                # None: the batch has nothing of this region (its weight is 0 too).
                if value is not None and weight > 0:
                    self.total[name] = self.total.get(name, 0.0) + float(value) * weight
                    self.count[name] = self.count.get(name, 0.0) + weight

    def result(self) -> dict[str, float | int | None]:
        """The pooled metrics, by name (:data:`~decloud.models.metrics.METRIC_NAMES`).

        None where the split has nothing to average (an empty region), then the pixel
        counts (:data:`~decloud.models.metrics.PIXEL_COUNTS`), as :func:`evaluate`.
        """
        out: dict[str, float | int | None] = {}
        for region in REGIONS:
            for kind in KINDS:
                name = metric_name(kind, region)
                base = metric_name("mse", region) if kind in ("rmse", "psnr") else name
                count = self.count.get(base, 0.0)
                mean = self.total.get(base, 0.0) / count if count > 0 else 0.0
                if count <= 0:
                    out[name] = None
                elif kind == "rmse":
                    out[name] = math.sqrt(mean)
                elif kind == "psnr":
                    out[name] = -10.0 * math.log10(max(mean, 1e-10))
                else:
                    out[name] = mean
        return {**{name: out[name] for name in METRIC_NAMES}, **self.pixels}
