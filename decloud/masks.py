"""Cloud and shadow masks computed from the bands, for products without a usable mask.

The cloud test follows the spirit of the cloud score used to build SEN12MS-CR and
the cloud-adaptive loss of Meraner et al. (2020): a pixel is cloudy when it is at
once bright in the blue, bright in the visible, moist (NDMI) and not snow (NDSI). Each
test is a soft score in [0, 1]; the cloud score is their minimum, smoothed, then
thresholded. Shadows are dark in NIR and SWIR (the cloud-shadow index
``CSI = (B08 + B11) / 2``) and dark in the blue, and are not water (NDWI). All
thresholds are absolute reflectances, so the mask of a window does not depend on the
rest of the image and a tile streamed in windows is seamless.

Masks made here are labelled ``computed`` wherever they are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from decloud.constants import MaskClass
from decloud.errors import MissingBandError

if TYPE_CHECKING:
    from decloud.grid import Grid, RasterPool
    from decloud.products.base import S2Product

__all__ = ["FALLBACK_BANDS", "FallbackThresholds", "cloud_shadow", "compute_mask"]

#: Bands the fallback needs.
FALLBACK_BANDS = ("B02", "B03", "B04", "B08", "B11")


@dataclass(frozen=True)
class FallbackThresholds:
    """Thresholds of the computed mask (reflectances, unitless)."""

    blue: tuple[float, float] = (0.1, 0.5)
    visible: tuple[float, float] = (0.2, 0.8)
    ndmi: tuple[float, float] = (-0.1, 0.1)
    ndsi: tuple[float, float] = (0.8, 0.6)
    cloud_score: float = 0.2
    smooth: int = 5
    dilate: int = 1
    # Loose enough for top-of-atmosphere data, where haze brightens shadows in the blue.
    csi: float = 0.16
    shadow_blue: float = 0.12
    water_ndwi: float = 0.2


def _rescale(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def cloud_shadow(
    bands: dict[str, np.ndarray], thresholds: FallbackThresholds | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud and shadow masks from reflectances.

    Args:
        bands: Reflectance arrays (unitless, NaN = nodata) for :data:`FALLBACK_BANDS`.
        thresholds: Overrides the default thresholds.

    Returns:
        ``(cloud, shadow)`` boolean arrays; nodata pixels are in neither.
    """
    t = thresholds or FallbackThresholds()
    missing = [b for b in FALLBACK_BANDS if b not in bands]
    if missing:
        raise MissingBandError(f"the computed mask needs bands {', '.join(missing)}",
                               field=missing[0])
    b02, b03, b04, b08, b11 = (np.nan_to_num(bands[b], nan=0.0) for b in FALLBACK_BANDS)
    valid = ~np.isnan(bands["B02"])
    score = _rescale(b02, t.blue)
    score = np.minimum(score, _rescale(b02 + b03 + b04, t.visible))
    score = np.minimum(score, _rescale(_ratio(b08, b11), t.ndmi))
    score = np.minimum(score, _rescale(_ratio(b03, b11), t.ndsi))
    if t.smooth > 1:
        score = ndimage.uniform_filter(score, size=t.smooth, mode="nearest")
    cloud = score > t.cloud_score
    if t.dilate > 0:
        cloud = ndimage.binary_dilation(cloud, iterations=t.dilate)
    water = _ratio(b03, b08) > t.water_ndwi
    shadow = ((b08 + b11) / 2 < t.csi) & (b02 < t.shadow_blue) & ~water & ~cloud
    return cloud & valid, shadow & valid


def compute_mask(
    product: S2Product,
    grid: Grid,
    window: Window | None = None,
    *,
    pool: RasterPool | None = None,
    thresholds: FallbackThresholds | None = None,
) -> np.ndarray:
    """The computed :class:`MaskClass` layer of a product on a grid window."""
    data = product.read(FALLBACK_BANDS, grid, window, pool=pool)
    bands = dict(zip(FALLBACK_BANDS, data, strict=True))
    cloud, shadow = cloud_shadow(bands, thresholds)
    layer = np.zeros(cloud.shape, dtype=np.uint8)
    layer[shadow] = MaskClass.SHADOW
    layer[cloud] = MaskClass.CLOUD
    layer[np.isnan(data).any(axis=0)] = MaskClass.NODATA
    return layer
