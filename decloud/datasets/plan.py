"""Dataset plans: which tuples of products, at which patch positions, go to which split.

A plan is drawn from a catalog and an acquisition layout before any pixel is read. It
is reproducible (the same catalog, layout, seed and arguments give the same plan, in
the same order), JSON-serialisable, and records how it was made, so that a dataset
folder can say exactly where every sample comes from and a rerun can tell whether it
is continuing the same dataset.

The layout's cloud and nodata limits hold for the sample patch itself, not only for
the catalog cell it is centred on: with ``PlanOptions.patch_size`` larger than the
catalog's cells, each cell's statistics are first aggregated over the footprint of the
patch centred on it (:func:`patch_stack`), so a 256 px sample drawn from 64 px cells
does not reach into nodata or clouds the layout refuses. The writer refuses a patch
larger than the one the plan was checked for.

Seeds: the layout's random cloud bounds are drawn with ``default_rng(seed)``; the
block split map uses ``seed``; the sampler of each (tile, split) gets a seed derived
from ``seed`` and the tile and split *names* (not their positions in a list, so adding
a tile leaves the draws of the others unchanged).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decloud.archive import normalize_tile
from decloud.errors import DatasetError
from decloud.index.catalog import Catalog, ProductRecord
from decloud.index.samplers import SAMPLERS
from decloud.index.search import TileStack, TupleSearch
from decloud.index.splits import block_splits, roi_splits
from decloud.layouts import Layout

__all__ = [
    "DEFAULT_SPLIT",
    "PLAN_VERSION",
    "DatasetPlan",
    "PlanOptions",
    "PlanSample",
    "allocate",
    "derive_seed",
    "empty_reasons",
    "patch_stack",
    "plan_dataset",
]

#: Version of the plan's JSON form.
PLAN_VERSION = 1

#: The split every sample belongs to when no split is asked for.
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class PlanSample:
    """One sample: a patch position of a tile and, per acquisition, its products.

    Attributes:
        tile: Tile id.
        row: Patch row in the catalog's patch grid.
        col: Patch column.
        split: Split name.
        s2: Catalog id of the S2 product per acquisition (None: no S2 there).
        s1: Catalog id of the S1 image per acquisition (None: no S1 there).
    """

    tile: str
    row: int
    col: int
    split: str
    s2: dict[str, int | None]
    s1: dict[str, int | None]

    def product_ids(self) -> list[int]:
        """Catalog ids of every product the sample uses."""
        return [i for i in (*self.s2.values(), *self.s1.values()) if i is not None]


@dataclass
class DatasetPlan:
    """The samples of a dataset and how they were chosen.

    Samples are ordered by split (in :attr:`split_names` order), then tile (sorted),
    then in the sampler's order.

    Attributes:
        samples: The samples.
        layout: The layout as given (``Layout.model_dump()``), random bounds unresolved.
        resolved_layout: The layout with its random bounds drawn with the seed.
        seed: The main seed.
        sampler: Sampler name (a key of :data:`decloud.index.samplers.SAMPLERS`).
        per_position: Tuples per position (constant sampler).
        requested: Number of samples asked for (the plan may hold fewer when tuples
            run short).
        catalog: The catalog folder.
        patch_size: The catalog's patch size (10 m pixels): the stride of positions.
        sample_patch_size: Side (10 m pixels) of the sample patches the layout's cloud
            and nodata limits were checked on (None: the catalog's cells, plans of
            older versions).
        tiles: Tiles planned, sorted.
        split_names: Split names, in order.
        split_config: How splits were made: ``{"kind": "none" | "blocks" | "rois", ...}``.
        products: Every product used, by catalog id: sensor, path, acquisition time.
        version: Version of this JSON form.
    """

    samples: list[PlanSample]
    layout: dict[str, Any]
    resolved_layout: dict[str, Any]
    seed: int
    sampler: str
    per_position: int
    requested: int
    catalog: str
    patch_size: int
    tiles: list[str]
    split_names: list[str]
    split_config: dict[str, Any]
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    sample_patch_size: int | None = None
    version: int = PLAN_VERSION

    @property
    def checked_patch_size(self) -> int:
        """The largest sample patch the layout's limits were checked for (10 m pixels)."""
        return self.sample_patch_size or self.patch_size

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, name: str) -> list[PlanSample]:
        """The samples of one split, in plan order."""
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, int]:
        """Samples per split."""
        return {name: sum(s.split == name for s in self.samples) for name in self.split_names}

    def layout_model(self) -> Layout:
        """The resolved layout as a :class:`Layout`."""
        return Layout.model_validate(self.resolved_layout)

    # JSON -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (product ids become string keys, as JSON wants)."""
        out = asdict(self)
        out["products"] = {str(k): v for k, v in sorted(self.products.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetPlan:
        """Rebuild a plan from :meth:`to_dict`'s output.

        Raises:
            DatasetError: The dict is not a plan of a version this decloud reads.
        """
        version = data.get("version")
        if version != PLAN_VERSION:
            raise DatasetError(f"plan version {version!r}, this decloud reads {PLAN_VERSION}",
                               field="version")
        try:
            samples = [PlanSample(**s) for s in data["samples"]]
            fields = {k: data[k] for k in (
                "layout", "resolved_layout", "seed", "sampler", "per_position", "requested",
                "catalog", "patch_size", "tiles", "split_names", "split_config")}
            products = {int(k): dict(v) for k, v in data["products"].items()}
            checked = data.get("sample_patch_size")
            checked = None if checked is None else int(checked)
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"not a dataset plan ({err})", field="plan") from err
        return cls(samples=samples, products=products, sample_patch_size=checked, **fields)

    def to_json(self) -> str:
        """JSON text; key order is kept (acquisition order is the order of dataset keys)."""
        return json.dumps(self.to_dict(), indent=1)

    def fingerprint(self) -> str:
        """SHA-256 of what the plan asks for: equal for plans giving the same dataset.

        Where the layout file and the catalog folder were (provenance only) is left
        out, so a plan redrawn from a moved catalog or layout file still matches.
        """
        data = self.to_dict()
        data.pop("catalog")
        if data["sample_patch_size"] is None:
            data.pop("sample_patch_size")  # plans drawn before it existed keep their print
        for key in ("layout", "resolved_layout"):
            data[key] = {k: v for k, v in data[key].items() if k != "source"}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (atomically)."""
        from decloud.writers import atomic_file

        path = Path(path)
        with atomic_file(path, overwrite=True) as tmp:
            tmp.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> DatasetPlan:
        """Read a plan written by :meth:`save` (or a dataset's ``plan.json``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise DatasetError("plan file not found", path=path) from err
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"cannot read the plan ({err})", path=path) from err
        # A dataset's plan.json wraps the plan with the writer settings.
        if isinstance(data, dict) and "plan" in data and "samples" not in data:
            data = data["plan"]
        try:
            return cls.from_dict(data)
        except DatasetError as err:
            raise DatasetError(err.message, path=path, field=err.field) from err


def derive_seed(seed: int, *names: str) -> int:
    """A seed derived from ``seed`` and names, stable across runs and platforms.

    Python's ``hash()`` of strings changes from one process to the next, so names are
    hashed with SHA-256 and mixed by numpy's SeedSequence.
    """
    words = [int.from_bytes(hashlib.sha256(n.encode()).digest()[:4], "little") for n in names]
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])


