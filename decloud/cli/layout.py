"""``decloud layout``: inspect acquisition layouts."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from decloud.archive import normalize_tile
from decloud.datasets.plan import empty_reasons
from decloud.index import Catalog
from decloud.index.search import TileStack, TupleSearch
from decloud.layouts import layout_table, load_layout

__all__ = ["layout"]


@click.group()
def layout() -> None:
    """Acquisition layouts: the arrangement of images one training sample needs."""


@layout.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def show(file: Path) -> None:
    """Print the layout in FILE (.yaml, CNES .json, or a shipped name) and its dataset keys.

    A shipped layout is named without extension: decloud layout show os2-occitanie.
    """
    # load_layout reports a missing file itself, as a LayoutError like any other problem.
    spec = load_layout(file)
    click.echo(layout_table(spec))
    click.echo("")
    click.echo("dataset keys: " + ", ".join(spec.keys()))


@layout.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--catalog", "folder", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Catalog folder (decloud index build).")
@click.option("--tile", "tiles", multiple=True, help="Tile(s) to count (default: all).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed drawing the layout's random cloud bounds (a non-negative integer).")
def count(file: Path, folder: Path, tiles: tuple[str, ...], seed: int) -> None:
    """Count the tuples matching the layout in FILE (or a shipped layout's name), per tile."""
    spec = load_layout(file).resolve(np.random.default_rng(seed))
    with Catalog.open(folder) as catalog:
        names = [normalize_tile(t) for t in tiles] or catalog.tiles()
        # Loaded first: a tile the catalog lacks fails before the table starts.
        stacks = {tile: TileStack.load(catalog, tile) for tile in names}
        click.echo(f"{'tile':8s} {'tuples':>12s} {'positions':>10s} {'of':>8s} "
                   f"{'references':>10s}")
        total = 0
        for tile in names:
            search = TupleSearch(stacks[tile], spec)
            per_ref = search.tuple_counts_by_reference()
            counts = per_ref.sum(axis=0)
            total += int(counts.sum())
            click.echo(f"{tile:8s} {int(counts.sum()):12d} {int((counts > 0).sum()):10d} "
                       f"{counts.size:8d} {int((per_ref.sum(axis=(1, 2)) > 0).sum()):10d}")
            # Say which acquisition finds nothing, and why (not "check the windows").
            for reason in empty_reasons(search):
                click.echo(f"  no tuple: {reason}")
    click.echo(f"{'total':8s} {total:12d}")
