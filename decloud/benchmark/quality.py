"""The quality benchmark on real clouds: cut real masks into clear dates, reconstruct, score.

``decloud benchmark quality`` measures every reconstruction method that fits an archive
against a withheld truth, on real cloud shapes:

1. **References**: the clear S2 products of a tile (any product decloud reads: THEIA,
   SAFE, stacks). A reference whose own cloud + shadow fraction exceeds
   ``max_reference_cloud`` is refused (:class:`~decloud.errors.CloudyReferenceError`
   names the product and its fraction): its pixels could not be the truth.
2. **Cuts** (:class:`CutMask`): real cloud and shadow masks of *other* dates of the same
   place (:func:`masks_from_archive`, or any array source such as the 68 s2cloudless
   masks of the eo-learn series: :func:`cut_mask`), and the real cumulus and shadow
   masks of ukis-csmask transplanted onto the grid (:func:`masks_from_csmask`).
3. **Working copy** (:func:`write_cut_archive`): a new archive folder in which the
   reference is replaced by a generic stack (``<name>_cut.tif`` + YAML sidecar + mask,
   :mod:`decloud.products.generic`) holding the reference's bands, whose mask says
   cloud/shadow where the cut is and whose reflectance there is replaced
   (:class:`CutFill`): nodata, a constant cloud/shadow spectrum (:data:`CLOUD_DN`,
   :data:`SHADOW_DN`, medians of the real csmask cloud and shadow pixels), or the real
   values of an overcast product of the same place. The other products of the tile
   (S2, S1, DEM) are linked into the copy unchanged. No method reads the original:
   they all run on the copy through :class:`~decloud.archive.Archive`, the engine and
   the processors, so none can read the truth under the cut (tested).
4. **Methods** (:data:`METHODS`, :func:`register_method`): ``nearest`` (per pixel, the
   nearest usable observation of another date), ``gapfill`` (per-pixel linear
   interpolation in time, :class:`~decloud.processors.gapfill.GapFillMethod`),
   ``patch_gapfill`` (CNES decloud's gap-filling baseline: the weightless ``gapfill``
   zoo model, i.e. whole patches of the t-1 and t+1 chosen per patch interpolated
   linearly in time with no per-pixel mask, as ``decloud/models/crga_os2_gapfilling.py``
   and ``gapfilling_base.py`` of github.com/CNES/decloud do, with t-1/t+1 chosen per
   64 px patch by the multi-temporal processor under a GFa-like layout: clear patches
   within the window, else the least cloudy), and trained models (:class:`ModelMethod`).
   Each runs twice: raw (the method's output everywhere) and ``+composite`` (the
   engine's mask-guided composite, clear pixels kept bit-identical).
5. **Scores** (:func:`decloud.evaluation.metrics.score_arrays`) against the truth (the
   original reference's encoded reflectance) on two disjoint regions: ``reconstructed``
   (inside the cut, where the truth is valid and clear) and ``clear`` (outside the cut).
   Pixels outside the cut are never scored as reconstruction (tested), and the
   composite's clear-pixel error is exactly 0 (tested). Scores are pooled per method
   and per cloud-cover bucket (the cut's fraction of the image: 0-10, 10-30, 30-60,
   60-100 %) with the pixel counts behind each figure.

The composite runs with no dilation and no feather by default, so that its
reconstructed region is exactly the cut.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import numpy as np
import rasterio
import yaml

from decloud.archive import Archive, normalize_tile
from decloud.constants import S2_10M_BANDS, S2_NODATA, MaskClass
from decloud.errors import (
    ArgumentError,
    CloudyReferenceError,
    DecloudError,
    EvaluationError,
    NoProductError,
)
from decloud.grid import Grid
from decloud.inference.composite import CompositeOptions
from decloud.inputs import AcquisitionProducts, InputKey, InputProducts, KeyRequest, read_inputs
from decloud.keys import KeyKind, check_acquisition, decode_s2, make_key
from decloud.processors.gapfill import series_keys
from decloud.products import S2Product
from decloud.writers import atomic_file

__all__ = [
    "BUCKETS",
    "CLOUD_DN",
    "COMMON",
    "CSMASK_CLOUD_MEDIANS",
    "CSMASK_SHADOW_MEDIANS",
    "METHODS",
    "SHADOW_DN",
    "BenchmarkInputs",
    "BenchmarkMethod",
    "CutFill",
    "CutMask",
    "CutScene",
    "EngineBenchmarkMethod",
    "ModelMethod",
    "NearestMethod",
    "PatchGapFillBenchmark",
    "QualityOptions",
    "QualityResult",
    "GOAL",
    "bucket_of",
    "check_reference",
    "clear_references",
    "cut_mask",
    "gapfill_benchmark",
    "goal_check",
    "masks_from_archive",
    "masks_from_csmask",
    "metrics_plot",
    "nearest_benchmark",
    "read_output",
    "register_method",
    "run_quality",
    "score_scene",
    "summary_markdown",
    "summary_rows",
    "write_cut_archive",
    "write_quality_outputs",
]

#: Cloud-cover buckets (percent of the image's valid pixels inside the cut), lower
#: bound excluded except for the first.
BUCKETS: Final = ((0.0, 10.0), (10.0, 30.0), (30.0, 60.0), (60.0, 100.0))

#: Central wavelengths (nm) of the bands between red and NIR (Sentinel-2A).
_WAVELENGTH: Final = {"B04": 665.0, "B05": 705.0, "B06": 740.0, "B07": 783.0, "B08": 842.0}

#: Medians (reflectance x 10000) of the cloud pixels (class 4) of the real ukis-csmask
#: scene shipped as ``tests/data/csmask_cloudy.npz``, per band it has (a test recomputes
#: them).
CSMASK_CLOUD_MEDIANS: Final = {"B02": 4458, "B03": 4304, "B04": 4516, "B08": 5967,
                               "B11": 4776, "B12": 3635}
#: The same for its shadow pixels (class 0).
CSMASK_SHADOW_MEDIANS: Final = {"B02": 984, "B03": 760, "B04": 532, "B08": 1342,
                                "B11": 749, "B12": 403}


def _spectrum(measured: Mapping[str, int]) -> dict[str, int]:
    """Every L2A band's value from the csmask bands' medians.

    B01 as B02; B05-B07 linear in wavelength between B04 and B08; B8A and B09 as B08
    (the scene has no such band).
    """
    out = dict(measured)
    out["B01"] = measured["B02"]
    low, high = measured["B04"], measured["B08"]
    for band in ("B05", "B06", "B07"):
        frac = (_WAVELENGTH[band] - _WAVELENGTH["B04"]) / (_WAVELENGTH["B08"]
                                                           - _WAVELENGTH["B04"])
        out[band] = round(low + (high - low) * frac)
    out["B8A"] = out["B09"] = measured["B08"]
    return out


#: Cloud spectrum (reflectance x 10000) the ``constant`` fill writes under cut clouds.
CLOUD_DN: Final = _spectrum(CSMASK_CLOUD_MEDIANS)
#: Shadow spectrum (reflectance x 10000) written under cut shadows.
SHADOW_DN: Final = _spectrum(CSMASK_SHADOW_MEDIANS)

#: The acquisition name of the reference in every method's products.
REFERENCE: Final = "t"

#: The bucket pooling only the scenes on which every method ran: where methods compare
#: like for like (a method that needs dates on both sides skips the first and last).
COMMON: Final = "common"


# --------------------------------------------------------------------------- cut masks


@dataclass(frozen=True)
class CutMask:
    """A real cloud/shadow mask to cut into a reference, on the reference's 10 m grid.

    Attributes:
        name: Where it comes from (``2016-05-02 s2cloudless``, ``csmask (0, 64)``).
        cloud: Boolean ``(H, W)``: cloud (or cirrus) pixels.
        shadow: Boolean ``(H, W)``: shadow pixels (not cloud).
    """

    name: str
    cloud: np.ndarray
    shadow: np.ndarray

    @property
    def cut(self) -> np.ndarray:
        """Boolean ``(H, W)``: the pixels the cut hides (cloud or shadow)."""
        return np.asarray(self.cloud | self.shadow)

    def fraction(self, valid: np.ndarray | None = None) -> float:
        """Fraction of the (valid) pixels inside the cut."""
        cut = self.cut if valid is None else self.cut & valid
        total = int(np.count_nonzero(valid)) if valid is not None else cut.size
        return float(np.count_nonzero(cut)) / total if total else 0.0


def cut_mask(name: str, cloud: np.ndarray, shadow: np.ndarray | None = None) -> CutMask:
    """A :class:`CutMask` from boolean arrays (shadow pixels that are cloud count as cloud).

    Raises:
        ArgumentError: Arrays that are not 2-D or of different shapes.
    """
    cloud = np.asarray(cloud, dtype=bool)
    shadow = np.zeros_like(cloud) if shadow is None else np.asarray(shadow, dtype=bool)
    if cloud.ndim != 2 or shadow.shape != cloud.shape:
        raise ArgumentError(f"cut mask {name!r}: cloud {cloud.shape} and shadow "
                            f"{shadow.shape} must be 2-D of one shape", field="cut")
    return CutMask(name, cloud, shadow & ~cloud)


def masks_from_archive(archive: Archive, tile: str, grid: Grid, *,
                       exclude: Iterable[S2Product] = (),
                       max_nodata: float = 0.5) -> list[CutMask]:
    """The cloud and shadow masks of a tile's S2 products, on ``grid``.

    Products in ``exclude`` (the references), products without any cloud or shadow and
    products with more than ``max_nodata`` of nodata are left out; a mask identical to
    an earlier one (fully cloudy dates) is cut once.
    """
    skip = {str(p.path) for p in exclude}
    out: list[CutMask] = []
    seen: set[bytes] = set()
    for product in archive.select_s2(tile):
        if str(product.path) in skip:
            continue
        layer = product.mask(grid)
        if np.count_nonzero(layer == MaskClass.NODATA) > max_nodata * layer.size:
            continue
        cloud = (layer == MaskClass.CLOUD) | (layer == MaskClass.CIRRUS)
        shadow = layer == MaskClass.SHADOW
        key = np.packbits(cloud).tobytes() + np.packbits(shadow).tobytes()
        if (cloud.any() or shadow.any()) and key not in seen:
            seen.add(key)
            out.append(cut_mask(f"{product.acquired:%Y-%m-%d} {product.mask_origin}",
                                cloud, shadow))
    return out


def masks_from_csmask(npz: str | Path, shape: tuple[int, int], *, pixel_ratio: int = 3,
                      count: int = 4) -> list[CutMask]:
    """Real cumulus and shadow masks of ukis-csmask transplanted onto a grid's shape.

    The csmask scene has no georeference and about 30 m pixels: each of its pixels
    becomes ``pixel_ratio`` x ``pixel_ratio`` 10 m pixels (nearest). Candidate windows
    of the needed size lie on a stride of a quarter window; among those with some
    cloud or shadow, ``count`` are taken at evenly spread quantiles of their cover, so
    the cuts span the cloud-cover buckets (deterministic).

    Args:
        npz: ``csmask_cloudy.npz`` (``msk``: 4 cloud, 0 shadow) or the source's
            ``sentinel2.npz``.
        shape: ``(H, W)`` of the reference grid.
        pixel_ratio: 10 m pixels per csmask pixel along each axis.
        count: How many windows (fewer when fewer candidates have clouds).

    Raises:
        ArgumentError: The scene is smaller than one window.
    """
    with np.load(npz) as data:
        msk = np.asarray(data["msk"])[..., 0]
    height, width = shape
    rows, cols = math.ceil(height / pixel_ratio), math.ceil(width / pixel_ratio)
    if rows > msk.shape[0] or cols > msk.shape[1]:
        raise ArgumentError(f"{npz}: a {msk.shape} mask cannot cover {shape} px at "
                            f"{pixel_ratio} px per pixel", field="shape")
    candidates = []
    for r in range(0, msk.shape[0] - rows + 1, max(1, rows // 4)):
        for c in range(0, msk.shape[1] - cols + 1, max(1, cols // 4)):
            window = msk[r:r + rows, c:c + cols]
            cover = float(np.count_nonzero((window == 4) | (window == 0))) / window.size
            if cover > 0.005:
                candidates.append((cover, r, c))
    candidates.sort()
    # The (k + 1/2) / count quantiles of the cover: one window gives the median one.
    picks = sorted({round((k + 0.5) / count * (len(candidates) - 1)) for k in range(count)}
                   ) if candidates else []
    out = []
    for _, r, c in (candidates[i] for i in picks):
        window = msk[r:r + rows, c:c + cols]
        big = np.repeat(np.repeat(window, pixel_ratio, 0), pixel_ratio, 1)[:height, :width]
        out.append(cut_mask(f"csmask ({r}, {c})", big == 4, big == 0))
    return out


# --------------------------------------------------------------------------- references


def _cloudy_fraction(product: S2Product, grid: Grid) -> tuple[float, np.ndarray]:
    """Cloud + cirrus + shadow fraction of the valid pixels, and the mask layer."""
    layer = product.mask(grid)
    valid = layer != MaskClass.NODATA
    cloudy = np.isin(layer, [int(MaskClass.CLOUD), int(MaskClass.CIRRUS),
                             int(MaskClass.SHADOW)])
    total = int(np.count_nonzero(valid))
    return (float(np.count_nonzero(cloudy)) / total if total else 1.0), layer


def check_reference(product: S2Product, grid: Grid | None = None, *,
                    max_cloud: float = 0.01) -> np.ndarray:
    """Refuse a cloudy reference; return its mask layer otherwise.

    Raises:
        CloudyReferenceError: More than ``max_cloud`` of its valid pixels are cloud,
            cirrus or shadow (the message gives the fraction).
    """
    fraction, layer = _cloudy_fraction(product, grid or product.grid())
    if fraction > max_cloud:
        raise CloudyReferenceError(
            f"the reference is {100 * fraction:.1f} % cloud and shadow (at most "
            f"{100 * max_cloud:.1f} % allowed): it cannot be the truth", path=product.path,
            field="reference")
    return layer


def clear_references(archive: Archive, tile: str, *, max_cloud: float = 0.01,
                     max_nodata: float = 0.5) -> list[S2Product]:
    """The tile's S2 products clear enough to be references (and mostly valid)."""
    out = []
    for product in archive.select_s2(tile):
        fraction, layer = _cloudy_fraction(product, product.grid())
        if fraction <= max_cloud and \
                np.count_nonzero(layer == MaskClass.NODATA) <= max_nodata * layer.size:
            out.append(product)
    return out