def allocate(n: int, weights: Sequence[float]) -> list[int]:
    """Split ``n`` into integers proportional to ``weights`` (largest remainders).

    Ties go to the earlier entry, so the result is deterministic. Zero weights get 0.
    """
    w = np.asarray(weights, np.float64)
    if n <= 0 or w.size == 0 or w.sum() <= 0:
        return [0] * int(w.size)
    exact = n * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    order = sorted(range(w.size), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: n - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


def _product_info(record: ProductRecord) -> dict[str, Any]:
    return {"sensor": record.sensor, "path": record.path,
            "acquired": record.acquired.isoformat().replace("+00:00", "Z")}


def _sampler(name: str, seed: int, per_position: int) -> Any:
    if name not in SAMPLERS:
        raise DatasetError(f"unknown sampler {name!r} (one of {', '.join(sorted(SAMPLERS))})",
                           field="sampler")
    cls = SAMPLERS[name]
    if "per_position" in inspect.signature(cls).parameters:
        return cls(seed=seed, per_position=per_position)
    return cls(seed=seed)


def _overlaps(cells: int, cell: int, size: int) -> np.ndarray:
    """Pixels shared by the ``size`` px window centred on cell ``i`` and cell ``j``.

    ``(cells, cells)`` float64; a row sums to less than ``size`` where the window
    reaches past the cell grid (pixels that are nodata in the samples).
    """
    starts = np.arange(cells) * cell + (cell - size) // 2
    lo = np.maximum(starts[:, None], np.arange(cells)[None, :] * cell)
    hi = np.minimum(starts[:, None] + size, (np.arange(cells)[None, :] + 1) * cell)
    return np.clip(hi - lo, 0, None).astype(np.float64)


def _aggregate(stats: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Overlap-weighted sums of per-cell values over each patch: ``(P, R, C)``."""
    return np.einsum("ri,pij,cj->prc", rows, stats, cols, optimize=True)


def patch_stack(stack: TileStack, patch_size: int) -> TileStack:
    """The tile's statistics for ``patch_size`` px patches centred on the catalog cells.

    Each cell's cloud and nodata percentages become those of the sample patch centred
    on it: nodata is the overlap-weighted mean of the nodata of the cells the patch
    covers, with the part of the patch past the tile counted as nodata (the samples
    are nodata there); cloud is the overlap-weighted share of cloud among the valid
    pixels. Both are exact when the patch covers whole cells, and otherwise assume a
    cell's pixels are alike; to the catalog's 1 % resolution either way. A patch
    touching a cell with any nodata therefore has nodata above 0.

    Args:
        stack: A tile's statistics per catalog cell.
        patch_size: Side of the sample patches (10 m pixels).

    Returns:
        ``stack`` itself when the patch is no larger than a cell, else a stack of the
        same products whose statistics are float percentages per patch.
    """
    cell = stack.patches.patch_size
    if patch_size <= cell:
        return stack
    rows = _overlaps(stack.patches.rows, cell, patch_size)
    cols = _overlaps(stack.patches.cols, cell, patch_size)
    area = float(patch_size * patch_size)
    inside = rows.sum(axis=1)[:, None] * cols.sum(axis=1)[None, :]

    def nodata(stats: np.ndarray) -> np.ndarray:
        missing = _aggregate(stats.astype(np.float64) / 100.0, rows, cols) + (area - inside)
        return 100.0 * missing / area

    s2_valid = 1.0 - stack.s2_nodata.astype(np.float64) / 100.0
    valid = _aggregate(s2_valid, rows, cols)
    cloudy = _aggregate(s2_valid * stack.s2_cloud.astype(np.float64) / 100.0, rows, cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        cloud = np.where(valid > 0, 100.0 * cloudy / np.maximum(valid, 1e-12), 0.0)
    return TileStack(tile=stack.tile, patches=stack.patches, s2=stack.s2, s2_cloud=cloud,
                     s2_nodata=nodata(stack.s2_nodata), s1=stack.s1,
                     s1_nodata=nodata(stack.s1_nodata))


def empty_reasons(search: TupleSearch) -> list[str]:
    """Why a layout finds no tuple on a tile: which acquisition finds nothing, and why.

    Checked in order, the first failing test of each acquisition is reported: the
    catalog has no product of a sensor the acquisition needs; no S2 product meets its
    cloud range and nodata limit on any patch; none of those has an S1 image within
    its gap (pass, orbits, S1 nodata); no candidate lies in its time window from a
    reference product that qualifies. When every acquisition finds candidates alone,
    the reason is that they never qualify at the same patch together.

    Args:
        search: The search of a resolved layout on a tile.

    Returns:
        One sentence per failing acquisition (empty when the layout has tuples there).
    """
    if search.counts().sum() > 0:
        return []
    stack, layout = search.stack, search.layout
    tile, reasons = stack.tile, []
    ref = search._ref_slot
    ref_ok = ref.weight.any(axis=(1, 2))
    for slot in search.slots:
        absent = [f"the catalog holds no {sensor.upper()} image for tile {tile}; "
                  f"acquisition {name} needs {sensor}"
                  for name in slot.members
                  for sensor, records in (("s2", stack.s2), ("s1", stack.s1))
                  if getattr(layout.acquisitions[name], sensor) is not None and not records]
        if absent:
            reasons += absent
            continue
        label = ", ".join(slot.members)
        if slot.s1_only:
            spec = layout.acquisitions[slot.members[0]].s1
            if spec is not None and not slot.weight.any():
                reasons.append(f"no S1 image of tile {tile} meets acquisition {label}'s "
                               f"nodata <= {spec.nodata_max} % (pass "
                               f"{spec.pass_direction or 'any'}, orbits "
                               f"{list(spec.relative_orbits) or 'any'}) on any patch")
                continue
        elif not slot.weight.any():
            for name in slot.members:
                acq = layout.acquisitions[name]
                if acq.s2 is None:
                    continue
                lo, hi = (float(b) for b in acq.s2.cloud)  # type: ignore[arg-type]
                s2_ok = ((stack.s2_cloud >= lo) & (stack.s2_cloud <= hi)
                         & (stack.s2_nodata <= acq.s2.nodata_max))
                if not s2_ok.any():
                    reasons.append(
                        f"no S2 product of tile {tile} ({len(stack.s2)} in the catalog) has "
                        f"cloud in [{lo:g}, {hi:g}] % and nodata <= {acq.s2.nodata_max} % on "
                        f"any patch, as acquisition {name} asks (a sample patch counts the "
                        "cells it covers)")
                elif acq.s1 is not None:
                    reasons.append(
                        f"no S1 image of tile {tile} within {acq.s1.max_gap_hours:g} h of "
                        f"an S2 product meeting acquisition {name}'s cloud and nodata "
                        f"limits, with S1 nodata <= {acq.s1.nodata_max} % at the same patch")
            if len(slot.members) > 1 and not any(f"acquisition {m} " in r for m in slot.members
                                                 for r in reasons):
                reasons.append(f"acquisitions {label} (one S2 product) are never met by the "
                               f"same product at the same patch of tile {tile}")
            continue
        if slot is ref or not ref_ok.any():
            continue
        lo_idx, hi_idx = search._ranges[id(slot)]
        has = (slot.cumsum[hi_idx] - slot.cumsum[lo_idx]).any(axis=(1, 2)) & ref_ok
        if not has.any():
            start, end = slot.window
            what = "S1 image" if slot.s1_only else "S2 product"
            reasons.append(f"no {what} of tile {tile} meeting acquisition {label}'s "
                           f"limits lies in its window [{start:g}, {end:g}] h of a "
                           f"reference product ({layout.reference_name}) that qualifies")
    if not reasons:
        reasons.append(f"on tile {tile}, every acquisition finds products alone, but never "
                       "all at the same patch position")
    return reasons


@dataclass(frozen=True)
class PlanOptions:
    """How :func:`plan_dataset` draws samples.

    Attributes:
        samples: Number of samples wanted (fewer come back when tuples run short).
        tiles: Tiles to draw from; every catalog tile when None.
        sampler: ``random``, ``constant`` or ``seasonal`` (see :mod:`decloud.index.samplers`).
        seed: The main seed (>= 0).
        splits: Split names and fractions, assigned by random blocks of positions.
        split_block: Block side in patch positions (with ``splits``).
        split_buffer: Positions dropped between blocks of different splits.
        rois: Split names and vector files: a position belongs to the split whose
            ROI contains its whole patch. Exclusive with ``splits``.
        per_position: Tuples per position for the constant sampler.
        patch_size: Side (10 m pixels) of the sample patches the layout's cloud and
            nodata limits must hold on (:func:`patch_stack`); None: the catalog's
            cells. Give the patch size the dataset will be written with.

    Raises:
        DatasetError: ``samples`` not positive, a negative seed, both ``splits``
            and ``rois``, or a patch size that is not a positive even number.
    """

    samples: int
    tiles: tuple[str, ...] | None = None
    sampler: str = "random"
    seed: int = 0
    splits: Mapping[str, float] | None = None
    split_block: int = 8
    split_buffer: int = 1
    rois: Mapping[str, Path] | None = None
    per_position: int = 1
    patch_size: int | None = None

    def __post_init__(self) -> None:
        if self.patch_size is not None and (self.patch_size <= 0 or self.patch_size % 2):
            raise DatasetError(f"patch size must be a positive even number, not "
                               f"{self.patch_size}", field="patch_size")
        if self.samples <= 0:
            raise DatasetError(f"the number of samples must be positive, not {self.samples}",
                               field="samples")
        if self.seed < 0:
            raise DatasetError(f"the seed must be >= 0, not {self.seed}", field="seed")
        if self.splits and self.rois:
            raise DatasetError("give split fractions or split ROIs, not both", field="splits")
        if self.tiles is not None:
            # A list given for tiles would make the options unhashable and mutable.
            object.__setattr__(self, "tiles", tuple(self.tiles))


def plan_dataset(catalog: Catalog, layout: Layout, options: PlanOptions) -> DatasetPlan:
    """Draw the samples of a dataset from a catalog.

    ``options.samples`` is divided among splits by their fractions (with ``rois``, in
    proportion to the tuples each split's positions hold), then among tiles in
    proportion to their tuples in the split's positions; each (tile, split) is drawn by
    its own seeded sampler restricted to the split's positions. The layout's cloud and
    nodata limits are checked on patches of ``options.patch_size`` (:func:`patch_stack`).

    Args:
        catalog: An open catalog.
        layout: The acquisition layout (random cloud bounds are drawn with the seed).
        options: How many samples, from which tiles, with which sampler, seed and splits.

    Returns:
        The plan.

    Raises:
        DatasetError: An unknown sampler, or no tuple matches the layout anywhere (the
            message says which acquisition finds nothing on each tile, and why).
        NoProductError: A tile is not in the catalog.
    """
    n, sampler, seed, per_position = (options.samples, options.sampler, options.seed,
                                      options.per_position)
    splits = dict(options.splits) if options.splits else None
    rois = dict(options.rois) if options.rois else None
    split_block, split_buffer = options.split_block, options.split_buffer
    if sampler not in SAMPLERS:
        _sampler(sampler, seed, per_position)  # raises with the list of samplers
    tiles = sorted({normalize_tile(t) for t in options.tiles}) if options.tiles \
        else catalog.tiles()
    if not tiles:
        raise DatasetError("the catalog holds no tile", path=catalog.folder, field="tiles")
    resolved = layout.resolve(np.random.default_rng(seed))
    if rois:
        split_names = list(rois)
        split_config: dict[str, Any] = {"kind": "rois",
                                        "rois": {k: str(v) for k, v in rois.items()}}
    elif splits:
        split_names = list(splits)
        split_config = {"kind": "blocks", "fractions": dict(splits), "block": split_block,
                        "buffer": split_buffer}
    else:
        split_names = [DEFAULT_SPLIT]
        split_config = {"kind": "none"}

    # Per tile: the search, and the tuples each split's positions hold.
    searches: dict[str, TupleSearch] = {}
    maps: dict[str, np.ndarray] = {}
    available = np.zeros((len(split_names), len(tiles)), np.float64)
    checked = options.patch_size if options.patch_size is not None else catalog.patch_size
    reasons: list[str] = []
    for j, tile in enumerate(tiles):
        stack = patch_stack(TileStack.load(catalog, tile), checked)
        search = TupleSearch(stack, resolved)
        if rois:
            split_map, _ = roi_splits(stack.patches, rois)
        elif splits:
            split_map, _ = block_splits(stack.patches.shape, splits, block=split_block,
                                        buffer=split_buffer, seed=seed)
        else:
            split_map = np.zeros(stack.patches.shape, np.int16)
        counts = search.counts()
        if counts.sum() <= 0:
            reasons += empty_reasons(search)
        for k in range(len(split_names)):
            available[k, j] = float(counts[split_map == k].sum())
        searches[tile], maps[tile] = search, split_map
    if available.sum() <= 0:
        raise DatasetError(f"no tuple of layout {layout.name!r} in tiles {', '.join(tiles)} "
                           f"with {checked} px patches: " + "; ".join(reasons),
                           path=layout.source, field="layout")

    if splits:
        per_split = allocate(n, [splits[k] for k in split_names])
    else:
        per_split = allocate(n, list(available.sum(axis=1)))
    samples: list[PlanSample] = []
    for k, name in enumerate(split_names):
        for j, want in enumerate(allocate(per_split[k], list(available[k]))):
            if want <= 0:
                continue
            tile = tiles[j]
            search = searches[tile]
            draw = _sampler(sampler, derive_seed(seed, tile, name), per_position)
            for tup in draw.sample(search, want, allowed=maps[tile] == k):
                samples.append(PlanSample(
                    tile=tile, row=tup.row, col=tup.col, split=name,
                    s2={a: None if i is None else search.stack.s2[i].id
                        for a, i in tup.s2.items()},
                    s1={a: None if i is None else search.stack.s1[i].id
                        for a, i in tup.s1.items()}))

    ids = sorted({i for s in samples for i in s.product_ids()})
    products = {r.id: _product_info(r) for r in catalog.records(ids=ids)} if ids else {}
    return DatasetPlan(
        samples=samples, layout=layout.model_dump(mode="json"),
        resolved_layout=resolved.model_dump(mode="json"), seed=seed, sampler=sampler,
        per_position=per_position, requested=n, catalog=str(Path(catalog.folder).resolve()),
        patch_size=catalog.patch_size, tiles=tiles, split_names=split_names,
        split_config=split_config, products=products, sample_patch_size=checked)
