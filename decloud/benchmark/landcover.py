"""The downstream land-cover check: does a reconstruction classify like the clear truth?

``decloud benchmark landcover`` trains a seeded scikit-learn random forest on the
pixels of a clear reference image with a label map (eo-learn's LULC on the Slovenian
sample), then classifies another date of the same place four ways: its clear truth,
its cloudy version (the quality benchmark's cut, :mod:`decloud.benchmark.quality`)
and each method's reconstruction. It reports the overall accuracy (OA) and Cohen's
kappa of each, and the fraction of the cloudy-to-clear accuracy gap each method
recovers::

    recovered = (OA(method) - OA(cloudy)) / (OA(truth) - OA(cloudy))

Train and test pixels are disjoint (:func:`split_pixels`, seeded): the forest never
sees a pixel it is scored on, on either date. Labels equal to ``ignore`` (eo-learn's
class 0, no data) are neither trained on nor scored.

The cloudy image is what a classifier would see: the cut product's reflectance as the
working copy holds it, i.e. under the cut clouds either the real values of an overcast
date of the same place (the ``overcast`` fill; what the benchmark script uses on the
Slovenian sample: its fully overcast 2015-07-31 acquisition) or the constant cloud and
shadow spectra of the real csmask scene (the ``constant`` fill), see
:class:`~decloud.benchmark.quality.CutFill`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from decloud.errors import ArgumentError, EvaluationError

if TYPE_CHECKING:
    from decloud.archive import Archive
    from decloud.benchmark.quality import CutMask, CutScene, QualityOptions
    from decloud.grid import Grid
    from decloud.products import S2Product

__all__ = [
    "GOAL",
    "LandcoverResult",
    "classify",
    "gap_recovered",
    "landcover_benchmark",
    "landcover_markdown",
    "read_labels",
    "run_landcover",
    "score_labels",
    "split_pixels",
    "summarize_landcover",
    "train_forest",
]

#: The issue's goal, stated next to the figures.
GOAL: Final = ("Goal (issue 11): the land-cover accuracy of the best reconstruction "
               "recovers at least 90 % of the gap between the cloudy input and the clear "
               "truth.")


def split_pixels(labels: np.ndarray, *, test_fraction: float = 0.5, seed: int = 0,
                 ignore: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-disjoint train and test masks over the labelled pixels (seeded).

    Args:
        labels: ``(H, W)`` integer classes.
        test_fraction: Fraction of the labelled pixels in the test set.
        seed: Seed of the permutation.
        ignore: A label that is neither trained on nor tested (None: none).

    Returns:
        ``(train, test)`` boolean ``(H, W)`` masks, disjoint, covering the labelled pixels.

    Raises:
        ArgumentError: A fraction outside (0, 1) or labels that are not 2-D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ArgumentError(f"labels must be (H, W), not {labels.shape}", field="labels")
    if not 0.0 < test_fraction < 1.0:
        raise ArgumentError(f"test fraction {test_fraction} must be in (0, 1)",
                            field="test_fraction")
    labelled = np.flatnonzero(labels.ravel() != ignore) if ignore is not None \
        else np.arange(labels.size)
    order = np.random.default_rng(seed).permutation(labelled)
    n_test = round(test_fraction * order.size)
    train = np.zeros(labels.size, dtype=bool)
    test = np.zeros(labels.size, dtype=bool)
    test[order[:n_test]] = True
    train[order[n_test:]] = True
    return train.reshape(labels.shape), test.reshape(labels.shape)


def train_forest(features: np.ndarray, labels: np.ndarray, train: np.ndarray, *,
                 seed: int = 0, trees: int = 100) -> Any:
    """A seeded random forest trained on the ``train`` pixels of an image.

    Args:
        features: ``(H, W, C)`` reflectance; pixels with a NaN are not trained on.
        labels: ``(H, W)`` classes.
        train: ``(H, W)`` training pixels.
        seed: The forest's ``random_state``.
        trees: Number of trees.

    Raises:
        EvaluationError: No training pixel is valid.
    """
    from sklearn.ensemble import RandomForestClassifier

    ok = train & np.isfinite(features).all(axis=-1)
    if not ok.any():
        raise EvaluationError("no valid training pixel", field="train")
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
    forest.fit(features[ok].astype(np.float64), labels[ok])
    return forest


def classify(forest: Any, features: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Predicted classes of ``pixels`` (``(N,)``, in ``pixels``' row-major order).

    Nodata (NaN) features are classified as 0 reflectance: a classifier given a gap
    still has to say something, and a gap must cost accuracy, not leave the set.
    """
    values = np.nan_to_num(features[pixels].astype(np.float64), nan=0.0)
    return np.asarray(forest.predict(values))