# --------------------------------------------------------------------------- working copy


@dataclass(frozen=True)
class CutFill:
    """What replaces the reflectance under a cut.

    Attributes:
        kind: ``nodata`` (the reflectance is nodata), ``constant`` (:data:`CLOUD_DN`
            under clouds, :data:`SHADOW_DN` under shadows) or ``overcast`` (the real
            values of ``overcast`` at the same pixels under clouds, the constant shadow
            spectrum under shadows).
        overcast: The overcast product of the same place, for ``overcast``.
    """

    kind: Literal["nodata", "constant", "overcast"] = "constant"
    overcast: S2Product | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("nodata", "constant", "overcast"):
            raise ArgumentError(f"cut fill {self.kind!r}: nodata, constant or overcast",
                                field="fill")
        if (self.kind == "overcast") != (self.overcast is not None):
            raise ArgumentError("an overcast fill needs its overcast product (and only it)",
                                field="fill")

    def describe(self) -> str:
        """``nodata``, ``constant`` or ``overcast:<product name>``."""
        return self.kind if self.overcast is None else f"overcast:{self.overcast.name}"


@dataclass
class CutScene:
    """A reference with a cut, written as a working copy of the archive.

    Attributes:
        root: The working copy (``S2/``, ``S1/``, ``DEM/``).
        archive: The working copy scanned.
        tile: The tile.
        original: The reference product (in the user's archive: never read by methods).
        target: The cut product of the working copy.
        cut: The cut mask.
        bands: The bands of the truth, in order.
        truth: ``(H, W, C)`` int16 encoded reflectance of the original (the engine's
            view of it: :func:`~decloud.inputs.read_inputs`).
        valid: ``(H, W)`` pixels where the truth is valid and clear.
    """

    root: Path
    archive: Archive
    tile: str
    original: S2Product
    target: S2Product
    cut: CutMask
    bands: tuple[str, ...]
    truth: np.ndarray
    valid: np.ndarray

    @property
    def grid(self) -> Grid:
        """The reference's 10 m grid."""
        return self.original.grid()

    @property
    def fraction(self) -> float:
        """The cut's fraction of the valid pixels."""
        return self.cut.fraction(self.valid)

    @property
    def reconstructed(self) -> np.ndarray:
        """Pixels scored as reconstruction: inside the cut, truth valid and clear."""
        return np.asarray(self.cut.cut & self.valid)

    @property
    def clear(self) -> np.ndarray:
        """Pixels scored as reproduction: outside the cut, truth valid and clear."""
        return np.asarray(~self.cut.cut & self.valid)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def _product_files(archive: Archive, tile: str, exclude: S2Product) -> list[tuple[Path, str]]:
    """(path, root) of every product of the tile to link into the copy, but ``exclude``."""
    out: list[tuple[Path, str]] = []
    for product in archive.select_s2(tile):
        if product.path == exclude.path:
            continue
        out.append((Path(product.path), "S2"))
        if Path(product.path).is_file():  # a stack: its sidecar and mask files too
            sidecar = Path(product.path).with_suffix(".yaml")
            extra = [sidecar] if sidecar.is_file() else []
            extra += [Path(m.path) for m in product.masks.values()]
            out += [(f, "S2") for f in extra if f.parent == Path(product.path).parent]
    for s1 in archive.s1:
        if s1.tile == tile:
            out += [(Path(b.path), "S1") for b in s1.bands.values()]
    dem = archive.dem(tile)
    if dem is not None:
        out.append((Path(dem.path), "DEM"))
    return out


