"""Train every named model briefly on the real sample data: a sanity check, not accuracy.

The real data are the product fixtures of ``tests/data/archive``, built from
``../shared/data`` by ``tests/data/make_fixtures.py`` (so this script runs on a clone
without the shared folder):

* **Belgium**, tile T31UFS (openEO GFMap test data, ``gfmap_belgium``): 12 ESA SAFE L2A
  dates of April 2023 with only B04, B08 (10 m), B11 (20 m) and SCL, and 10 S1Tiling
  VV/VH dates; 60 x 66 px, no DEM.
* **Slovenia**, tile T33TVM (eo-learn example data, ``eolearn_slovenia``): 5 THEIA dates
  of July-September 2015 with every band (L1C reflectances), real s2cloudless masks
  (3 clear dates, 2 overcast), a DEM, no S1; 100 x 100 px.

What it does:

1. Indexes the archive into a catalog (16 px patches) in a work folder (``--work``, a
   temporary folder by default).
2. Writes one acquisition layout per (region, kind of model) into the work folder and
   prints it: Meraner-like single-date, the demo's OS2 (``pipelines/demo-os2-belgium.yaml``)
   and a 6-date monthly layout fitting April 2023 for Belgium; a single-date and a
   gap-filling layout for Slovenia. Each gets one dataset (``plan_dataset`` and
   ``write_dataset``: 32 px samples, up to ``--samples``, splits train 0.75 / valid
   0.25 by 1-position blocks without buffer, seed 0).
3. Adapts each named model of ``models/`` (:func:`decloud.models.list_configs`) to the
   data, keeping its architecture and widths: Belgium has only B04/B08 and B11 and no
   DEM, so ``s2_bands``, ``s2_20m_bands`` and ``dem`` are overridden where they differ.
   Models that need what a region lacks (S1 in Slovenia, 6 dates out of 5) are not run
   there, and the results say why.
4. Trains each with :func:`decloud.training.train` (batch 8, the model's own loss
   and learning rate, seed 0, flips and rotations, every planned epoch run, the best
   epoch's weights kept; no previews or TensorBoard logs) and evaluates it, and gap
   filling adapted to the same bands, on the valid split with
   :func:`decloud.evaluation.evaluate_model`. Every trained model whose inputs the
   gap-filling dataset of its region holds is also evaluated on that dataset's valid
   split (the same patch positions), next to gap filling.
5. Writes ``results/train_real.json``, ``results/train_real.md`` and the learning curves
   ``results/train_real_curves.png``.

Before starting, the script waits until no ``bench_train`` benchmark runs (``pgrep -f``),
as both compete for the machine's cores.

Usage::

    python benchmarks/train_real.py [--work DIR] [--epochs N] [--samples N] [--only NAME]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import keras
import numpy as np
import yaml
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    git_commit,
    load_average,
    log,
    machine_info,
    machine_line,
    now_utc,
    package_versions,
    source_digest,
    write_results,
)
from _common import (
    others_running as _others,  # benchmarks/ is sys.path[0] when run as a script
)

from decloud import Archive
from decloud.constants import MaskClass
from decloud.datasets import PlanOptions, WriteOptions, plan_dataset, write_dataset
from decloud.datasets.plan import DatasetPlan
from decloud.datasets.reader import TrainingDataset, load_manifest
from decloud.errors import DecloudError
from decloud.evaluation import evaluate_model
from decloud.index.catalog import Catalog
from decloud.index.search import TileStack, TupleSearch
from decloud.layouts import Layout, load_layout
from decloud.models import ModelConfig, build, list_configs
from decloud.models.config import GapfillConfig, ResNetConfig, UNetConfig
from decloud.training import TrainOptions, train

#: The sample archive: real data, built from ../shared/data by make_fixtures.py.
ARCHIVE = REPO_ROOT / "tests" / "data" / "archive"
#: The demo's OS2 layout for the Belgian sample.
OS2_LAYOUT = REPO_ROOT / "pipelines" / "demo-os2-belgium.yaml"
#: Catalog patch side (10 m px): the sample tiles are 60-100 px wide.
CATALOG_PATCH = 16
#: Dataset sample side (10 m px), centred on the catalog patches.
PATCH = 32
#: Split fractions (random blocks of one patch position, no buffer).
SPLITS = {"train": 0.75, "valid": 0.25}
SPLIT_BLOCK = 1
SPLIT_BUFFER = 0
SEED = 0
BATCH = 8
#: Default epochs, and the caps of the models too slow on 2 CPU cores for them.
EPOCHS = 20
EPOCH_CAPS = {"dsen2cr": 4, "dsen2cr_nosar": 4, "msop_unet": 12}
#: Samples asked per dataset (fewer when the tuples run short).
SAMPLES = 64
#: Benchmarks this one waits for (they compete for the cores).
OTHER_BENCHMARKS = ("bench_train",)
#: Mask classes counted as cloud (as the metrics' ``masked`` region counts them).
CLOUD_CLASSES = (int(MaskClass.CLOUD), int(MaskClass.CIRRUS), int(MaskClass.SHADOW))
#: Main metrics reported in the tables.
TABLE_METRICS = ("mae", "rmse", "psnr", "ssim", "sam")
#: The statement every result file starts with.
DISCLAIMER = ("These datasets are tiny (tens of 32 x 32 samples from 1 km of real data): this "
              "is a sanity check that every model trains and beats or matches gap filling "
              "where it can, not a claim of accuracy.")
PROVENANCE = ("Real data: the product fixtures of `tests/data/archive`, built from "
              "`../shared/data` by `tests/data/make_fixtures.py` (see `tests/data/README.md`): "
              "Belgium = `gfmap_belgium` (openEO GFMap test data), Slovenia = "
              "`eolearn_slovenia` (eo-learn example data).")


# --------------------------------------------------------------------------------------
# Regions and layouts


@dataclass(frozen=True)
class Region:
    """A tile of the sample archive and what it holds.

    Attributes:
        key: Short name used in paths and tables.
        tile: Tile id.
        title: Human-readable name.
        source: Where its data come from.
        bands10: S2 10 m bands present.
        bands20: S2 20 m bands present.
        s1: Whether S1 images exist.
        dem: Whether a DEM exists.
        dates: Number of S2 dates.
    """

    key: str
    tile: str
    title: str
    source: str
    bands10: tuple[str, ...]
    bands20: tuple[str, ...]
    s1: bool
    dem: bool
    dates: int


BELGIUM = Region(
    "belgium", "T31UFS", "Belgium (T31UFS, April 2023)",
    "../shared/data/gfmap_belgium (openEO GFMap tests): 12 SAFE L2A dates with B04, B08, "
    "B11, SCL only; 10 S1 VV/VH dates; 60 x 66 px; no DEM",
    ("B04", "B08"), ("B11",), s1=True, dem=False, dates=12)
SLOVENIA = Region(
    "slovenia", "T33TVM", "Slovenia (T33TVM, July-September 2015)",
    "../shared/data/eolearn_slovenia (eo-learn example data): 5 THEIA dates, all bands (L1C "
    "reflectances), real s2cloudless masks (3 clear, 2 overcast), DEM; no S1; 100 x 100 px",
    ("B02", "B03", "B04", "B08"), ("B05", "B06", "B07", "B8A", "B11", "B12"), s1=False,
    dem=True, dates=5)
REGIONS = (BELGIUM, SLOVENIA)


def _s2(cloud: tuple[int, int]) -> dict[str, Any]:
    """An S2 requirement of a layout: the cloud range, in %."""
    return {"cloud": list(cloud)}


_S1 = {"max_gap_hours": 72}


def layout_texts() -> dict[str, tuple[Region, str]]:
    """The layouts of this benchmark, by name: their region and YAML text.

    Belgium: Meraner-like single date (cloudy t with S1 within 72 h, clear target within
    +/-240 h), the demo's OS2 layout (copied), and 6 dates t0..t5 fitting one month
    (S1 within 72 h, clear target in [48, 552] h). Slovenia: a cloudy t with a clear
    target within +/-720 h, and the same with clear t-1 and t+1 for gap filling (t-1
    reaches 42 days back: the clear date before the overcast ones is 20 to 40 days away),
    whose windows keep the target apart from t+1: the index lets two acquisitions take
    one image, and a target that is also an input would flatter gap filling. Only
    t = 2015-08-20 has such tuples (t-1 07-11, t+1 08-30, target 09-09).
    """
    meraner = {
        "name": "real-meraner-belgium",
        "description": "Single date: cloudy S2 + S1 at t, clear target within +/-240 h",
        "acquisitions": {
            "t": {"reference": True, "s2": _s2((1, 100)), "s1": _S1},
            "target": {"window_hours": [-240, 240], "s2": _s2((0, 10))},
        },
        "dem": False,
    }
    windows = [(48, 96), (96, 168), (168, 264), (264, 384), (384, 552)]
    monthly: dict[str, Any] = {"t0": {"reference": True, "s2": _s2((0, 100)), "s1": _S1}}
    for i, window in enumerate(windows, start=1):
        monthly[f"t{i}"] = {"window_hours": list(window), "s2": _s2((0, 100)), "s1": _S1}
    monthly["target"] = {"window_hours": [48, 552], "s2": _s2((0, 10))}
    monthly6 = {
        "name": "real-monthly6-belgium",
        "description": "6 S2+S1 dates t0..t5 over 23 days of April 2023, clear target "
                       "among them",
        "acquisitions": monthly,
        "dem": False,
    }
    single = {
        "name": "real-single-slovenia",
        "description": "Single date: cloudy S2 at t, clear target within +/-720 h",
        "acquisitions": {
            "t": {"reference": True, "s2": _s2((1, 100))},
            "target": {"window_hours": [-720, 720], "s2": _s2((0, 10))},
        },
        "dem": False,
    }
    gapfill = {
        "name": "real-gapfill-slovenia",
        "description": "Cloudy t between clear t-1 (1-42 days before) and t+1 (1-12.5 days "
                       "after), clear target 12.5-30 days after: never an input's image",
        "acquisitions": {
            "tm1": {"window_hours": [-1008, -24], "s2": _s2((0, 10))},
            "t": {"reference": True, "s2": _s2((1, 100))},
            "target": {"window_hours": [301, 720], "s2": _s2((0, 10))},
            "tp1": {"window_hours": [24, 300], "s2": _s2((0, 10))},
        },
        "dem": False,
    }

    def dump(data: Mapping[str, Any], comment: str) -> str:
        """YAML text of a layout, after a comment line."""
        body = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None, width=90)
        return f"# {comment}\n{body}"

    return {
        "real-meraner-belgium": (BELGIUM, dump(
            meraner, "Written by benchmarks/train_real.py: Meraner-like, fitted to April 2023")),
        "demo-os2-belgium": (BELGIUM, OS2_LAYOUT.read_text(encoding="utf-8")),
        "real-monthly6-belgium": (BELGIUM, dump(
            monthly6, "Written by benchmarks/train_real.py: 6 dates fitted to April 2023")),
        "real-single-slovenia": (SLOVENIA, dump(
            single, "Written by benchmarks/train_real.py: the Slovenian overcast dates")),
        "real-gapfill-slovenia": (SLOVENIA, dump(
            gapfill, "Written by benchmarks/train_real.py: gap filling on Slovenia")),
    }


#: The layout where each region evaluates gap filling (it has t-1 and t+1).
GAPFILL_LAYOUT = {"belgium": "demo-os2-belgium", "slovenia": "real-gapfill-slovenia"}


# --------------------------------------------------------------------------------------
# Models: where each runs, and its adaptation to the data


def _dates(config: ModelConfig) -> list[str]:
    """The acquisitions a model takes images of."""
    net = config.network
    if isinstance(net, UNetConfig):
        return list(net.dates)
    if isinstance(net, ResNetConfig):
        return [net.date]
    return [net.before, net.after]


def _needs_s1(config: ModelConfig) -> bool:
    """Whether a model takes S1 images."""
    net = config.network
    if isinstance(net, UNetConfig):
        return any("s1" in s for s in net.sources.values())
    return isinstance(net, ResNetConfig) and net.sar


def _uses_20m(config: ModelConfig) -> bool:
    """Whether a model takes or gives 20 m bands."""
    net = config.network
    if isinstance(net, ResNetConfig):
        return bool(net.s2_20m_bands)
    if isinstance(net, UNetConfig):
        return net.output_20m or any("s2_20m" in s for s in net.sources.values())
    return False


def assign(config: ModelConfig, region: Region) -> tuple[str | None, str]:
    """The layout a model trains (or, gap filling, is evaluated) on in a region.

    Returns:
        The layout name (None: not run there) and why.
    """
    dates = _dates(config)
    if isinstance(config.network, GapfillConfig):
        return GAPFILL_LAYOUT[region.key], "gap filling: evaluated only"
    if _needs_s1(config) and not region.s1:
        return None, "needs S1; the tile has none"
    if len(dates) > region.dates:
        return None, f"needs {len(dates)} dates; the tile has {region.dates}"
    if region is SLOVENIA:
        if dates == ["t"]:
            return "real-single-slovenia", "S2-only single date"
        return None, "no layout of its dates here"
    if dates == ["t"]:
        return "real-meraner-belgium", "single date"
    if dates == ["tm1", "t", "tp1"]:
        return "demo-os2-belgium", "t-1, t, t+1"
    if dates == [f"t{i}" for i in range(6)]:
        return "real-monthly6-belgium", "6 dates"
    return None, f"no layout with dates {dates} here"


def _kept(bands: Sequence[str], present: Sequence[str]) -> list[str]:
    """The bands that are present, in the model's order."""
    return [b for b in bands if b in present]


