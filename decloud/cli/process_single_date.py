"""``decloud process single-date``: one S2 date and the nearest S1 through a zoo model."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import (
    archive_from_options,
    archive_options,
    check_model,
    check_serving,
    engine_from_options,
    engine_options,
    model_options,
    run_summary,
    serving_method,
    serving_options,
)

__all__ = ["single_date"]


@click.command("single-date")
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31TEJ.")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="The S2 date to reconstruct (YYYY-MM-DD).")
@model_options
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output <OUT>.tif; <OUT>_quality.tif and the record <OUT>.json go next "
                   "to it.")
@click.option("--max-s1-gap", type=click.FloatRange(min=0), default=72.0, show_default=True,
              help="Hours between the S2 date and the nearest S1 image at most.")
@engine_options
@serving_options
def single_date(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, day: datetime, model: str, allow_untrained: bool,
    seed: int, out: Path, max_s1_gap: float, block_size: int | None, batch_size: int,
    readers: int, dilation: int, feather: int, no_composite: bool, overwrite: bool,
    serving: str, savedmodel: Path | None, precision: str, gdal_cache_mb: int,
) -> None:
    """Reconstruct one S2 date of a tile with a single-date model (ssop_unet, dsen2cr).

    The model reads the date's S2 product, the tile's S1 image nearest in time (within
    --max-s1-gap) and its DEM, as it needs. By default the date's clear pixels are kept
    and the reconstruction fills clouds, shadows and nodata; the quality band says which
    pixel is which.
    """
    check_model(model, allow_untrained)
    check_serving(serving, savedmodel, precision)
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    load_backend()  # the model needs Keras: load it with its start-up lines filtered
    from decloud.processors.single_date import SingleDateOptions, load_method
    from decloud.processors.single_date import single_date as process

    method = serving_method(load_method(model, untrained=allow_untrained, seed=seed), serving,
                            savedmodel)
    engine = engine_from_options(block_size, batch_size, readers, dilation, feather,
                                 no_composite, overwrite, precision,
                                 gdal_cache_mb=gdal_cache_mb)
    record = process(method, archive, tile, day.date(), out,
                     SingleDateOptions(timedelta(hours=max_s1_gap), engine))
    click.echo(run_summary(out, record))
