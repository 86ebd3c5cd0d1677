"""The time-series processor: every S2 date of a tile in a date range, resumable.

:func:`run_series` reconstructs each S2 date of a tile within ``[start, end]`` with a
pluggable :class:`DateMethod` (what to run on one date, and on which products):

* :class:`GapFillDates`: per-pixel gap-filling from the tile's other dates
  (:class:`~decloud.processors.gapfill.GapFillMethod`), keeping the date's clear pixels;
* :class:`ModelDates`: a single-date model (:func:`~decloud.processors.single_date.load_method`,
  the products of :func:`~decloud.processors.single_date.single_date_products`).

Any object with the protocol's ``name``, ``parameters`` and ``plan`` plugs in (the
multi-temporal processor, for one). Each date goes through the streaming engine
(:func:`decloud.inference.engine.run`), which writes ``<TILE>_<YYYYMMDD>_<name>.tif``,
its ``_quality.tif`` (and ``_days.tif``) layers, then the completion record ``.json``
last.

Resuming never trusts the mere presence of a file: a date is skipped only when its
completion record parses, is finished, names outputs that exist, and was made by the
same method (its description) from the same inputs; anything else (a truncated COG
without record, a record of other inputs) is redone. The folder's settings go to
``series.json``: a rerun with another method or other parameters into the same folder
is refused (:class:`~decloud.errors.ProcessorRerunError` naming the parameter), as a
training run folder does. A date range may change between runs (extending a series).

A date that fails (a :class:`~decloud.errors.DecloudError`: unreadable product, no S1
image...) is recorded as failed with its reason and the series goes on, unless
``strict``. ``summary.json`` and ``summary.md`` (per date: cloud before, reconstructed
fraction, nodata, time, status) are rewritten after every date, so an interrupted
series still has one. Quicklooks (``<stem>_quicklook.png``: input, output and quality
side by side) are optional. At the end the folder's STAC items (one per output, written
by the engine) are gathered into its ``collection.json``.

With a distributed ``SeriesOptions.execution`` (:class:`decloud.distributed.Execution`:
a LocalCluster, a running scheduler or a SLURM/PBS cluster) each date is a Dask task
running the same per-date code, the model sent by reference and loaded once per worker;
the client gathers the reports and writes the summary and the collection
(:mod:`decloud.distributed.runner`). The outputs are the same bytes either way, but for
their creation and timing entries.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from tqdm import tqdm

from decloud.archive import Archive, normalize_tile
from decloud.constants import S2_NODATA
from decloud.errors import (
    ArgumentError,
    DecloudError,
    InferenceError,
    NoProductError,
    ProcessorRerunError,
)
from decloud.inputs import AcquisitionProducts, InputProducts
from decloud.writers import atomic_file

if TYPE_CHECKING:
    from decloud.distributed.cluster import Execution
    from decloud.grid import Grid
    from decloud.inference.engine import EngineOptions, ProductsSource, RunRecord
    from decloud.inference.method import BlockMethod, KerasMethod
    from decloud.products import S2Product

__all__ = [
    "DateMethod",
    "DatePlan",
    "DateReport",
    "GapFillDates",
    "ModelDates",
    "MultiTemporalDates",
    "SeriesJob",
    "SeriesOptions",
    "is_complete",
    "output_path",
    "quicklook",
    "run_jobs",
    "run_series",
    "write_summary",
]

#: The folder's settings file (a rerun must match it).
SETTINGS_FILE = "series.json"

Status = Literal["done", "complete", "failed"]


@dataclass(frozen=True)
class DatePlan:
    """What the engine runs for one output.

    Attributes:
        method: The block method.
        inputs: The products its keys are read from: one set, or each core block's
            (:data:`decloud.inference.engine.ProductsSource`).
        target: The acquisition whose clear pixels the composite keeps (None: the
            reconstruction everywhere).
        identity: Entries of the completion record (dotted paths such as
            ``extra.neighbours``) that must equal these values for the output to count
            as made by this plan; by default the method's description and, for one set
            of products, the ``inputs`` entry the engine writes for them.
        execute: Makes the output at the path given (another processor's own run, e.g.
            the multi-temporal one, which reads per-block products and writes extra
            layers); by default :func:`decloud.inference.engine.run` with the series'
            engine options.
    """

    method: BlockMethod
    inputs: ProductsSource
    target: str | None
    identity: Mapping[str, Any] | None = None
    execute: Callable[[Path, EngineOptions], RunRecord] | None = None

    def expected(self) -> dict[str, Any]:
        """The record entries that must match, JSON-normalised."""
        if self.identity is not None:
            return {k: _normalised(v) for k, v in self.identity.items()}
        from decloud.inference.engine import describe_inputs

        out = {"method": _normalised(self.method.describe())}
        if isinstance(self.inputs, InputProducts):
            out["inputs"] = _normalised(describe_inputs(self.inputs)[0])
        return out


class DateMethod(Protocol):
    """How a series reconstructs one S2 date: the processor's plug-in."""

    @property
    def name(self) -> str:
        """Suffix of the output names (``<TILE>_<YYYYMMDD>_<name>.tif``)."""
        ...

    def parameters(self) -> dict[str, Any]:
        """JSON-ready settings that decide the outputs (kept in ``series.json``)."""
        ...

    def plan(self, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product], engine: EngineOptions) -> DatePlan:
        """The method and products for ``product`` (``products``: the tile's, in time order).

        ``engine`` is the series' engine options (block size...), for plug-ins that plan
        per block.

        Raises:
            DecloudError: The date cannot be processed (the series records it as failed).
        """
        ...