def adapt(config: ModelConfig, region: Region) -> tuple[ModelConfig, list[str]]:
    """The model with the bands and DEM of a region; the architecture and widths kept.

    Returns:
        The adapted configuration and what changed (empty: used as it is).

    Raises:
        ValueError: The region holds none of the model's bands.
    """
    net = config.network
    update: dict[str, Any] = {}
    changes: list[str] = []

    def bands(name: str, wanted: Sequence[str], present: Sequence[str]) -> None:
        """Override a band list with the bands the region has."""
        kept = _kept(wanted, present)
        if not kept:
            raise ValueError(f"{config.name}: none of its {name} {list(wanted)} is in the data")
        if kept != list(wanted):
            update[name] = kept
            changes.append(f"{name} {' '.join(wanted)} -> {' '.join(kept)}")

    bands("s2_bands", net.s2_bands, region.bands10)
    if _uses_20m(config) and not isinstance(net, GapfillConfig):
        bands("s2_20m_bands", net.s2_20m_bands, region.bands20)
    if isinstance(net, UNetConfig) and net.dem and not region.dem:
        update["dem"] = False
        changes.append("dem true -> false")
    if not update:
        return config, []
    network = net.model_copy(update=update)
    adapted = config.model_copy(update={"network": type(net).model_validate(
        network.model_dump())})
    return adapted, changes


