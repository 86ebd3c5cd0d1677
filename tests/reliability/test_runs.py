"""Reruns never rewrite history; a full disk never leaves a truncated checkpoint.

A finished run folder is rerun with ``decloud train`` and other settings: the rerun is
refused with one line naming the setting and both values, exit status 1, and every
file of the folder is the same file as before (inode and bytes). More epochs only
train further and say so; the same command again trains and writes nothing.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import pytest
from click.testing import CliRunner, Result

from decloud.archive import Archive
from decloud.cli.main import cli
from decloud.datasets import PlanOptions, WriteOptions, plan_dataset, write_dataset
from decloud.errors import RerunError
from decloud.evaluation import evaluate_model
from decloud.index.catalog import Catalog
from decloud.layouts import load_layout
from decloud.models.card import card_spec, load_model
from decloud.models.config import ModelConfig
from decloud.training import TrainOptions, read_history, train
from tests.conftest import ARCHIVE, file_identity
from tests.evaluation.test_pooled import assert_same_metrics
from tests.training.conftest import LAYOUT, dataset, tiny, tiny_file  # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

#: The files a run's record is made of; a refused rerun leaves each one the same file.
RECORD = ("model.keras", "model_card.json", "run.json", "history.csv", "best.keras",
          "backup/latest.weights.h5", "backup/training_metadata.json")


def _train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["train", *args, "--no-tensorboard", "--no-previews",
                                    "--quiet"])


def _identities(out: Path) -> dict[str, tuple[int, int, str]]:
    return {name: file_identity(out / name) for name in RECORD}


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another dataset of the same archive and layout (another plan seed: another fingerprint)."""
    root = tmp_path_factory.mktemp("other")
    with Catalog.create(root / "catalog", patch_size=32) as catalog:
        assert not catalog.add(Archive.from_root(ARCHIVE)).failed
        plan = plan_dataset(catalog, load_layout(LAYOUT), PlanOptions(
            12, ("T31UFS",), seed=1, splits={"train": 0.75, "valid": 0.25}, split_block=1,
            split_buffer=0))
        return write_dataset(catalog, plan, root / "ds", WriteOptions(
            patch_size=32, shard_size=8, progress=False, bands10=("B04", "B08"),
            bands20=("B11",)))


@pytest.fixture(scope="module")
def finished(tiny_file: Path, dataset: Path,  # noqa: F811
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A run of 2 epochs, finished, and the command line that made it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["--model", str(tiny_file), "--dataset", str(dataset), "--out", str(out),
            "--epochs", "2", "--loss", "l1", "--seed", "0"]
    result = _train(*args)
    assert result.exit_code == 0, result.output
    return out, args


def _with(args: list[str], option: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(option) + 1] = value
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("option", "value", "field", "shown"), [
    ("--loss", "l2", "loss", "'l1' in the folder, 'l2' now"),
    ("--seed", "7", "seed", "0 in the folder, 7 now"),
    ("--epochs", "1", "epochs", "a run of 2 epochs (2 finished), not 1"),
])
def test_a_rerun_with_other_settings_is_refused(finished: tuple[Path, list[str]], option: str,
                                                value: str, field: str, shown: str) -> None:
    out, args = finished
    before = _identities(out)
    result = _train(*_with(args, option, value))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: RerunError: {out / 'run.json'} [{field}]: ")
    assert shown in lines[0] and "--restart" in lines[0]
    assert _identities(out) == before  # not rewritten: same inode, same bytes


@pytest.mark.slow
def test_a_rerun_on_another_dataset_is_refused(finished: tuple[Path, list[str]],
                                               other_dataset: Path) -> None:
    out, args = finished
    before = _identities(out)
    result = _train(*_with(args, "--dataset", str(other_dataset)))
    assert result.exit_code == 1
    assert "[dataset]" in result.output and "another dataset" in result.output
    assert str(other_dataset) in result.output and "fingerprint" in result.output
    assert _identities(out) == before
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["dataset"] != str(other_dataset)


@pytest.mark.slow
def test_another_model_is_refused_by_the_library_too(finished: tuple[Path, list[str]],
                                                     tiny: ModelConfig,  # noqa: F811
                                                     dataset: Path) -> None:  # noqa: F811
    out, _ = finished
    before = _identities(out)
    wider = tiny.model_copy(deep=True)
    wider.network.widths = [4, 8]  # type: ignore[union-attr]
    with pytest.raises(RerunError, match="another model configuration") as caught:
        train(wider, dataset, out, TrainOptions(epochs=2, loss="l1", tensorboard=False,
                                                previews=False, progress=False))
    assert caught.value.field == "model"
    assert _identities(out) == before


