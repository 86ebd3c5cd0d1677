"""``decloud models``: the model zoo's named configurations and what they build."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
import yaml

from decloud.cli.backend import load_backend

if TYPE_CHECKING:
    from decloud.models.zoo import ModelSpec

__all__ = ["models"]


def _row(spec: ModelSpec) -> dict[str, Any]:
    return {"name": spec.name, "architecture": spec.config.network.kind,
            "inputs": list(spec.inputs), "outputs": list(spec.outputs),
            "params": spec.params, "receptive_field_px": spec.receptive_field,
            "size_multiple": spec.size_multiple,
            "description": spec.config.description}


@click.group()
def models() -> None:
    """The model zoo: named configurations (models/*.yaml) and the networks they build."""


@models.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_command(as_json: bool) -> None:
    """List the registered models: architecture, inputs, outputs, size, receptive field."""
    load_backend()
    # Keras (and its backend) load here, not when the CLI starts.
    from decloud.models import build, list_configs

    # Building each network is the only exact source of its parameter count.
    rows = [_row(build(config)[1]) for config in list_configs()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'name':16s} {'arch':8s} {'params':>12s} {'rf px':>6s} {'mult':>4s}  "
               "inputs -> outputs")
    for row in rows:
        click.echo(f"{row['name']:16s} {row['architecture']:8s} {row['params']:12,d} "
                   f"{row['receptive_field_px']:6d} {row['size_multiple']:4d}  "
                   f"{', '.join(row['inputs'])} -> {', '.join(row['outputs'])}")


@models.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
def show(name: str, as_json: bool) -> None:
    """Show the configuration of model NAME (or a .yaml file) and what it builds."""
    load_backend()
    from decloud.models import build, get_config

    config = get_config(name)
    _, spec = build(config)
    if as_json:
        click.echo(json.dumps(spec.describe(), indent=1))
        return
    click.echo(f"# {config.source}")
    click.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False,
                              default_flow_style=None).rstrip())
    click.echo("")
    click.echo(f"architecture     {config.network.kind}")
    click.echo(f"parameters       {spec.params:,d}")
    click.echo(f"receptive field  {spec.receptive_field} px (10 m)")
    click.echo(f"size multiple    {spec.size_multiple} (patch sides must be multiples)")
    click.echo(f"margin           {spec.margin} px (10 m) of context per side for seamless "
               f"tiles")
    for title, specs in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        click.echo(title)
        for key, io in specs.items():
            where = f"{io.resolution:g} m" if io.resolution else "per sample"
            click.echo(f"  {key:16s} {io.channels:3d} ch  {where:10s} {' '.join(io.bands)}")


#: Metrics shown by ``decloud models evaluate`` (all of them go to --json).
_SHOWN = ("mae", "rmse", "psnr", "ssim", "sam", "mae_masked", "mae_clear")


@models.command()
@click.argument("models_", metavar="MODEL...", nargs=-1, required=True)
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder (decloud dataset create).")
@click.option("--split", default="valid", show_default=True, help="Split to evaluate on.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print every metric as JSON.")
def evaluate(models_: tuple[str, ...], dataset: str, split: str, batch_size: int,
             as_json: bool) -> None:
    """Compare models on a dataset split.

    MODEL is a trained model (MODEL.keras or a run folder, with its model card) or a
    weightless one by name or YAML file (e.g. gapfill).
    """
    from pathlib import Path

    load_backend()
    from decloud.cli.train import cell
    from decloud.evaluation import evaluate_model
    from decloud.models import build, get_config
    from decloud.models.card import card_spec, load_model

    results: dict[str, dict[str, float | int | None]] = {}
    for item in models_:
        path = Path(item)
        if path.suffix == ".keras" or path.is_dir():
            model, card = load_model(path)
            spec = card_spec(card)
            label = path.parent.name if path.suffix == ".keras" else path.name
        else:
            model, spec = build(get_config(item))
            label = spec.name
        results[label] = evaluate_model(model, spec, dataset, split, batch_size)
    if as_json:
        click.echo(json.dumps(results, indent=1))
        return
    click.echo(f"{'model':24s}" + "".join(f"{m:>12s}" for m in _SHOWN))
    for label, values in results.items():
        click.echo(f"{label:24s}" + "".join(
            f" {cell(values.get(m, float('nan')), 11)}" for m in _SHOWN))
    click.echo(f"({split} split of {dataset}; reflectance units: MAE/RMSE in reflectance, "
               "PSNR dB, SAM degrees; _masked: cloudy pixels, _clear: clear pixels; "
               "no pixels: the region is empty, --json gives null and its pixel count 0)")
