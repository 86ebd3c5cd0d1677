"""``decloud quicklook``: a PNG of a stack raster."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rasterio.enums import Resampling

from decloud.constants import S2_RGB, S2_SCALE
from decloud.grid import open_raster
from decloud.quicklook import s1_false_colour, s2_true_colour, write_png
from decloud.s1 import PREPARED_ENCODING_TAG, decode_prepared, linear_to_db

__all__ = ["quicklook"]


@click.command()
@click.argument("raster", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("png", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["s2", "s1"]), default="s2", show_default=True,
              help="s2: true colour from bands named B04, B03, B02; s1: VV, VH false colour.")
@click.option("--size", type=click.IntRange(16, 8192), default=1024, show_default=True,
              help="Longest side of the PNG.")
@click.option("--overwrite", is_flag=True, help="Replace an existing PNG.")
def quicklook(raster: Path, png: Path, kind: str, size: int, overwrite: bool) -> None:
    """Write a quicklook PNG of a decloud stack raster (s2.tif or s1.tif)."""
    with open_raster(raster) as src:
        names = list(src.descriptions)
        wanted = list(S2_RGB) if kind == "s2" else ["VV", "VH"]
        missing = [b for b in wanted if b not in names]
        if missing:
            raise click.ClickException(f"{raster}: band(s) {', '.join(missing)} not found "
                                       f"(band descriptions: {names})")
        factor = max(1, -(-max(src.width, src.height) // size))
        shape = (len(wanted), max(1, src.height // factor), max(1, src.width // factor))
        data = src.read([names.index(b) + 1 for b in wanted], out_shape=shape, masked=True,
                        resampling=Resampling.nearest).astype(np.float32).filled(np.nan)
        prepared = PREPARED_ENCODING_TAG in src.tags()
    if kind == "s2":
        image = s2_true_colour(data / S2_SCALE)
    else:
        linear = decode_prepared(data) if prepared else data
        vv, vh = linear_to_db(linear)
        image = s1_false_colour(vv, vh)
    click.echo(write_png(png, image, overwrite=overwrite))