@dataclass(frozen=True)
class GapFillDates:
    """Gap-fill each date from the tile's S2 dates within ``window_days`` of it.

    Attributes:
        window_days: Dates within this many days are read and may be used.
        buffer: Dilation of clouds, cirrus and shadows, pixels.
        bands: The 10 m bands reconstructed.
        keep_clear: Keep the date's clear pixels bit-identical (mask-guided composite).
    """

    window_days: float = 30.0
    buffer: int = 2
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    keep_clear: bool = True
    name: str = "gapfill"

    def __post_init__(self) -> None:
        if not self.window_days > 0:
            raise ArgumentError(f"window_days {self.window_days} must be > 0",
                                field="window_days")

    def parameters(self) -> dict[str, Any]:
        """The gap-filling settings."""
        return {"method": "gapfill", "window_days": float(self.window_days),
                "buffer": self.buffer, "bands": list(self.bands),
                "keep_clear": self.keep_clear}

    def plan(self, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product], engine: EngineOptions) -> DatePlan:
        """Acquisitions ``d0``, ``d1``... in time order, the date's own among them."""
        from decloud.processors.gapfill import GapFillMethod

        window = timedelta(days=self.window_days)
        series = [p for p in products if abs(p.acquired - product.acquired) <= window]
        names = [f"d{i}" for i in range(len(series))]
        method = GapFillMethod.from_dates([p.acquired for p in series], product.acquired,
                                          bands=self.bands, buffer=self.buffer,
                                          max_days=self.window_days)
        own = next(n for n, p in zip(names, series, strict=True) if p is product)
        inputs = InputProducts({n: AcquisitionProducts(s2=p)
                                for n, p in zip(names, series, strict=True)}, reference="d0")
        return DatePlan(method, inputs, own if self.keep_clear else None)


