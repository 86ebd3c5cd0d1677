"""``decloud process multi-temporal``: t-1, t, t+1 through a zoo model, neighbours per block."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import (
    check_model,
    check_serving,
    engine_from_options,
    engine_options,
    model_options,
    run_summary,
    serving_method,
    serving_options,
)

__all__ = ["multi_temporal"]


@click.command("multi-temporal")
@click.option("--catalog", "catalog_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The catalog folder (decloud index build) with the tile's products and "
                   "per-patch statistics.")
@click.option("--tile", required=True, help="Tile id, e.g. T31TEJ.")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="The S2 date to reconstruct (YYYY-MM-DD).")
@model_options
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output <OUT>.tif; <OUT>_quality.tif, <OUT>_neighbours.tif and the "
                   "record <OUT>.json go next to it.")
@click.option("--layout", default="os2-occitanie", show_default=True, metavar="NAME|PATH",
              help="Acquisition layout whose time windows and limits choose t-1 and t+1.")
@click.option("--dem", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The tile's DEM (for models that read one).")
@click.option("--max-unusable", type=click.FloatRange(0, 100), default=None,
              help="Largest cloud + shadow + nodata percentage of a block within limits "
                   "[default: the layout's S2 cloud maximum].")
@click.option("--widen-hours", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Hours the windows are widened by before falling back to cloudy dates.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Percentage points above the clearest date still counted as clear (the "
                   "nearest in time among them wins).")
@engine_options
@serving_options
def multi_temporal(
    catalog_dir: Path, tile: str, day: datetime, model: str, allow_untrained: bool,
    seed: int, out: Path, layout: str, dem: Path | None, max_unusable: float | None,
    widen_hours: float, tolerance: float, block_size: int | None, batch_size: int,
    readers: int, dilation: int, feather: int, no_composite: bool, overwrite: bool,
    serving: str, savedmodel: Path | None, precision: str, gdal_cache_mb: int,
) -> None:
    """Reconstruct one S2 date of a tile with a multi-temporal model (msop_*, os1_unet).

    t-1 and t+1 are chosen per block from the catalog's per-patch statistics: the
    clearest date within the layout's windows, nearest in time among equally clear
    ones; each with its S1 image within the layout's gap. The chosen dates are in the
    record (<OUT>.json) and, as days from the target, in <OUT>_neighbours.tif.
    Blocks are rounded up to the catalog's patch lattice.
    """
    check_model(model, allow_untrained)
    check_serving(serving, savedmodel, precision)
    load_backend()  # the model needs Keras: load it with its start-up lines filtered
    from decloud.processors.multitemporal import MultiTemporalOptions, multitemporal
    from decloud.processors.single_date import load_method

    method = serving_method(load_method(model, untrained=allow_untrained, seed=seed), serving,
                            savedmodel)
    engine = engine_from_options(block_size, batch_size, readers, dilation, feather,
                                 no_composite, overwrite, precision,
                                 gdal_cache_mb=gdal_cache_mb)
    options = MultiTemporalOptions(layout=layout, dem=dem, max_unusable=max_unusable,
                                   widen_hours=widen_hours, tolerance=tolerance, engine=engine)
    record = multitemporal(catalog_dir, tile, day.date(), method, out, options)
    fallback = sum(1 for b in record.extra["neighbours"]
                   if any(a["fallback"] != "none" for a in b["acquisitions"].values()))
    click.echo(run_summary(out, record, f", {fallback} with a fallback neighbour"))
