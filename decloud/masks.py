"""Cloud and shadow masks computed from the bands, for products without a usable mask.

The cloud test follows the spirit of the cloud score used to build SEN12MS-CR and
the cloud-adaptive loss of Meraner et al. (2020): a pixel is cloudy when it is at
once bright in the blue, bright in the visible, moist (NDMI) and not snow (NDSI). Each
test is a soft score in [0, 1]; the cloud score is their minimum, smoothed, then
thresholded. Shadows are dark in NIR and SWIR (the cloud-shadow index
``CSI = (B08 + B11) / 2``) and dark in the blue, and are not water (NDWI). All
thresholds are absolute reflectances; the smoothing and the dilation look
:attr:`FallbackThresholds.margin` pixels around each pixel, and
:func:`compute_mask` reads that margin around every window, so the mask of a window is
exactly the same window of the whole grid's mask: a tile streamed in windows is
seamless (``tests/test_streamed_equals_whole.py``).

Masks made here are labelled ``computed`` wherever they are reported. Products without
B11 (10 m bands only) get the 10 m-only test, without the SWIR tests (NDMI, NDSI) and
with shadows dark in B08 alone: it flags more bright surfaces (snow) as cloud, and is
labelled ``computed-10m`` (:func:`fallback_bands`, :func:`fallback_origin`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from decloud.constants import MaskClass
from decloud.errors import MissingBandError
from decloud.windows import core_crop, crop, expand

if TYPE_CHECKING:
    from decloud.grid import Grid, RasterPool


class BandReader(Protocol):
    """What the computed mask reads its bands from: an S2 product's ``read``.

    A protocol rather than :class:`~decloud.products.base.S2Product`, so that this
    module, which the products use, never imports them (no products <-> masks cycle).
    """

    def read(self, bands: Sequence[str], grid: Grid | None = None,
             window: Window | None = None, *,
             pool: RasterPool | None = None) -> np.ndarray:
        """Reflectances ``(bands, H, W)`` on a grid window, NaN where nodata."""
        ...

__all__ = [
    "FALLBACK_BANDS",
    "FALLBACK_BANDS_10M",
    "BandReader",
    "FallbackThresholds",
    "cloud_shadow",
    "compute_mask",
    "fallback_bands",
    "fallback_origin",
]

#: Bands the full fallback test needs.
FALLBACK_BANDS = ("B02", "B03", "B04", "B08", "B11")
#: Bands of the 10 m-only test (products without SWIR): no NDMI/NDSI, shadows from B08.
FALLBACK_BANDS_10M = ("B02", "B03", "B04", "B08")


def fallback_bands(available: Iterable[str]) -> tuple[str, ...]:
    """The bands the computed mask uses for a product with ``available`` bands.

    The full test when B11 is there, else the 10 m-only test.

    Raises:
        MissingBandError: Not even the four 10 m bands are available.
    """
    have = set(available)
    if have.issuperset(FALLBACK_BANDS):
        return FALLBACK_BANDS
    if have.issuperset(FALLBACK_BANDS_10M):
        return FALLBACK_BANDS_10M
    missing = [b for b in FALLBACK_BANDS_10M if b not in have]
    raise MissingBandError(f"the computed cloud mask needs at least bands "
                           f"{', '.join(FALLBACK_BANDS_10M)} (with B11 for its full test); "
                           f"missing {', '.join(missing)}", field=missing[0])


def fallback_origin(available: Iterable[str]) -> str:
    """How a computed mask is labelled: ``computed`` (full test) or ``computed-10m``."""
    return "computed" if set(available).issuperset(FALLBACK_BANDS) else "computed-10m"


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

    @property
    def margin(self) -> int:
        """Pixels of context the mask of a pixel depends on, on each side.

        The score is per pixel; ``uniform_filter(size=smooth)`` reaches ``smooth // 2``
        pixels, and the dilation (a cross, ``dilate`` times) ``dilate`` more. Shadows
        use the dilated clouds, so they need no more.
        """
        return (self.smooth // 2 if self.smooth > 1 else 0) + max(self.dilate, 0)


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
        bands: Reflectance arrays (unitless, NaN = nodata) for :data:`FALLBACK_BANDS`,
            or :data:`FALLBACK_BANDS_10M` only (the 10 m-only test, without SWIR).
        thresholds: Overrides the default thresholds.

    Returns:
        ``(cloud, shadow)`` boolean arrays; nodata pixels are in neither.
    """
    t = thresholds or FallbackThresholds()
    used = fallback_bands(bands)
    b02, b03, b04, b08 = (np.nan_to_num(bands[b], nan=0.0) for b in FALLBACK_BANDS_10M)
    valid = ~np.isnan(bands["B02"])
    score = _rescale(b02, t.blue)
    score = np.minimum(score, _rescale(b02 + b03 + b04, t.visible))
    if "B11" in used:
        b11 = np.nan_to_num(bands["B11"], nan=0.0)
        score = np.minimum(score, _rescale(_ratio(b08, b11), t.ndmi))
        score = np.minimum(score, _rescale(_ratio(b03, b11), t.ndsi))
        dark = (b08 + b11) / 2
    else:
        # 10 m-only test: no SWIR, so no moisture or snow test, and shadows dark in NIR.
        dark = b08
    if t.smooth > 1:
        score = ndimage.uniform_filter(score, size=t.smooth, mode="nearest")
    cloud = score > t.cloud_score
    if t.dilate > 0:
        cloud = ndimage.binary_dilation(cloud, iterations=t.dilate)
    water = _ratio(b03, b08) > t.water_ndwi
    shadow = (dark < t.csi) & (b02 < t.shadow_blue) & ~water & ~cloud
    return cloud & valid, shadow & valid


def compute_mask(
    product: BandReader,
    grid: Grid,
    window: Window | None = None,
    *,
    pool: RasterPool | None = None,
    thresholds: FallbackThresholds | None = None,
) -> np.ndarray:
    """The computed :class:`MaskClass` layer of a product on a grid window.

    The bands are read with :attr:`FallbackThresholds.margin` pixels of context around
    the window, clipped to the grid (the filters treat the grid's edges as the edges
    of the image), and the result is cropped to the window: the layer of any window
    inside the grid equals the same window of the whole grid's layer. A window that
    extends past the grid gets the layer of the grid widened to include it.

    Args:
        product: What the bands are read from (an S2 product).
        grid: Target grid.
        window: Window of ``grid``; all of it when None.
        pool: Keeps files open across calls.
        thresholds: Overrides the default thresholds.

    Returns:
        uint8 :class:`MaskClass` layer of the window's shape.
    """
    t = thresholds or FallbackThresholds()
    window = window if window is not None else grid.full_window()
    context = expand(window, t.margin, within=grid.full_window())
    # The bands the product has decide the test (full, or 10 m-only: see fallback_bands).
    used = fallback_bands(getattr(product, "bands", FALLBACK_BANDS))
    data = product.read(used, grid, context, pool=pool)
    bands = dict(zip(used, data, strict=True))
    cloud, shadow = cloud_shadow(bands, t)
    layer = np.zeros(cloud.shape, dtype=np.uint8)
    layer[shadow] = MaskClass.SHADOW
    layer[cloud] = MaskClass.CLOUD
    layer[np.isnan(data).any(axis=0)] = MaskClass.NODATA
    return crop(layer, core_crop(window, context)).copy()
