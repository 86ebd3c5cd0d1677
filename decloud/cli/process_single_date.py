"""``decloud process single-date``: one S2 date and the nearest S1 through a zoo model."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import archive_from_options, archive_options

__all__ = ["single_date"]


@click.command("single-date")
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31TEJ.")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="The S2 date to reconstruct (YYYY-MM-DD).")
@click.option("--model", required=True, metavar="PATH|CONFIG",
              help="A trained .keras file (with model_card.json next to it) or its folder; "
                   "with --allow-untrained, a configuration name or YAML file.")
@click.option("--allow-untrained", is_flag=True,
              help="Accept a configuration: random (seeded) weights, for smoke tests and "
                   "benchmarks only.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the untrained weights.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output <OUT>.tif; <OUT>_quality.tif and the record <OUT>.json go next "
                   "to it.")
@click.option("--max-s1-gap", type=click.FloatRange(min=0), default=72.0, show_default=True,
              help="Hours between the S2 date and the nearest S1 image at most.")
@click.option("--block-size", type=click.IntRange(min=16), default=None,
              help="Core block side, pixels [default: 1024 on CPU, 2048 on GPU].")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Blocks per model call.")
@click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading inputs.")
@click.option("--dilation", type=click.IntRange(min=0), default=2, show_default=True,
              help="Pixels the cloud/shadow mask is grown by before compositing.")
@click.option("--feather", type=click.IntRange(min=0), default=3, show_default=True,
              help="Width (px) of the blend between the date's clear pixels and the "
                   "reconstruction.")
@click.option("--no-composite", is_flag=True,
              help="Write the reconstruction everywhere, clear pixels included.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def single_date(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, day: datetime, model: str, allow_untrained: bool,
    seed: int, out: Path, max_s1_gap: float, block_size: int | None, batch_size: int,
    readers: int, dilation: int, feather: int, no_composite: bool, overwrite: bool,
) -> None:
    """Reconstruct one S2 date of a tile with a single-date model (ssop_unet, dsen2cr).

    The model reads the date's S2 product, the tile's S1 image nearest in time (within
    --max-s1-gap) and its DEM, as it needs. By default the date's clear pixels are kept
    and the reconstruction fills clouds, shadows and nodata; the quality band says which
    pixel is which.
    """
    path = Path(model)
    if not allow_untrained and not path.exists():
        raise click.BadParameter(
            f"{model} is not a model file: give a trained .keras file, or "
            "--allow-untrained to run a configuration with random weights", param_hint="--model")
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    load_backend()  # the model needs Keras: load it with its start-up lines filtered
    from decloud.inference.composite import CompositeOptions
    from decloud.inference.engine import EngineOptions
    from decloud.processors.single_date import SingleDateOptions, load_method
    from decloud.processors.single_date import single_date as process

    method = load_method(model, untrained=allow_untrained, seed=seed)
    engine = EngineOptions(block_size=block_size, batch_size=batch_size, readers=readers,
                           target=None if no_composite else "t",
                           composite=CompositeOptions(dilation=dilation, feather=feather),
                           overwrite=overwrite, progress=True)
    record = process(method, archive, tile, day.date(), out,
                     SingleDateOptions(timedelta(hours=max_s1_gap), engine))
    pixels = record.pixels
    total = max(1, sum(pixels.values()))
    click.echo(f"{out}: {record.blocks['total']} blocks ({record.blocks['skipped']} skipped) "
               f"in {record.timing['wall_s']:.1f} s; clear {pixels['clear'] / total:.1%}, "
               f"reconstructed {(pixels['reconstructed'] + pixels['feathered']) / total:.1%}, "
               f"nodata {pixels['nodata'] / total:.1%}")
