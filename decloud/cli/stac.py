"""``decloud stac``: STAC metadata of a folder of outputs."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["stac"]


@click.group()
def stac() -> None:
    """STAC items and collections of decloud's outputs (each output has its item)."""


@stac.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--items", "pattern", default=None,
              help="Glob of the items, relative to FOLDER [default: **/*.stac.json].")
@click.option("--id", "collection_id", default=None,
              help="Collection id [default: the folder's name].")
@click.option("--description", default=None, help="Collection description.")
def collection(folder: Path, pattern: str | None, collection_id: str | None,
               description: str | None) -> None:
    """Write FOLDER/collection.json from the STAC items in FOLDER (a time series)."""
    # pystac loads with the command, not with `decloud --help`.
    from decloud.stac import write_collection

    path = write_collection(folder, pattern, collection_id=collection_id,
                            description=description)
    click.echo(str(path))
