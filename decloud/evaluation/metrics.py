"""Full-image reconstruction metrics, per region and per band, streamed in bounded memory.

:func:`score_arrays` scores a prediction against a reference held in memory,
:func:`score_rasters` two rasters window by window; both give a :class:`Scores`, and
both go through :class:`ScoreAccumulator`, which anyone streaming their own blocks can
use (the quality benchmark does). Streamed equals whole: every figure is built from
sufficient statistics (counts, means and co-moments merged exactly, sums of SSIM and
of spectral angles), so the result does not depend on the block size.

Pixels and regions
    Arrays are ``(H, W, C)`` reflectance (data range 1 by default), NaN for nodata.
    A pixel is *valid* where every band of both the prediction and the reference is
    finite (and ``valid`` is set, if given); invalid pixels count nowhere. Regions
    (:data:`REGIONS`) are subsets of the valid pixels: ``all``; ``reconstructed``,
    the pixels a method filled in (under a cloud mask, or the engine's quality
    classes reconstructed and feathered); ``clear``, the pixels it kept (the
    reproduction). A region with no pixels has ``None`` for every metric and reads
    "no pixels", never 0.

Metrics (:class:`Metrics`), per band and overall:

=========== =============================================================================
``mae``     mean ``|P - R|``; overall over all pixels and bands
``rmse``    ``sqrt(mean (P - R)^2)``; overall from the MSE pooled over bands
``psnr``    ``10 log10(data_range^2 / MSE)``: per band from that band's MSE, overall from
            the pooled MSE (not a mean of the bands' PSNRs); the MSE is floored at
            ``1e-10 data_range^2``, so a perfect prediction reads 100 dB
``ssim``    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=...)`` map (11 x 11 Gaussian
            window, K1 0.01, K2 0.03), averaged over the region's pixels whose whole
            window lies inside the image and holds only valid pixels (``n_ssim`` of
            them; on a whole valid image and region ``all`` this is scikit-image's mean
            SSIM); overall: the mean over bands
``sam_deg`` spectral angle between the prediction's and reference's vectors, degrees,
            per pixel (``arccos`` of the clipped cosine; 90 where either is the zero
            vector), averaged over pixels: the mean angle, not the angle of the mean
            cosine; overall only (``None`` per band)
``cc``      Pearson correlation of P and R over the region's pixels; overall: the mean
            of the bands' (``None`` where a band is constant, or any band's is None)
=========== =============================================================================

Streaming SSIM: each block is read with a halo of :data:`SSIM_RADIUS` px (clipped
to the image), so that every core pixel's SSIM window is whole; the Gaussian filter
is separable and evaluates each pixel from the same inputs in the same order, so a
block's SSIM map equals the whole-image map on its core.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import ndimage

from decloud.constants import MASK_NODATA, S2_NODATA, normalize_band_name
from decloud.errors import ArgumentError, EvaluationError, GridError, MissingBandError
from decloud.grid import Grid, open_raster
from decloud.keys import decode_s2
from decloud.windows import core_crop, expand

__all__ = [
    "KINDS",
    "QUALITY_CLEAR_CLASSES",
    "QUALITY_RECONSTRUCTED_CLASSES",
    "REGIONS",
    "SSIM_RADIUS",
    "Metrics",
    "RegionScores",
    "ScoreAccumulator",
    "Scores",
    "regions_from_mask",
    "read_layer",
    "read_reflectance",
    "regions_from_quality",
    "score_arrays",
    "score_rasters",
]

#: Regions every score reports, in order.
REGIONS: Final = ("all", "reconstructed", "clear")

#: Metric kinds of :class:`Metrics`, in the order of the tables.
KINDS: Final = ("mae", "rmse", "psnr", "ssim", "sam_deg", "cc")

#: SSIM's Gaussian window: sigma 1.5, truncated at 3.5 sigma (scikit-image's defaults).
SSIM_SIGMA: Final = 1.5
SSIM_TRUNCATE: Final = 3.5
#: Radius of the SSIM window (5 px: an 11 x 11 window), the halo a block needs.
SSIM_RADIUS: Final = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
_K1: Final = 0.01
_K2: Final = 0.03
#: MSE floor, times data_range^2: a perfect prediction gives 100 dB, not infinity.
_MSE_FLOOR: Final = 1e-10

#: The engine's quality values (:mod:`decloud.inference.composite`; this stage may not
#: import the engine): clear pixels are kept, reconstructed and feathered ones filled.
QUALITY_CLEAR_CLASSES: Final = (0,)
QUALITY_RECONSTRUCTED_CLASSES: Final = (1, 2)


@dataclass(frozen=True)
class Metrics:
    """The metrics of one band (or of all bands) over one region.

    Attributes:
        n_pixels: Valid pixels in the region (behind every figure but SSIM's).
        n_ssim: Of those, the pixels whose whole SSIM window is valid and inside the
            image (behind the SSIM).
        mae: Mean absolute error; None when the region is empty.
        rmse: Root mean square error.
        psnr: Peak signal-to-noise ratio, dB.
        ssim: Mean SSIM; None when ``n_ssim`` is 0.
        sam_deg: Mean spectral angle, degrees (None per band).
        cc: Pearson correlation coefficient; None when undefined.
    """

    n_pixels: int
    n_ssim: int
    mae: float | None = None
    rmse: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    sam_deg: float | None = None
    cc: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """The metrics, then the pixel counts, as JSON-ready values."""
        return {**{k: getattr(self, k) for k in KINDS}, "n_pixels": self.n_pixels,
                "n_ssim": self.n_ssim}

    def formatted(self, kind: str) -> str:
        """One metric as a table cell: 4 decimals (2 for PSNR, dB), "no pixels" if empty."""
        value = getattr(self, kind)
        if value is None:
            if kind == "sam_deg" and self.n_pixels:
                return "-"  # a spectral angle is defined over all bands only
            empty = self.n_ssim == 0 if kind == "ssim" else self.n_pixels == 0
            return "no pixels" if empty else "undefined"
        return f"{value:.2f}" if kind in ("psnr", "sam_deg") else f"{value:.4f}"


@dataclass(frozen=True)
class RegionScores:
    """The metrics of one region: over all bands and per band (by band name)."""

    overall: Metrics
    bands: dict[str, Metrics]

    def to_dict(self) -> dict[str, Any]:
        """``{"overall": {...}, "bands": {band: {...}}}``."""
        return {"overall": self.overall.to_dict(),
                "bands": {b: m.to_dict() for b, m in self.bands.items()}}


@dataclass(frozen=True)
class Scores:
    """Metrics per region (:data:`REGIONS` that were scored), per band and overall.

    Attributes:
        bands: Band names, in order.
        data_range: The data range of PSNR and SSIM.
        regions: ``{region: RegionScores}``, in :data:`REGIONS` order.
    """

    bands: tuple[str, ...]
    data_range: float
    regions: dict[str, RegionScores] = field(default_factory=dict)

    def __getitem__(self, region: str) -> RegionScores:
        """The scores of one region."""
        return self.regions[region]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bands, data range, and each region's overall and per-band metrics."""
        return {"bands": list(self.bands), "data_range": self.data_range,
                "regions": {r: s.to_dict() for r, s in self.regions.items()}}

    def rows(self) -> list[tuple[str, str, Metrics]]:
        """``(region, band or "all bands", metrics)`` rows of the tables, overall first."""
        out = []
        for region, scores in self.regions.items():
            out.append((region, "all bands", scores.overall))
            out += [(region, band, m) for band, m in scores.bands.items()]
        return out

    def to_markdown(self) -> str:
        """A Markdown table: one row per region and band, with its pixel counts."""
        head = ["region", "band", *KINDS, "pixels", "SSIM pixels"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for region, band, m in self.rows():
            cells = [region, band, *(m.formatted(k) for k in KINDS), str(m.n_pixels),
                     str(m.n_ssim)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


class _Moments:
    """Count, means and co-moments of (P, R) per band, merged exactly (Chan et al.)."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        zeros = np.zeros(channels, dtype=np.float64)
        self.mean_p, self.mean_r = zeros.copy(), zeros.copy()
        self.m2_p, self.m2_r, self.c_pr = zeros.copy(), zeros.copy(), zeros.copy()
        self.abs_sum, self.sq_sum = zeros.copy(), zeros.copy()

    def add(self, p: np.ndarray, r: np.ndarray) -> None:
        """Add ``(n, C)`` float64 samples."""
        n = p.shape[0]
        if n == 0:
            return
        d = p - r
        self.abs_sum += np.abs(d).sum(axis=0)
        self.sq_sum += (d * d).sum(axis=0)
        mp, mr = p.mean(axis=0), r.mean(axis=0)
        dp, dr = p - mp, r - mr
        m2p, m2r, cpr = (dp * dp).sum(axis=0), (dr * dr).sum(axis=0), (dp * dr).sum(axis=0)
        total = self.n + n
        fp, fr = mp - self.mean_p, mr - self.mean_r
        w = self.n * n / total
        self.m2_p += m2p + fp * fp * w
        self.m2_r += m2r + fr * fr * w
        self.c_pr += cpr + fp * fr * w
        self.mean_p += fp * n / total
        self.mean_r += fr * n / total
        self.n = total


class _Region:
    """The sufficient statistics of one region."""

    def __init__(self, channels: int) -> None:
        self.moments = _Moments(channels)
        self.ssim_sum = np.zeros(channels, dtype=np.float64)
        self.ssim_n = 0
        self.sam_sum = 0.0


class ScoreAccumulator:
    """Sufficient statistics of the metrics, fed block by block.

    Feed each block with :meth:`add` (its core plus a halo of :data:`SSIM_RADIUS` px
    wherever the image goes on) and read :meth:`result`: it equals one
    :func:`score_arrays` over the whole image, whatever the blocks.

    Args:
        bands: Band names, one per channel.
        regions: Region names scored (``all`` always is, first).
        data_range: Data range of PSNR and SSIM (1 for reflectance).

    Raises:
        ArgumentError: No bands, duplicate names, or a data range that is not positive.
    """

    def __init__(self, bands: Sequence[str], *, regions: Sequence[str] = REGIONS,
                 data_range: float = 1.0) -> None:
        if not bands or len(set(bands)) != len(bands):
            raise ArgumentError(f"band names must be given, each once: {list(bands)}",
                                field="bands")
        if not data_range > 0:
            raise ArgumentError(f"data range must be positive, not {data_range}",
                                field="data_range")
        self.bands = tuple(bands)
        self.data_range = float(data_range)
        names = ["all", *(r for r in regions if r != "all")]
        self._regions = {name: _Region(len(self.bands)) for name in names}

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions scored, ``all`` first."""
        return tuple(self._regions)

    def add(self, pred: np.ndarray, ref: np.ndarray, *, valid: np.ndarray | None = None,
            regions: Mapping[str, np.ndarray] | None = None,
            core: tuple[slice, slice] | None = None) -> None:
        """Add one block.

        Args:
            pred: Prediction ``(h, w, C)``, NaN nodata; the block's core and its halo.
            ref: Reference, same shape.
            valid: Optional ``(h, w)`` mask of the pixels to score.
            regions: ``{region: (h, w) mask}`` for every region but ``all`` (a region
                not given is empty in this block).
            core: The core's row and column slices within the block (the whole block
                if None): only core pixels are counted; the halo feeds SSIM windows.
                The halo must be :data:`SSIM_RADIUS` px wherever the image goes on
                past the core (less only at the image's edges).

        Raises:
            ArgumentError: Shapes or channels that do not match, or an unknown region.
        """
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.ndim != 3 or pred.shape != ref.shape or pred.shape[2] != len(self.bands):
            raise ArgumentError(f"prediction {pred.shape} and reference {ref.shape} must "
                                f"both be (h, w, {len(self.bands)})", field="pred")
        shape = pred.shape[:2]
        ok = np.isfinite(pred).all(axis=2) & np.isfinite(ref).all(axis=2)
        if valid is not None:
            ok &= _mask(valid, shape, "valid")
        masks = {"all": ok}
        for name, m in (regions or {}).items():
            if name not in self._regions:
                raise ArgumentError(f"unknown region {name!r} (scored: "
                                    f"{', '.join(self._regions)})", field="regions")
            masks[name] = ok & _mask(m, shape, name)
        core = core or (slice(0, shape[0]), slice(0, shape[1]))
        window_ok = ndimage.minimum_filter(ok.astype(np.uint8), size=2 * SSIM_RADIUS + 1,
                                           mode="constant", cval=0)[core].astype(bool)
        ssim = self._ssim_maps(pred, ref, ok, core)
        p64 = pred[core].astype(np.float64)
        r64 = ref[core].astype(np.float64)
        angles = _angles(p64, r64)
        for name, acc in self._regions.items():
            sel = masks[name][core] if name in masks else np.zeros(p64.shape[:2], dtype=bool)
            acc.moments.add(p64[sel], r64[sel])
            acc.sam_sum += float(angles[sel].sum())
            ssim_sel = sel & window_ok
            acc.ssim_n += int(ssim_sel.sum())
            acc.ssim_sum += ssim[ssim_sel].sum(axis=0)

    def _ssim_maps(self, pred: np.ndarray, ref: np.ndarray, ok: np.ndarray,
                   core: tuple[slice, slice]) -> np.ndarray:
        """SSIM maps ``(h, w, C)`` of the core (meaningful where the window is valid)."""
        c1 = (_K1 * self.data_range) ** 2
        c2 = (_K2 * self.data_range) ** 2
        out = []
        for band in range(pred.shape[2]):
            # Invalid pixels are zeroed: every window holding one is left out anyway.
            x = np.where(ok, pred[..., band], 0.0).astype(np.float64)
            y = np.where(ok, ref[..., band], 0.0).astype(np.float64)

            def blur(a: np.ndarray) -> np.ndarray:
                return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE,
                                               mode="reflect")[core]

            ux, uy = blur(x), blur(y)
            vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
            num = (2 * ux * uy + c1) * (2 * vxy + c2)
            den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
            out.append(num / den)
        return np.stack(out, axis=-1)

    def result(self) -> Scores:
        """The scores of everything added so far."""
        return Scores(self.bands, self.data_range,
                      {name: self._region_scores(acc) for name, acc in self._regions.items()})

    def _region_scores(self, acc: _Region) -> RegionScores:
        m = acc.moments
        n, n_ssim = m.n, acc.ssim_n
        if n == 0:
            empty = Metrics(0, 0)
            return RegionScores(empty, {b: empty for b in self.bands})
        floor = _MSE_FLOOR * self.data_range ** 2
        mse = m.sq_sum / n
        den = np.sqrt(m.m2_p * m.m2_r)
        # A band whose standard deviation is below 1e-9 data range is constant (up to
        # rounding of its mean): its correlation is undefined, not a rounding residue.
        tiny = n * (1e-9 * self.data_range) ** 2
        flat = (m.m2_p <= tiny) | (m.m2_r <= tiny)
        ccs = [None if f else float(c / d) for c, d, f in zip(m.c_pr, den, flat, strict=True)]
        ssims = acc.ssim_sum / n_ssim if n_ssim else None

        def psnr(value: float) -> float:
            return 10.0 * math.log10(self.data_range ** 2 / max(value, floor))

        bands = {
            b: Metrics(n, n_ssim, mae=float(m.abs_sum[i] / n), rmse=math.sqrt(mse[i]),
                       psnr=psnr(float(mse[i])),
                       ssim=None if ssims is None else float(ssims[i]), cc=ccs[i])
            for i, b in enumerate(self.bands)
        }
        pooled = float(m.sq_sum.sum() / (n * len(self.bands)))
        overall = Metrics(
            n, n_ssim, mae=float(m.abs_sum.sum() / (n * len(self.bands))),
            rmse=math.sqrt(pooled), psnr=psnr(pooled),
            ssim=None if ssims is None else float(ssims.mean()),
            sam_deg=acc.sam_sum / n,
            cc=None if any(c is None for c in ccs) else float(np.mean(
                [c for c in ccs if c is not None])))
        return RegionScores(overall, bands)


def _mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ArgumentError(f"mask {name!r} has shape {mask.shape}, the images {tuple(shape)}",
                            field=name)
    return mask.astype(bool)


def _angles(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Spectral angle per pixel, degrees (90 where either vector is zero)."""
    norms = np.linalg.norm(p, axis=-1) * np.linalg.norm(r, axis=-1)
    dot = (p * r).sum(axis=-1)
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def score_arrays(pred: np.ndarray, ref: np.ndarray, *, valid: np.ndarray | None = None,
                 regions: Mapping[str, np.ndarray] | None = None,
                 bands: Sequence[str] | None = None, data_range: float = 1.0) -> Scores:
    """Scores of a prediction against a reference, both in memory.

    Args:
        pred: Prediction ``(H, W, C)`` reflectance, NaN nodata.
        ref: Reference, same shape.
        valid: Optional ``(H, W)`` mask of the pixels to score (e.g. inside a cut).
        regions: ``{region: (H, W) mask}`` for the regions besides ``all``
            (:func:`regions_from_mask`, :func:`regions_from_quality`); only ``all``
            when None.
        bands: Band names (``B1``... by default).
        data_range: Data range of PSNR and SSIM.

    Returns:
        The scores of ``all`` and of each given region.

    Raises:
        ArgumentError: Shapes that do not match, or a wrong number of band names.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.ndim != 3:
        raise ArgumentError(f"expects (H, W, C) images, not {pred.shape}", field="pred")
    names = list(bands) if bands is not None else [f"B{i + 1}" for i in range(pred.shape[2])]
    if len(names) != pred.shape[2]:
        raise ArgumentError(f"{len(names)} band names for {pred.shape[2]} channels",
                            field="bands")
    acc = ScoreAccumulator(names, regions=[r for r in REGIONS if r in (regions or {})]
                           + [r for r in (regions or {}) if r not in REGIONS],
                           data_range=data_range)
    acc.add(pred, ref, valid=valid, regions=regions)
    return acc.result()


def regions_from_mask(mask: np.ndarray,
                      nodata: float | None = MASK_NODATA) -> dict[str, np.ndarray]:
    """``reconstructed`` where a cloud mask is set (non-zero), ``clear`` where it is 0.

    A decloud class mask (:class:`decloud.constants.MaskClass`) and a binary 0/1 mask
    both work: cloud, cirrus and shadow are set. Mask nodata is in neither region.
    """
    mask = np.asarray(mask)
    known = mask != nodata if nodata is not None else np.ones(mask.shape, dtype=bool)
    return {"reconstructed": known & (mask != 0), "clear": known & (mask == 0)}


def regions_from_quality(quality: np.ndarray) -> dict[str, np.ndarray]:
    """Regions from the engine's quality layer (``<out>_quality.tif``).

    ``reconstructed``: the reconstructed and feathered classes (values the method
    filled in, wholly or blended); ``clear``: the pixels kept from the target date.
    """
    quality = np.asarray(quality)
    return {"reconstructed": np.isin(quality, QUALITY_RECONSTRUCTED_CLASSES),
            "clear": np.isin(quality, QUALITY_CLEAR_CLASSES)}


# Rasters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """An opened raster to score: its bands (1-based indexes) and how to decode them."""

    path: Path
    indexes: tuple[int, ...]
    names: tuple[str, ...]


def _band_names(src: Any) -> list[str]:
    return [normalize_band_name(d) if d else f"B{i + 1}"
            for i, d in enumerate(src.descriptions)]


def _is_decloud_encoding(src: Any) -> bool:
    """Whether ``src`` is in decloud's own encoding: int16 x 10000, nodata -10000."""
    return bool(src.dtypes[0] == "int16" and src.nodata == S2_NODATA)


def _check_encoding(src: Any, path: Path, indexes: Sequence[int]) -> None:
    """Refuse integer bands whose reflectance scale is unknown.

    Raw digital numbers (a uint16 L2A band without scale tags, say) scored against a
    data range of 1 give meaningless PSNR and SSIM, so they are an error, not a guess.
    """
    if _is_decloud_encoding(src):
        return
    for i in indexes:
        if not np.issubdtype(np.dtype(src.dtypes[i - 1]), np.integer):
            continue
        if src.scales[i - 1] == 1 and src.offsets[i - 1] == 0:
            raise EvaluationError(
                f"band {i} is {src.dtypes[i - 1]} without a scale tag and not decloud's "
                f"int16 encoding (nodata {S2_NODATA}): its reflectance is unknown (give "
                f"float reflectance, or set the band's scale and offset)",
                path=path, field="scale")


def _select(src: Any, path: Path, bands: Sequence[str] | None) -> _Source:
    names = _band_names(src)
    if bands is None:
        _check_encoding(src, path, range(1, src.count + 1))
        return _Source(path, tuple(range(1, src.count + 1)), tuple(names))
    indexes = []
    for band in bands:
        name = normalize_band_name(band)
        if name not in names:
            raise MissingBandError(f"no band {band!r} (bands: {', '.join(names)})",
                                   path=path, field=band)
        indexes.append(names.index(name) + 1)
    _check_encoding(src, path, indexes)
    return _Source(path, tuple(indexes), tuple(normalize_band_name(b) for b in bands))


def _read_reflectance(src: Any, source: _Source, window: Window | None = None,
                      out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """``(h, w, C)`` float reflectance, NaN nodata, of a window (or all, decimated).

    decloud's int16 encoding (nodata -10000) is decoded as :func:`decloud.keys.decode_s2`;
    any other raster (float, or integer with scale tags: :func:`_check_encoding`) is
    read as is, its nodata as NaN, with its scales and offsets.
    """
    shape = None if out_shape is None else (len(source.indexes), *out_shape)
    data = src.read(list(source.indexes), window=window, out_shape=shape,
                    resampling=Resampling.nearest)
    if _is_decloud_encoding(src):
        out = decode_s2(data)
    else:
        out = data.astype(np.float64)
        if src.nodata is not None:
            out[data == src.nodata] = np.nan
        for k, i in enumerate(source.indexes):
            scale, offset = src.scales[i - 1], src.offsets[i - 1]
            if scale != 1 or offset != 0:
                out[k] = out[k] * scale + offset
    return np.moveaxis(out, 0, -1)


def read_reflectance(path: str | os.PathLike[str], bands: Sequence[str] | None = None, *,
                     size: int | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """A whole raster as ``(h, w, C)`` reflectance (NaN nodata), decimated for quicklooks.

    Args:
        path: The raster (decloud's int16 encoding or any float raster).
        bands: Bands to read, by name; all by default.
        size: Longest side of the result (nearest-neighbour decimation by a whole
            factor); full resolution when None.

    Returns:
        The band names and the array.

    Raises:
        MissingBandError: A requested band is missing.
        EvaluationError: An integer band of unknown scale (field ``scale``).
    """
    path = Path(path)
    with open_raster(path) as src:
        source = _select(src, path, bands)
        factor = 1 if size is None else max(1, -(-max(src.width, src.height) // size))
        shape = (max(1, src.height // factor), max(1, src.width // factor))
        return source.names, _read_reflectance(src, source, out_shape=shape)


def read_layer(path: str | os.PathLike[str], *,
               size: int | None = None) -> tuple[np.ndarray, float | None]:
    """The first band of a raster (a mask or quality layer) and its nodata, decimated."""
    with open_raster(path) as src:
        factor = 1 if size is None else max(1, -(-max(src.width, src.height) // size))
        shape = (max(1, src.height // factor), max(1, src.width // factor))
        return src.read(1, out_shape=shape, resampling=Resampling.nearest), src.nodata


def _check_grid(path: Path, src: Any, grid: Grid, what: str) -> None:
    other = Grid.from_dataset(src)
    if other != grid:
        raise GridError(f"{what} is not on the prediction's grid ({other.width} x "
                        f"{other.height} px, {other.crs}, {tuple(other.transform)[:6]} "
                        f"against {grid.width} x {grid.height} px, {grid.crs}, "
                        f"{tuple(grid.transform)[:6]})", path=path, field="grid")


def _blocks(grid: Grid, block: int) -> Iterator[tuple[Window, Window, tuple[slice, slice]]]:
    """``(core, read window, core slices in it)``: cores with an SSIM halo clipped to the grid."""
    full = grid.full_window()
    for core, _ in grid.windows(block):
        padded = expand(core, SSIM_RADIUS, within=full)
        yield core, padded, core_crop(core, padded).slices


def score_rasters(pred: str | Path, ref: str | Path, *, mask: str | Path | None = None,
                  quality: str | Path | None = None, bands: Sequence[str] | None = None,
                  block: int = 1024, data_range: float = 1.0) -> Scores:
    """Scores of a prediction raster against a reference raster, window by window.

    Memory is bounded by the block: ``(block + 10)^2`` pixels of each raster at a
    time. The result equals :func:`score_arrays` on the whole images.

    Args:
        pred: The prediction (e.g. the engine's ``<out>.tif``).
        ref: The reference, on the same grid.
        mask: A cloud mask raster on the same grid: ``reconstructed`` where set
            (:func:`regions_from_mask`), ``clear`` where 0.
        quality: The engine's quality layer (``<out>_quality.tif``) instead of a mask
            (:func:`regions_from_quality`).
        bands: Bands to score, by name (both rasters must have them); by default all
            bands, which must have the same names in both.
        block: Side of the blocks read at a time, px.
        data_range: Data range of PSNR and SSIM.

    Returns:
        The scores of ``all``, and of ``reconstructed`` and ``clear`` with a mask or
        quality layer.

    Raises:
        GridError: A raster is not on the prediction's grid.
        EvaluationError: The bands differ, an integer band has an unknown scale, or
            both a mask and a quality layer are given.
        MissingBandError: A requested band is missing from a raster.
        ArgumentError: A block size that is not positive.
    """
    if block <= 0:
        raise ArgumentError(f"block size must be positive, not {block}", field="block")
    if mask is not None and quality is not None:
        raise EvaluationError("give a cloud mask or a quality layer, not both", path=mask,
                              field="mask")
    pred, ref = Path(pred), Path(ref)
    regions_path = Path(mask) if mask is not None else (
        Path(quality) if quality is not None else None)
    with open_raster(pred) as p_src, open_raster(ref) as r_src:
        grid = Grid.from_dataset(p_src)
        _check_grid(ref, r_src, grid, "the reference")
        p_bands, r_bands = _select(p_src, pred, bands), _select(r_src, ref, bands)
        if p_bands.names != r_bands.names:
            raise EvaluationError(f"the reference's bands {list(r_bands.names)} differ from "
                                  f"the prediction's {list(p_bands.names)} (choose bands "
                                  f"with bands=)", path=ref, field="bands")
        region_src = open_raster(regions_path) if regions_path is not None else None
        try:
            if region_src is not None and regions_path is not None:
                _check_grid(regions_path, region_src, grid,
                            "the mask" if mask is not None else "the quality layer")
            acc = ScoreAccumulator(p_bands.names,
                                   regions=REGIONS if region_src is not None else ("all",),
                                   data_range=data_range)
            for _, window, core in _blocks(grid, block):
                regions = None
                if region_src is not None:
                    layer = region_src.read(1, window=window)
                    regions = (regions_from_mask(layer, region_src.nodata
                                                 if region_src.nodata is not None
                                                 else MASK_NODATA)
                               if mask is not None else regions_from_quality(layer))
                acc.add(_read_reflectance(p_src, p_bands, window),
                        _read_reflectance(r_src, r_bands, window), regions=regions, core=core)
        finally:
            if region_src is not None:
                region_src.close()
    return acc.result()