# --------------------------------------------------------------------------------------
# Waiting for the other benchmarks


def others_running() -> list[str]:
    """``pid command`` of the other benchmarks running now."""
    return _others(OTHER_BENCHMARKS)


def wait_for_quiet(max_wait: float, poll: float = 15.0) -> dict[str, Any]:
    """Wait until no ``bench_train`` process runs, at most ``max_wait`` seconds.

    Returns:
        Seconds waited, what was running at first, and whether it still runs.
    """
    t0 = time.monotonic()
    first = others_running()
    if not first:
        print("no bench_train process running: no wait", flush=True)
        return {"waited_s": 0.0, "running_at_start": [], "still_running": False}
    print(f"waiting for {'; '.join(first)} to finish", flush=True)
    others = first
    while others and time.monotonic() - t0 < max_wait:
        time.sleep(poll)
        others = others_running()
    waited = time.monotonic() - t0
    if others:
        print(f"gave up waiting after {waited:.0f} s: timings are disturbed", flush=True)
    else:
        print(f"waited {waited:.0f} s for bench_train to finish", flush=True)
    return {"waited_s": round(waited, 1), "running_at_start": first,
            "still_running": bool(others)}


# --------------------------------------------------------------------------------------
# Catalog and datasets


@contextmanager
def timed(durations: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of a block under ``name``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        durations[name] = round(time.perf_counter() - t0, 2)


def open_catalog(folder: Path) -> Catalog:
    """The catalog of the sample archive in ``folder`` (built, or completed, here)."""
    archive = Archive.from_root(ARCHIVE)
    catalog = Catalog.open(folder) if (folder / "catalog.sqlite").is_file() else \
        Catalog.create(folder, patch_size=CATALOG_PATCH)
    report = catalog.add(archive)
    if report.failed:
        raise DecloudError(f"products failed to index: {report.failed}", path=ARCHIVE)
    return catalog


@dataclass
class DatasetInfo:
    """A written dataset and facts about its samples.

    Attributes:
        layout: Layout name.
        region: Its region.
        path: Dataset folder.
        counts: Samples per split.
        positions: Distinct patch positions per split.
        tuples: Tuples the layout has in the tile (all positions).
        references: Distinct reference dates among the samples.
        target_is_input: Per acquisition, samples whose target is that acquisition's
            S2 image (the index does not forbid it).
        valid_cloud: Per acquisition, the percentage of the valid split's valid pixels
            that are cloud, cirrus or shadow.
        layout_yaml: The layout as written.
        keys: The dataset keys.
        seconds: Time to plan and write it.
    """

    layout: str
    region: Region
    path: Path
    counts: dict[str, int]
    positions: dict[str, int]
    tuples: int
    references: list[str]
    target_is_input: dict[str, int]
    valid_cloud: dict[str, float]
    layout_yaml: str
    keys: list[str]
    seconds: float = 0.0

    def has_mask(self, acquisition: str) -> bool:
        """Whether the samples hold the cloud mask of an acquisition."""
        return f"s2_mask_{acquisition}" in self.keys


def _tuples(catalog: Catalog, layout: Layout, tile: str) -> int:
    """Tuples of a layout in a tile, over every patch position."""
    search = TupleSearch(TileStack.load(catalog, tile), layout.resolve(np.random.default_rng(0)))
    return int(search.counts().sum())


def _sample_facts(plan: DatasetPlan) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """Positions per split, reference dates, and samples whose target is an input's image."""
    positions = {name: len({(s.row, s.col) for s in plan.split(name)})
                 for name in plan.split_names}
    reference = plan.layout_model().reference_name
    ids = {s.s2.get(reference) for s in plan.samples}
    refs = sorted({plan.products[i]["acquired"][:10] for i in ids if i is not None})
    same: dict[str, int] = {}
    for s in plan.samples:
        target = s.s2.get("target")
        for acq, pid in s.s2.items():
            if acq != "target" and pid is not None and pid == target:
                same[acq] = same.get(acq, 0) + 1
    return positions, refs, same


def cloud_percent(path: Path, split: str = "valid") -> dict[str, float]:
    """Per acquisition, the % of a split's valid mask pixels that are cloud or shadow."""
    data = TrainingDataset(path, split)
    keys = [k for k in data.keys if k.startswith("s2_mask_")]
    if not len(data) or not keys:
        return {}
    masks = data.batch(np.arange(len(data)), keys=keys)
    out = {}
    for key in keys:
        mask = masks[key]
        valid = mask != int(MaskClass.NODATA)
        cloud = np.isin(mask, CLOUD_CLASSES) & valid
        out[key.removeprefix("s2_mask_")] = round(100.0 * cloud.sum() / max(1, valid.sum()), 1)
    return out


def make_dataset(catalog: Catalog, name: str, region: Region, text: str, work: Path,
                 samples: int) -> DatasetInfo:
    """Write the layout file and its dataset (kept when complete from an earlier run)."""
    layout_path = work / "layouts" / f"{name}.yaml"
    layout_path.parent.mkdir(parents=True, exist_ok=True)
    layout_path.write_text(text, encoding="utf-8")
    layout = load_layout(layout_path)
    t0 = time.perf_counter()
    plan = plan_dataset(catalog, layout, PlanOptions(
        samples, (region.tile,), seed=SEED, splits=SPLITS, split_block=SPLIT_BLOCK,
        split_buffer=SPLIT_BUFFER, patch_size=PATCH))
    folder = write_dataset(catalog, plan, work / "datasets" / name, WriteOptions(
        patch_size=PATCH, shard_size=samples, progress=False, overwrite=True,
        bands10=tuple(region.bands10), bands20=tuple(region.bands20)))
    seconds = time.perf_counter() - t0
    manifest = load_manifest(folder)
    counts = {k: int(v["samples"]) for k, v in manifest["splits"].items()}
    positions, refs, same = _sample_facts(plan)
    return DatasetInfo(name, region, folder, counts, positions,
                       _tuples(catalog, layout, region.tile), refs, same,
                       cloud_percent(folder), text, list(manifest["keys"]),
                       round(seconds, 2))


# --------------------------------------------------------------------------------------
# Training and evaluation


@dataclass
class Run:
    """One model in one region: its adaptation, training and metrics.

    Attributes:
        model: Model name.
        region: Region key.
        layout: Layout (dataset) it trained on, None when not run.
        reason: Why this layout, or why not run.
        cloudy: The reconstructed acquisition (``training.cloudy``), whose clouds make
            the ``masked`` region.
        changes: Adaptations to the data (empty: as configured).
        params: Trainable and other weights, all counted.
        loss: Training loss.
        learning_rate: Initial learning rate.
        epochs: Epochs run.
        history: The learning curve (``loss``, ``val_loss`` per epoch).
        best_epoch: Epoch whose weights were kept (from 1).
        metrics: Metrics on its dataset's valid split.
        gapfill_split: Metrics on the region's gap-filling dataset's valid split.
        seconds: Training (and evaluation) time.
        error: Why it failed, if it did.
    """

    model: str
    region: str
    layout: str | None
    reason: str
    cloudy: str = "t"
    changes: list[str] = field(default_factory=list)
    params: int | None = None
    loss: str | None = None
    learning_rate: float | None = None
    epochs: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    gapfill_split: dict[str, float] | None = None
    gapfill_split_note: str = ""
    seconds: float = 0.0
    error: str | None = None


def _finite(values: Sequence[float]) -> list[float]:
    """The finite values of a learning curve."""
    return [v for v in values if isinstance(v, float) and math.isfinite(v)]


def train_one(run: Run, config: ModelConfig, data: DatasetInfo, work: Path,
              epochs: int) -> keras.Model | None:
    """Train, record the curve and valid metrics in ``run``; the kept model (None: failed)."""
    run.loss = config.training.loss
    run.cloudy = config.training.cloudy
    run.learning_rate = config.training.learning_rate
    out = work / "runs" / f"{run.region}_{run.model}"
    t0 = time.perf_counter()
    try:
        result = train(config, data.path, out, TrainOptions(
            epochs=epochs, batch_size=BATCH, seed=SEED, patience=epochs, resume=False,
            previews=False, tensorboard=False, progress=False))
        model = keras.saving.load_model(result.model_path, compile=False)
    except Exception as err:  # noqa: BLE001 - a model that fails is reported, not fatal
        run.error = f"{type(err).__name__}: {err}"
        run.seconds = round(time.perf_counter() - t0, 1)
        log(f"  {run.model}: FAILED: {run.error}")
        return None
    run.seconds = round(time.perf_counter() - t0, 1)
    run.params = int(model.count_params())
    run.history = {k: v for k, v in result.history.items() if k in ("epoch", "loss", "val_loss")}
    run.epochs = len(result.history.get("loss", []))
    run.best_epoch = result.best_epoch
    run.metrics = result.metrics.get("valid", {})
    return model


def evaluate_on(model: keras.Model, config: ModelConfig, data: DatasetInfo) -> dict[str, float]:
    """Metrics of a model on a dataset's valid split (:func:`evaluate_model`)."""
    _, spec = build(config)
    return evaluate_model(model, spec, data.path, "valid", BATCH)


# --------------------------------------------------------------------------------------
# Results


def _f(value: float | None, digits: int = 4) -> str:
    """A table cell of a number (``-`` when missing)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _metric_cells(metrics: Mapping[str, float] | None, *, masked: bool = True) -> list[str]:
    """Table cells of the main metrics; ``masked=False``: the layout has no cloudy t."""
    if not metrics:
        return ["n/a"] * (2 * len(TABLE_METRICS))
    cells = []
    for kind in TABLE_METRICS:
        digits = 2 if kind in ("psnr", "sam") else 4
        cells.append(_f(metrics.get(kind), digits))
        cells.append(_f(metrics.get(f"{kind}_masked"), digits) if masked else "n/a")
    return cells


_METRIC_HEADER = " | ".join(f"{k.upper()} | {k.upper()} masked" for k in TABLE_METRICS)


def _row(cells: Sequence[str]) -> str:
    """A Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def region_tables(region: Region, runs: Sequence[Run], gapfill: Mapping[str, Any],
                  datasets: Mapping[str, DatasetInfo]) -> list[str]:
    """The Markdown tables of one region: per layout, then against gap filling."""
    lines = [f"### {region.title}", "",
             "Each model on the valid split of its own layout's dataset; gap filling on the "
             "same split where the layout has t-1 and t+1 (n/a otherwise).", "",
             _row(["layout", "model", "adapted to the data", "params", "loss", "epochs",
                   "best epoch", "time (s)", "final train loss", "best val loss",
                   *_METRIC_HEADER.split(" | ")]),
             _row(["---"] * 3 + ["---:"] * 7 + ["---:"] * (2 * len(TABLE_METRICS)))]
    layouts = [n for n, d in datasets.items() if d.region is region]
    for name in layouts:
        for run in (r for r in runs if r.layout == name and r.region == region.key):
            if not run.history and not run.error:
                continue  # not asked for (--only)
            if run.error:
                lines.append(_row([name, f"`{run.model}`", "; ".join(run.changes) or "no",
                                   "-", run.loss or "-", "-", "-", f"{run.seconds:.0f}", "-",
                                   f"failed: {run.error[:120]}",
                                   *["-"] * (2 * len(TABLE_METRICS))]))
                continue
            train_loss = _finite(run.history.get("loss", []))
            val_loss = _finite(run.history.get("val_loss", []))
            lines.append(_row([
                name, f"`{run.model}`", "; ".join(run.changes) or "no",
                f"{(run.params or 0) / 1e6:.2f} M", run.loss or "-", str(run.epochs),
                str(run.best_epoch), f"{run.seconds:.0f}",
                _f(train_loss[-1] if train_loss else None),
                _f(min(val_loss) if val_loss else None),
                *_metric_cells(run.metrics, masked=datasets[name].has_mask(run.cloudy))]))
        gf = gapfill.get(f"{region.key}/{name}")
        lines.append(_row([name, "**gap filling**",
                           ("; ".join(gf["changes"]) or "no") if gf else "-", "0", "-", "-",
                           "-", "-", "-", "-", *_metric_cells(gf["metrics"] if gf else None)]))
    gf_layout = GAPFILL_LAYOUT[region.key]
    gf = gapfill.get(f"{region.key}/{gf_layout}")
    lines += ["", f"Every model that takes the `{gf_layout}` dataset, on its valid split (the "
              "same patch positions as every valid split of the region), against gap "
              "filling:", "",
              _row(["model", "trained on", *_METRIC_HEADER.split(" | "),
                    "beats gap filling (MAE, MAE masked)"]),
              _row(["---"] * 2 + ["---:"] * (2 * len(TABLE_METRICS)) + ["---"])]
    for run in runs:
        if run.region != region.key or run.gapfill_split is None:
            continue
        verdict = "-"
        if gf:
            verdict = ", ".join(
                "yes" if run.gapfill_split[k] <= gf["metrics"][k] else "no"
                for k in ("mae", "mae_masked"))
        lines.append(_row([f"`{run.model}`", run.layout or "-",
                           *_metric_cells(run.gapfill_split), verdict]))
    if gf:
        lines.append(_row(["**gap filling**", "-", *_metric_cells(gf["metrics"]), "-"]))
    lines += [""] + [f"Not in this table: `{r.model}` ({r.gapfill_split_note})." for r in runs
                     if r.region == region.key and r.gapfill_split_note]
    return lines


def markdown(res: dict[str, Any], runs: Sequence[Run], gapfill: Mapping[str, Any],
             datasets: Mapping[str, DatasetInfo]) -> str:
    """The human-readable report."""
    env = res["environment"]
    lines = ["# Named models trained on the real sample data", "", f"**{DISCLAIMER}**", "",
             PROVENANCE, "",
             f"- Machine: {machine_line(env['machine'])}; load average before "
             f"{env['load_before']}, after {env['load_after']}",
             f"- Commit {env['commit']} (decloud sources {env['source_digest']}), run "
             f"{env['date']}, total {res['durations']['total_s'] / 60:.1f} min "
             f"(catalog {res['durations']['catalog_s']:.1f} s, datasets "
             f"{res['durations']['datasets_s']:.1f} s, training and evaluation "
             f"{res['durations']['models_s']:.0f} s)",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"- Waited {env['wait']['waited_s']:.0f} s for other benchmarks"
             + (" (still running: timings disturbed)" if env["wait"]["still_running"] else ""),
             "", "## Settings", "",
             f"- Catalog of `tests/data/archive` with {CATALOG_PATCH} px patches; samples of "
             f"{PATCH} x {PATCH} px centred on them (they reach 8 px past the catalog patch "
             "and past the tile's edge, where they are nodata), up to "
             f"{res['settings']['samples']} per dataset, seed {SEED}.",
             "- Splits train 0.75 / valid 0.25 by random blocks of one patch position, no "
             "buffer: **valid samples overlap train ones by up to 8 px at their edges and "
             "share their dates**, so the valid split is not independent of the train one.",
             f"- Training: `decloud.training.train`, batch {BATCH}, the model's own "
             "loss (CARL for `dsen2cr*`, L1 otherwise) and learning rate (Adam, cosine decay "
             "to 1 %), flips and rotations, every planned epoch run (patience = epochs), "
             "the best validation epoch's weights kept; "
             f"{res['settings']['epochs']} epochs, capped at "
             + ", ".join(f"{v} for `{k}`" for k, v in res["settings"]["epoch_caps"].items())
             + " to fit about 15 minutes on 2 CPU cores.",
             "- Metrics (`decloud.evaluation.evaluate_model`): normalised reflectance "
             "(data range 1), all valid pixels and `masked` = under the cloudy input's "
             "clouds and shadows (n/a where the layout has no `t`: `monthly6*`); PSNR in dB, "
             "SAM in degrees. Losses differ between models "
             "(CARL, L1, and L1 summed over two outputs for `msop_allbands`): compare "
             "metrics, not losses.",
             "- Adapted models keep their architecture and widths; only the bands they take "
             "and give (the Belgian sample has B04, B08 and B11 only) and the DEM (none for "
             "T31UFS) change.",
             "", "## Datasets", "",
             _row(["layout", "region", "tuples in the tile", "train samples (positions)",
                   "valid samples (positions)", "reference dates",
                   "samples whose target is another acquisition's image",
                   "valid split: cloud % per acquisition"]),
             _row(["---"] * 2 + ["---:"] * 3 + ["---"] * 3)]
    for name, d in datasets.items():
        same = ", ".join(f"{a}: {n}" for a, n in d.target_is_input.items()) or "none"
        lines.append(_row([f"`{name}`", d.region.key, str(d.tuples),
                           f"{d.counts.get('train', 0)} ({d.positions.get('train', 0)})",
                           f"{d.counts.get('valid', 0)} ({d.positions.get('valid', 0)})",
                           ", ".join(d.references), same,
                           ", ".join(f"{a} {v:.0f}" for a, v in d.valid_cloud.items())]))
    shared = [f"`{n}` ({sum(d.target_is_input.values())} of {sum(d.counts.values())} "
              "samples)" for n, d in datasets.items() if d.target_is_input]
    lines += ["", "- The index lets two acquisitions take the same S2 image: where the "
              "target is also an input's image, a model (or gap filling) sees the answer "
              "among its inputs, which flatters it. Here: " + (", ".join(shared) or "none")
              + ". The demo's OS2 layout (used as it is) lets the target's window overlap "
              "t-1's and t+1's; in the monthly layout the target's window is covered by "
              "t1..t5's by design (a clear image of the period); `real-gapfill-slovenia` is "
              "windowed so that it cannot happen.",
              "- Belgium has only two clear dates (04-05 and 04-15) and every other date is "
              "overcast over the whole sample, so the cloudy `t` is about 100 % cloud and "
              "`masked` metrics equal the others. In `demo-os2-belgium` t-1 and t+1 may be "
              "cloudy (cloud [0, 100]): gap filling interpolates whatever they hold, so it is "
              "a weak baseline there and beating it says little.",
              "- In Slovenia t is one of the two dates overcast over the whole tile: "
              "`dsen2cr_nosar` sees nothing of the scene at t, while gap filling sees clear "
              "dates 40 days before and 10 days after; it is not expected to match gap "
              "filling, only to learn something better than its input.",
              "- The layouts are written to the work folder and printed by the script; they "
              "are in `train_real.json` too.", "", "## Results", ""]
    for region in REGIONS:
        lines += [*region_tables(region, runs, gapfill, datasets), ""]
    lines += ["## Learning curves", "",
              "![learning curves](train_real_curves.png)", "",
              "Train and validation loss per epoch, one panel per model (dashed: gap "
              "filling's valid MAE where the model's loss is L1 on one output and the "
              "dataset has t-1/t+1).", "", "## Not run", ""]
    skipped = [r for r in runs if r.layout is None]
    lines += [f"- `{r.model}` in {r.region}: {r.reason}" for r in skipped] or ["- none"]
    failed = [r for r in runs if r.error]
    lines += ["", "## Failures", ""]
    lines += [f"- `{r.model}` in {r.region}: {r.error}" for r in failed] or [
        "- none: every model that could run trained and was evaluated"]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in res["findings"]]
    return "\n".join(lines) + "\n"


