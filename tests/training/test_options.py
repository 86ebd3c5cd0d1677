"""TrainOptions: one checked object for the settings of a run (no Keras needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from decloud.errors import TrainingError
from decloud.training.options import TrainOptions


def test_defaults_leave_the_configuration_in_charge() -> None:
    options = TrainOptions()
    assert options.epochs is None and options.batch_size is None
    assert options.learning_rate is None and options.loss is None
    assert options.resume and options.augment and options.valid_splits is None


def test_valid_splits_become_an_immutable_tuple() -> None:
    asked = ["valid", "test"]
    options = TrainOptions(valid_splits=asked)
    asked.append("train")
    assert options.valid_splits == ("valid", "test")
    assert hash(options) == hash(TrainOptions(valid_splits=("valid", "test")))


@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("epochs", -3), ("batch_size", 0), ("steps_per_epoch", 0),
    ("epochs", 2.5), ("seed", -1), ("patience", -1), ("learning_rate", 0.0),
    ("learning_rate", -1e-3), ("train_split", ""), ("valid_splits", "valid"),
    ("valid_splits", ["valid", ""]),
])
def test_bad_values_are_typed_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(TrainingError) as caught:
        TrainOptions(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field and repr(value) in str(caught.value)


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        TrainOptions().epochs = 3  # type: ignore[misc]


def test_options_load_no_keras() -> None:
    code = ("import sys; from decloud.training import TrainOptions; TrainOptions(epochs=2); "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
