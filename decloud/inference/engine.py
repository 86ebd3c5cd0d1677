"""The streaming engine: a block method over a whole scene, seamless and bounded in memory.

:func:`run` tiles the grid into core blocks of ``block_size`` px (the last row and
column smaller) read with a halo of ``margin`` px on each side, where ``margin`` is the
method's margin or the composite's halo, whichever is larger, rounded up to the
method's size multiple (:meth:`decloud.grid.Grid.windows`): every output pixel then
has its whole receptive field and its whole composite neighbourhood inside its block,
so the output equals one whole-image run. Padded blocks extend past the grid's edges
(read as each key's nodata) up to the size multiple, and the outputs are cropped
back to the cores.

The pipeline, each stage bounded:

1. **read**: ``readers`` threads call :func:`decloud.inputs.read_inputs` (one
   :class:`~decloud.grid.RasterPool` per thread), at most ``prefetch`` blocks ahead;
2. **skip**: a block whose time-varying inputs (S2, S2 mask, S1) are all nodata is
   not given to the method and written as nodata;
3. **batch**: blocks of equal padded shape are stacked ``batch_size`` at a time;
4. **method**: the method runs on the batch;
5. **crop** and **composite**: in a post-processing thread, overlapped with the next
   method call (at most one batch behind it), the halo is cropped off and the
   target's clear pixels are kept (:mod:`.composite`);
6. **encode** and **write**: reflectance x 10000 to int16 (rounded, clipped, nodata
   -10000), the quality layer (uint8) and, if the method gives ``"days"``, the
   temporal distance (uint16, nodata 65535) go to :class:`~decloud.writers.BackgroundWriter`
   (``write_queue`` arrays at most).

A pixel is nodata in the output where none of the time-varying inputs has a value
at it (whatever the method computes there), so that skipping a block changes
nothing. Outputs (``<out>.tif``, ``<out>_quality.tif``, ``<out>_days.tif``) are COGs
written atomically; the STAC item ``<out>.stac.json`` (:mod:`decloud.stac`, unless
``EngineOptions.stac`` is off) and then the completion record ``<out>.json``
(:class:`RunRecord`) are written last, atomically: an output without the record is
not finished.

Products per block
    ``products`` is one :class:`~decloud.inputs.InputProducts` for the whole grid, or a
    callable ``core window -> InputProducts`` (:data:`ProductsSource`): the
    multi-temporal processor chooses t-1 and t+1 per block, and each block (its halo
    included: the halo reads the same products as its core) is read with its own
    products by the prefetch threads. A block's output then equals, on its core, a
    whole-image run with that block's products; only at the seams between blocks
    whose products differ may the output differ from one single-products run, and
    that is the point of choosing per block. The callable should return the same
    object for blocks that share products (files stay open in each thread's pool).

Extra layers
    ``layers`` (:class:`BlockLayer`) adds per-block outputs ``<out>_<name>.tif``
    computed from the core window alone (e.g. the neighbours' days), nodata where the
    quality layer is nodata; ``extra`` adds JSON-ready entries to the record.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window
from tqdm import tqdm

from decloud._version import __version__
from decloud.constants import S2_NODATA
from decloud.env import gdal_cache_bytes, set_gdal_cache
from decloud.errors import InferenceError, OutputExistsError, PrecisionError
from decloud.grid import COMPILED_LOOPS, Grid, RasterPool
from decloud.inference.composite import (
    QUALITY_CLEAR,
    QUALITY_FEATHERED,
    QUALITY_NODATA,
    QUALITY_RECONSTRUCTED,
    CompositeOptions,
    composite,
)
from decloud.inference.method import BlockMethod
from decloud.inference.precision import PRECISIONS, apply_precision
from decloud.inputs import InputKey, InputProducts, KeyRequest, read_inputs
from decloud.keys import KINDS, KeyKind, decode_s2, encode_s2, make_key
from decloud.products.dem import DemPolicy
from decloud.windows import core_crop, crop, round_up
from decloud.writers import BackgroundWriter, CogWriter, atomic_file, provenance_tags

__all__ = [
    "DAYS_NODATA",
    "DEFAULT_GDAL_CACHE_MB",
    "BlockLayer",
    "BlockOutput",
    "EngineOptions",
    "ProductsSource",
    "RunRecord",
    "StreamTiming",
    "block_multiple",
    "block_windows",
    "default_block_size",
    "iter_blocks",
    "run",
]

#: One set of products for the grid, or the products of each core block.
ProductsSource = InputProducts | Callable[[Window], InputProducts]

#: GDAL block cache (MiB) :func:`run` sets by default: the tiles a block reads (all its
#: bands, halo included, for the prefetch threads) and the tiles the writers hold.
DEFAULT_GDAL_CACHE_MB: Final = 256

#: Nodata of the uint16 days band.
DAYS_NODATA: Final = 65535

#: Kinds whose values change with the date: a block none of them covers is skipped.
_DYNAMIC: Final = (KeyKind.S2, KeyKind.S2_20M, KeyKind.S2_MASK, KeyKind.S1)


def default_block_size() -> int:
    """Core block side for this process's device: 2048 on a GPU (JAX), else 1280.

    Large blocks keep the halo overcompute small: on a full tile with a 112 px halo
    (``msop_*``), 1.40x with 1280 px blocks, 1.36x with 1536 and 1.26x with 2048,
    against 1.50x with 1024 and 2.26x for OTBTF's 256 + 2 x 64. On a CPU the block is
    bounded by memory (peak RSS grows with the block, not with the scene): TensorFlow
    alone peaks at 5.6 GB on one 2048 + 2 x 112 px ``msop_small`` block, and a whole
    engine run with 1536 px blocks at 6.4 GB; 1280 keeps a run under 6 GB.
    """
    # A numpy method (gap-filling) never loads Keras: it runs on the CPU, and importing
    # Keras here only to learn that would cost seconds per process.
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() == "jax":
        import jax

        if any(d.platform == "gpu" for d in jax.devices()):
            return 2048
    return 1280


@dataclass(frozen=True)
class EngineOptions:
    """How :func:`run` streams a scene.

    Attributes:
        block_size: Core block side (10 m px), rounded up to the method's size
            multiple; :func:`default_block_size` when None.
        batch_size: Blocks of one shape stacked per method call.
        readers: Prefetch threads reading inputs.
        prefetch: Blocks read ahead at most (memory bound of the read stage); one per
            reader keeps every reader busy while the method runs.
        write_queue: Arrays waiting for the writer thread at most.
        target: The acquisition whose clear pixels the composite keeps (its
            ``s2_<target>`` in the output bands and ``s2_mask_<target>`` are read);
            None writes the reconstruction everywhere it has a value.
        composite: Dilation and feather of the composite.
        dem_policy: Passed to :func:`~decloud.inputs.read_inputs`.
        overwrite: Replace existing outputs.
        progress: Show a tqdm bar (blocks per second).
        cog_threads: GDAL threads of the final COG conversion.
        stac: Write the output's STAC item ``<out>.stac.json`` (:mod:`decloud.stac`)
            just before the completion record.
        precision: ``float32``, or ``bfloat16`` for the models validated in it
            (:mod:`decloud.inference.precision`; others are refused).
        gdal_cache_mb: Size (MiB) of GDAL's process-wide raster block cache, set by
            :func:`run` before its threads start (:func:`decloud.env.set_gdal_cache`;
            the record keeps the size GDAL reports); None leaves GDAL's setting (its
            default is 5 % of the RAM). Each input tile is read about once per block,
            so a small cache suffices, and GDAL's default share, filled again by the
            final COG conversions in the writer thread, pushed a full tile past 6 GB.
    """

    block_size: int | None = None
    batch_size: int = 1
    readers: int = 2
    prefetch: int = 2
    write_queue: int = 4
    target: str | None = "t"
    composite: CompositeOptions = field(default_factory=CompositeOptions)
    dem_policy: DemPolicy | str = DemPolicy.PARTIAL
    overwrite: bool = False
    progress: bool = False
    cog_threads: int = 1
    stac: bool = True
    precision: str = "float32"
    gdal_cache_mb: int | None = DEFAULT_GDAL_CACHE_MB

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                                 f"{self.precision!r}", field="precision")
        for name in ("batch_size", "readers", "prefetch", "write_queue", "cog_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InferenceError(f"{name} must be a positive integer, not {value!r}",
                                     field=name)
        if self.gdal_cache_mb is not None and (isinstance(self.gdal_cache_mb, bool)
                                               or not isinstance(self.gdal_cache_mb, int)
                                               or self.gdal_cache_mb < 1):
            raise InferenceError(f"gdal_cache_mb must be a positive integer or None, not "
                                 f"{self.gdal_cache_mb!r}", field="gdal_cache_mb")
        if self.block_size is not None and (isinstance(self.block_size, bool)
                                            or not isinstance(self.block_size, int)
                                            or self.block_size < 1):
            raise InferenceError(f"block_size must be a positive integer, not "
                                 f"{self.block_size!r}", field="block_size")

    def describe(self) -> dict[str, Any]:
        """JSON-ready parameters (for the completion record)."""
        out = asdict(self)
        out["dem_policy"] = str(self.dem_policy)
        return out


@dataclass
class BlockOutput:
    """One core block of the output, before encoding.

    Attributes:
        core: The block's window of the grid.
        reflectance: float32 ``(h, w, C)`` reflectance x 10000, NaN nodata.
        quality: uint8 ``(h, w)`` (:mod:`decloud.inference.composite`).
        days: float32 ``(h, w)`` days to the observations used (NaN none), or None
            when the method gives none.
        skipped: The method did not run (all inputs nodata).
    """

    core: Window
    reflectance: np.ndarray
    quality: np.ndarray
    days: np.ndarray | None
    skipped: bool


@dataclass(frozen=True)
class BlockLayer:
    """An extra output layer computed per core block (``<out>_<name>.tif``).

    Attributes:
        band_names: Its bands.
        dtype: Its numpy dtype name (``uint16``...).
        nodata: Its nodata value, also written where the quality layer is nodata.
        values: ``core window -> (len(band_names), h, w)`` array of the core.
    """

    band_names: tuple[str, ...]
    dtype: str
    nodata: float
    values: Callable[[Window], np.ndarray]


@dataclass
class _Plan:
    method: BlockMethod
    keys: tuple[KeyRequest, ...]
    margin: int
    block_size: int
    multiple: int
    target_key: str | None
    target_bands: list[int]
    mask_key: str | None


def _plan(method: BlockMethod, options: EngineOptions) -> _Plan:
    # Blocks start on even pixels when a key is read at 20 m (whole coarse pixels).
    k = block_multiple(method)
    halo = options.composite.halo if options.target is not None else 0
    margin = round_up(max(method.margin, halo), k)
    size = round_up(options.block_size or default_block_size(), k)
    keys = list(method.input_keys)
    target_key = mask_key = None
    bands: list[int] = []
    if options.target is not None:
        target_key = make_key(KeyKind.S2, options.target)
        mask_key = make_key(KeyKind.S2_MASK, options.target)
        found = next((key for key in keys if key.name == target_key), None)
        if found is None:
            keys.append(InputKey.of(target_key, method.output_bands))
            bands = list(range(len(method.output_bands)))
        else:
            missing = [b for b in method.output_bands if b not in found.bands]
            if missing or found.resolution != KINDS[KeyKind.S2].resolution:
                raise InferenceError(f"the method reads {target_key} without the output bands "
                                     f"{missing} at 10 m: the composite cannot keep them",
                                     field="target")
            bands = [list(found.bands).index(b) for b in method.output_bands]
        if all(key.name != mask_key for key in keys):
            keys.append(InputKey.of(mask_key))
    return _Plan(method, tuple(keys), margin, size, k, target_key, bands, mask_key)


def _observed(plan: _Plan, inputs: Mapping[str, np.ndarray], shape: tuple[int, int]
              ) -> np.ndarray:
    """Pixels ``(H, W)`` where at least one time-varying input has a value."""
    seen = np.zeros(shape, dtype=bool)
    for key in plan.keys:
        kind = KeyKind(key.kind)
        if kind not in _DYNAMIC:
            continue
        data = inputs[key.name]
        nodata = KINDS[kind].nodata
        # Band by band: several times faster than a reduction over a short last axis.
        valid = data[..., 0] != nodata
        for c in range(1, data.shape[-1]):
            valid |= data[..., c] != nodata
        ratio = shape[0] // valid.shape[0]
        if ratio > 1:
            valid = np.repeat(np.repeat(valid, ratio, axis=0), ratio, axis=1)
        seen |= valid[:shape[0], :shape[1]]
    return seen


@dataclass
class _Read:
    core: Window
    padded: Window
    inputs: dict[str, np.ndarray]
    observed: np.ndarray
    seconds: float


def _reader(plan: _Plan, grid: Grid, options: EngineOptions,
            pools: list[RasterPool], lock: threading.Lock, local: threading.local
            ) -> Callable[[Window, Window, InputProducts], _Read]:
    def read(core: Window, padded: Window, products: InputProducts) -> _Read:
        pool = getattr(local, "pool", None)
        if pool is None:
            pool = local.pool = RasterPool()
            with lock:
                pools.append(pool)
        start = time.perf_counter()
        # The padded window is the core plus the margin, grown to the size multiple.
        grown = Window(int(padded.col_off), int(padded.row_off), int(padded.width),
                       int(padded.height))
        inputs = read_inputs(plan.keys, products, grid, grown, dem_policy=options.dem_policy,
                             pool=pool)
        observed = _observed(plan, inputs, (int(padded.height), int(padded.width)))
        return _Read(core, padded, inputs, observed, time.perf_counter() - start)

    return read


def _finish(plan: _Plan, block: _Read, reflectance: np.ndarray | None,
            days: np.ndarray | None, options: EngineOptions) -> BlockOutput:
    """Crop one padded block's result to its core and composite it."""
    where = core_crop(block.core, block.padded)
    h, w = int(block.padded.height), int(block.padded.width)
    n = len(plan.method.output_bands)
    skipped = reflectance is None
    if reflectance is None:
        reflectance = np.full((h, w, n), np.nan, dtype=np.float32)
    reflectance = np.where(block.observed[..., None], reflectance, np.float32(np.nan)).astype(
        np.float32, copy=False)
    if plan.target_key is not None and plan.mask_key is not None:
        target = decode_s2(block.inputs[plan.target_key][..., plan.target_bands]) * np.float32(
            10000.0)
        mask = block.inputs[plan.mask_key][..., 0]
        values, quality = composite(target, mask, reflectance, options.composite)
    else:
        values = reflectance
        quality = np.where(np.isfinite(reflectance).all(axis=-1), QUALITY_RECONSTRUCTED,
                           QUALITY_NODATA).astype(np.uint8)
    out_days = None
    if days is not None:
        days = np.where(quality == QUALITY_CLEAR, 0.0, days)
        out_days = np.where(quality == QUALITY_NODATA, np.nan, days).astype(np.float32)
        out_days = np.ascontiguousarray(crop(out_days, where, axes=(0, 1)))
    return BlockOutput(block.core,
                       np.ascontiguousarray(crop(values, where, axes=(0, 1))),
                       np.ascontiguousarray(crop(quality, where, axes=(0, 1))),
                       out_days, skipped)


