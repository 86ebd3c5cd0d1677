"""Training on a tiny dataset of the sample archive: learning, resuming, artefacts, model
cards, evaluation (gap filling included) and the ``models`` / ``train`` commands.

Fixtures (``dataset``, ``tiny``, ``tiny_file``) are in ``conftest.py``."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from decloud.cli.main import cli
from decloud.cli.models import models
from decloud.cli.train import train as train_command
from decloud.datasets import TrainingDataset
from decloud.errors import DatasetError, TrainingError
from decloud.evaluation import evaluate_model
from decloud.models import build, get_config, list_configs
from decloud.models.card import card_spec, load_model
from decloud.models.config import ModelConfig
from decloud.models.metrics import KINDS, METRIC_NAMES, PIXEL_COUNTS, evaluate, metric_name
from decloud.training import Batches, TrainOptions, TrainResult, read_history, train
from tests.evaluation.test_pooled import assert_same_metrics

# Keras' own get_weights() on TensorFlow variables (EarlyStopping), not decloud's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

EPOCHS = 3
FAST = {"progress": False, "tensorboard": False}

Runner = Callable[..., tuple[int, str]]


class _Interrupt(keras.callbacks.Callback):
    """Stops training (as Ctrl-C would) when an epoch begins."""

    def __init__(self, at: int | None) -> None:
        super().__init__()
        self.at = at
        self.begun: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt
        self.begun.append(epoch)


@dataclass
class Run:
    out: Path
    result: TrainResult
    resumed_epochs: list[int]


@pytest.fixture(scope="module")
def run(tiny: ModelConfig, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A run interrupted when its second epoch begins, then resumed to the end.

    ``train`` is also validated on ``train`` each epoch (the extra split callback).
    """
    out = tmp_path_factory.mktemp("run") / "out"
    with pytest.raises(KeyboardInterrupt):
        train(tiny, dataset, out,
              TrainOptions(epochs=EPOCHS, valid_splits=["valid", "train"], **FAST),
              callbacks=[_Interrupt(at=1)])
    assert (out / "backup" / "training_metadata.json").is_file()
    assert not (out / "model.keras").exists()
    assert [int(e) for e in read_history(out / "history.csv")["epoch"]] == [0]
    counter = _Interrupt(at=None)
    result = train(tiny, dataset, out,
                   TrainOptions(epochs=EPOCHS, valid_splits=["valid", "train"], **FAST),
                   callbacks=[counter])
    return Run(out, result, counter.begun)


@pytest.mark.slow
def test_training_lowers_the_loss_and_logs_every_split(run: Run) -> None:
    history = run.result.history
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    # The first validation split is Keras' (val_*), the other one val_<split>_*.
    assert {"val_mae_masked", "val_train_loss", "val_train_psnr"} <= set(history)
    rates = history["learning_rate"]  # cosine decay from 1e-3
    assert rates[0] < 1e-3 and all(a > b for a, b in itertools.pairwise(rates))
    assert run.result.best_epoch == int(np.argmin(history["val_loss"])) + 1
    assert sorted(p.name for p in (run.out / "previews").glob("*.png")) == [
        "epoch_001.png", "epoch_002.png", "epoch_003.png"]


@pytest.mark.slow
def test_resume_continues_from_the_backup(run: Run, tiny: ModelConfig, dataset: Path,
                                          tmp_path: Path) -> None:
    # The resumed call ran epochs 2 and 3 only; the curve goes on where it stopped.
    assert run.resumed_epochs == [1, 2]
    with (run.out / "history.csv").open() as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2]
    # A finished run continues with more epochs (the schedule spans the new total).
    out = tmp_path / "more"
    shutil.copytree(run.out, out)
    more = train(tiny, dataset, out,
                 TrainOptions(epochs=EPOCHS + 1, valid_splits=["valid"], previews=False, **FAST))
    assert [int(e) for e in more.history["epoch"]] == [0, 1, 2, 3]
    # Without the extra split this time: its columns stay, empty for the new epoch.
    assert np.isnan(more.history["val_train_loss"][3])
    assert np.isfinite(more.history["val_loss"]).all()
    assert more.history["loss"][:EPOCHS] == run.result.history["loss"]
    # Another network cannot resume this run.
    other = tiny.model_copy(deep=True)
    other.network.widths = [4, 8]  # type: ignore[union-attr]
    with pytest.raises(TrainingError, match="another model configuration"):
        train(other, dataset, out, TrainOptions(epochs=5, **FAST))


@pytest.mark.slow
def test_model_and_card_load_back(run: Run, dataset: Path) -> None:
    assert run.result.model_path == run.out / "model.keras"
    model, card = load_model(run.out / "model.keras")
    assert card["name"] == "tiny" and card["architecture"] == "unet"
    assert card["inputs"]["s2_t"]["bands"] == ["B04", "B08"]
    assert card["inputs"]["s1_t"]["scaling"]["scale"] == pytest.approx(1 / 65535)
    assert card["outputs"]["s2_target"]["dataset_key"] == "s2_target"
    assert card["training"]["samples"] == {"train": 18, "valid": 6}
    assert card["training"]["layout"] == "demo-os2-belgium"
    assert card["software"]["keras"] == keras.__version__
    assert set(card["metrics"]["valid"]) == {*METRIC_NAMES, *PIXEL_COUNTS}
    spec = card_spec(card)
    assert card["params"] == spec.params == model.count_params()
    # The same predictions as the best checkpoint (the weights kept).
    best = keras.saving.load_model(run.out / "best.keras", compile=False)
    data = TrainingDataset(dataset, "valid")
    x = Batches(data, spec, 6, "t").model_inputs(data.batch(range(len(data))))
    np.testing.assert_allclose(model.predict_on_batch(x)["s2_target"],
                               best.predict_on_batch(x)["s2_target"], rtol=1e-6, atol=1e-3)
    again = evaluate_model(model, spec, dataset, "valid", batch_size=4)
    assert_same_metrics(again, run.result.metrics["valid"], rel=1e-6, abs=1e-12)
    # Keras' epoch-pooled validation metrics agree with the numpy evaluation.
    best_row = run.result.best_epoch - 1  # type: ignore[operator]
    assert again["psnr"] == pytest.approx(run.result.history["val_psnr"][best_row], rel=1e-4)