def score_labels(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | int]:
    """Overall accuracy and Cohen's kappa (scikit-learn's), with the pixel count."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    if truth.size == 0:
        raise EvaluationError("no test pixel to score", field="test")
    return {"oa": float(accuracy_score(truth, predicted)),
            "kappa": float(cohen_kappa_score(truth, predicted)), "n_pixels": int(truth.size)}


def gap_recovered(cloudy: float, method: float, clear: float) -> float | None:
    """Fraction of the cloudy-to-clear gap a method recovers (None: no gap)."""
    gap = clear - cloudy
    return None if abs(gap) < 1e-12 else (method - cloudy) / gap


@dataclass
class LandcoverResult:
    """The land-cover check's figures.

    Attributes:
        rows: One per image (``clear truth``, ``cloudy``, each method): OA, kappa, pixel
            counts, on all test pixels and on the test pixels under the cut, and the
            fraction of the OA gap recovered.
        train_pixels: Pixels the forest was trained on.
        classes: The classes present.
        meta: Dates, seed, fill...
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    train_pixels: int = 0
    classes: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def best(self) -> dict[str, Any] | None:
        """The method row recovering the largest fraction of the gap (None: none)."""
        methods = [r for r in self.rows if r["kind"] == "method"
                   and r["recovered"] is not None]
        return max(methods, key=lambda r: r["recovered"]) if methods else None


def run_landcover(train_image: np.ndarray, train_labels: np.ndarray, truth: np.ndarray,
                  cloudy: np.ndarray, reconstructions: Mapping[str, np.ndarray],
                  test_labels: np.ndarray, cut: np.ndarray, *, seed: int = 0,
                  test_fraction: float = 0.5, trees: int = 100,
                  ignore: int | None = 0) -> LandcoverResult:
    """Train on a clear image, score the truth, the cloudy image and each reconstruction.

    The split is drawn once (seeded) on the label map: train pixels come from
    ``train_image``, test pixels (the others) are scored on the other date's images.

    Args:
        train_image: ``(H, W, C)`` clear reflectance the forest learns from.
        train_labels: ``(H, W)`` its classes.
        truth: ``(H, W, C)`` the test date's clear truth.
        cloudy: ``(H, W, C)`` the test date as cut (what a classifier would see).
        reconstructions: ``{method: (H, W, C)}`` reconstructions of the test date.
        test_labels: ``(H, W)`` classes of the test date (the same map when the land
            cover did not change).
        cut: ``(H, W)`` the cut: the "under the cut" figures are on its test pixels.
        seed: Seed of the split and of the forest.
        test_fraction: Fraction of the labelled pixels held out for testing.
        trees: Trees of the forest.
        ignore: Label neither trained on nor scored.

    Raises:
        ArgumentError: Images or label maps of different shapes.
    """
    shape = train_labels.shape
    for name, image in {"train image": train_image, "truth": truth, "cloudy": cloudy,
                        **reconstructions}.items():
        if image.shape[:2] != shape:
            raise ArgumentError(f"{name} is {image.shape[:2]}, the labels {shape}",
                                field="images")
    if test_labels.shape != shape or cut.shape != shape:
        raise ArgumentError("labels and cut must share the images' shape", field="labels")
    train, test = split_pixels(train_labels, test_fraction=test_fraction, seed=seed,
                               ignore=ignore)
    if ignore is not None:
        test &= test_labels != ignore
    forest = train_forest(train_image, train_labels, train, seed=seed, trees=trees)
    result = LandcoverResult(train_pixels=int(np.count_nonzero(
        train & np.isfinite(train_image).all(axis=-1))),
        classes=[int(c) for c in np.unique(train_labels[train])])
    images: list[tuple[str, str, np.ndarray]] = [("clear truth", "truth", truth),
                                                 ("cloudy", "cloudy", cloudy)]
    images += [(name, "method", image) for name, image in reconstructions.items()]
    under = test & cut
    for name, kind, image in images:
        predicted = classify(forest, image, test)
        scores = score_labels(test_labels[test], predicted)
        inside = under[test]
        cut_scores = score_labels(test_labels[under], predicted[inside]) if inside.any() \
            else {"oa": None, "kappa": None, "n_pixels": 0}
        result.rows.append({"image": name, "kind": kind, **scores,
                            "cut_oa": cut_scores["oa"], "cut_kappa": cut_scores["kappa"],
                            "cut_pixels": cut_scores["n_pixels"]})
    clear_oa = result.rows[0]["oa"]
    cloudy_oa = result.rows[1]["oa"]
    for row in result.rows:
        row["recovered"] = gap_recovered(cloudy_oa, row["oa"], clear_oa)
    return result