@dataclass
class StreamTiming:
    """Seconds spent reading (summed over reader threads) and in the method; its calls."""

    read: float = 0.0
    method: float = 0.0
    calls: int = 0


def _products_of(products: ProductsSource) -> Callable[[Window], InputProducts]:
    if isinstance(products, InputProducts):
        return lambda core: products
    return products


def block_windows(method: BlockMethod, grid: Grid, options: EngineOptions | None = None
                  ) -> list[tuple[Window, Window]]:
    """The ``(core, padded)`` blocks :func:`run` streams, in row-major order.

    The block size is ``options.block_size`` rounded up to the method's size multiple
    (and to even sides when a key is read at 20 m): a caller that wants blocks on a
    lattice (the catalog's patches) passes a multiple of both.
    """
    plan = _plan(method, options or EngineOptions())
    return list(grid.windows(plan.block_size, plan.margin, plan.multiple))


def block_multiple(method: BlockMethod) -> int:
    """What block sides and offsets are multiples of: the size multiple and 20 m ratios."""
    ratios = [round(key.resolution / KINDS[KeyKind.S2].resolution) for key in method.input_keys
              if key.resolution > 0]
    return math.lcm(method.size_multiple, *ratios)


def iter_blocks(method: BlockMethod, products: ProductsSource, grid: Grid,
                options: EngineOptions | None = None, *,
                timing: StreamTiming | None = None) -> Generator[BlockOutput, None, None]:
    """Stream a method over a grid: core blocks with their composite, in grid order.

    Args:
        method: The block method.
        products: What the inputs are read from: one set, or the set of each core
            block (:data:`ProductsSource`).
        grid: The output grid (the tile's 10 m grid, or a subgrid of it).
        options: Engine options (defaults when None).
        timing: Accumulates read and method seconds and method calls.

    Yields:
        One :class:`BlockOutput` per core block, in row-major order (batches of
        equal shape may complete out of order; each block is yielded once).

    Raises:
        InferenceError: The method gives an output of the wrong shape.
    """
    options = options or EngineOptions()
    timing = timing if timing is not None else StreamTiming()
    apply_precision(method, options.precision)  # refuses bfloat16 where not validated
    plan = _plan(method, options)
    blocks = list(grid.windows(plan.block_size, plan.margin, plan.multiple))
    pools: list[RasterPool] = []
    read = _reader(plan, grid, options, pools, threading.Lock(), threading.local())
    products_of = _products_of(products)
    pending: dict[tuple[int, int], list[_Read]] = collections.defaultdict(list)

    def run_batch(batch: list[_Read]) -> None:
        start = time.perf_counter()
        stacked = {key.name: np.stack([b.inputs[key.name] for b in batch])
                   for key in method.input_keys}
        if getattr(method, "windowed", False):
            # A method serving precomputed outputs (OTBTF) reads its blocks' windows.
            windowed: Any = method  # BlockMethod's optional windowed call
            result = windowed(stacked, windows=[(b.core, b.padded) for b in batch])
        else:
            result = method(stacked)
        timing.method += time.perf_counter() - start
        timing.calls += 1
        h, w = int(batch[0].padded.height), int(batch[0].padded.width)
        expected = (len(batch), h, w, len(method.output_bands))
        if result.reflectance.shape != expected:
            raise InferenceError(f"method {method.name} gave {result.reflectance.shape}, "
                                 f"expected {expected}", field="reflectance")
        days = result.extras.get("days")
        for i, block in enumerate(batch):
            finished.append(post.submit(_finish, plan, block, result.reflectance[i],
                                        None if days is None else days[i], options))

    def done(keep: int) -> Iterator[BlockOutput]:
        # In submission order; the last ``keep`` are composited while the method runs.
        while len(finished) > keep:
            yield finished.popleft().result()

    # Crop and composite (numpy, one core) run in their own thread, overlapped with the
    # next method call: on a CPU the model otherwise waits for them block after block.
    finished: collections.deque[Future[BlockOutput]] = collections.deque()
    try:
        with ThreadPoolExecutor(options.readers, thread_name_prefix="decloud-read") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="decloud-post") as post:
            try:
                queue: collections.deque[Future[_Read]] = collections.deque()
                todo = iter(blocks)
                for core, padded in todo:
                    queue.append(pool.submit(read, core, padded, products_of(core)))
                    if len(queue) >= options.prefetch:
                        break
                while queue:
                    block = queue.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        queue.append(pool.submit(read, *nxt, products_of(nxt[0])))
                    timing.read += block.seconds
                    if not block.observed.any():
                        finished.append(post.submit(_finish, plan, block, None, None, options))
                        yield from done(options.batch_size)
                        continue
                    shape = (int(block.padded.height), int(block.padded.width))
                    pending[shape].append(block)
                    if len(pending[shape]) >= options.batch_size:
                        run_batch(pending.pop(shape))
                        yield from done(options.batch_size)
                for shape in list(pending):
                    run_batch(pending.pop(shape))
                yield from done(0)
            finally:
                for future in finished:  # an error or a closed generator: drop the queue
                    future.cancel()
    finally:
        for raster_pool in pools:
            raster_pool.close()