@dataclass(frozen=True)
class ModelDates:
    """Reconstruct each date with a single-date model (``ssop_unet``, ``dsen2cr``...).

    Attributes:
        method: The model (:func:`decloud.processors.single_date.load_method`).
        max_s1_gap: The S1 image is the tile's nearest within this gap.
        keep_clear: Keep the date's clear pixels bit-identical.
    """

    method: KerasMethod
    max_s1_gap: timedelta = timedelta(days=3)
    keep_clear: bool = True

    def __post_init__(self) -> None:
        """Refuse a model that reads another acquisition than the date's own.

        Raises:
            InferenceError: Not a single-date model (checked once, not once per date).
        """
        from decloud.keys import KeyKind, parse_key
        from decloud.processors.single_date import ACQUISITION

        others = sorted({key.name for key in self.method.input_keys
                         if parse_key(key.name)[0] is not KeyKind.DEM
                         and parse_key(key.name)[1] != ACQUISITION})
        if others:
            raise InferenceError(f"model {self.method.name} reads {', '.join(others)}: not a "
                                 f"single-date model (its keys must be of acquisition "
                                 f"{ACQUISITION!r})", field="model")

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.method.name)

    def parameters(self) -> dict[str, Any]:
        """The model (its checksum) and the S1 gap."""
        described = self.method.describe()
        return {"method": "model", "model": described.get("name", self.name),
                "model_checksum": described.get("model_checksum"),
                "max_s1_gap_hours": self.max_s1_gap.total_seconds() / 3600.0,
                "keep_clear": self.keep_clear}

    def plan(self, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product], engine: EngineOptions) -> DatePlan:
        """The date's S2 product, the nearest S1 image and the DEM, as the model reads."""
        from decloud.processors.single_date import ACQUISITION, single_date_products

        inputs = single_date_products(self.method, archive, tile, product.acquired.date(),
                                      self.max_s1_gap)
        return DatePlan(self.method, inputs, ACQUISITION if self.keep_clear else None)


@dataclass(frozen=True)
class MultiTemporalDates:
    """Reconstruct each date with a multi-temporal model, t-1 and t+1 chosen per block.

    The plug-in of :mod:`decloud.processors.multitemporal`: the neighbours come from
    the catalog's per-patch statistics within the layout's windows
    (:func:`~decloud.processors.multitemporal.plan_multitemporal`), and a date counts
    as complete only when its record holds the same per-block choices (a catalog that
    gained clearer dates since makes it redone).

    Attributes:
        method: The model (:func:`decloud.processors.single_date.load_method`).
        catalog: The catalog folder (``decloud index build``) of the archive.
        layout: The acquisition layout (name or YAML file) choosing the neighbours.
        dem: The tile's DEM, for models that read one.
        max_unusable: Largest cloud + shadow + nodata percentage of a block within
            limits (None: the layout's).
        widen_hours: Hours the windows are widened by for the fallback tier.
        tolerance: Percentage points above the clearest date still counted as clear.
        keep_clear: Keep the date's clear pixels bit-identical.
    """

    method: KerasMethod
    catalog: Path
    layout: str | Path = "os2-occitanie"
    dem: Path | None = None
    max_unusable: float | None = None
    widen_hours: float = 0.0
    tolerance: float = 1.0
    keep_clear: bool = True

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.method.name)

    def parameters(self) -> dict[str, Any]:
        """The model (its checksum), the layout and the choice's limits."""
        described = self.method.describe()
        return {"method": "multi-temporal", "model": described.get("name", self.name),
                "model_checksum": described.get("model_checksum"),
                "layout": str(self.layout), "dem": None if self.dem is None else str(self.dem),
                "max_unusable": self.max_unusable, "widen_hours": self.widen_hours,
                "tolerance": self.tolerance, "keep_clear": self.keep_clear}

    def _options(self, engine: EngineOptions) -> Any:
        from decloud.processors.multitemporal import MultiTemporalOptions

        return MultiTemporalOptions(
            layout=self.layout, dem=self.dem, max_unusable=self.max_unusable,
            widen_hours=self.widen_hours, tolerance=self.tolerance,
            engine=dataclasses.replace(engine, target="t" if self.keep_clear else None))

    def plan(self, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product], engine: EngineOptions) -> DatePlan:
        """Each block's neighbours (from the catalog); the run is the processor's own."""
        from decloud.index.catalog import Catalog
        from decloud.processors.multitemporal import multitemporal, plan_multitemporal

        day = product.acquired.date()
        catalog = Catalog.open(self.catalog, read_only=True)  # mode=ro: shared filesystems
        try:
            planned = plan_multitemporal(self.method, catalog, tile, day, self._options(engine))
        finally:
            catalog.close()

        def execute(out: Path, options: EngineOptions) -> RunRecord:
            return multitemporal(self.catalog, tile, day, self.method, out,
                                 self._options(options))

        identity = {"method": self.method.describe(),
                    "extra.neighbours": [c.to_dict() for c in planned.choices]}
        return DatePlan(self.method, planned.products_of, planned.engine.target,
                        identity=identity, execute=execute)