def _cell(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def landcover_markdown(result: LandcoverResult) -> str:
    """The land-cover table in Markdown, with the goal and whether it is met."""
    head = ["image", "OA", "kappa", "test px", "OA under cut", "kappa under cut",
            "test px under cut", "gap recovered"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        recovered = "n/a" if r["recovered"] is None else f"{100 * r['recovered']:.1f} %"
        lines.append("| " + " | ".join([
            r["image"], _cell(r["oa"]), _cell(r["kappa"]), str(r["n_pixels"]),
            _cell(r["cut_oa"]), _cell(r["cut_kappa"]), str(r["cut_pixels"]),
            recovered]) + " |")
    best = result.best()
    if best is None:
        verdict = "not evaluated: no method ran, or no cloudy-to-clear gap"
    else:
        met = best["recovered"] >= 0.9
        verdict = (f"{'MET' if met else 'NOT MET'}: best {best['image']} recovers "
                   f"{100 * best['recovered']:.1f} % of the gap")
    return "\n".join(lines) + f"\n\n{GOAL} **{verdict}**.\n"


def summarize_landcover(results: Sequence[LandcoverResult]) -> dict[str, Any]:
    """Mean OA, kappa and gap recovered per image over several cuts (same images)."""
    names = [r["image"] for r in results[0].rows] if results else []
    out: dict[str, Any] = {}
    for name in names:
        rows = [row for res in results for row in res.rows if row["image"] == name]
        rec = [r["recovered"] for r in rows if r["recovered"] is not None]
        out[name] = {"oa": float(np.mean([r["oa"] for r in rows])),
                     "kappa": float(np.mean([r["kappa"] for r in rows])),
                     "n_pixels": int(sum(r["n_pixels"] for r in rows)),
                     "recovered": float(np.mean(rec)) if rec else None, "cuts": len(rows)}
    return out


def read_labels(path: str | Path, grid: Grid) -> np.ndarray:
    """A label map raster on ``grid`` (same CRS, transform and shape), as ``(H, W)``.

    Raises:
        EvaluationError: The raster is not on the grid.
    """
    import rasterio

    with rasterio.open(path) as src:
        same = (src.crs == grid.crs and (src.height, src.width) == grid.shape
                and src.transform.almost_equals(grid.transform))
        if not same:
            raise EvaluationError(f"the label map ({src.width} x {src.height}, {src.crs}) "
                                  f"is not on the reference grid ({grid.shape[1]} x "
                                  f"{grid.shape[0]}, {grid.crs})", path=path, field="labels")
        return np.asarray(src.read(1))


def landcover_benchmark(archive: Archive, tile: str, train: S2Product, test: S2Product,
                        labels: str | Path | np.ndarray, cuts: Sequence[CutMask],
                        out_dir: str | Path, options: QualityOptions | None = None, *,
                        seed: int = 0, trees: int = 100,
                        overcast: S2Product | None = None,
                        name: str = "landcover") -> dict[str, Path]:
    """The land-cover check over several cuts of ``test``; writes ``<name>.json`` and ``.md``.

    Each cut of :func:`~decloud.benchmark.quality.run_quality` (reference ``test``)
    gives a cloudy image and the methods' composites; :func:`run_landcover` classifies
    them with a forest trained on ``train`` (the same seeded split for every cut).

    Args:
        archive: The archive.
        tile: The tile.
        train: The clear product the forest learns from.
        test: The clear product that is cut and reconstructed.
        labels: The label map (a raster on the grid, or an ``(H, W)`` array).
        cuts: The cut masks.
        out_dir: Output folder.
        options: The quality benchmark's options (methods, fill...).
        seed: Seed of the split and of the forest.
        trees: Trees of the forest.
        overcast: The overcast product whose real values fill the cut clouds (the
            ``overcast`` fill) when given.
        name: Stem of the output files.

    Returns:
        ``{"json": ..., "md": ...}``.
    """
    import dataclasses
    import json

    from decloud.benchmark.quality import CutFill, QualityOptions, run_quality
    from decloud.keys import decode_s2
    from decloud.writers import atomic_file

    options = options or QualityOptions(raw=False)
    if overcast is not None:
        options = dataclasses.replace(options, fill=CutFill("overcast", overcast))
    grid = test.grid()
    label_map = np.asarray(labels) if isinstance(labels, np.ndarray) \
        else read_labels(labels, grid)
    results: list[LandcoverResult] = []
    cut_info: list[dict[str, Any]] = []

    def on_scene(scene: CutScene, bands: tuple[str, ...],
                 predictions: dict[str, np.ndarray]) -> None:
        sel = [scene.bands.index(b) for b in bands]
        truth = decode_s2(scene.truth[..., sel])
        cloudy = np.moveaxis(scene.target.read(list(bands), grid), 0, -1)
        train_image = np.moveaxis(train.read(list(bands), grid), 0, -1)
        recon = {k: v for k, v in predictions.items() if k.endswith("+composite")}
        result = run_landcover(train_image, label_map, truth, cloudy, recon, label_map,
                               scene.cut.cut, seed=seed, trees=trees)
        result.meta = {"cut": scene.cut.name, "cut_percent": round(100 * scene.fraction, 3),
                       "bands": list(bands)}
        results.append(result)
        cut_info.append(result.meta)

    run_quality(archive, tile, cuts, Path(out_dir) / "work", options, references=[test],
                on_scene=on_scene)
    out_dir = Path(out_dir)
    summary = summarize_landcover(results)
    methods = [(k, v) for k, v in summary.items() if k not in ("clear truth", "cloudy")
               and v["recovered"] is not None]
    best = max(methods, key=lambda kv: kv[1]["recovered"]) if methods else None
    verdict = ("not evaluated: no method ran or no gap" if best is None else
               f"{'MET' if best[1]['recovered'] >= 0.9 else 'NOT MET'}: best {best[0]} "
               f"recovers {100 * best[1]['recovered']:.1f} % of the gap on average")
    meta = {"tile": tile, "train": train.name, "test": test.name, "seed": seed,
            "trees": trees, "fill": options.fill.describe(), "cuts": len(results),
            "train_pixels": results[0].train_pixels if results else 0,
            "classes": results[0].classes if results else []}
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md"}
    with atomic_file(paths["json"], overwrite=True) as tmp:
        tmp.write_text(json.dumps({"meta": meta, "goal": GOAL, "verdict": verdict,
                                   "summary": summary,
                                   "cuts": [{**r.meta, "rows": r.rows} for r in results]},
                                  indent=1), encoding="utf-8")
    head = ["image", "mean OA", "mean kappa", "test px (all cuts)", "mean gap recovered"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for image, v in summary.items():
        rec = "n/a" if v["recovered"] is None else f"{100 * v['recovered']:.1f} %"
        lines.append(f"| {image} | {v['oa']:.4f} | {v['kappa']:.4f} | {v['n_pixels']} | "
                     f"{rec} |")
    text = [f"# Land-cover check ({tile})", "",
            *(f"- {k}: {v}" for k, v in meta.items()), "",
            "## Mean over the cuts", "", *lines, "", f"{GOAL} **{verdict}**.", ""]
    for res in results:
        text += [f"## Cut {res.meta['cut']} ({res.meta['cut_percent']:.1f} %)", "",
                 landcover_markdown(res)]
    with atomic_file(paths["md"], overwrite=True) as tmp:
        tmp.write_text("\n".join(text), encoding="utf-8")
    return paths