def findings(runs: Sequence[Run], gapfill: Mapping[str, Any]) -> list[str]:
    """Plain sentences: who trained, who beats gap filling on the shared valid split."""
    out = []
    trained = [r for r in runs if r.layout and not r.error and r.history]
    improved = []
    for r in trained:
        losses = _finite(r.history.get("loss", []))
        if len(losses) >= 2 and losses[-1] < losses[0]:
            improved.append(r)
    out.append(f"{len(improved)} of {len(trained)} trained models lowered their training "
               "loss from the first to the last epoch"
               + (": all of them." if len(improved) == len(trained) else
                  f"; not: {', '.join(r.model for r in trained if r not in improved)}."))
    val_better = []
    for r in trained:
        val = _finite(r.history.get("val_loss", []))
        if len(val) >= 2 and min(val[1:]) < val[0]:
            val_better.append(r)
    out.append(f"{len(val_better)} of {len(trained)} reached a validation loss below that of "
               "their first epoch"
               + ("." if len(val_better) == len(trained) else
                  f"; not: {', '.join(r.model for r in trained if r not in val_better)}."))
    for region in REGIONS:
        gf = gapfill.get(f"{region.key}/{GAPFILL_LAYOUT[region.key]}")
        if not gf:
            continue
        compared = [r for r in trained if r.region == region.key and r.gapfill_split]
        if not compared:
            continue
        better = [r.model for r in compared if r.gapfill_split
                  and r.gapfill_split["mae"] <= gf["metrics"]["mae"]]
        worse = [r.model for r in compared if r.model not in better]
        out.append(f"{region.title}, valid split of `{GAPFILL_LAYOUT[region.key]}`: gap "
                   f"filling MAE {gf['metrics']['mae']:.4f}; at or below it: "
                   f"{', '.join(better) or 'none'}; above it: {', '.join(worse) or 'none'}.")
    return out