@dataclass(frozen=True)
class SeriesOptions:
    """How :func:`run_series` runs.

    Attributes:
        engine: Streaming options (block size, readers, composite); its ``target``
            and ``overwrite`` are set per output. Engine defaults when None.
        strict: Stop at the first failed date (re-raise its error).
        quicklooks: Write ``<stem>_quicklook.png`` per output.
        progress: A tqdm bar over the dates.
        execution: Where the dates run (:class:`decloud.distributed.Execution`: a
            local cluster, a scheduler, a batch cluster); this process, one date after
            another, when None or not distributed.
    """

    engine: EngineOptions | None = None
    strict: bool = False
    quicklooks: bool = True
    progress: bool = False
    execution: Execution | None = None


@dataclass
class DateReport:
    """One line of the summary.

    Attributes:
        label: The date (``YYYY-MM-DD``) or month (``YYYY-MM``).
        status: ``done`` (made now), ``complete`` (its record vouched for it: not
            touched) or ``failed``.
        output: The reflectance COG (None when failed).
        cloud_before_pct: Cloud, cirrus and shadow of the input date, percent of its
            valid pixels (None when there is no single input date).
        reconstructed_fraction: Reconstructed (incl. feathered) pixels over the
            output's valid pixels.
        nodata_fraction: Nodata pixels over all pixels of the output.
        seconds: Wall time of the engine run that made the output.
        reason: Why it failed.
    """

    label: str
    status: Status
    output: str | None = None
    cloud_before_pct: float | None = None
    reconstructed_fraction: float | None = None
    nodata_fraction: float | None = None
    seconds: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SeriesJob:
    """One output of a series: its label, path and how to plan it.

    Attributes:
        label: Its line in the summary.
        out: The reflectance COG to write.
        plan: Builds its :class:`DatePlan` from the engine options (errors there fail
            the job, not the series).
        product: The input date, for the cloud cover and the quicklook's input panel.
    """

    label: str
    out: Path
    plan: Callable[[EngineOptions], DatePlan]
    product: S2Product | None = None