def write_cut_archive(archive: Archive, original: S2Product, cut: CutMask,
                      root: str | Path, *, fill: CutFill | None = None,
                      max_reference_cloud: float = 0.01) -> CutScene:
    """Write a working copy of an archive whose ``original`` is cut by ``cut``.

    The copy holds ``S2/<TILE>/<name>_cut.tif`` (all of the original's bands on its
    10 m grid, int16 reflectance x 10000, nodata -10000, replaced under the cut by
    ``fill``), its mask ``<name>_cut_mask.tif`` (the original's classes, cloud and
    shadow where the cut says) and YAML sidecar, and links to the tile's other
    products (S2, S1, DEM) as they are.

    Args:
        archive: The user's archive.
        original: The reference (a clear S2 product of ``archive``).
        cut: The cut, on the original's 10 m grid.
        root: The working copy's folder (must not exist).
        fill: What replaces the reflectance under the cut (``constant`` by default).
        max_reference_cloud: See :func:`check_reference`.

    Raises:
        CloudyReferenceError: The original is cloudy.
        ArgumentError: The cut's shape is not the grid's; ``root`` exists.
        NoProductError: The original has no tile.
    """
    fill = fill or CutFill()
    root = Path(root)
    if root.exists():
        raise ArgumentError("the working copy's folder exists already", path=root,
                            field="root")
    if original.tile is None:
        raise NoProductError("the reference has no tile id", path=original.path, field="tile")
    tile = normalize_tile(original.tile)
    grid = original.grid()
    if cut.cloud.shape != grid.shape:
        raise ArgumentError(f"cut {cut.name!r} is {cut.cloud.shape}, the reference grid "
                            f"{grid.shape}", path=original.path, field="cut")
    layer = check_reference(original, grid, max_cloud=max_reference_cloud)
    bands = tuple(original.band_names)
    reflectance = original.read(list(bands), grid)  # (C, H, W) physical, NaN nodata
    dn = np.where(np.isfinite(reflectance), np.rint(reflectance * 10000.0), S2_NODATA)
    dn = np.clip(dn, S2_NODATA, np.iinfo(np.int16).max).astype(np.int16)
    clouds, shadows = cut.cloud, cut.shadow
    if fill.kind == "nodata":
        dn[:, clouds | shadows] = S2_NODATA
    else:
        for i, band in enumerate(bands):
            dn[i][shadows] = SHADOW_DN.get(band, S2_NODATA)
            dn[i][clouds] = CLOUD_DN.get(band, S2_NODATA)
        if fill.overcast is not None:
            over = fill.overcast.read(list(bands), grid)
            over_dn = np.where(np.isfinite(over), np.rint(over * 10000.0), S2_NODATA)
            dn[:, clouds] = np.clip(over_dn[:, clouds], S2_NODATA,
                                    np.iinfo(np.int16).max).astype(np.int16)
    mask = np.asarray(layer, dtype=np.uint8).copy()
    keep_nodata = mask == MaskClass.NODATA
    mask[shadows & ~keep_nodata] = MaskClass.SHADOW
    mask[clouds & ~keep_nodata] = MaskClass.CLOUD

    s2_dir = root / "S2" / tile
    s2_dir.mkdir(parents=True)
    stem = f"{Path(original.name).stem}_cut"
    profile = {"driver": "GTiff", "width": grid.shape[1], "height": grid.shape[0],
               "crs": grid.crs, "transform": grid.transform, "compress": "DEFLATE"}
    with atomic_file(s2_dir / f"{stem}.tif") as tmp, \
            rasterio.open(tmp, "w", count=len(bands), dtype="int16", nodata=S2_NODATA,
                          **profile) as dst:
        dst.write(dn)
        for i, band in enumerate(bands, start=1):
            dst.set_band_description(i, band)
    with atomic_file(s2_dir / f"{stem}_mask.tif") as tmp, \
            rasterio.open(tmp, "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(mask[np.newaxis])
    sidecar = {"platform": original.platform, "tile": tile,
               "acquired": original.acquired.isoformat(), "bands": list(bands),
               "scale": 1.0 / 10000, "offset": 0.0, "nodata": S2_NODATA,
               "mask": {"path": f"{stem}_mask.tif", "cloud": [int(MaskClass.CLOUD)],
                        "shadow": [int(MaskClass.SHADOW)], "cirrus": [int(MaskClass.CIRRUS)],
                        "nodata": [int(MaskClass.NODATA)]}}
    with atomic_file(s2_dir / f"{stem}.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(sidecar, sort_keys=False), encoding="utf-8")
    for path, kind in _product_files(archive, tile, original):
        sub = root / kind / (tile if kind != "DEM" else "") / path.name
        if not sub.exists():
            _link(path, sub)
    copy = Archive.from_root(root)
    target = next((p for p in copy.select_s2(tile) if Path(p.path).name == f"{stem}.tif"),
                  None)
    if target is None:  # pragma: no cover - the stack was just written
        raise EvaluationError("the cut product is not found in the working copy",
                              path=s2_dir / f"{stem}.tif", field="target")
    truth_bands = tuple(b for b in bands if b in S2_10M_BANDS)
    truth = read_inputs([InputKey.of(make_key(KeyKind.S2, REFERENCE), bands=truth_bands)],
                        InputProducts({REFERENCE: AcquisitionProducts(original)},
                                      reference=REFERENCE), grid)[make_key(KeyKind.S2,
                                                                           REFERENCE)]
    valid = (layer == MaskClass.CLEAR) & np.all(truth != S2_NODATA, axis=-1)
    return CutScene(root, copy, tile, original, target, cut, truth_bands, truth, valid)


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class BenchmarkInputs:
    """What a scene offers the methods (all read from the working copy).

    Attributes:
        scene: The cut scene.
        series: The tile's S2 products within ``window_days`` of the target, in time
            order (the cut target included).
        window_days: The temporal window of the series.
        workdir: A folder for the methods' own files.
    """

    scene: CutScene
    series: tuple[S2Product, ...]
    window_days: float
    workdir: Path

    @property
    def bands(self) -> tuple[str, ...]:
        """The 10 m bands every product of the series has (what is scored)."""
        have = set(self.scene.bands)
        for p in self.series:
            have &= set(p.band_names)
        return tuple(b for b in self.scene.bands if b in have)

    @property
    def others(self) -> tuple[S2Product, ...]:
        """The series without the target."""
        return tuple(p for p in self.series if p.path != self.scene.target.path)


class BenchmarkMethod(Protocol):
    """A method of the quality benchmark (:data:`METHODS`)."""

    @property
    def name(self) -> str:
        """The method's name in the tables."""

    def fits(self, inputs: BenchmarkInputs) -> str | None:
        """None when the method can run on ``inputs``, else why not (one line)."""

    def run(self, inputs: BenchmarkInputs, out: Path, *, composite: CompositeOptions | None
            ) -> Path:
        """Reconstruct the target into ``out`` (a COG), with the composite or raw (None).

        Returns the reflectance COG.
        """


class NearestMethod:
    """Per pixel, the nearest usable observation of another date (a block method).

    Usable as in :func:`decloud.processors.gapfill.usable` (clear, farther than
    ``buffer`` px from clouds, valid in every band); the target date itself is left
    out, so the raw output is genuinely another date's image. Ties in distance go to
    the earlier date.
    """

    size_multiple: int = 1
    extras: tuple[str, ...] = ("days",)

    def __init__(self, acquisitions: Sequence[str], target: float, *,
                 bands: Sequence[str] = S2_10M_BANDS, buffer: int = 0,
                 name: str = "nearest") -> None:
        if not acquisitions:
            raise ArgumentError("the nearest-date method needs an acquisition",
                                field="acquisitions")
        if buffer < 0:
            raise ArgumentError(f"dilation buffer {buffer} must be >= 0", field="buffer")
        self.name = name
        self.acquisitions = tuple(check_acquisition(a) for a in acquisitions)
        self.target = float(target)
        self.buffer = int(buffer)
        self.margin = self.buffer
        self.output_bands: tuple[str, ...] = tuple(bands)
        self.input_keys: tuple[KeyRequest, ...] = series_keys(self.acquisitions,
                                                              self.output_bands)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """Pick each pixel's nearest usable observation (inputs: key -> ``(B, H, W, C)``)."""
        from decloud.inference.method import BlockResult
        from decloud.processors.gapfill import usable

        first = inputs[make_key(KeyKind.S2, self.acquisitions[0])]
        batch, height, width = first.shape[:3]
        out = np.full((batch, height, width, len(self.output_bands)), np.nan, np.float32)
        days = np.full((batch, height, width), np.nan, np.float32)
        for b in range(batch):
            found = []
            for acq in self.acquisitions:
                offset = float(np.asarray(inputs[make_key(KeyKind.DT, acq)])[b].ravel()[0])
                if math.isfinite(offset) and abs(offset - self.target) >= 0.5:
                    found.append((abs(offset - self.target), offset, acq))
            # Farthest first: nearer observations overwrite them.
            for distance, _, acq in sorted(found, reverse=True):
                series = inputs[make_key(KeyKind.S2, acq)][b][np.newaxis]
                mask = inputs[make_key(KeyKind.S2_MASK, acq)][b, ..., 0][np.newaxis]
                ok = usable(series, mask, self.buffer)[0]
                out[b][ok] = series[0][ok]  # usable: no band is nodata there
                days[b][ok] = distance
        return BlockResult(out, {"days": days})

    def describe(self) -> dict[str, Any]:
        """The method's parameters, JSON-ready."""
        return {"method": "nearest", "name": self.name, "acquisitions": list(self.acquisitions),
                "target_days": self.target, "bands": list(self.output_bands),
                "buffer_px": self.buffer, "margin_px": self.margin, "size_multiple": 1}


def _engine_options(composite: CompositeOptions | None, target: str | None) -> Any:
    from decloud.inference.engine import EngineOptions

    return EngineOptions(target=target if composite is not None else None,
                         composite=composite or CompositeOptions(), overwrite=True,
                         stac=False, readers=1)


@dataclass(frozen=True)
class EngineBenchmarkMethod:
    """A series block method (``d0``, ``d1``... acquisitions, ``dt`` from ``d0``) run by the engine.

    G1's and any other per-pixel or per-block method over a series joins the benchmark
    through it: ``factory(acquisitions, target_days, bands)`` builds the block method
    (like :class:`~decloud.processors.gapfill.GapFillMethod`).

    Attributes:
        name: The method's name in the tables.
        factory: ``(acquisitions, target days from d0, bands) -> BlockMethod``.
        min_others: Other dates (besides the target) the method needs.
    """

    name: str
    factory: Callable[[Sequence[str], float, tuple[str, ...]], Any]
    min_others: int = 1

    def fits(self, inputs: BenchmarkInputs) -> str | None:
        """Why the method cannot run on ``inputs`` (one line), or None when it can.

        Args:
            inputs: The cut scene and the series around it.

        Returns:
            None, or the reason: too few other dates, or no common 10 m band.
        """
        if len(inputs.others) < self.min_others:
            return (f"needs {self.min_others} other date(s) within "
                    f"{inputs.window_days:g} days, the archive has {len(inputs.others)}")
        if not inputs.bands:
            return "no 10 m band common to the series"
        return None

    def run(self, inputs: BenchmarkInputs, out: Path, *,
            composite: CompositeOptions | None) -> Path:
        """Reconstruct the cut target from the series with the engine.

        Args:
            inputs: The cut scene and the series around it.
            out: The output COG.
            composite: Composite with the target's clear pixels, or raw output (None).

        Returns:
            ``out``.
        """
        from decloud.inference.engine import run
        from decloud.keys import day_offset

        series = inputs.series
        names = [f"d{i}" for i in range(len(series))]
        target = inputs.scene.target
        method = self.factory(names, day_offset(target.acquired, series[0].acquired),
                              inputs.bands)
        own = [n for n, p in zip(names, series, strict=True) if p.path == target.path]
        products = InputProducts({n: AcquisitionProducts(s2=p)
                                  for n, p in zip(names, series, strict=True)},
                                 reference="d0")
        run(method, products, inputs.scene.grid, out,
            _engine_options(composite, own[0] if own else None))
        return out


def nearest_benchmark() -> EngineBenchmarkMethod:
    """``nearest``: each pixel from the nearest usable observation of another date."""
    return EngineBenchmarkMethod(
        "nearest", lambda acqs, target, bands: NearestMethod(acqs, target, bands=bands))


def gapfill_benchmark() -> EngineBenchmarkMethod:
    """``gapfill``: per-pixel linear interpolation in time (:class:`GapFillMethod`)."""
    from decloud.processors.gapfill import GapFillMethod

    return EngineBenchmarkMethod(
        "gapfill", lambda acqs, target, bands: GapFillMethod(acqs, target, bands=bands))


def reconstruction_benchmark(kind: str) -> EngineBenchmarkMethod:
    """``linear``, ``wlr`` or ``patchgroup`` (:mod:`decloud.processors.reconstruction`).

    The cut target's own acquisition (at its ``dt``) is reconstructed from the series.
    """
    from decloud.processors.reconstruction.series import method_class

    cls = method_class(kind)
    return EngineBenchmarkMethod(
        kind, lambda acqs, target, bands: cls(acqs, target, bands=bands))


#: The weightless gap-filling models of :class:`PatchGapFillBenchmark`, per band set and
#: window (hours).
_PATCH_MODELS: dict[tuple[tuple[str, ...], int], Any] = {}
#: The trained models of :class:`ModelMethod`, by resolved path.
_MODELS: dict[str, Any] = {}


def _write_if_changed(path: Path, content: Mapping[str, Any]) -> Path:
    """Write ``content`` as YAML to ``path`` (atomically) unless it holds it already."""
    text = yaml.safe_dump(dict(content), sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        with atomic_file(path, overwrite=True) as tmp:
            tmp.write_text(text)
    return path


@dataclass(frozen=True)
class PatchGapFillBenchmark:
    """CNES decloud's gap-filling baseline, patch by patch (see the module docstring).

    Attributes:
        patch_size: The patches (catalog patches and engine blocks) t-1/t+1 are chosen for.
        name: The method's name in the tables.
    """

    patch_size: int = 64
    name: str = "patch_gapfill"

    def fits(self, inputs: BenchmarkInputs) -> str | None:
        """Why the method cannot run on ``inputs`` (one line), or None when it can.

        Args:
            inputs: The cut scene and the series around it.

        Returns:
            None, or the reason: no date before or none after the target in the window.
        """
        t = inputs.scene.target.acquired
        before = [p for p in inputs.others if p.acquired < t]
        after = [p for p in inputs.others if p.acquired > t]
        if not before or not after:
            return ("needs a date before and a date after the target within "
                    f"{inputs.window_days:g} days")
        return None

    def run(self, inputs: BenchmarkInputs, out: Path, *,
            composite: CompositeOptions | None) -> Path:
        """Reconstruct the cut target from its clear t-1 and t+1 (weightless model).

        The layout and model config written in ``inputs.workdir`` follow this run's
        window and bands.

        Args:
            inputs: The cut scene and the series around it.
            out: The output COG.
            composite: Composite with the target's clear pixels, or raw output (None).

        Returns:
            ``out``.
        """
        from decloud.processors.multitemporal import MultiTemporalOptions, multitemporal
        from decloud.processors.single_date import load_method

        hours = int(inputs.window_days * 24)
        bands = tuple(inputs.bands)
        # Both files follow this run's window and bands: an earlier run in the same
        # workdir (another --window-days or band list) must not leave its own.
        # GFa-like (CNES AL-CRGA-OS2-GFa): clear t-1 and t+1 (0 % cloud), in the window.
        layout = _write_if_changed(inputs.workdir / "patch_gapfill_layout.yaml", {
            "name": "benchmark-patch-gapfill",
            "acquisitions": {
                "tm1": {"window_hours": [-hours, -12], "s2": {"cloud": [0, 0]}},
                "t": {"reference": True, "s2": {"cloud": [0, 100]}},
                "tp1": {"window_hours": [12, hours], "s2": {"cloud": [0, 0]}}},
            "dem": False})
        config = _write_if_changed(inputs.workdir / "patch_gapfill_model.yaml", {
            "name": "patch_gapfill",
            "network": {"kind": "gapfill", "before": "tm1", "after": "tp1",
                        "s2_bands": list(bands)}})
        if (bands, hours) not in _PATCH_MODELS:
            # One model per band set and window for the whole benchmark: a new model per
            # scene would retrace its prediction function every time.
            _PATCH_MODELS[bands, hours] = load_method(config, untrained=True)
        method = _PATCH_MODELS[bands, hours]
        scene = inputs.scene
        multitemporal(scene.archive, scene.tile, scene.target.acquired.date(), method, out,
                      MultiTemporalOptions(layout=layout, patch_size=self.patch_size,
                                           engine=dataclasses.replace(
                                               _engine_options(composite, REFERENCE),
                                               block_size=self.patch_size)))
        return out


@dataclass(frozen=True)
class ModelMethod:
    """A trained model (``.keras`` and its card): single-date or multi-temporal.

    Attributes:
        path: The ``.keras`` file (or its run folder).
        layout: The acquisition layout of a multi-temporal model (its t-1/t+1 windows).
        name: The method's name in the tables (the model's when empty).
    """

    path: Path
    layout: Path | str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:  # the run folder's name (model.keras sits in it)
            path = Path(self.path)
            object.__setattr__(self, "name", (path.parent.name if path.suffix == ".keras"
                                              else path.name) or "model")

    def _method(self) -> Any:
        from decloud.processors.single_date import load_method

        key = str(Path(self.path).resolve())
        if key not in _MODELS:  # loaded once: a model per scene would retrace every time
            _MODELS[key] = load_method(self.path)
        return _MODELS[key]

    def fits(self, inputs: BenchmarkInputs) -> str | None:
        """Why the model cannot run on ``inputs`` (one line), or None when it can.

        Args:
            inputs: The cut scene and its archive.

        Returns:
            None, or the reason: bands, S1 or DEM the archive lacks, or a missing layout.
        """
        method = self._method()
        need = {b for k in method.input_keys if k.kind in (KeyKind.S2, KeyKind.S2_20M)
                for b in k.bands}
        missing = sorted(need - set(inputs.scene.target.band_names))
        if missing:
            return f"reads bands {', '.join(missing)} the archive does not have"
        kinds = {str(k.kind) for k in method.input_keys}
        if "s1" in kinds and not any(s1.tile == inputs.scene.tile
                                     for s1 in inputs.scene.archive.s1):
            return "reads S1: the archive has none of this tile"
        if "dem" in kinds and inputs.scene.archive.dem(inputs.scene.tile) is None:
            return "reads a DEM: the archive has none of this tile"
        acqs = {k.acquisition for k in method.input_keys if k.acquisition}
        if acqs - {REFERENCE} and self.layout is None:
            return "a multi-temporal model needs its layout (--layout)"
        return None

    def run(self, inputs: BenchmarkInputs, out: Path, *,
            composite: CompositeOptions | None) -> Path:
        """Reconstruct the cut target with the model (single-date or multi-temporal).

        Args:
            inputs: The cut scene and its archive.
            out: The output COG.
            composite: Composite with the target's clear pixels, or raw output (None).

        Returns:
            ``out``.
        """
        from decloud.processors.multitemporal import MultiTemporalOptions, multitemporal
        from decloud.processors.single_date import SingleDateOptions, single_date

        method = self._method()
        scene = inputs.scene
        day = scene.target.acquired.date()
        engine = _engine_options(composite, REFERENCE)
        if {k.acquisition for k in method.input_keys if k.acquisition} - {REFERENCE}:
            multitemporal(scene.archive, scene.tile, day, method, out,
                          MultiTemporalOptions(layout=self.layout or "os2-occitanie",
                                               patch_size=16, engine=engine))
        else:
            single_date(method, scene.archive, scene.tile, day, out,
                        SingleDateOptions(engine=engine))
        return out


#: The benchmark's methods by name: each builder returns a fresh method.
METHODS: dict[str, Callable[[], BenchmarkMethod]] = {
    "nearest": nearest_benchmark,
    "gapfill": gapfill_benchmark,
    "patch_gapfill": PatchGapFillBenchmark,
    "linear": lambda: reconstruction_benchmark("linear"),
    "wlr": lambda: reconstruction_benchmark("wlr"),
    "patchgroup": lambda: reconstruction_benchmark("patchgroup"),
}


def register_method(name: str, builder: Callable[[], BenchmarkMethod]) -> None:
    """Add a method to :data:`METHODS` (an existing name is replaced).

    Raises:
        ArgumentError: An empty name.
    """
    if not name:
        raise ArgumentError("a method needs a name", field="name")
    METHODS[name] = builder


# --------------------------------------------------------------------------- scoring


def read_output(path: Path, bands: Sequence[str]) -> np.ndarray:
    """An engine output as ``(H, W, C)`` reflectance (NaN nodata), bands in order.

    Read as every scored raster is (:func:`decloud.evaluation.metrics.read_reflectance`):
    band names normalised, decloud's encoding decoded, other encodings by their tags.

    Raises:
        MissingBandError: The output lacks one of ``bands``.
        EvaluationError: An integer band of unknown scale.
    """
    from decloud.evaluation.metrics import read_reflectance

    return read_reflectance(path, bands)[1]


def bucket_of(percent: float) -> str:
    """The bucket label (``0-10`` ...) of a cut covering ``percent`` % of the image."""
    for low, high in BUCKETS:
        if percent <= high and (percent > low or low == 0.0):
            return f"{low:g}-{high:g}"
    return f"{BUCKETS[-1][0]:g}-{BUCKETS[-1][1]:g}"


@dataclass(frozen=True)
class QualityOptions:
    """Options of :func:`run_quality`.

    Attributes:
        methods: Method names of :data:`METHODS` (all when empty).
        extra_methods: Further methods (trained models: :class:`ModelMethod`).
        window_days: Dates within this many days of the target make its series.
        fill: What replaces the reflectance under the cut.
        composite: The composite's dilation and feather (none by default: its
            reconstructed region is exactly the cut).
        max_reference_cloud: Cloud + shadow fraction above which a reference is refused.
        min_cut: Cuts covering less than this fraction of the valid pixels are skipped.
        raw: Also score each method's raw output (not only the composite).
        keep_outputs: Keep the working copies and outputs (else removed per scene).
    """

    methods: tuple[str, ...] = ()
    extra_methods: tuple[BenchmarkMethod, ...] = ()
    window_days: float = 60.0
    fill: CutFill = field(default_factory=CutFill)
    composite: CompositeOptions = field(default_factory=lambda: CompositeOptions(0, 0))
    max_reference_cloud: float = 0.01
    min_cut: float = 0.005
    raw: bool = True
    keep_outputs: bool = False


@dataclass
class QualityResult:
    """Every score of a benchmark run.

    Attributes:
        rows: One per (scene, method, variant): reference, cut, fraction, bucket,
            method, variant, and the scores' dict (:meth:`Scores.to_dict`).
        skipped: Methods that did not fit, with the reason, per reference.
        scenes: One per scene: reference, cut, cut fraction, bucket, pixel counts.
        quicklooks: For the first scene of each bucket, the arrays shown in the report
            (input, methods, truth), reflectance.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    scenes: list[dict[str, Any]] = field(default_factory=list)
    quicklooks: list[dict[str, Any]] = field(default_factory=list)
    #: Pooled statistics per (method label, bucket), bucket ``all`` included: every
    #: scene's pixels are added (exact pooling of every metric, SSIM windows never
    #: span two scenes).
    pooled: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    #: Scenes on which every method ran (pooled in the :data:`COMMON` bucket).
    common_scenes: int = 0

    def add(self, label: str, bucket: str, bands: Sequence[str], prediction: np.ndarray,
            scene: CutScene, truth: np.ndarray, *, also_all: bool = True) -> None:
        """Pool a scene's reconstruction into its bucket (and into ``all``)."""
        from decloud.evaluation.metrics import ScoreAccumulator

        keys = [(label, bucket)] + ([(label, "all")] if also_all else [])
        for key in keys:
            if key not in self.pooled:
                self.pooled[key] = ScoreAccumulator(list(bands),
                                                    regions=("reconstructed", "clear"))
            self.pooled[key].add(prediction, truth, valid=scene.valid,
                                 regions={"reconstructed": scene.reconstructed,
                                          "clear": scene.clear})

    def summary(self) -> dict[tuple[str, str], Any]:
        """The pooled :class:`~decloud.evaluation.metrics.Scores` per (label, bucket)."""
        return {key: acc.result() for key, acc in self.pooled.items()}

    def methods(self) -> list[str]:
        """The scored method labels, in order of first appearance."""
        return list(dict.fromkeys(r["label"] for r in self.rows))

    def to_json(self) -> str:
        """The rows, scenes and skipped methods as JSON."""
        return json.dumps({"rows": self.rows, "scenes": self.scenes,
                           "skipped": self.skipped}, indent=1, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _series(scene: CutScene, window_days: float) -> tuple[S2Product, ...]:
    window = timedelta(days=window_days)
    when = scene.target.acquired
    return tuple(sorted((p for p in scene.archive.select_s2(scene.tile)
                         if abs(p.acquired - when) <= window), key=lambda p: p.acquired))


def _selected(options: QualityOptions) -> list[BenchmarkMethod]:
    names = options.methods or tuple(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ArgumentError(f"unknown method(s) {', '.join(unknown)} (known: "
                            f"{', '.join(METHODS)})", field="methods")
    return [METHODS[n]() for n in names] + list(options.extra_methods)


def score_scene(scene: CutScene, prediction: np.ndarray) -> dict[str, Any]:
    """Scores of a reconstruction against the truth, on the reconstructed and clear regions.

    Returns :meth:`Scores.to_dict` of :func:`decloud.evaluation.metrics.score_arrays`,
    with regions ``reconstructed`` (inside the cut) and ``clear`` (outside it), both
    restricted to where the truth is valid and clear.
    """
    from decloud.evaluation.metrics import score_arrays

    truth = decode_s2(scene.truth)
    scores = score_arrays(prediction, truth, valid=scene.valid,
                          regions={"reconstructed": scene.reconstructed,
                                   "clear": scene.clear},
                          bands=list(scene.bands))
    out: dict[str, Any] = scores.to_dict()
    return out


def run_quality(archive: Archive, tile: str, cuts: Sequence[CutMask], workdir: str | Path,
                options: QualityOptions | None = None, *,
                references: Sequence[S2Product] | None = None,
                overcast: Callable[[S2Product], S2Product | None] | None = None,
                on_row: Callable[[dict[str, Any]], None] | None = None,
                on_scene: Callable[[CutScene, tuple[str, ...], dict[str, np.ndarray]], None]
                | None = None,
                ) -> QualityResult:
    """Cut every mask into every reference, run every method that fits, score.

    Args:
        archive: The user's archive (never modified).
        tile: The tile.
        cuts: The masks to cut (on the tile's 10 m grid).
        workdir: Folder for the working copies and the outputs.
        options: Methods, window, fill, composite...
        references: The references (default: :func:`clear_references`); each is
            checked (a cloudy one raises).
        overcast: For an ``overcast`` fill: the overcast product for a reference.
        on_row: Called with each row as soon as it is scored (progress).
        on_scene: Called with each scene, the scored bands and its reconstructions
            (``{label: (H, W, C) reflectance}``) before its files are removed (the
            land-cover check classifies them).

    Raises:
        CloudyReferenceError: A given reference is cloudy.
        NoProductError: No clear reference on the tile.
    """
    options = options or QualityOptions()
    tile = normalize_tile(tile)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    refs = list(references) if references is not None else clear_references(
        archive, tile, max_cloud=options.max_reference_cloud)
    if not refs:
        raise NoProductError(f"tile {tile} has no clear S2 product to be a reference",
                             field="reference")
    methods = _selected(options)
    result = QualityResult()
    for r, reference in enumerate(refs):
        check_reference(reference, max_cloud=options.max_reference_cloud)
        fill = options.fill
        if fill.kind == "overcast" and overcast is not None:
            found = overcast(reference)
            fill = CutFill("overcast", found) if found is not None else CutFill("constant")
        for c, cut in enumerate(cuts):
            root = workdir / f"scene_{r:02d}_{c:03d}"
            if root.exists():
                shutil.rmtree(root)
            scene = write_cut_archive(archive, reference, cut, root / "archive", fill=fill,
                                      max_reference_cloud=options.max_reference_cloud)
            if scene.fraction < options.min_cut:
                shutil.rmtree(root)
                continue
            percent = 100.0 * scene.fraction
            info: dict[str, Any] = {
                "reference": reference.name, "date": f"{reference.acquired:%Y-%m-%d}",
                "cut": cut.name, "cut_percent": round(percent, 3),
                "bucket": bucket_of(percent), "fill": fill.describe(),
                "reconstructed_pixels": int(np.count_nonzero(scene.reconstructed)),
                "clear_pixels": int(np.count_nonzero(scene.clear))}
            result.scenes.append(info)
            inputs = BenchmarkInputs(scene, _series(scene, options.window_days),
                                     options.window_days, root)
            # One quicklook per bucket (its first scene) keeps the report small.
            shown = not any(q["bucket"] == info["bucket"] for q in result.quicklooks)
            look: dict[str, Any] = {**info, "bands": list(inputs.bands), "images": {}}
            ran: dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]] = {}
            for method in methods:
                reason = method.fits(inputs)
                if reason is not None:
                    result.skipped.setdefault(reference.name, {})[method.name] = reason
                    continue
                variants = ([("raw", None)] if options.raw else []) + \
                    [("composite", options.composite)]
                for variant, composite in variants:
                    try:
                        out = method.run(inputs, root / f"{method.name}_{variant}.tif",
                                         composite=composite)
                    except DecloudError as err:
                        # One method failing on a scene (a typed error: no product in
                        # its window...) is recorded; the others still run.
                        result.skipped.setdefault(reference.name, {})[method.name] = \
                            f"failed on cut {cut.name}: {type(err).__name__}: {err}"
                        break
                    prediction = read_output(out, inputs.bands)
                    bands = inputs.bands
                    truth_sel = [scene.bands.index(b) for b in bands]
                    sub = dataclasses.replace(scene, truth=scene.truth[..., truth_sel],
                                              bands=bands)
                    label = method.name if variant == "raw" else f"{method.name}+composite"
                    row = {**info, "method": method.name, "variant": variant,
                           "label": label, "bands": list(bands),
                           "covered_pixels": int(np.count_nonzero(
                               np.all(np.isfinite(prediction), axis=-1)
                               & scene.reconstructed)),
                           "scores": score_scene(sub, prediction)}
                    result.rows.append(row)
                    result.add(label, info["bucket"], bands, prediction, scene,
                               decode_s2(sub.truth))
                    ran[label] = (bands, prediction, decode_s2(sub.truth))
                    if on_row is not None:
                        on_row(row)
                    if shown:
                        look["images"][label] = prediction
            if len({lbl.split("+")[0] for lbl in ran}) == len(methods):
                # Every method ran on this scene: it joins the like-for-like comparison.
                for label, (bands, prediction, truth) in ran.items():
                    result.add(label, COMMON, bands, prediction, scene, truth,
                               also_all=False)
                for row in result.rows[-len(ran):]:
                    row["common"] = True
                result.common_scenes += 1
            if on_scene is not None:
                on_scene(scene, inputs.bands,
                         {label: value[1] for label, value in ran.items()})
            if shown:
                look["images"]["input (cut)"] = np.moveaxis(
                    scene.target.read(list(inputs.bands), scene.grid), 0, -1)
                look["images"]["truth"] = decode_s2(scene.truth[..., [
                    scene.bands.index(b) for b in inputs.bands]])
                look["cut_mask"] = scene.cut.cut
                result.quicklooks.append(look)
            if not options.keep_outputs:
                shutil.rmtree(root)
    return result


# --------------------------------------------------------------------------- outputs

#: The issue's goal, stated next to the figures.
GOAL: Final = ("Goal (issue 11): the best method at least 1 dB PSNR above decloud-style "
               "patch-level gap-filling (patch_gapfill) on real cut clouds, on the "
               "reconstructed pixels.")


def _cell(value: float | None, digits: int = 4) -> str:
    return "no pixels" if value is None else f"{value:.{digits}f}"


def summary_rows(result: QualityResult) -> list[dict[str, Any]]:
    """One row per (bucket, method label): pooled scores and the pixel counts behind them."""
    summary = result.summary()
    buckets = [f"{low:g}-{high:g}" for low, high in BUCKETS] + ["all", COMMON]
    rows = []
    for bucket in buckets:
        for label in result.methods():
            scores = summary.get((label, bucket))
            if scores is None:
                continue
            rec, clear = scores["reconstructed"].overall, scores["clear"].overall
            scenes = [r for r in result.rows if r["label"] == label
                      and (bucket == "all" or r["bucket"] == bucket
                           or (bucket == COMMON and r.get("common", False)))]
            rows.append({
                "bucket": bucket, "method": label, "scenes": len(scenes),
                "cut_pixels": sum(r["reconstructed_pixels"] for r in scenes),
                "scored_pixels": rec.n_pixels, "ssim_pixels": rec.n_ssim,
                "psnr": rec.psnr, "ssim": rec.ssim, "mae": rec.mae, "rmse": rec.rmse,
                "sam_deg": rec.sam_deg, "cc": rec.cc,
                "clear_pixels": clear.n_pixels, "clear_mae": clear.mae})
    return rows


def goal_check(rows: Sequence[Mapping[str, Any]], baseline: str = "patch_gapfill+composite",
               ) -> dict[str, Any]:
    """Whether the best composite beats ``baseline`` by 1 dB PSNR.

    Compared on the :data:`COMMON` scenes (where every method ran), all buckets pooled.
    """
    pooled = [r for r in rows if r["bucket"] == COMMON and r["psnr"] is not None
              and r["method"].endswith("+composite")]
    base = next((r for r in pooled if r["method"] == baseline), None)
    others = [r for r in pooled if r["method"] != baseline]
    if base is None or not others:
        return {"baseline": baseline, "met": None,
                "reason": "the baseline or another method did not run"}
    best = max(others, key=lambda r: r["psnr"])
    margin = best["psnr"] - base["psnr"]
    return {"baseline": baseline, "baseline_psnr": base["psnr"], "best": best["method"],
            "best_psnr": best["psnr"], "margin_db": margin, "met": margin >= 1.0}


def summary_markdown(rows: Sequence[Mapping[str, Any]], goal: Mapping[str, Any]) -> str:
    """The summary table in Markdown, with the goal and whether it is met."""
    head = ["bucket (% cut)", "method", "scenes", "cut px", "scored px", "PSNR (dB)", "SSIM",
            "MAE", "RMSE", "SAM (°)", "CC", "clear px", "clear MAE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["bucket"], r["method"], str(r["scenes"]), str(r["cut_pixels"]),
            str(r["scored_pixels"]), _cell(r["psnr"], 2), _cell(r["ssim"]), _cell(r["mae"]),
            _cell(r["rmse"]), _cell(r["sam_deg"], 2), _cell(r["cc"]), str(r["clear_pixels"]),
            _cell(r["clear_mae"])]) + " |")
    if goal.get("met") is None:
        verdict = f"not evaluated: {goal.get('reason')}"
    else:
        verdict = (f"{'MET' if goal['met'] else 'NOT MET'}: best {goal['best']} "
                   f"{goal['best_psnr']:.2f} dB against {goal['baseline']} "
                   f"{goal['baseline_psnr']:.2f} dB ({goal['margin_db']:+.2f} dB)")
    return "\n".join(lines) + f"\n\n{GOAL} **{verdict}**.\n"


def metrics_plot(rows: Sequence[Mapping[str, Any]]) -> Any:
    """PSNR and SSIM per method (bars) per bucket (groups), a matplotlib figure."""
    from matplotlib.figure import Figure

    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    labels = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(max(6.0, 1.6 * len(buckets) + 3), 6.4), dpi=100)
    axes = fig.subplots(2, 1)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(buckets))
    for ax, kind, title in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for i, label in enumerate(labels):
            values = []
            for bucket in buckets:
                row = next((r for r in rows if r["bucket"] == bucket
                            and r["method"] == label), None)
                values.append(np.nan if row is None or row[kind] is None else row[kind])
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
        shown = [r[kind] for r in rows if r[kind] is not None]
        if shown:  # differences of a few tenths matter: do not start the axis at 0
            span = max(shown) - min(shown)
            ax.set_ylim(min(shown) - max(span, 0.02 * abs(min(shown))),
                        max(shown) + 0.1 * max(span, 0.02 * abs(max(shown))))
        ax.set_xticks(x, [f"{b} %" if b not in ("all", COMMON) else b for b in buckets])
        ax.set_ylabel(title)
        ax.set_title(f"{title} on the reconstructed pixels, per cloud-cover bucket")
    axes[0].legend(fontsize="x-small", ncol=3, loc="lower left")
    fig.tight_layout()
    return fig