@pytest.mark.slow
def test_the_same_command_again_trains_and_writes_nothing(
        finished: tuple[Path, list[str]]) -> None:
    out, args = finished
    before = _identities(out)
    result = _train(*args)
    assert result.exit_code == 0, result.output
    assert "nothing to train, nothing written" in result.output
    assert _identities(out) == before


@pytest.mark.slow
def test_more_epochs_train_further_and_the_card_describes_the_new_weights(
        finished: tuple[Path, list[str]], dataset: Path,  # noqa: F811
        tmp_path: Path) -> None:
    out = tmp_path / "further"
    shutil.copytree(finished[0], out)
    args = _with(finished[1], "--out", str(out))
    result = _train(*_with(args, "--epochs", "3"))
    assert result.exit_code == 0, result.output
    assert f"continuing the run in {out} from epoch 2 to 3" in result.output
    assert [int(e) for e in read_history(out / "history.csv")["epoch"]] == [0, 1, 2]
    run = json.loads((out / "run.json").read_text())
    assert run["epochs"] == 3 and run["loss"] == "l1"
    # The card describes the weights next to it: its metrics are theirs.
    model, card = load_model(out / "model.keras")
    assert card["training"]["epochs"] == 3
    assert card["training"]["history"]["epochs"] == 3
    metrics = evaluate_model(model, card_spec(card), dataset, "valid", batch_size=4)
    assert_same_metrics(metrics, card["metrics"]["valid"], rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_a_full_disk_during_the_checkpoint_leaves_no_truncated_file(
        tiny_file: Path, dataset: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "full"
    real_save = keras.Model.save

    def full_disk(self: keras.Model, filepath: Any, *args: Any, **kwargs: Any) -> None:
        if ".best.keras." in Path(filepath).name:
            Path(filepath).write_bytes(b"PK\x03\x04 half a zip")  # what a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", full_disk)
    result = _train("--model", str(tiny_file), "--dataset", str(dataset), "--out", str(out),
                    "--epochs", "1")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: OutputWriteError: {out / 'best.keras'}: ")
    assert "no space left on device" in lines[0]
    assert not (out / "best.keras").exists() and not (out / "model.keras").exists()
    assert not (out / "model_card.json").exists()
    assert not [p.name for p in out.rglob(".*") if "tmp" in p.name]  # no temporary left


@pytest.mark.slow
def test_a_full_disk_during_the_final_save_keeps_model_and_card_paired(
        finished: tuple[Path, list[str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "paired"
    shutil.copytree(finished[0], out)
    before = _identities(out)
    real_save = keras.Model.save

    def full_disk(self: keras.Model, filepath: Any, *args: Any, **kwargs: Any) -> None:
        if ".model.keras." in Path(filepath).name:
            Path(filepath).write_bytes(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", full_disk)
    result = _train(*_with(_with(finished[1], "--out", str(out)), "--epochs", "3"))
    assert result.exit_code == 1
    assert f"{out / 'model.keras'}: " in result.output
    assert "no space left on device" in result.output
    # The old model and its card stay, together; nothing half-written is left.
    for name in ("model.keras", "model_card.json"):
        assert file_identity(out / name) == before[name]
    assert not [p.name for p in out.rglob(".*") if "tmp" in p.name]


@pytest.mark.slow
def test_a_full_disk_during_the_backup_leaves_no_truncated_weights(
        tiny_file: Path, dataset: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "backup_full"

    def full_disk(self: keras.Model, filepath: Any, *args: Any, **kwargs: Any) -> None:
        Path(filepath).write_bytes(b"\x89HDF half")
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    result = _train("--model", str(tiny_file), "--dataset", str(dataset), "--out", str(out),
                    "--epochs", "1")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    weights = out / "backup" / "latest.weights.h5"
    assert lines[0].startswith(f"Error: OutputWriteError: {weights}: ")
    assert "no space left on device" in lines[0]
    assert not weights.exists() and not (out / "backup" / "training_metadata.json").exists()
    assert not [p.name for p in out.rglob(".*") if "tmp" in p.name]