def _normalised(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples to lists, dates to strings)."""
    return json.loads(json.dumps(value, default=str))


def is_complete(record: Path, plan: DatePlan, precision: str = "float32") -> bool:
    """Whether ``record`` vouches for outputs made by ``plan``.

    The record must parse as a JSON object, be finished (a time is written there last),
    name a reflectance and a quality output that both exist, and carry the entries of
    :meth:`DatePlan.expected` (the same method and inputs) and the engine's
    ``precision`` (``parameters.precision``: a bfloat16 output is not a float32 one).
    """
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not data.get("finished"):
        return False
    outputs = data.get("outputs")
    if not isinstance(outputs, dict) or not {"reflectance", "quality"} <= set(outputs):
        return False
    if not all(Path(str(p)).is_file() for p in outputs.values()):
        return False
    expected = plan.expected()
    # Records written before the precision option existed are float32: no other
    # precision could be run then.
    recorded = _lookup(data, "parameters.precision") or "float32"
    return recorded == precision and all(
        _lookup(data, key) == value for key, value in expected.items())


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    """``data["a"]["b"]`` for ``a.b``; None where a level is missing."""
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _run_engine(plan: DatePlan, grid: Grid, out: Path, engine: EngineOptions) -> RunRecord:
    """Run the engine for one output (a module function: tests replace it to inject faults)."""
    from decloud.inference.engine import run

    # Outputs without a valid record are an interrupted or stale run: overwritten.
    options = dataclasses.replace(engine, target=plan.target, overwrite=True)
    if plan.execute is not None:
        return plan.execute(out, options)
    return run(plan.method, plan.inputs, grid, out, options)


def _fractions(record: Mapping[str, Any]) -> tuple[float, float, float]:
    """Reconstructed fraction of valid pixels, nodata fraction, wall seconds."""
    pixels = record.get("pixels", {})
    total = sum(int(v) for v in pixels.values())
    nodata = int(pixels.get("nodata", 0))
    rebuilt = int(pixels.get("reconstructed", 0)) + int(pixels.get("feathered", 0))
    valid = total - nodata
    return (rebuilt / valid if valid else 0.0, nodata / total if total else 0.0,
            float(record.get("timing", {}).get("wall_s", 0.0)))


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a folder holding a run of other settings; record them for a new folder."""
    path = out_dir / SETTINGS_FILE
    settings = _normalised(settings)
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ProcessorRerunError(f"unreadable series settings ({err})", path=path,
                                      field="settings") from err
        if not isinstance(previous, dict):
            raise ProcessorRerunError("series settings are not a JSON object", path=path,
                                      field="settings")
        # Settings written before the precision option existed are float32 ones.
        if "precision" in settings:
            previous.setdefault("precision", "float32")
        for key, old, new in _differences(previous, settings):
            raise ProcessorRerunError(
                f"the folder holds a series made with another {key}: {old!r} in the "
                f"folder, {new!r} now; use another output folder or the folder's "
                "settings", path=path, field=key)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any],
                 prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Settings that differ, by dotted name (``method.buffer``), first level first."""
    found: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


def run_jobs(jobs: Sequence[SeriesJob], grid: Grid, out_dir: Path,
             settings: dict[str, Any], options: SeriesOptions, *,
             title: str = "series") -> list[DateReport]:
    """Run the jobs of a series (or a monthly synthesis) with resume and a summary.

    Args:
        jobs: The outputs, in order.
        grid: The output grid.
        out_dir: The folder (its ``series.json`` must match ``settings``).
        settings: What decides the outputs (method parameters, composite...).
        options: Engine options, strictness, quicklooks, progress.
        title: The summary's title.

    Returns:
        One report per job; also in ``summary.json`` and ``summary.md``. With STAC
        items on (the engine's default), the folder's items are gathered into its
        ``collection.json`` at the end (:func:`decloud.stac.write_collection`).

    Raises:
        ProcessorRerunError: The folder holds a run of other settings.
        DecloudError: With ``strict``, the first job's error.
    """
    from decloud.inference.engine import EngineOptions, record_path

    engine = options.engine or EngineOptions()
    _check_settings(out_dir, {**settings, "composite": dataclasses.asdict(engine.composite),
                              "precision": engine.precision})
    if options.execution is not None and options.execution.distributed:
        from decloud.distributed.runner import run_on_cluster

        gathered = run_on_cluster(jobs, grid, engine, options, out_dir, options.execution,
                                  title=title)
        _collection(out_dir, gathered, engine)
        return gathered
    reports: list[DateReport] = []
    bar = tqdm(jobs, unit="date", desc=title, disable=None if options.progress else True)
    for job in bar:
        report = _one_job(job, grid, engine, options, record_path(job.out))
        reports.append(report)
        bar.set_postfix_str(f"{job.label} {report.status}")
        write_summary(out_dir, reports, title=title)
    _collection(out_dir, reports, engine)
    return reports


def _collection(out_dir: Path, reports: Sequence[DateReport], engine: EngineOptions) -> None:
    """Gather the folder's STAC items into its collection, once, when any output exists."""
    if engine.stac and any(r.output for r in reports):
        from decloud.stac import write_collection

        write_collection(out_dir)


def _one_job(job: SeriesJob, grid: Grid, engine: EngineOptions, options: SeriesOptions,
             record: Path) -> DateReport:
    report = DateReport(job.label, "failed")
    try:
        if job.product is not None:
            report.cloud_before_pct = 100.0 * float(sum(
                v for k, v in job.product.cover().items() if k in ("cloud", "shadow")))
        plan = job.plan(engine)
        if is_complete(record, plan, engine.precision):
            report.status = "complete"
            data = json.loads(record.read_text())
        else:
            started = perf_counter()
            data = _normalised(dataclasses.asdict(_run_engine(plan, grid, job.out, engine)))
            data.setdefault("timing", {})["wall_s"] = perf_counter() - started
            report.status = "done"
        report.output = str(job.out)
        (report.reconstructed_fraction, report.nodata_fraction,
         report.seconds) = _fractions(data)
        png = job.out.with_name(job.out.stem + "_quicklook.png")
        if options.quicklooks and (report.status == "done" or not png.is_file()):
            quicklook(job.out, png, job.product)
    except DecloudError as err:
        if options.strict:
            raise
        report.status, report.output, report.reason = "failed", None, str(err)
    return report


def _rgb(bands: Sequence[str]) -> list[int]:
    """Band indices shown as red, green, blue: true colour, else B08/B04 false colour."""
    if {"B04", "B03", "B02"} <= set(bands):
        return [bands.index(b) for b in ("B04", "B03", "B02")]
    if {"B08", "B04"} <= set(bands):
        return [bands.index(b) for b in ("B08", "B04", "B04")]
    return [0, min(1, len(bands) - 1), min(2, len(bands) - 1)]


def _to_rgb(data: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float (NaN nodata) to uint8 with per-channel ``limits`` (3, 2)."""
    lo, hi = limits[:, 0, None, None], limits[:, 1, None, None]
    out = np.clip((data - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    out = np.nan_to_num(out, nan=0.0).round().astype(np.uint8)
    return np.moveaxis(out, 0, -1)


#: Quality colours: clear grey-green, reconstructed orange, feathered yellow, nodata black.
_QUALITY_COLOURS = {0: (90, 160, 90), 1: (240, 120, 20), 2: (250, 220, 60), 255: (0, 0, 0)}


#: Longest side of a quicklook panel before enlarging, pixels (full tiles are decimated).
QUICKLOOK_SIDE = 1024


def quicklook(out: Path, png: Path, product: S2Product | None) -> Path:
    """Input, output and quality side by side in one PNG (input left out without a product).

    The panels are read on one grid of at most :data:`QUICKLOOK_SIDE` px a side (a
    whole 10980 px tile is read at 110 m, from the COG's overviews), so a quicklook
    costs little whatever the tile. Input and output share one stretch (2-98 % of the
    output's valid pixels per channel): the same reflectance has the same colour in
    both. Small scenes are enlarged (nearest neighbour) to at least 256 px.
    """
    import rasterio

    from decloud.grid import Grid, RasterKind, read_on_grid
    from decloud.quicklook import write_png

    grid = Grid.from_raster(out)
    step = max(1, math.ceil(max(grid.width, grid.height) / QUICKLOOK_SIDE))
    view = grid.at_resolution(grid.resolution * step) if step > 1 else grid
    with rasterio.open(out) as src:
        bands = [str(d) for d in src.descriptions]
    picked = _rgb(bands)
    output = read_on_grid(out, view, indexes=[i + 1 for i in picked],
                          kind=RasterKind.REFLECTANCE, src_nodata=S2_NODATA)
    quality = read_on_grid(out.with_name(out.stem + "_quality.tif"), view,
                           kind=RasterKind.MASK, fill=255)[0]
    valid = np.isfinite(output).all(axis=0)
    limits = np.zeros((3, 2), dtype=np.float32)
    for c in range(3):
        if valid.any():
            limits[c] = np.percentile(output[c][valid], [2.0, 98.0])
    panels = []
    if product is not None:
        data = product.read([bands[i] for i in picked], view)
        panels.append(_to_rgb(data.astype(np.float32) * np.float32(10000.0), limits))
    panels.append(_to_rgb(output, limits))
    colours = np.zeros((*quality.shape, 3), dtype=np.uint8)
    for value, colour in _QUALITY_COLOURS.items():
        colours[quality == value] = colour
    panels.append(colours)
    zoom = max(1, 256 // max(quality.shape))
    panels = [p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in panels]
    gap = np.full((quality.shape[0] * zoom, 4, 3), 255, dtype=np.uint8)
    joined = [panels[0]]
    for panel in panels[1:]:
        joined += [gap, panel]
    return write_png(png, np.concatenate(joined, axis=1), overwrite=True)


def _format(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def write_summary(out_dir: Path, reports: Sequence[DateReport], *,
                  title: str = "series") -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md`` (one line per output), atomically."""
    counts = {s: sum(r.status == s for r in reports) for s in ("done", "complete", "failed")}
    payload = {"title": title, "counts": counts,
               "dates": [dataclasses.asdict(r) for r in reports]}
    lines = [f"# {title}", "",
             f"{counts['done']} done, {counts['complete']} complete (resumed), "
             f"{counts['failed']} failed", "",
             "| date | status | cloud before (%) | reconstructed (%) | nodata (%) | time (s) "
             "| output or reason |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        where = Path(r.output).name if r.output else (r.reason or "").replace("|", "/")
        lines.append(f"| {r.label} | {r.status} | {_format(r.cloud_before_pct)} | "
                     f"{_format(r.reconstructed_fraction, 100)} | "
                     f"{_format(r.nodata_fraction, 100)} | {_format(r.seconds, 1, 2)} | "
                     f"{where} |")
    paths = (out_dir / "summary.json", out_dir / "summary.md")
    with atomic_file(paths[0], overwrite=True) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    with atomic_file(paths[1], overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return paths


def output_path(out_dir: Path, tile: str, product: S2Product, name: str,
                same_day: bool = False) -> Path:
    """``<out_dir>/<TILE>_<YYYYMMDD>_<name>.tif`` (with the time when a day has two dates)."""
    stamp = f"{product.acquired:%Y%m%dT%H%M%S}" if same_day else f"{product.acquired:%Y%m%d}"
    return out_dir / f"{normalize_tile(tile)}_{stamp}_{name}.tif"


def run_series(archive: Archive, tile: str, start: date, end: date, method: DateMethod,
               out_dir: str | Path, options: SeriesOptions | None = None,
               ) -> list[DateReport]:
    """Reconstruct every S2 date of a tile in ``[start, end]``, resumably.

    Args:
        archive: The archive.
        tile: The tile (``T31UFS`` or ``31UFS``).
        start: First day (included).
        end: Last day (included).
        method: What each date runs (:class:`GapFillDates`, :class:`ModelDates`...).
        out_dir: Output folder (created); ``series.json`` holds its settings.
        options: Engine options, strictness, quicklooks, progress.

    Returns:
        One :class:`DateReport` per date, in time order (also in ``summary.json``).

    Raises:
        NoProductError: No S2 date of the tile in the range.
        ProcessorRerunError: The folder holds a series of other settings.
        DecloudError: With ``strict``, the first failed date's error.
    """
    options = options or SeriesOptions()
    products = sorted(archive.select_s2(tile), key=lambda p: p.acquired)
    chosen = [p for p in products if start <= p.acquired.date() <= end]
    if not chosen:
        raise NoProductError(f"no S2 product of {normalize_tile(tile)} from {start} to "
                             f"{end}", field="dates")
    out_dir = Path(out_dir)
    days = [p.acquired.date() for p in chosen]
    settings = {"processor": "series", "tile": normalize_tile(tile),
                "method": method.parameters()}
    if options.execution is not None and options.execution.distributed:
        from decloud.distributed.models import portable

        method = portable(method, options.execution.backend)  # the model by reference
    jobs = [SeriesJob(
        label=f"{p.acquired:%Y-%m-%d %H:%M}",
        out=output_path(out_dir, tile, p, method.name, days.count(p.acquired.date()) > 1),
        plan=_planner(method, archive, tile, p, products), product=p) for p in chosen]
    return run_jobs(jobs, chosen[0].grid(), out_dir, settings, options,
                    title=f"{normalize_tile(tile)} series {start} to {end} ({method.name})")


def _planner(method: DateMethod, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product]) -> Callable[[EngineOptions], DatePlan]:
    return lambda engine: method.plan(archive, tile, product, products, engine)

