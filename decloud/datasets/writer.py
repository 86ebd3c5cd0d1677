"""Writing a dataset plan as shards of patches, resumably and in parallel.

Each split's samples are cut into fixed slices of ``shard_size`` (in plan order); each
slice is one task that reads its patches and writes one shard under a temporary name,
renamed into place when complete. A rerun with the same plan and settings keeps the
complete shards and writes the missing ones; ``manifest.json`` is written last, so
its presence means the dataset is complete. Tasks run in this process
(``workers=1``), on a local Dask cluster of processes (``workers > 1``) or on a Dask
scheduler (``scheduler="tcp://..."``), e.g. one started by dask-jobqueue on a cluster.

Patches are read on the tile's grid registered in the catalog: a ``patch_size``
window centred on the catalog patch, so windows may extend past the tile's edge
(nodata there). The 20 m keys are read on the tile's 20 m grid over the same
footprint (half the size, at half the offsets).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping
from tqdm import tqdm

from decloud._version import __version__
from decloud.constants import (
    S1_POLARISATIONS,
    S2_10M_BANDS,
    S2_20M_BANDS,
    normalize_band_name,
)
from decloud.datasets.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    META_KEY,
    PLAN_FILE,
    SHARD_DIR,
    KeySpec,
    dataset_keys,
    shard_name,
    write_npz,
)
from decloud.datasets.plan import DatasetPlan, PlanSample
from decloud.env import ensure_env, gdal_env
from decloud.errors import DatasetError, DecloudError, SchedulerError
from decloud.grid import Grid, RasterPool, open_raster, require_coverage
from decloud.index.catalog import Catalog, ProductRecord
from decloud.index.stats import PatchGrid
from decloud.inputs import AcquisitionProducts, InputProducts, read_inputs
from decloud.products import Dem, Product, S1Product, S2Product
from decloud.products.dem import DemPolicy
from decloud.writers import atomic_file

__all__ = ["WriteOptions", "find_dem", "write_dataset"]


@dataclass(frozen=True)
class WriteOptions:
    """How :func:`write_dataset` writes a plan.

    Attributes:
        patch_size: Patch side at 10 m, even; the window is centred on the catalog
            patch, so ``catalog patch size - patch_size`` must be a multiple of 4
            (keeps the 20 m window on whole pixels).
        shard_size: Samples per shard.
        workers: Processes of a local Dask cluster; 1 writes in this process.
        scheduler: Address of a running Dask scheduler (``tcp://host:8786``); takes
            precedence over ``workers``.
        scheduler_timeout: Seconds to wait for the scheduler to answer; an unreachable
            one is a :class:`~decloud.errors.SchedulerError` naming its address, raised
            before anything is written.
        progress: Show a progress bar over shards.
        overwrite: Replace a dataset of another plan (or settings) in the folder, or
            rewrite this one from scratch.
        bands10: S2 bands of the ``s2_<acq>`` keys (any usual spelling).
        bands20: S2 bands of the ``s2_20m_<acq>`` keys; empty: the dataset has no
            ``s2_20m_<acq>`` key (10 m-only archives).
        dem_root: Folder of ``<TILE>.tif`` DEMs; by default ``DEM/`` of the archive.
        compress: Deflate the shards (smaller, slower to read).

    Raises:
        DatasetError: An odd or non-positive patch size, a non-positive shard size or
            worker count, no 10 m band or a band named twice.
    """

    patch_size: int = 256
    shard_size: int = 64
    workers: int = 1
    scheduler: str | None = None
    scheduler_timeout: float = 10.0
    progress: bool = True
    overwrite: bool = False
    bands10: tuple[str, ...] = S2_10M_BANDS
    bands20: tuple[str, ...] = S2_20M_BANDS
    dem_root: Path | None = None
    compress: bool = False

    def __post_init__(self) -> None:
        if self.patch_size <= 0 or self.patch_size % 2:
            raise DatasetError(f"patch size must be a positive even number, not "
                               f"{self.patch_size}", field="patch_size")
        if self.shard_size <= 0 or self.workers <= 0:
            raise DatasetError(f"invalid shard size {self.shard_size} or workers "
                               f"{self.workers}", field="shard_size")
        if not self.scheduler_timeout > 0:
            raise DatasetError(f"the scheduler timeout must be positive, not "
                               f"{self.scheduler_timeout}", field="scheduler_timeout")
        # Normalised once here: the identity of a dataset compares these.
        object.__setattr__(self, "bands10", _bands(self.bands10, "bands10"))
        object.__setattr__(self, "bands20", _bands(self.bands20, "bands20", empty=True))
        if self.dem_root is not None:
            object.__setattr__(self, "dem_root", Path(self.dem_root))


@dataclass(frozen=True)
class _SampleJob:
    """A sample with everything needed to read it, without the catalog (picklable)."""

    index: int
    tile: str
    row: int
    col: int
    s2: dict[str, ProductRecord | None]
    s1: dict[str, ProductRecord | None]


@dataclass(frozen=True)
class _ShardJob:
    """One shard to write: a task of its own (picklable, sent to Dask workers)."""

    path: Path
    split: str
    samples: tuple[_SampleJob, ...]
    keys: tuple[KeySpec, ...]
    grids: dict[str, Grid]
    dems: dict[str, str]
    catalog_patch: int
    patch_size: int
    compress: bool


# Reading ---------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _footprint(grid: Grid, window: Window) -> dict[str, Any]:
    """The window's footprint as GeoJSON polygons in the tile CRS and in EPSG:4326."""
    local = mapping(box(*grid.subgrid(window).bounds))
    lonlat = transform_geom(grid.crs, "EPSG:4326", local)
    return {"crs": grid.crs.to_string(), "tile_crs": json.loads(json.dumps(local)),
            "epsg4326": json.loads(json.dumps(lonlat))}


def _read_sample(
    job: _ShardJob, sample: _SampleJob, products: dict[int, Product], pool: RasterPool,
    out: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Read one sample's arrays ``(H, W, C)`` into ``out`` by key; return its meta."""
    grid = job.grids[sample.tile]
    window = PatchGrid(grid, job.catalog_patch).window(sample.row, sample.col, job.patch_size)

    def opened(record: ProductRecord) -> Product:
        if record.id not in products:
            products[record.id] = _open_record(record)
        return products[record.id]

    inputs = InputProducts(
        {name: _acquisition(sample.s2.get(name), sample.s1.get(name), opened)
         for name in sample.s2},
        Dem(Path(job.dems[sample.tile])) if sample.tile in job.dems else None)
    # The tile's DEM coverage was checked up front; the part of a window past the tile's
    # edge may not be covered, and is nodata then.
    read_inputs(job.keys, inputs, grid, window, dem_policy=DemPolicy.PARTIAL, pool=pool,
                out=out)

    acquisitions: dict[str, dict[str, Any]] = {}
    for name in sample.s2:
        entry: dict[str, Any] = {}
        for sensor, record in (("s2", sample.s2[name]), ("s1", sample.s1.get(name))):
            if record is not None:
                entry[sensor] = {"id": record.id, "name": opened(record).name,
                                 "acquired": _iso(record.acquired)}
        acquisitions[name] = entry
    meta = {
        "index": sample.index, "split": job.split, "tile": sample.tile, "row": sample.row,
        "col": sample.col,
        "window": {"col_off": int(window.col_off), "row_off": int(window.row_off),
                   "width": job.patch_size, "height": job.patch_size},
        "footprint": _footprint(grid, window),
        "acquisitions": acquisitions,
    }
    return meta


def _acquisition(s2_record: ProductRecord | None, s1_record: ProductRecord | None,
                 opened: Callable[[ProductRecord], Product]) -> AcquisitionProducts:
    """The opened products of an acquisition, checked to be of the sensor the plan says."""
    s2 = opened(s2_record) if s2_record is not None else None
    s1 = opened(s1_record) if s1_record is not None else None
    if s2 is not None and not isinstance(s2, S2Product):
        raise DatasetError(f"{s2.name} is not an S2 product, as the plan says",
                           path=s2.path, field="s2")
    if s1 is not None and not isinstance(s1, S1Product):
        raise DatasetError(f"{s1.name} is not an S1 image, as the plan says",
                           path=s1.path, field="s1")
    return AcquisitionProducts(s2, s1)


#: Rasters a shard task keeps open at most (see :func:`_write_shard`).
_SHARD_POOL_FILES = 512


@functools.lru_cache(maxsize=512)
def _open_record(record: ProductRecord) -> Product:
    """Open a product once per process (a shard task reuses what earlier ones opened)."""
    return record.open()


def _write_shard(job: _ShardJob) -> str:
    """Read a shard's samples and write it atomically; returns its file name."""
    n = len(job.samples)
    # Not pre-filled: every sample writes every key whole (read_inputs fills each key's
    # full padded window), so a fill would be one more pass over the shard.
    arrays = {spec.name: np.empty((n, *spec.shape), dtype=spec.dtype) for spec in job.keys}
    metas: list[str] = []
    products: dict[int, Product] = {}
    # GDAL configuration is per thread and process: each task sets decloud's. The pool
    # holds a shard's working set (its samples' products: about 200 files for 16 OS2
    # samples); a smaller one closes and reopens files sample after sample.
    with gdal_env(), RasterPool(max_open=_SHARD_POOL_FILES) as pool:
        for i, sample in enumerate(job.samples):
            # Read into the shard's arrays: stored S2 integers go there with no copy.
            meta = _read_sample(job, sample, products, pool,
                                {key: array[i] for key, array in arrays.items()})
            metas.append(json.dumps(meta, separators=(",", ":")))
    arrays[META_KEY] = np.array(metas, dtype=str)
    with atomic_file(job.path, overwrite=True) as tmp:
        write_npz(tmp, arrays, compress=job.compress)
    return job.path.name


# Checks before writing ---------------------------------------------------------------


def find_dem(tile: str, records: Sequence[ProductRecord], dem_root: Path | None) -> Path | None:
    """The DEM file of a tile: ``<dem_root>/<TILE>.tif`` (or ``<dem_root>/<TILE>/*.tif``).

    Without ``dem_root``, the ``DEM`` folder of the archive the tile's S2 products are
    in (``ARCHIVE/S2/<TILE>/<product>`` next to ``ARCHIVE/DEM``) is searched.
    """
    if dem_root is not None:
        roots = [Path(dem_root)]
    else:
        roots = []
        for record in records:
            for parent in Path(record.path).parents[:3]:
                candidate = parent / "DEM"
                if candidate not in roots:
                    roots.append(candidate)
    for root in roots:
        if not root.is_dir():
            continue
        for stem in (tile, tile[1:]):
            for suffix in (".tif", ".tiff", ".vrt"):
                if (root / f"{stem}{suffix}").is_file():
                    return root / f"{stem}{suffix}"
        if (root / tile).is_dir():
            found = sorted((root / tile).glob("*.tif"))
            if found:
                return found[0]
    return None


def _dems(catalog: Catalog, tiles: list[str], grids: dict[str, Grid],
          dem_root: Path | None) -> dict[str, str]:
    """Each tile's DEM, checked to cover the tile; an error names the tile otherwise."""
    out: dict[str, str] = {}
    for tile in tiles:
        path = find_dem(tile, catalog.records(tile, "S2"), dem_root)
        if path is None:
            where = f"in {dem_root}" if dem_root else "next to the tile's S2 archive (DEM/)"
            raise DatasetError(f"the layout asks for a DEM and there is none for tile {tile} "
                               f"{where}; pass the DEM folder (dem_root, --dem-root)",
                               path=dem_root, field="dem")
        try:
            dem = Dem.open(path)
            with open_raster(dem.path) as src:
                require_coverage(src.bounds, src.crs, grids[tile], path=str(path), what="DEM")
        except DecloudError as err:
            raise DatasetError(f"the DEM of tile {tile} cannot be used: {err.message}",
                               path=path, field="dem") from err
        out[tile] = str(path)
    return out


def _check_products(records: dict[int, ProductRecord], bands10: tuple[str, ...],
                    bands20: tuple[str, ...]) -> None:
    """Every product opens and has the bands asked for (before anything is written)."""
    for record in records.values():
        product = record.open()
        wanted = (*bands10, *bands20) if record.sensor == "S2" else S1_POLARISATIONS
        for band in wanted:
            if band not in product.bands:
                hint = ("; choose bands every product has with bands10/bands20 "
                        "(--bands10/--bands20)") if record.sensor == "S2" else ""
                raise DatasetError(
                    f"product {product.name} has no band {band} (it has "
                    f"{', '.join(product.band_names)}){hint}", path=record.path, field=band)


def _bands(given: Sequence[str], what: str, *, empty: bool = False) -> tuple[str, ...]:
    bands = tuple(normalize_band_name(b) for b in given)
    if not bands and not empty:
        raise DatasetError(f"{what} names no band", field=what)
    if len(set(bands)) != len(bands):
        raise DatasetError(f"{what} names a band twice: {', '.join(bands)}", field=what)
    return bands


# Folder state ------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Refuse a second writer of the same folder (its shards would collide)."""
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DatasetError("another process is writing this dataset", path=folder) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stored_identity(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / PLAN_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"unreadable {PLAN_FILE} ({err}); pass overwrite to start again",
                           path=folder / PLAN_FILE) from err
    return {"fingerprint": data.get("fingerprint"), "writer": data.get("writer")}


def _prepare(folder: Path, identity: dict[str, Any], plan: DatasetPlan, overwrite: bool) -> None:
    """Make ``folder`` ready for this plan: new, resumed, or (overwrite) started again."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = {MANIFEST, PLAN_FILE, SHARD_DIR, ".lock"}
    stored = _stored_identity(folder)
    if stored is None:
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if others or ((folder / MANIFEST).exists() and not overwrite):
            raise DatasetError(f"the folder is not empty and holds no decloud dataset plan "
                               f"({', '.join(others) or MANIFEST}); choose a new or empty "
                               "folder", path=folder)
    elif stored != identity:
        if not overwrite:
            what = "its plan (seed, layout or samples) differs" \
                if stored["fingerprint"] != identity["fingerprint"] else \
                "its writer settings (patch size, shard size, bands, DEMs) differ"
            raise DatasetError(f"this folder holds another dataset: {what}; pass overwrite to "
                               "replace it, or choose another folder", path=folder)
    elif not overwrite:
        return  # same dataset: resume
    (folder / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(folder / SHARD_DIR, ignore_errors=True)
    with atomic_file(folder / PLAN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
                                   **identity, "plan": plan.to_dict()}, indent=1))


def _shard_complete(job: _ShardJob) -> bool:
    """Whether a shard file is there with every key and the right number of samples."""
    if not job.path.is_file():
        return False
    try:
        with zipfile.ZipFile(job.path) as archive:
            names = set(archive.namelist())
        if names != {f"{k.name}.npy" for k in job.keys} | {f"{META_KEY}.npy"}:
            return False
        with np.load(job.path, allow_pickle=False) as shard:
            return int(shard[META_KEY].shape[0]) == len(job.samples)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


# Running -----------------------------------------------------------------------------


#: Called with the number of shards written so far after each one (in the process that
#: calls :func:`write_dataset`). None in production; tests set it to simulate a crash.
_after_shard: Callable[[int], None] | None = None


def _connect(address: str, timeout: float) -> Any:
    """A Dask client of the scheduler at ``address``, or a SchedulerError within ``timeout``."""
    from dask.distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, ValueError) as err:  # TimeoutError is an OSError; ValueError: address
        raise SchedulerError(f"cannot reach the Dask scheduler at {address} within "
                             f"{timeout:g} s ({type(err).__name__}: {err}); is it running, "
                             "and is the address right?", field="scheduler") from err


def _run(jobs: list[_ShardJob], workers: int, client: Any, progress: bool) -> None:
    """Write the shards in this process or on Dask; completed shards stay on an error.

    ``client``: a connected Dask client (``scheduler``), or None (this process, or a
    local cluster of ``workers`` processes).
    """
    bar = tqdm(total=len(jobs), desc="dataset", unit="shard", disable=None if progress else True)

    def done(k: int) -> None:
        bar.update()
        if _after_shard is not None:
            _after_shard(k + 1)

    try:
        if client is None and workers <= 1:
            for k, job in enumerate(jobs):
                _write_shard(job)
                done(k)
            return
        from dask.distributed import Client, LocalCluster, as_completed

        with contextlib.ExitStack() as stack:
            if client is None:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            futures = [client.submit(_write_shard, job, pure=False) for job in jobs]
            for k, future in enumerate(as_completed(futures)):
                future.result()  # re-raises a task's error here
                done(k)
    finally:
        bar.close()


@ensure_env
def write_dataset(catalog: Catalog, plan: DatasetPlan, out_dir: str | Path,
                  options: WriteOptions | None = None) -> Path:
    """Write a plan's samples as a dataset folder (see :mod:`decloud.datasets.format`).

    Everything that can be checked is checked before anything is written: the plan's
    products are in the catalog and have the bands asked for, and every tile has a
    DEM covering it when the layout asks for one. Rerunning with the same plan and
    settings resumes an interrupted run; a complete dataset is left as it is.

    Args:
        catalog: The catalog the plan was drawn from.
        plan: The plan.
        out_dir: The dataset folder (new, empty, or holding this plan's dataset).
        options: Patch and shard sizes, bands, workers...; the defaults when None.

    Returns:
        The dataset folder.

    Raises:
        DatasetError: Invalid settings, a patch larger than the plan's limits were
            checked on (:attr:`DatasetPlan.checked_patch_size`), a product lacking a
            band, a missing DEM, a catalog that changed since the plan, or another
            dataset in ``out_dir``.
    """
    options = options if options is not None else WriteOptions()
    folder = Path(out_dir)
    patch_size, shard_size, compress = options.patch_size, options.shard_size, options.compress
    if (plan.patch_size - patch_size) % 4:
        raise DatasetError(
            f"patch size {patch_size} cannot be centred on the catalog's {plan.patch_size} px "
            "patches on whole 20 m pixels: their difference must be a multiple of 4",
            field="patch_size")
    if patch_size > plan.checked_patch_size:
        raise DatasetError(
            f"the plan's samples meet the layout's cloud and nodata limits on "
            f"{plan.checked_patch_size} px patches, not on {patch_size} px ones (they would "
            "reach into pixels the limits were not checked on): draw the plan with "
            f"PlanOptions(patch_size={patch_size}) (dataset create --patch-size does)",
            field="patch_size")
    if plan.patch_size != catalog.patch_size:
        raise DatasetError(f"the plan was drawn on {plan.patch_size} px patches, the catalog "
                           f"has {catalog.patch_size} px ones", path=catalog.folder,
                           field="patch_size")
    if not plan.samples:
        raise DatasetError("the plan has no sample", field="samples")
    b10, b20 = options.bands10, options.bands20
    layout = plan.layout_model()
    keys = dataset_keys(layout, patch_size, b10, b20)

    ids = sorted({i for s in plan.samples for i in s.product_ids()})
    records = {r.id: r for r in catalog.records(ids=ids)}
    for pid in ids:
        if pid not in records or records[pid].path != plan.products[pid]["path"]:
            raise DatasetError(f"product {plan.products[pid]['path']} (id {pid}) of the plan "
                               "is not in the catalog any more: draw the plan again",
                               path=catalog.folder, field="plan")
    grids: dict[str, Grid] = {}
    for tile in sorted({s.tile for s in plan.samples}):
        grid = catalog.tile_grid(tile)
        if grid is None:
            raise DatasetError(f"tile {tile} of the plan is not in the catalog",
                               path=catalog.folder, field="tiles")
        grids[tile] = grid
    dems = _dems(catalog, sorted(grids), grids, options.dem_root) if layout.dem else {}
    with gdal_env():
        _check_products(records, b10, b20)

    jobs = _jobs(plan, folder, keys, records, grids, dems, patch_size, shard_size, compress)
    identity = {"fingerprint": plan.fingerprint(), "writer": {
        "patch_size": patch_size, "shard_size": shard_size, "bands10": list(b10),
        "bands20": list(b20), "compress": compress, "dems": dems}}
    with contextlib.ExitStack() as connection:
        # Reach the scheduler before anything is written: an unreachable one fails fast.
        client = connection.enter_context(
            _connect(options.scheduler, options.scheduler_timeout)) if options.scheduler \
            else None
        _write(folder, plan, identity, jobs, keys, grids, dems, options, client)
    return folder


def _write(folder: Path, plan: DatasetPlan, identity: dict[str, Any], jobs: list[_ShardJob],
           keys: dict[str, KeySpec], grids: dict[str, Grid], dems: dict[str, str],
           options: WriteOptions, client: Any) -> None:
    """Prepare the folder, write the missing shards, then the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        _prepare(folder, identity, plan, options.overwrite)
        (folder / SHARD_DIR).mkdir(exist_ok=True)
        # Temporary files of a run killed mid-shard (a clean failure removes its own).
        for stale in (folder / SHARD_DIR).glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        todo = [job for job in jobs if not _shard_complete(job)]
        if todo or not (folder / MANIFEST).is_file():
            (folder / MANIFEST).unlink(missing_ok=True)
            _run(todo, options.workers, client, options.progress)
            manifest = _manifest(plan, identity, keys, grids, dems, jobs, folder)
            with atomic_file(folder / MANIFEST, overwrite=True) as tmp:
                tmp.write_text(json.dumps(manifest, indent=1))


def _jobs(plan: DatasetPlan, folder: Path, keys: dict[str, KeySpec],
          records: dict[int, ProductRecord], grids: dict[str, Grid], dems: dict[str, str],
          patch_size: int, shard_size: int, compress: bool) -> list[_ShardJob]:
    """Fixed slices of each split's samples, in plan order."""
    jobs = []
    for split in plan.split_names:
        samples = plan.split(split)
        for number, start in enumerate(range(0, len(samples), shard_size)):
            chunk = samples[start:start + shard_size]
            tiles = {s.tile for s in chunk}
            jobs.append(_ShardJob(
                path=folder / shard_name(split, number), split=split,
                samples=tuple(_sample_job(start + i, s, records) for i, s in enumerate(chunk)),
                keys=tuple(keys.values()), grids={t: grids[t] for t in tiles},
                dems={t: dems[t] for t in tiles if t in dems}, catalog_patch=plan.patch_size,
                patch_size=patch_size, compress=compress))
    return jobs


def _sample_job(index: int, sample: PlanSample, records: dict[int, ProductRecord]) -> _SampleJob:
    return _SampleJob(
        index=index, tile=sample.tile, row=sample.row, col=sample.col,
        s2={a: None if i is None else records[i] for a, i in sample.s2.items()},
        s1={a: None if i is None else records[i] for a, i in sample.s1.items()})


def _manifest(plan: DatasetPlan, identity: dict[str, Any], keys: dict[str, KeySpec],
              grids: dict[str, Grid], dems: dict[str, str], jobs: list[_ShardJob],
              folder: Path) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in plan.split_names:
        mine = [j for j in jobs if j.split == split]
        splits[split] = {
            "samples": sum(len(j.samples) for j in mine),
            "shards": [{"file": str(j.path.relative_to(folder)), "samples": len(j.samples)}
                       for j in mine]}
    return {
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        "decloud_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "layout": plan.layout, "resolved_layout": plan.resolved_layout,
        "seed": plan.seed, "sampler": plan.sampler, "per_position": plan.per_position,
        "requested": plan.requested, "split_config": plan.split_config,
        "catalog": plan.catalog, "catalog_patch_size": plan.patch_size,
        "plan": PLAN_FILE, "plan_fingerprint": identity["fingerprint"],
        "patch_size": identity["writer"]["patch_size"],
        "shard_size": identity["writer"]["shard_size"],
        "compressed": identity["writer"]["compress"],
        "layout_order": "arrays are (n, H, W, C): samples, rows, columns, channels",
        "keys": {k: spec.describe() for k, spec in keys.items()},
        "meta": {"key": META_KEY, "dtype": "str",
                 "content": "one JSON object per sample: index, split, tile, row, col, window "
                            "(10 m pixels of the tile grid), footprint (GeoJSON in the tile "
                            "CRS and EPSG:4326), acquisitions (per acquisition: s2/s1 product "
                            "id, name, acquired)"},
        "splits": splits,
        "tiles": {t: {"crs": g.crs.to_string(), "crs_wkt": g.crs.to_wkt(),
                      "transform": list(g.transform)[:6], "width": g.width, "height": g.height,
                      "dem": dems.get(t)} for t, g in grids.items()},
    }