def _rgb(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Three channels for a quicklook: true colour when B04, B03, B02 are there."""
    if all(b in bands for b in ("B04", "B03", "B02")):
        idx = [bands.index(b) for b in ("B04", "B03", "B02")]
    else:  # e.g. B04 + B08 only: NIR, red, red
        order = [b for b in ("B08", "B04", "B03", "B02") if b in bands] or list(bands)
        idx = [bands.index(order[min(i, len(order) - 1)]) for i in range(3)]
    return np.asarray(image)[..., idx]


def write_quality_outputs(result: QualityResult, out_dir: str | Path, *,
                          name: str = "quality", title: str = "Quality benchmark",
                          meta: Mapping[str, Any] | None = None, notes: str = "",
                          overwrite: bool = True) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md``, ``<name>_plot.png`` and ``<name>.html``.

    Returns the paths by kind. Every file is written atomically.
    """
    from decloud.evaluation.report import (
        FigureSection,
        ImagesSection,
        Panel,
        TableSection,
        TextSection,
        error_panel,
        png_bytes,
        quality_panel,
        true_colour_panels,
        write_report,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(result)
    goal = goal_check(rows)
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md",
             "png": out_dir / f"{name}_plot.png", "html": out_dir / f"{name}.html"}
    payload = {"meta": dict(meta or {}), "goal": GOAL, "goal_check": goal, "summary": rows,
               "scenes": result.scenes, "skipped": result.skipped, "rows": result.rows}
    with atomic_file(paths["json"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=_jsonable), encoding="utf-8")
    skipped = "".join(f"- {ref}: {m}: {why}\n" for ref, items in result.skipped.items()
                      for m, why in items.items())
    info = "".join(f"- {k}: {v}\n" for k, v in (meta or {}).items())
    text = (f"# {title}\n\n{info}\n{notes}\n\n## Reconstructed pixels (inside the cut)\n\n"
            f"{summary_markdown(rows, goal)}\n![PSNR and SSIM per bucket]({paths['png'].name})\n"
            + (f"\n## Methods that did not fit\n\n{skipped}" if skipped else ""))
    with atomic_file(paths["md"], overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    plot = png_bytes(metrics_plot(rows)) if rows else b""
    if plot:
        with atomic_file(paths["png"], overwrite=overwrite) as tmp:
            tmp.write_bytes(plot)
    header = ["bucket (% cut)", "method", "scenes", "cut px", "scored px", "PSNR (dB)",
              "SSIM", "MAE", "RMSE", "SAM (deg)", "CC", "clear px", "clear MAE"]
    table = [[r["bucket"], r["method"], r["scenes"], r["cut_pixels"], r["scored_pixels"],
              r["psnr"], r["ssim"], r["mae"], r["rmse"], r["sam_deg"], r["cc"],
              r["clear_pixels"], r["clear_mae"]] for r in rows]
    sections: list[Any] = [
        TextSection("What was measured", (notes + "\n\n" if notes else "") + GOAL),
        TableSection("Scores on the reconstructed pixels, pooled per bucket", header, table,
                     note=summary_markdown([], goal).strip().splitlines()[-1].replace("**", ""))]
    if plot:
        sections.append(FigureSection("PSNR and SSIM per method and bucket", plot))
    scene_rows = [[s["date"], s["cut"], s["cut_percent"], s["bucket"],
                   s["reconstructed_pixels"], s["clear_pixels"]] for s in result.scenes]
    sections.append(TableSection("Scenes", ["reference", "cut", "cut %", "bucket",
                                            "cut px", "clear px"], scene_rows))
    for look in result.quicklooks:
        bands = look["bands"]
        # Input first, then the methods, then the truth.
        order = ["input (cut)", *(k for k in look["images"] if k not in ("input (cut)",
                                                                       "truth")), "truth"]
        images = {k: _rgb(look["images"][k], bands) for k in order}
        panels = true_colour_panels(images, stretch_from="truth")
        truth = look["images"]["truth"]
        errors = {k: v for k, v in look["images"].items()
                  if k not in ("truth", "input (cut)") and k.endswith("+composite")}
        vmax = max((float(np.nanpercentile(np.abs(v - truth).mean(axis=-1), 98))
                    for v in errors.values() if np.isfinite(v).any()), default=None)
        panels += [error_panel(k, v, truth, vmax=vmax) for k, v in errors.items()]
        panels.append(quality_panel("cut", np.where(look["cut_mask"], 1, 0)))
        sections.append(ImagesSection(
            f"{look['date']}, cut {look['cut']} ({look['cut_percent']:.1f} %)",
            [Panel(p.label, p.image) for p in panels]))
    if skipped:
        sections.append(TextSection("Methods that did not fit", skipped))
    write_report(paths["html"], title, sections, meta=meta, overwrite=overwrite)
    return {k: v for k, v in paths.items() if v.exists()}
