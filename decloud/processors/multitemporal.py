"""The multi-temporal processor: t-1, t and t+1 through a zoo model, neighbours per block.

Multi-temporal models (``msop_*``, ``os1_unet``) read S2 (+ S1) at ``tm1``, ``t`` and
``tp1`` and maybe the ``dem``. CNES decloud picks t-1 and t+1 once per tile, by nodata
alone; this processor picks them **per block** of the streaming engine with
:func:`decloud.processors.neighbours.choose_neighbours`: by cloud cover (cloud, shadow
and nodata together) from the catalog's per-patch statistics, within the acquisition
layout's time windows (a shipped ``os2-*`` layout by default), each neighbour's S1
image within the layout's gap of its S2 date, the target's S1 likewise.

Blocks lie on the catalog's patch lattice: the engine's block size is rounded up to a
multiple of both the catalog's patch size and the model's block multiple, so a
block's statistics are exact sums of whole patches. A block's halo reads the same
products as its core, so each block's output equals, on its core, a whole-image
prediction with that block's products; the seams between blocks whose neighbours
differ are the only places where the output may differ from a run with one set of
products for the whole tile, and that is the point of choosing per block. Blocks with
the same choice (:meth:`~decloud.processors.neighbours.BlockChoice.key`) share one
:class:`~decloud.inputs.InputProducts` (one opened product per catalog record).

Outputs (:func:`decloud.inference.engine.run`): ``<out>.tif``, ``<out>_quality.tif``,
``<out>_neighbours.tif`` (uint16, one band per chosen acquisition, ``days_tm1`` and
``days_tp1``: whole days, rounded, from the target date to that block's S2
neighbour; 65535 where the output is nodata) and the completion record ``<out>.json``,
whose ``extra.neighbours`` lists every block's :meth:`BlockChoice.to_dict`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from rasterio.windows import Window

from decloud.archive import Archive, normalize_tile
from decloud.errors import InferenceError, NoProductError
from decloud.grid import Grid
from decloud.index.catalog import Catalog, ProductRecord
from decloud.inference.engine import (
    DAYS_NODATA,
    BlockLayer,
    EngineOptions,
    RunRecord,
    block_multiple,
    block_windows,
    default_block_size,
    run,
)
from decloud.inference.method import KerasMethod
from decloud.inputs import AcquisitionProducts, InputProducts
from decloud.keys import KeyKind, parse_key
from decloud.layouts import Layout, load_layout
from decloud.processors.neighbours import BlockChoice, choose_neighbours
from decloud.products import Dem, S1Product, S2Product
from decloud.windows import round_up

__all__ = ["DEFAULT_LAYOUT", "MultiTemporalOptions", "MultiTemporalPlan", "multitemporal",
           "plan_multitemporal"]

#: The layout whose windows and limits choose the neighbours unless one is given.
DEFAULT_LAYOUT = "os2-occitanie"


@dataclass(frozen=True)
class MultiTemporalOptions:
    """Options of :func:`multitemporal`.

    Attributes:
        layout: The acquisition layout (a :class:`~decloud.layouts.Layout`, a YAML file
            or a shipped layout's name): time windows, cloud and nodata limits, S1 gaps.
        dem: The tile's DEM, required when the model reads ``dem``.
        max_unusable: Largest cloud + shadow + nodata percentage of a block within
            limits (default: the layout's S2 cloud maximum).
        max_nodata: Largest nodata percentage within limits (default: the layout's).
        widen_hours: Hours the windows are widened by for the second fallback tier.
        tolerance: Percentage points above the clearest candidate still counted as
            equally clear (the nearest in time among them wins).
        patch_size: Patch size of the catalog built when :func:`multitemporal` is given
            an archive instead of a catalog.
        engine: Engine options; the block size is rounded up to the patch lattice and
            the composite keeps the clear pixels of the layout's reference.
    """

    layout: Layout | str | Path = DEFAULT_LAYOUT
    dem: Dem | Path | None = None
    max_unusable: float | None = None
    max_nodata: float | None = None
    widen_hours: float = 0.0
    tolerance: float = 1.0
    patch_size: int = 64
    engine: EngineOptions = field(default_factory=EngineOptions)


@dataclass
class MultiTemporalPlan:
    """Everything a multi-temporal run reads, decided before the first block.

    Attributes:
        target: The catalog record of the date to reconstruct.
        grid: Its 10 m grid (the output's).
        grid_blocks: The engine's ``(core, padded)`` blocks.
        choices: One :class:`BlockChoice` per block, in the same order.
        engine: The engine options of the run (block size on the patch lattice).
        neighbours: The chosen acquisitions (``tm1``, ``tp1``), bands of the
            neighbours layer.
        products_of: Core window -> that block's products (shared by equal choices).
    """

    target: ProductRecord
    grid: Grid
    grid_blocks: list[tuple[Window, Window]]
    choices: list[BlockChoice]
    engine: EngineOptions
    neighbours: tuple[str, ...]
    products_of: Callable[[Window], InputProducts]
    _by_core: dict[tuple[int, int, int, int], int] | None = field(default=None, repr=False)

    def days(self, core: Window) -> np.ndarray:
        """``(len(neighbours), h, w)`` uint16 days from the target to the block's S2."""
        choice = self._choice(core)
        h, w = int(core.height), int(core.width)
        out = np.full((len(self.neighbours), h, w), DAYS_NODATA, np.uint16)
        for i, name in enumerate(self.neighbours):
            s2 = choice.choices[name].s2
            if s2 is not None:
                gap = abs((s2.acquired - self.target.acquired).total_seconds()) / 86400.0
                out[i] = min(round(gap), DAYS_NODATA - 1)
        return out

    def _choice(self, core: Window) -> BlockChoice:
        if self._by_core is None:
            self._by_core = {_key(c): i for i, (c, _) in enumerate(self.grid_blocks)}
        return self.choices[self._by_core[_key(core)]]


def _key(window: Window) -> tuple[int, int, int, int]:
    return (int(window.col_off), int(window.row_off), int(window.width), int(window.height))


def _model_acquisitions(method: KerasMethod) -> dict[str, set[KeyKind]]:
    """The kinds the model reads per acquisition (the DEM has none).

    ``dt_<a>`` keys (the weightless ``gapfill`` model) are days from the reference to
    the acquisition's chosen S2 product, read like any other key of the block.
    """
    out: dict[str, set[KeyKind]] = {}
    for key in method.input_keys:
        kind, acquisition = parse_key(key.name)
        if kind is KeyKind.DEM:
            continue
        if acquisition is None or kind not in (KeyKind.S2, KeyKind.S1, KeyKind.DT):
            raise InferenceError(f"model {method.name} reads {key.name}: the multi-temporal "
                                 "processor gives S2, S1 and dt per acquisition, and the DEM",
                                 field="model")
        out.setdefault(acquisition, set()).add(kind)
    return out


def _target(catalog: Catalog, tile: str, day: date) -> ProductRecord:
    records = catalog.records(tile, "S2")
    if not records:
        tiles = ", ".join(catalog.tiles()) or "none"
        raise NoProductError(f"tile {tile} is not in the catalog (tiles: {tiles})",
                             path=catalog.folder, field="tile")
    found = [r for r in records if r.acquired.date() == day]
    if not found:
        dates = ", ".join(sorted({r.acquired.date().isoformat() for r in records}))
        raise NoProductError(f"no S2 product of {tile} on {day} in the catalog (dates: "
                             f"{dates})", path=catalog.folder, field="date")
    return found[0]


def plan_multitemporal(method: KerasMethod, catalog: Catalog, tile: str, day: date,
                       options: MultiTemporalOptions | None = None) -> MultiTemporalPlan:
    """Choose the blocks, each block's neighbours and its products.

    Raises:
        NoProductError: The tile or the date is not in the catalog.
        InferenceError: The model is not a multi-temporal model of the layout, needs a
            DEM that was not given, or a block has no candidate for an acquisition the
            model reads (the message names the acquisition and the block).
        LayoutError: See :func:`~decloud.processors.neighbours.choose_neighbours`.
    """
    options = options or MultiTemporalOptions()
    tile = normalize_tile(tile)
    layout = options.layout if isinstance(options.layout, Layout) \
        else load_layout(options.layout)
    reference = layout.reference_name
    reads = _model_acquisitions(method)
    unknown = sorted(set(reads) - set(layout.acquisitions))
    if unknown:
        raise InferenceError(f"model {method.name} reads acquisitions {unknown} that layout "
                             f"{layout.name} does not have ({', '.join(layout.acquisitions)})",
                             field="layout")
    neighbours = tuple(a for a in reads if a != reference)
    if not neighbours:
        raise InferenceError(f"model {method.name} reads no acquisition besides "
                             f"{reference!r}: not a multi-temporal model", field="model")
    dem: Dem | None = None
    if any(parse_key(k.name)[0] is KeyKind.DEM for k in method.input_keys):
        if options.dem is None:
            raise InferenceError(f"model {method.name} needs a DEM of {tile}: give one",
                                 field="dem")
        dem = options.dem if isinstance(options.dem, Dem) else Dem.open(Path(options.dem))
    target = _target(catalog, tile, day)
    target_s2 = target.open()
    if not isinstance(target_s2, S2Product):  # pragma: no cover - the catalog files S2 as S2
        raise InferenceError("the target is not an S2 product", path=target.path, field="s2")
    grid = target_s2.grid()
    # Blocks on the catalog's patch lattice: their statistics are sums of whole patches.
    requested = options.engine.block_size or default_block_size()
    size = round_up(requested, math.lcm(catalog.patch_size, block_multiple(method)))
    engine = dataclasses.replace(options.engine, block_size=size,
                                 target=None if options.engine.target is None else reference)
    blocks = block_windows(method, grid, engine)
    choices = choose_neighbours(catalog, tile, target.acquired, layout,
                                [core for core, _ in blocks], acquisitions=neighbours,
                                max_unusable=options.max_unusable,
                                max_nodata=options.max_nodata,
                                widen_hours=options.widen_hours, tolerance=options.tolerance)
    _check(method, layout, reads, choices)
    opened: dict[int, S2Product | S1Product] = {target.id: target_s2}

    def product(record: ProductRecord) -> Any:
        if record.id not in opened:
            opened[record.id] = record.open()  # type: ignore[assignment]
        return opened[record.id]

    shared: dict[Any, InputProducts] = {}
    by_window: dict[tuple[int, int, int, int], InputProducts] = {}
    for (core, _), choice in zip(blocks, choices, strict=True):
        key = choice.key()
        if key not in shared:
            acquisitions: dict[str | None, AcquisitionProducts] = {}
            for name, kinds in reads.items():
                chosen = choice.choices.get(name)
                s2 = target_s2 if name == reference else (
                    product(chosen.s2) if chosen is not None and chosen.s2 else None)
                s1 = product(chosen.s1) if (KeyKind.S1 in kinds and chosen is not None
                                            and chosen.s1 is not None) else None
                acquisitions[name] = AcquisitionProducts(s2, s1)
            if reference not in acquisitions:  # os1: no S2 key at t, the composite reads it
                acquisitions[reference] = AcquisitionProducts(target_s2)
            shared[key] = InputProducts(acquisitions, dem, reference=reference)
        by_window[_key(core)] = shared[key]

    def products_of(core: Window) -> InputProducts:
        return by_window[_key(core)]

    return MultiTemporalPlan(target, grid, blocks, choices, engine, neighbours, products_of)


def _check(method: KerasMethod, layout: Layout, reads: dict[str, set[KeyKind]],
           choices: Sequence[BlockChoice]) -> None:
    """Refuse a block without a product the model reads, naming the acquisition."""
    reference = layout.reference_name
    for choice in choices:
        w = choice.window
        where = f"block (col {int(w.col_off)}, row {int(w.row_off)}, {int(w.width)} x " \
                f"{int(w.height)})"
        for name, kinds in reads.items():
            chosen = choice.choices.get(name)
            if name != reference and KeyKind.S2 in kinds and (chosen is None
                                                              or chosen.s2 is None):
                raise InferenceError(f"no S2 candidate for acquisition {name!r} on {where}: "
                                     f"none in layout {layout.name}'s window (widen it or "
                                     "give another layout)", field=name)
            if KeyKind.S1 in kinds and (chosen is None or chosen.s1 is None):
                raise InferenceError(f"no S1 image for acquisition {name!r} of model "
                                     f"{method.name} on {where} within layout "
                                     f"{layout.name}'s gap", field=name)


def _index_tile(archive: Archive, tile: str, patch_size: int,
                folder: Path) -> tuple[Catalog, dict[str, str]]:
    """A catalog of the tile's products of an archive, in ``folder``; what failed."""
    own = Archive(s2=[p for p in archive.s2 if p.tile == tile],
                  s1=[p for p in archive.s1 if p.tile == tile])
    if not own.s2:
        raise NoProductError(f"tile {tile} has no S2 product in the archive", field="tile")
    catalog = Catalog.create(folder / "catalog", patch_size=patch_size)
    with contextlib.ExitStack() as guard:
        guard.callback(catalog.close)  # on an error only: closed before its folder goes
        report = catalog.add(own)
        guard.pop_all()
    return catalog, dict(report.failed)


def multitemporal(source: Catalog | Archive | str | Path, tile: str, day: date,
                  method: KerasMethod, out: str | Path,
                  options: MultiTemporalOptions | None = None) -> RunRecord:
    """Reconstruct one S2 date of a tile with a multi-temporal model, neighbours per block.

    Args:
        source: The catalog (or its folder) holding the tile's products and per-patch
            statistics (``decloud index build``); or an archive, whose products of the
            tile are then indexed in a temporary catalog (patch size
            ``options.patch_size``; products the index cannot read are listed in the
            record's ``extra.catalog_failed``) and whose DEM of the tile is used unless
            ``options.dem`` is given.
        tile: The tile.
        day: The S2 date to reconstruct.
        method: The model (:func:`decloud.processors.single_date.load_method`).
        out: Output ``<out>.tif``; quality, neighbours and record next to it (see the
            module docstring).
        options: Layout, DEM, choice parameters and engine options.

    Returns:
        The completion record; ``extra.neighbours`` holds each block's choice,
        ``extra.layout`` the layout's name and ``extra.target`` the target's record.

    Raises:
        NoProductError: The tile or date is not in the catalog.
        InferenceError: See :func:`plan_multitemporal`.
        OutputExistsError: The outputs exist and ``overwrite`` is off.
    """
    options = options or MultiTemporalOptions()
    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if isinstance(source, Archive):
            catalog, failed = _index_tile(source, normalize_tile(tile), options.patch_size,
                                          Path(stack.enter_context(TemporaryDirectory())))
            stack.callback(catalog.close)
            if options.dem is None:
                options = dataclasses.replace(options, dem=source.dem(tile))
        elif isinstance(source, Catalog):
            catalog = source
        else:
            # Read-only (mode=ro): safe on the shared filesystems Dask workers use.
            catalog = stack.enter_context(Catalog.open(source, read_only=True))
        plan = plan_multitemporal(method, catalog, tile, day, options)
    layout_name = options.layout.name if isinstance(options.layout, Layout) \
        else str(options.layout)
    layer = BlockLayer(tuple(f"days_{a}" for a in plan.neighbours), "uint16", DAYS_NODATA,
                       plan.days)
    target = plan.target
    extra = {"layout": layout_name,
             "target": {"id": target.id, "path": target.path,
                        "acquired": target.acquired.isoformat(timespec="seconds")},
             "neighbours": [c.to_dict() for c in plan.choices]}
    if failed:
        extra["catalog_failed"] = failed
    return run(method, plan.products_of, plan.grid, out, plan.engine,
               layers={"neighbours": layer}, extra=extra)
