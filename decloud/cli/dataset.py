"""``decloud dataset``: create, describe and preview training datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from decloud.datasets import PlanOptions, WriteOptions, plan_dataset, preview, write_dataset
from decloud.datasets.reader import load_manifest
from decloud.index.catalog import Catalog
from decloud.index.samplers import SAMPLERS
from decloud.layouts import load_layout

__all__ = ["dataset"]

_DIR = click.Path(file_okay=False, path_type=Path)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``name=value`` options as a dict (order kept: it is the order of the splits)."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"expected name=value, got {item!r}", param_hint=option)
        if name in out:
            raise click.BadParameter(f"split {name!r} given twice", param_hint=option)
        out[name] = value
    return out


def _fractions(values: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for name, value in _pairs(values, "--split").items():
        try:
            out[name] = float(value)
        except ValueError as err:
            raise click.BadParameter(f"fraction of {name!r} is not a number: {value!r}",
                                     param_hint="--split") from err
    return out


def _bands(value: str | None) -> tuple[str, ...] | None:
    """Bands of an option; None when not given, () when given empty (``--bands20 ""``)."""
    return None if value is None else tuple(b.strip() for b in value.split(",") if b.strip())


@click.group()
def dataset() -> None:
    """Training datasets: draw samples from a catalog with a layout, write shards, look."""


@dataset.command()
@click.option("--catalog", "catalog_dir", required=True, type=_DIR,
              help="Catalog folder (decloud index).")
@click.option("--layout", "layout_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Acquisition layout (.yaml, CNES .json, or a shipped layout's name).")
@click.option("--tile", "tiles", multiple=True, help="Tile to draw from (repeat); default all.")
@click.option("--samples", type=click.IntRange(min=1), required=True,
              help="Number of samples to draw (all splits together).")
@click.option("--sampler", type=click.Choice(sorted(SAMPLERS)), default="random",
              show_default=True, help="How tuples are drawn.")
@click.option("--per-position", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tuples per patch position (constant sampler).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every random choice (layout bounds, splits, samplers).")
@click.option("--split", "splits", multiple=True, metavar="NAME=FRACTION",
              help="Split by random blocks of positions, e.g. --split train=0.8 --split val=0.2.")
@click.option("--roi", "rois", multiple=True, metavar="NAME=PATH",
              help="Split by vector ROIs (GeoJSON/GeoPackage), e.g. --roi test=test.geojson.")
@click.option("--split-block", type=click.IntRange(min=1), default=8, show_default=True,
              help="Side of split blocks, in patch positions.")
@click.option("--split-buffer", type=click.IntRange(min=0), default=1, show_default=True,
              help="Positions dropped between blocks of different splits.")
@click.option("--patch-size", type=click.IntRange(min=2), default=256, show_default=True,
              help="Patch side in 10 m pixels (20 m keys get half); the layout's cloud and "
                   "nodata limits are checked on it.")
@click.option("--shard-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per shard file.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes of a local Dask cluster (1: this process).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="A running Dask scheduler to send the shards to (overrides --workers).")
@click.option("--scheduler-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to wait for --scheduler to answer.")
@click.option("--dem-root", type=_DIR, default=None,
              help="Folder of <TILE>.tif DEMs (default: DEM/ of the archive).")
@click.option("--bands10", default=None, metavar="B02,B03,B04,B08",
              help="S2 bands of the s2_<acq> keys.")
@click.option("--bands20", default=None, metavar="B05,B06,B07,B8A,B11,B12",
              help='S2 bands of the s2_20m_<acq> keys; "" for none (no s2_20m key).')
@click.option("--compress", is_flag=True, help="Deflate the shards.")
@click.option("--out", "out_dir", required=True, type=_DIR, help="Dataset folder.")
@click.option("--overwrite", is_flag=True,
              help="Replace a dataset of another plan or settings in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def create(
    catalog_dir: Path, layout_file: Path, tiles: tuple[str, ...], samples: int, sampler: str,
    per_position: int, seed: int, splits: tuple[str, ...], rois: tuple[str, ...],
    split_block: int, split_buffer: int, patch_size: int, shard_size: int, workers: int,
    scheduler: str | None, scheduler_timeout: float, dem_root: Path | None,
    bands10: str | None, bands20: str | None,
    compress: bool, out_dir: Path, overwrite: bool, quiet: bool,
) -> None:
    """Draw a dataset plan and write its shards (rerun the same command to resume)."""
    if splits and rois:
        raise click.UsageError("give --split or --roi, not both")
    roi_paths = {k: Path(v) for k, v in _pairs(rois, "--roi").items()} or None
    layout = load_layout(layout_file)
    plan_options = PlanOptions(
        samples=samples, tiles=tiles or None, sampler=sampler, seed=seed,
        splits=_fractions(splits), split_block=split_block, split_buffer=split_buffer,
        rois=roi_paths, per_position=per_position, patch_size=patch_size)
    # Bands left out keep WriteOptions' defaults.
    chosen = {k: v for k, v in (("bands10", _bands(bands10)), ("bands20", _bands(bands20)))
              if v is not None}
    write_options = WriteOptions(
        patch_size=patch_size, shard_size=shard_size, workers=workers, scheduler=scheduler,
        scheduler_timeout=scheduler_timeout,
        progress=not quiet, overwrite=overwrite, dem_root=dem_root, compress=compress,
        **chosen)
    with Catalog.open(catalog_dir) as catalog:
        plan = plan_dataset(catalog, layout, plan_options)
        click.echo(f"plan: {len(plan)} samples of {samples} asked ("
                   + ", ".join(f"{k} {v}" for k, v in plan.counts().items()) + ")")
        folder = write_dataset(catalog, plan, out_dir, write_options)
    click.echo(f"dataset: {folder}")


@dataset.command()
@click.argument("folder", type=_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(folder: Path, as_json: bool) -> None:
    """Describe a dataset: splits, sample counts, keys, provenance."""
    manifest = load_manifest(folder)
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
        return
    fmt = manifest["format"]
    click.echo(f"{folder}: {fmt['name']} v{fmt['version']}, decloud "
               f"{manifest['decloud_version']}, created {manifest['created']}")
    click.echo(f"layout   {manifest['layout']['name']} (seed {manifest['seed']}, sampler "
               f"{manifest['sampler']}, {manifest['requested']} samples asked)")
    click.echo(f"catalog  {manifest['catalog']} ({manifest['catalog_patch_size']} px patches)")
    click.echo(f"tiles    {', '.join(manifest['tiles'])}")
    click.echo(f"splits   ({manifest['split_config']['kind']})")
    for name, split in manifest["splits"].items():
        click.echo(f"  {name:12s} {split['samples']:8d} samples  {len(split['shards'])} shards")
    click.echo("keys")
    for key, spec in manifest["keys"].items():
        shape = "x".join(str(v) for v in spec["shape"])
        click.echo(f"  {key:18s} {spec['dtype']:8s} {shape:12s} {' '.join(spec['bands'])}")


@dataset.command(name="preview")
@click.argument("folder", type=_DIR)
@click.argument("out_png", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--n", "count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Samples shown (rows).")
@click.option("--split", default="train", show_default=True, help="Split shown.")
@click.option("--overwrite", is_flag=True, help="Replace an existing PNG.")
def preview_command(folder: Path, out_png: Path, count: int, split: str,
                    overwrite: bool) -> None:
    """Write a PNG grid: one row per sample, one column per key."""
    click.echo(preview(folder, out_png, n=count, split=split, overwrite=overwrite))
