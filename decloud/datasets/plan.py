"""Dataset plans: which tuples of products, at which patch positions, go to which split.

A plan is drawn from a catalog and an acquisition layout before any pixel is read. It
is reproducible (the same catalog, layout, seed and arguments give the same plan, in
the same order), JSON-serialisable, and records how it was made, so that a dataset
folder can say exactly where every sample comes from and a rerun can tell whether it
is continuing the same dataset.

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
    version: int = PLAN_VERSION

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
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"not a dataset plan ({err})", field="plan") from err
        return cls(samples=samples, products=products, **fields)

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

    Raises:
        DatasetError: ``samples`` not positive, a negative seed, or both ``splits``
            and ``rois``.
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

    def __post_init__(self) -> None:
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
    its own seeded sampler restricted to the split's positions.

    Args:
        catalog: An open catalog.
        layout: The acquisition layout (random cloud bounds are drawn with the seed).
        options: How many samples, from which tiles, with which sampler, seed and splits.

    Returns:
        The plan.

    Raises:
        DatasetError: An unknown sampler, or no tuple matches the layout anywhere.
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
    for j, tile in enumerate(tiles):
        stack = TileStack.load(catalog, tile)
        search = TupleSearch(stack, resolved)
        if rois:
            split_map, _ = roi_splits(stack.patches, rois)
        elif splits:
            split_map, _ = block_splits(stack.patches.shape, splits, block=split_block,
                                        buffer=split_buffer, seed=seed)
        else:
            split_map = np.zeros(stack.patches.shape, np.int16)
        counts = search.counts()
        for k in range(len(split_names)):
            available[k, j] = float(counts[split_map == k].sum())
        searches[tile], maps[tile] = search, split_map
    if available.sum() <= 0:
        raise DatasetError(f"no tuple of layout {layout.name!r} in tiles {', '.join(tiles)} "
                           "(check the layout's windows and cloud ranges against the "
                           "catalog: `decloud index` commands)", field="layout")

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
        split_config=split_config, products=products)