@dataclass
class RunRecord:
    """The completion record of a run, written last as ``<out>.json``.

    Attributes:
        outputs: Written files by role (``reflectance``, ``quality``, ``days``).
        method: The method's :meth:`~decloud.inference.method.BlockMethod.describe`.
        inputs: Products of each acquisition (paths and dates) and the DEM.
        parameters: The engine options, block size and margin used.
        grid: CRS, transform and size of the output.
        timing: Seconds: wall, read (summed over threads), method, outputs (finishing
            the COGs after the last block); blocks per second.
        pixels: Counts of clear, reconstructed, feathered and nodata pixels.
        blocks: Blocks in all, skipped (all nodata) and method calls.
        software: decloud version.
        compiled_loops: Whether reads used decloud's compiled loops (decloud._kernels).
        finished: UTC time the record was written.
        extra: What the caller adds (the multi-temporal processor: its per-block
            neighbour choices).
    """

    outputs: dict[str, str]
    method: dict[str, Any]
    inputs: dict[str, Any]
    parameters: dict[str, Any]
    grid: dict[str, Any]
    timing: dict[str, float]
    pixels: dict[str, int]
    blocks: dict[str, int]
    software: str = __version__
    compiled_loops: bool = COMPILED_LOOPS
    finished: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def record_path(out: str | Path) -> Path:
    """The completion record of output ``out`` (``<out>.json``, ``.tif`` dropped)."""
    out = Path(out)
    return out.with_suffix(".json") if out.suffix == ".tif" else Path(f"{out}.json")