def _clean(value: Any) -> Any:
    """A JSON-ready copy: non-finite floats become None, numpy scalars Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_png(fig: Any, path: Path) -> None:
    """Save a figure as PNG through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=90)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_curves(runs: Sequence[Run], gapfill: Mapping[str, Any], path: Path) -> None:
    """One panel per trained model: train and valid loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [r for r in runs if r.history.get("loss")]
    cols = 4
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, run in zip(axes.ravel(), shown, strict=False):
        epochs = np.arange(1, len(run.history["loss"]) + 1)
        ax.plot(epochs, run.history["loss"], "o-", ms=3, label="train")
        if run.history.get("val_loss"):
            ax.plot(epochs, run.history["val_loss"], "s-", ms=3, label="valid")
        if run.best_epoch:
            ax.axvline(run.best_epoch, color="grey", lw=0.8, ls=":", label="kept")
        gf = gapfill.get(f"{run.region}/{run.layout}")
        if gf and run.loss == "l1" and run.model != "msop_allbands":
            ax.axhline(gf["metrics"]["mae"], color="black", lw=1, ls="--",
                       label="gap filling MAE")
        ax.set_title(f"{run.model} ({run.region}, {run.loss})", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    fig.suptitle("decloud named models on the real sample data: a sanity check, not "
                 "accuracy (tiny datasets)", fontsize=10)
    fig.tight_layout()
    _atomic_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Main


def _epochs(name: str, epochs: int) -> int:
    """Epochs of a model: ``epochs``, capped for the slow ones."""
    return min(epochs, EPOCH_CAPS.get(name, epochs))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 when a model failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="Work folder (catalog, layouts, datasets, runs); default: a "
                             "temporary folder, removed at the end.")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="Epochs per model "
                        f"(capped for {', '.join(EPOCH_CAPS)}).")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="Samples per dataset.")
    parser.add_argument("--only", action="append", default=None, metavar="MODEL",
                        help="Train only these models (repeat); results are then written "
                             "only to a --results folder other than the default.")
    parser.add_argument("--max-wait", type=float, default=3600.0,
                        help="Seconds to wait at most for bench_train to finish.")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="Results folder.")
    args = parser.parse_args(argv)

    wait = wait_for_quiet(args.max_wait)
    load_before = load_average()
    t_start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="decloud_train_real_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    durations: dict[str, float] = {}
    try:
        with timed(durations, "catalog_s"):
            catalog = open_catalog(work / "catalog")
        runs, gapfill, datasets = run_all(catalog, work, args.epochs, args.samples, args.only,
                                          durations)
        catalog.close()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    durations["total_s"] = round(time.perf_counter() - t_start, 1)
    log(f"total {durations['total_s']:.0f} s")
    for run in runs:
        if run.layout is not None:
            log(f"{run.region} {run.model}: {run.epochs} epochs in {run.seconds} s, "
                f"{run.error or run.metrics.get('mae')}")
    if args.only and args.results.resolve() == RESULTS_DIR.resolve():
        return 0

    env = {"machine": machine_info(), "commit": git_commit(), "source_digest": source_digest(),
           "date": now_utc(), "versions": package_versions(
               ("numpy", "rasterio", "decloud", "keras", "tensorflow-cpu", "tensorflow",
                "matplotlib")),
           "keras_backend": keras.backend.backend(), "load_before": load_before,
           "load_after": load_average(), "wait": wait}
    res: dict[str, Any] = {
        "benchmark": "train_real",
        "disclaimer": DISCLAIMER,
        "provenance": PROVENANCE,
        "environment": env,
        "settings": {"catalog_patch": CATALOG_PATCH, "patch": PATCH, "samples": args.samples,
                     "splits": SPLITS, "split_block": SPLIT_BLOCK,
                     "split_buffer": SPLIT_BUFFER, "seed": SEED, "batch_size": BATCH,
                     "epochs": args.epochs, "epoch_caps": EPOCH_CAPS, "augment": True,
                     "patience": "epochs (no early stop)"},
        "durations": durations,
        "datasets": {n: {"region": d.region.key, "tile": d.region.tile, "samples": d.counts,
                         "positions": d.positions, "tuples": d.tuples,
                         "reference_dates": d.references,
                         "target_is_input": d.target_is_input, "write_s": d.seconds,
                         "layout_yaml": d.layout_yaml} for n, d in datasets.items()},
        "regions": {r.key: {"tile": r.tile, "title": r.title, "source": r.source}
                    for r in REGIONS},
        "models": [_clean(vars(r)) for r in runs],
        "gapfill": _clean(dict(gapfill)),
    }
    res["findings"] = findings(runs, gapfill)
    plot_curves(runs, gapfill, args.results / "train_real_curves.png")
    json_path, md_path = write_results("train_real", res, markdown(res, runs, gapfill, datasets),
                                       args.results)
    log(f"wrote {json_path}, {md_path} and {args.results / 'train_real_curves.png'}")
    return 1 if any(r.error for r in runs) else 0


def run_all(catalog: Catalog, work: Path, epochs: int, samples: int, only: list[str] | None,
            durations: dict[str, float]) -> tuple[list[Run], dict[str, Any],
                                                  dict[str, DatasetInfo]]:
    """Write the datasets, train and evaluate every model, evaluate gap filling.

    Returns:
        The runs (trained, failed and not run), gap filling's metrics by
        ``region/layout``, and the datasets by layout name.
    """
    texts = layout_texts()
    for name, (region, text) in texts.items():
        print(f"--- layout {name} ({region.title}) ---\n{text.rstrip()}\n", flush=True)
    configs = list_configs()
    plans: list[tuple[Run, ModelConfig]] = []
    for region in REGIONS:
        for config in configs:
            layout, reason = assign(config, region)
            run = Run(config.name, region.key, layout, reason)
            if layout is not None:
                config, run.changes = adapt(config, region)
            plans.append((run, config))
    wanted = {run.layout for run, config in plans if run.layout and (
        not only or run.model in only or isinstance(config.network, GapfillConfig))}
    datasets: dict[str, DatasetInfo] = {}
    with timed(durations, "datasets_s"):
        for name, (region, text) in texts.items():
            if name in wanted or name == GAPFILL_LAYOUT[region.key]:
                log(f"dataset {name}")
                datasets[name] = make_dataset(catalog, name, region, text, work, samples)
                log(f"  {datasets[name].counts} in {datasets[name].seconds:.1f} s")

    gapfill: dict[str, Any] = {}
    runs: list[Run] = []
    models: dict[tuple[str, str], tuple[keras.Model, ModelConfig]] = {}
    with timed(durations, "models_s"):
        for run, config in plans:
            runs.append(run)
            if run.layout is None or (only and run.model not in only
                                      and not isinstance(config.network, GapfillConfig)):
                if run.layout is None:
                    log(f"{run.region} {run.model}: not run ({run.reason})")
                continue
            data = datasets[run.layout]
            if isinstance(config.network, GapfillConfig):
                runs.pop()
                model, spec = build(config)
                for name, d in datasets.items():
                    if d.region.key != run.region:
                        continue
                    acqs = load_layout(work / "layouts" / f"{name}.yaml").acquisitions
                    if {config.network.before, config.network.after} <= set(acqs):
                        gapfill[f"{run.region}/{name}"] = {
                            "changes": run.changes,
                            "metrics": evaluate_model(model, spec, d.path, "valid", BATCH)}
                continue
            n = _epochs(run.model, epochs)
            log(f"{run.region} {run.model}: {n} epochs on {run.layout} "
                f"({'; '.join(run.changes) or 'as configured'})")
            keras.backend.clear_session()
            model = train_one(run, config, data, work, n)
            if model is not None:
                models[(run.region, run.model)] = (model, config)
                log(f"  {run.seconds:.0f} s, valid MAE {run.metrics.get('mae', math.nan):.4f}")
        # Every trained model on its region's gap-filling dataset, where its inputs are.
        for run in runs:
            key = (run.region, run.model)
            if key not in models:
                continue
            gf_name = GAPFILL_LAYOUT[run.region]
            if run.layout == gf_name:
                run.gapfill_split = run.metrics
                continue
            model, config = models[key]
            try:
                run.gapfill_split = evaluate_on(model, config, datasets[gf_name])
            except DecloudError as err:  # its inputs are not in that dataset
                run.gapfill_split_note = err.message.split(" (keys:")[0]
            except Exception as err:  # noqa: BLE001 - reported, the other results kept
                run.gapfill_split_note = f"{type(err).__name__}: {err}"
    return runs, gapfill, datasets


if __name__ == "__main__":
    sys.exit(main())
