"""``decloud process multi-temporal``: t-1, t, t+1 through a zoo model, neighbours per block."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from decloud.cli.backend import load_backend

__all__ = ["multi_temporal"]


@click.command("multi-temporal")
@click.option("--catalog", "catalog_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The catalog folder (decloud index build) with the tile's products and "
                   "per-patch statistics.")
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
@click.option("--block-size", type=click.IntRange(min=16), default=None,
              help="Core block side, pixels, rounded up to the catalog's patch lattice "
                   "[default: 1024 on CPU, 2048 on GPU].")
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
def multi_temporal(
    catalog_dir: Path, tile: str, day: datetime, model: str, allow_untrained: bool,
    seed: int, out: Path, layout: str, dem: Path | None, max_unusable: float | None,
    widen_hours: float, tolerance: float, block_size: int | None, batch_size: int,
    readers: int, dilation: int, feather: int, no_composite: bool, overwrite: bool,
) -> None:
    """Reconstruct one S2 date of a tile with a multi-temporal model (msop_*, os1_unet).

    t-1 and t+1 are chosen per block from the catalog's per-patch statistics: the
    clearest date within the layout's windows, nearest in time among equally clear
    ones; each with its S1 image within the layout's gap. The chosen dates are in the
    record (<OUT>.json) and, as days from the target, in <OUT>_neighbours.tif.
    """
    if not allow_untrained and not Path(model).exists():
        raise click.BadParameter(
            f"{model} is not a model file: give a trained .keras file, or "
            "--allow-untrained to run a configuration with random weights", param_hint="--model")
    load_backend()  # the model needs Keras: load it with its start-up lines filtered
    from decloud.inference.composite import CompositeOptions
    from decloud.inference.engine import EngineOptions
    from decloud.processors.multitemporal import MultiTemporalOptions, multitemporal
    from decloud.processors.single_date import load_method

    method = load_method(model, untrained=allow_untrained, seed=seed)
    engine = EngineOptions(block_size=block_size, batch_size=batch_size, readers=readers,
                           target=None if no_composite else "t",
                           composite=CompositeOptions(dilation=dilation, feather=feather),
                           overwrite=overwrite, progress=True)
    options = MultiTemporalOptions(layout=layout, dem=dem, max_unusable=max_unusable,
                                   widen_hours=widen_hours, tolerance=tolerance, engine=engine)
    record = multitemporal(catalog_dir, tile, day.date(), method, out, options)
    pixels = record.pixels
    total = max(1, sum(pixels.values()))
    blocks = record.extra["neighbours"]
    fallback = sum(1 for b in blocks
                   if any(a["fallback"] != "none" for a in b["acquisitions"].values()))
    click.echo(f"{out}: {record.blocks['total']} blocks ({record.blocks['skipped']} skipped, "
               f"{fallback} with a fallback neighbour) in {record.timing['wall_s']:.1f} s; "
               f"clear {pixels['clear'] / total:.1%}, reconstructed "
               f"{(pixels['reconstructed'] + pixels['feathered']) / total:.1%}, "
               f"nodata {pixels['nodata'] / total:.1%}")