def _describe_many(sets: list[InputProducts]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Describe one set of products, or the distinct sets of a per-block run."""
    if len(sets) == 1:
        return describe_inputs(sets[0])
    described: list[dict[str, Any]] = []
    paths: list[str] = []
    dates: list[str] = []
    for products in sets:
        one, more_paths, more_dates = describe_inputs(products)
        described.append(one)
        paths += [p for p in more_paths if p not in paths]
        dates += [d for d in more_dates if d not in dates]
    return {"per_block": described}, paths, sorted(dates)


def describe_inputs(products: InputProducts) -> tuple[dict[str, Any], list[str], list[str]]:
    """The record's description of a block's products: per acquisition, the paths, the dates."""
    acquisitions: dict[str, Any] = {}
    paths: list[str] = []
    dates: list[str] = []
    for name, acq in products.acquisitions.items():
        entry: dict[str, Any] = {}
        if acq.s2 is not None:
            entry["s2"] = {"path": str(acq.s2.path), "date": acq.s2.acquired.isoformat()}
            paths.append(str(acq.s2.path))
        if acq.s1 is not None:
            files = [str(f) for f in getattr(acq.s1, "files", [acq.s1.path])]
            entry["s1"] = {"files": files, "date": acq.s1.acquired.isoformat()}
            paths += files
        if acq.acquired is not None:
            dates.append(acq.acquired.isoformat())
        acquisitions[str(name)] = entry
    out: dict[str, Any] = {"acquisitions": acquisitions, "reference": products.reference}
    if products.dem is not None:
        out["dem"] = str(products.dem.path)
        paths.append(str(products.dem.path))
    return out, paths, dates


def run(method: BlockMethod, products: ProductsSource, grid: Grid, out: str | Path,
        options: EngineOptions | None = None, *, layers: Mapping[str, BlockLayer] | None = None,
        extra: Mapping[str, Any] | None = None) -> RunRecord:
    """Apply a block method to a whole grid and write its outputs and completion record.

    Args:
        method: The block method (:class:`~decloud.inference.method.KerasMethod`...).
        products: The products the method's keys are read from: one set, or a callable
            giving each core block's (see the module docstring).
        grid: The output grid.
        out: Output path ``<out>.tif``; the quality layer goes to
            ``<out>_quality.tif``, the days (when the method gives them) to
            ``<out>_days.tif`` and the record to ``<out>.json``.
        options: Engine options (defaults when None).
        layers: Extra per-block layers, written to ``<out>_<name>.tif``.
        extra: JSON-ready entries added to the record (:attr:`RunRecord.extra`).

    Returns:
        The completion record, also written to ``<out>.json``.

    Raises:
        OutputExistsError: An output or the record exists and ``overwrite`` is off.
        InferenceError: Invalid options or a method output of the wrong shape.
        DecloudError: Any error reading inputs or writing outputs; nothing is left.
    """
    options = options or EngineOptions()
    started = time.perf_counter()
    apply_precision(method, options.precision)  # before any output: a refusal leaves none
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".tif" else out
    paths = {"reflectance": stem.with_suffix(".tif"),
             "quality": Path(f"{stem}_quality.tif"), "record": record_path(out)}
    if "days" in method.extras:
        paths["days"] = Path(f"{stem}_days.tif")
    layers = dict(layers or {})
    for name in layers:
        if name in paths:
            raise InferenceError(f"layer name {name!r} is taken by an output", field="layers")
        paths[name] = Path(f"{stem}_{name}.tif")
    if options.stac:
        from decloud.stac import item_path  # pystac loads only in runs that write items

        paths["stac"] = item_path(out)
    if not options.overwrite:
        for path in paths.values():
            if path.exists():
                raise OutputExistsError("exists already (pass overwrite to replace it)",
                                        path=path)
    # A stale record of an earlier run must not vouch for the outputs being rewritten.
    paths["record"].unlink(missing_ok=True)
    # Process-wide, so set here, before the readers and the writer start.
    gdal_cache = (set_gdal_cache(options.gdal_cache_mb) if options.gdal_cache_mb is not None
                  else gdal_cache_bytes())
    plan = _plan(method, options)
    windows = list(grid.windows(plan.block_size, plan.margin, plan.multiple))
    products_of = _products_of(products)
    # Resolved once: the same objects are read by the threads and described here.
    per_block = {_window_key(core): products_of(core) for core, _ in windows}
    distinct = list({id(p): p for p in per_block.values()}.values())
    prepare = getattr(method, "prepare", None)
    if prepare is not None:
        # Whole-grid work before any output is opened (the OTBTF engine's run);
        # its entries join the record's extra.
        extra = {**(extra or {}), **prepare(grid, [(core, per_block[_window_key(core)])
                                                  for core, _ in windows], options)}
    described, input_paths, dates = _describe_many(distinct)
    tags = provenance_tags(input_paths, dates, method=method.describe(),
                           model_checksum=method.describe().get("model_checksum") or "")
    bands = list(method.output_bands)
    writers = {
        "reflectance": CogWriter(paths["reflectance"], grid, len(bands), "int16", S2_NODATA,
                                 band_names=bands, tags=tags, overwrite=options.overwrite,
                                 threads=options.cog_threads),
        "quality": CogWriter(paths["quality"], grid, 1, "uint8", QUALITY_NODATA,
                             band_names=["quality"], tags=tags, overwrite=options.overwrite,
                             overview_resampling=Resampling.nearest,
                             threads=options.cog_threads),
    }
    days_writer: CogWriter | None = None
    if "days" in paths:
        days_writer = CogWriter(paths["days"], grid, 1, "uint16", DAYS_NODATA,
                                band_names=["days"], tags=tags, overwrite=options.overwrite,
                                overview_resampling=Resampling.nearest,
                                threads=options.cog_threads)
        writers["days"] = days_writer
    for name, layer in layers.items():
        writers[name] = CogWriter(paths[name], grid, len(layer.band_names), layer.dtype,
                                  layer.nodata, band_names=list(layer.band_names), tags=tags,
                                  overwrite=options.overwrite,
                                  overview_resampling=Resampling.nearest,
                                  threads=options.cog_threads)
    counts = dict.fromkeys(("clear", "reconstructed", "feathered", "nodata"), 0)
    total = skipped = 0
    timing = StreamTiming()
    n_blocks = len(windows)
    with contextlib.ExitStack() as stack:
        close_run = getattr(method, "close_run", None)
        if close_run is not None:
            # Last out: the run's temporary inputs (the OTBTF method's region rasters).
            stack.callback(close_run)
        # Closed first on an error: the readers stop before the outputs are discarded.
        writer = stack.enter_context(BackgroundWriter(writers, queue_size=options.write_queue))
        bar = stack.enter_context(tqdm(total=n_blocks, unit="block", desc=method.name,
                                       disable=None if options.progress else True))
        blocks = stack.enter_context(contextlib.closing(
            iter_blocks(method, lambda core: per_block[_window_key(core)], grid, options,
                        timing=timing)))
        for block in blocks:
            writer.submit("reflectance", encode_s2(np.moveaxis(block.reflectance, -1, 0)
                                                   / np.float32(10000.0)), block.core)
            writer.submit("quality", block.quality[None], block.core)
            if days_writer is not None:
                writer.submit("days", _encode_days(block.days, block.quality), block.core)
            for name, layer in layers.items():
                values = np.array(layer.values(block.core), dtype=layer.dtype, copy=True)
                values[:, block.quality == QUALITY_NODATA] = layer.nodata
                writer.submit(name, values, block.core)
            for name, value in (("clear", QUALITY_CLEAR), ("reconstructed",
                                QUALITY_RECONSTRUCTED), ("feathered", QUALITY_FEATHERED),
                                ("nodata", QUALITY_NODATA)):
                counts[name] += int(np.count_nonzero(block.quality == value))
            total += 1
            skipped += block.skipped
            bar.update(1)
        blocks_done = time.perf_counter()
    wall = time.perf_counter() - started
    report = getattr(method, "report", None)
    if report is not None:
        # What the method did (e.g. pixels a fallback filled) joins the record's extra.
        extra = {**(extra or {}), **report()}
    record = RunRecord(
        outputs={k: str(v) for k, v in paths.items() if k not in ("record", "stac")},
        method=method.describe(), inputs=described,
        parameters={**options.describe(), "block_size": plan.block_size,
                    "margin": plan.margin, "size_multiple": plan.multiple,
                    "gdal_cache_bytes": gdal_cache},
        grid={"crs": str(grid.crs), "transform": list(grid.transform)[:6],
              "width": grid.width, "height": grid.height},
        timing={"wall_s": wall, "read_s": timing.read, "method_s": timing.method,
                "blocks_per_s": total / wall if wall > 0 else 0.0,
                # After the last block: the writers' COG conversions.
                "outputs_s": started + wall - blocks_done},
        pixels=counts, blocks={"total": total, "skipped": skipped,
                               "method_calls": timing.calls},
        finished=datetime.now(UTC).isoformat(timespec="seconds"), extra=dict(extra or {}))
    if options.stac:
        from decloud.stac import write_item

        write_item(record, overwrite=options.overwrite,
                   nodata={k: w.nodata for k, w in writers.items()},
                   dtypes={k: w.dtype for k, w in writers.items()},
                   band_names={k: w.band_names for k, w in writers.items()})
    with atomic_file(paths["record"], overwrite=options.overwrite) as tmp:
        tmp.write_text(record.to_json())
    return record


def _window_key(window: Window) -> tuple[int, int, int, int]:
    return (int(window.col_off), int(window.row_off), int(window.width), int(window.height))


def _encode_days(days: np.ndarray | None, quality: np.ndarray) -> np.ndarray:
    """Days as uint16 (rounded absolute distance, nodata 65535)."""
    out = np.full((1, *quality.shape), DAYS_NODATA, dtype=np.uint16)
    if days is not None:
        ok = np.isfinite(days)
        out[0][ok] = np.clip(np.rint(np.abs(days[ok])), 0, DAYS_NODATA - 1).astype(np.uint16)
    return out