def test_gapfill_is_evaluated_not_trained(dataset: Path, tmp_path: Path) -> None:
    config = get_config("gapfill").model_copy(deep=True)
    config.network.s2_bands = ["B04", "B08"]  # type: ignore[union-attr]
    model, spec = build(config)
    data = TrainingDataset(dataset, "valid")
    dt = data.batch(range(len(data)), keys=["dt_tm1", "dt_t", "dt_tp1"])
    assert (dt["dt_tm1"] < 0).all() and (dt["dt_t"] == 0).all() and (dt["dt_tp1"] > 0).all()
    metrics = evaluate_model(model, spec, dataset, "valid", batch_size=4)
    assert set(metrics) == {*METRIC_NAMES, *PIXEL_COUNTS}
    # The demo's valid split has no clear pixel under its cloudy acquisition: its
    # "clear" metrics say so (None, 0 pixels) instead of a perfect-looking 0.0.
    assert metrics["pixels_clear"] == 0 and metrics["pixels_masked"] == metrics["pixels"] > 0
    assert all(metrics[metric_name(kind, "clear")] is None for kind in KINDS)
    assert all(np.isfinite(v) for k, v in metrics.items() if not k.endswith("_clear"))
    assert metrics["mae"] > 0
    # Pooled over batches as one evaluation of the whole split.
    whole = data.batch(range(len(data)), keys=data.keys + data.derived_keys)
    x = Batches(data, spec, len(data), "t").model_inputs(whole)
    expected = evaluate(whole["s2_target"], model.predict_on_batch(x)["s2_target"],
                        cloud=whole["s2_mask_t"])
    assert_same_metrics(metrics, expected, rel=1e-6, abs=1e-9)
    with pytest.raises(TrainingError, match="no weights"):
        train(config, dataset, tmp_path / "gapfill", TrainOptions(**FAST))


def test_dataset_must_fit_the_model(tiny: ModelConfig, dataset: Path, tmp_path: Path) -> None:
    bands = tiny.model_copy(deep=True)
    bands.network.s2_bands = ["B02", "B04"]  # type: ignore[union-attr]
    with pytest.raises(DatasetError, match=r"s2_tm1.*\['B04', 'B08'\].*\['B02', 'B04'\]"):
        train(bands, dataset, tmp_path / "a", TrainOptions(**FAST))
    deep = tiny.model_copy(deep=True)
    deep.network.widths = [2] * 7  # type: ignore[union-attr]
    with pytest.raises(DatasetError, match="not a multiple of 64"):
        train(deep, dataset, tmp_path / "b", TrainOptions(**FAST))
    with pytest.raises(DatasetError, match="no validation split 'test'"):
        train(tiny, dataset, tmp_path / "c", TrainOptions(valid_splits=["test"], **FAST))
    assert not any(tmp_path.iterdir())  # checked before anything is written


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Runner:
    # Through the real entry point (its error handling), with the commands registered.
    monkeypatch.setitem(cli.commands, "models", models)
    monkeypatch.setitem(cli.commands, "train", train_command)

    def call(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    return call


@pytest.mark.slow
def test_models_list_and_show(invoke: Runner) -> None:
    code, text = invoke("models", "list")
    assert code == 0, text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert set(rows) == {c.name for c in list_configs()}
    _, small = build(get_config("msop_small"))
    assert rows["msop_small"][2:5] == [f"{small.params:,d}", str(small.receptive_field),
                                      str(small.size_multiple)]
    assert rows["gapfill"][2:5] == ["0", "1", "1"]
    code, text = invoke("models", "show", "gapfill", "--json")
    assert code == 0, text
    assert json.loads(text)["inputs"]["dt_tm1"]["bands"] == ["days"]
    code, text = invoke("models", "show", "nope")
    assert code == 1 and "unknown model 'nope'" in text


@pytest.mark.slow
def test_train_command_end_to_end(invoke: Runner, run: Run, tiny_file: Path, dataset: Path,
                                  tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code, text = invoke("train", "--model", str(tiny_file), "--dataset", str(dataset),
                        "--out", str(out), "--epochs", str(EPOCHS), "--seed", "0",
                        "--no-tensorboard", "--no-previews", "--quiet")
    assert code == 0, text
    assert "mae" in text and "psnr" in text and "valid" in text
    assert (out / "model.keras").is_file() and (out / "model_card.json").is_file()
    # Uninterrupted, it learns exactly what the interrupted-and-resumed run learnt.
    history = read_history(out / "history.csv")
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history[key], run.result.history[key][:EPOCHS], rtol=1e-5)
    code, text = invoke("train", "--model", "gapfill", "--dataset", str(dataset), "--out",
                        str(tmp_path / "g"))
    assert code == 1 and "TrainingError" in text and "no weights" in text
