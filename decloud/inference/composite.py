"""The mask-guided composite and the per-pixel quality layer.

The engine keeps the target date's clear pixels and uses the reconstruction only
under its clouds, cirrus and shadows (:data:`decloud.keys.CLOUD_CLASSES`), grown by
``dilation`` px, and under its nodata; a feathered transition of ``feather`` px blends
the two outside the dilated clouds. Nodata is neither dilated nor feathered: the pixels
next to a swath edge (or to the edge of the grid, read as nodata) are valid as they
are. With ``d`` the Euclidean distance (px) of a pixel to the dilated cloud mask, the
reconstruction's weight is (1 on nodata)::

    w = 1                      if d == 0    (quality 1, reconstructed)
    w = 1 - d / (feather + 1)  if 0 < d <= feather   (quality 2, feathered blend)
    w = 0                      otherwise    (quality 0, clear: the input, bit-identical)

Quality values (uint8, :data:`QUALITY_NODATA` = 255 nodata):

===== ================================================================
0     clear: the target's pixel, kept as is
1     reconstructed: the method's value (under the dilated mask)
2     feathered: a blend of the target and the reconstruction
255   nodata: neither the target nor the method has a value
===== ================================================================

Where the method has no value (NaN) the target's pixel is kept when it has one
(quality 0). A pixel's composite depends on the mask within :attr:`CompositeOptions.halo`
px of it: the engine adds that halo to its blocks so that streamed equals whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from decloud.constants import MaskClass
from decloud.errors import ArgumentError
from decloud.keys import CLOUD_CLASSES

__all__ = [
    "QUALITY_CLEAR",
    "QUALITY_FEATHERED",
    "QUALITY_NODATA",
    "QUALITY_RECONSTRUCTED",
    "CompositeOptions",
    "composite",
    "reconstruction_weight",
]

QUALITY_CLEAR: Final = 0
QUALITY_RECONSTRUCTED: Final = 1
QUALITY_FEATHERED: Final = 2
QUALITY_NODATA: Final = 255


@dataclass(frozen=True)
class CompositeOptions:
    """How the reconstruction is merged with the target date.

    Attributes:
        dilation: Pixels the cloud/shadow/nodata mask is grown by (Euclidean disk).
        feather: Width (px) of the blended transition outside the dilated mask; 0 for
            a hard edge.
    """

    dilation: int = 2
    feather: int = 3

    def __post_init__(self) -> None:
        for name in ("dilation", "feather"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ArgumentError(f"{name} must be an integer >= 0, not {value!r}",
                                    field=name)

    @property
    def halo(self) -> int:
        """Pixels of mask around a pixel its composite depends on (plus one for safety)."""
        return self.dilation + self.feather + 1


def reconstruction_weight(mask: np.ndarray, options: CompositeOptions) -> np.ndarray:
    """The reconstruction's weight ``(H, W)`` float32 in [0, 1] from a target mask.

    Args:
        mask: The target's :class:`~decloud.constants.MaskClass` layer ``(H, W)``.
        options: Dilation and feather widths.
    """
    cloud = np.isin(mask, CLOUD_CLASSES)
    weight = np.zeros(mask.shape, dtype=np.float32)
    if cloud.any():
        # Distances to the nearest cloud pixel (EDT of the complement), exact Euclidean.
        dilated = ndimage.distance_transform_edt(~cloud) <= options.dilation
        distance = ndimage.distance_transform_edt(~dilated)
        weight[dilated] = 1.0
        ramp = (distance > 0) & (distance <= options.feather)
        weight[ramp] = (1.0 - distance[ramp] / (options.feather + 1)).astype(np.float32)
    weight[mask == MaskClass.NODATA] = 1.0
    return weight


def composite(
    target: np.ndarray,
    mask: np.ndarray,
    reconstruction: np.ndarray,
    options: CompositeOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a reconstruction into the target date under its (dilated) mask.

    Args:
        target: The target's reflectance x 10000, float32 ``(H, W, C)``, NaN nodata
            (decoded from its int16 encoding, so kept pixels re-encode to the same
            integers).
        mask: The target's mask ``(H, W)`` (nodata where any of its bands is).
        reconstruction: The method's reflectance x 10000 ``(H, W, C)``, NaN no value.
        options: Dilation and feather.

    Returns:
        ``(values, quality)``: float32 ``(H, W, C)`` reflectance x 10000 (NaN nodata;
        the target's own values where quality is 0) and the uint8 quality layer.
    """
    if target.shape != reconstruction.shape or target.shape[:2] != mask.shape:
        raise ArgumentError(f"target {target.shape}, mask {mask.shape} and reconstruction "
                            f"{reconstruction.shape} disagree", field="shape")
    weight = reconstruction_weight(mask, options)
    has_target = np.isfinite(target).all(axis=-1)
    has_method = np.isfinite(reconstruction).all(axis=-1)
    use_method = (weight > 0) & has_method
    full = use_method & ((weight >= 1) | ~has_target)
    blend = use_method & ~full
    values = np.where(use_method[..., None], reconstruction, target).astype(np.float32)
    w = weight[blend][:, None]
    values[blend] = w * reconstruction[blend] + (1 - w) * target[blend]
    quality = np.full(mask.shape, QUALITY_CLEAR, dtype=np.uint8)
    quality[full] = QUALITY_RECONSTRUCTED
    quality[blend] = QUALITY_FEATHERED
    nodata = ~use_method & ~has_target
    quality[nodata] = QUALITY_NODATA
    values[nodata] = np.nan
    return values, quality
