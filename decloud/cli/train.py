"""``decloud train``: train a model of the zoo on a dataset, resumably."""

from __future__ import annotations

from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.training.options import TrainOptions

__all__ = ["cell", "metrics_table", "train"]

_DIR = click.Path(file_okay=False, path_type=Path)

#: Loss names (as ``decloud.models.losses.LOSS_NAMES``; importing it would load Keras).
_LOSSES = ("l1", "l2", "carl")
#: Metrics shown by the final table (every metric is in the model card).
_SHOWN = ("mae", "rmse", "psnr", "ssim", "sam")


def cell(value: float | int | None, width: int) -> str:
    """A metric in a table column: "no pixels" for an empty region (None), not 0.0."""
    if value is None:
        return f"{'no pixels':>{width}s}"
    return f"{float(value):{width}.4f}"


def metrics_table(metrics: dict[str, dict[str, float | int | None]]) -> str:
    """A text table of metrics: one row per split, output and region, one column per kind.

    The main output's metrics are unprefixed, the others' prefixed by their key
    (``s2_20m_target_mae``), as :func:`~decloud.evaluation.evaluate_model` names them.
    A region without pixels reads "no pixels" (its metrics are None).
    """
    lines = [f"{'split':12s} {'output':16s} {'region':8s} "
             + " ".join(f"{k:>9s}" for k in _SHOWN)]
    for split, values in metrics.items():
        prefixes = sorted(k.removesuffix("mae") for k in values if k.endswith("mae"))
        for prefix in prefixes:
            output = prefix.rstrip("_") or "main"
            for region in ("all", "masked", "clear"):
                suffix = "" if region == "all" else f"_{region}"
                cells = " ".join(cell(values.get(prefix + k + suffix, float("nan")), 9)
                                 for k in _SHOWN)
                lines.append(f"{split:12s} {output:16s} {region:8s} {cells}")
    return "\n".join(lines)


@click.command()
@click.option("--model", "model_name", required=True, metavar="NAME|FILE",
              help="A registered model (decloud models list) or a configuration .yaml.")
@click.option("--dataset", "dataset_dir", required=True, type=_DIR,
              help="Dataset folder (decloud dataset create).")
@click.option("--out", "out_dir", required=True, type=_DIR,
              help="Output folder; a run already there is resumed.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs in all, resumed ones included [default: the model's].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per batch [default: the model's].")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Initial learning rate (cosine decay) [default: the model's].")
@click.option("--loss", type=click.Choice(_LOSSES), default=None,
              help="Loss [default: the model's].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights, the order and the augmentation.")
@click.option("--mixed-precision", is_flag=True,
              help="Compute in float16 (GPU) or bfloat16 (CPU), weights in float32.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Batches per epoch [default: the whole train split].")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
              help="Epochs without improvement of the validation loss before stopping.")
@click.option("--train-split", default="train", show_default=True, help="Split trained on.")
@click.option("--valid", "valid_splits", multiple=True, metavar="SPLIT",
              help="Validation split (repeat; the first is monitored) [default: every "
                   "split but the train one].")
@click.option("--no-augment", is_flag=True, help="No random rotations and flips.")
@click.option("--no-previews", is_flag=True, help="No previews/epoch_NNN.png.")
@click.option("--no-tensorboard", is_flag=True, help="No TensorBoard logs.")
@click.option("--restart", is_flag=True,
              help="Start over, discarding a previous run in --out instead of resuming it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(model_name: str, dataset_dir: Path, out_dir: Path, epochs: int | None,
          batch_size: int | None, learning_rate: float | None, loss: str | None, seed: int,
          mixed_precision: bool, steps_per_epoch: int | None, patience: int, train_split: str,
          valid_splits: tuple[str, ...], no_augment: bool, no_previews: bool,
          no_tensorboard: bool, restart: bool, quiet: bool) -> None:
    """Train a model on a dataset; write model.keras, model_card.json and the curves.

    Rerunning the same command resumes an interrupted run (or continues a finished one
    with more --epochs); a rerun with other settings (loss, dataset, model, seed, fewer
    epochs...) is refused, naming the setting, and the folder is left as it was.
    """
    # Checked before the backend loads (seconds), so a bad option fails at once.
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, loss=loss,
        seed=seed, mixed_precision=mixed_precision, train_split=train_split,
        valid_splits=list(valid_splits) or None, patience=patience,
        steps_per_epoch=steps_per_epoch, augment=not no_augment, resume=not restart,
        previews=not no_previews, tensorboard=not no_tensorboard, progress=not quiet)
    load_backend()
    # Keras (and its backend) load here, not when the CLI starts.
    from decloud.models.registry import get_config
    from decloud.training import train as train_model

    result = train_model(get_config(model_name), dataset_dir, out_dir, options)
    for note in result.notes:
        click.echo(note)
    click.echo(f"model: {result.model_path}")
    click.echo(f"card:  {result.card_path}")
    epochs_done = len(result.history.get("epoch", []))
    click.echo(f"epochs: {epochs_done}, best: {result.best_epoch}")
    if result.metrics:
        click.echo("")
        click.echo(metrics_table(result.metrics))
