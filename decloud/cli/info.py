"""``decloud info``: describe one product."""

from __future__ import annotations

import json
from pathlib import Path

import click

from decloud.products import Dem, S2Product, open_product
from decloud.products.checks import check_files
from decloud.products.dem import dem_tile

__all__ = ["info"]


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--cover/--no-cover", default=True, show_default=True,
              help="Compute cloud, shadow and nodata fractions of S2 products.")
def info(path: Path, cover: bool) -> None:
    """Print the product model of PATH (a product folder, zip, S1 file or DEM) as JSON."""
    if path.suffix.lower() in (".tif", ".tiff") and dem_tile(path):
        dem = Dem.open(path)
        check_files(dem)
        click.echo(json.dumps(dem.describe(), indent=2))
        return
    product = open_product(path)
    # Every band and mask file must open: a truncated one is reported here, not in stack.
    check_files(product)
    out = product.describe()
    out["footprint_wgs84"] = product.footprint().wkt
    if cover and isinstance(product, S2Product):
        # 20 m: the resolution of the product masks (SCL, CLM_R2) and of the index.
        out["cover"] = product.cover(20.0)
    click.echo(json.dumps(out, indent=2))
