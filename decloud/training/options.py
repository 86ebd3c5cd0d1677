"""The settings of a training run, checked once: :class:`TrainOptions`.

Kept free of Keras, so that a command line can build and check them before the
backend loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from decloud.errors import TrainingError

__all__ = ["TrainOptions"]


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`decloud.training.train` trains; None means the configuration's value.

    Attributes:
        epochs: Epochs in all (runs resumed included); ``training.epochs`` by default.
        batch_size: Samples per batch (global); ``training.batch_size`` by default.
        learning_rate: Initial learning rate of Adam, decayed along a cosine to 1 % of
            it over the run's steps; ``training.learning_rate`` by default.
        loss: ``l1``, ``l2`` or ``carl``; ``training.loss`` by default.
        seed: Seed of the weights' initialisation, the order and the augmentation.
        mixed_precision: Compute in float16 on GPU (bfloat16 on CPU), weights in float32.
        train_split: The split trained on.
        valid_splits: Validation splits: the first one is Keras' validation data
            (``val_<metric>``, monitored), the others are logged as
            ``val_<split>_<metric>``. None: every non-empty split but the train one.
        patience: Epochs without improvement of the monitored loss before stopping.
        steps_per_epoch: Batches per epoch (default: the whole train split).
        augment: Random rotations and flips of the train samples.
        resume: Continue the run found in the output folder, which must have been made
            with the same settings (more ``epochs`` excepted, see
            :mod:`decloud.training.rundir`); False starts over (its backup, history,
            previews, logs, checkpoint, model and card are removed first).
        previews: Write ``previews/epoch_NNN.png`` after each epoch.
        tensorboard: Write TensorBoard logs to ``logs/``.
        progress: Show Keras' progress bar.

    Raises:
        TrainingError: A count that must be positive is not, the seed or patience is
            negative, the learning rate is not positive, or a split name is empty.
    """

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    loss: str | None = None
    seed: int = 0
    mixed_precision: bool = False
    train_split: str = "train"
    valid_splits: Sequence[str] | None = None
    patience: int = 10
    steps_per_epoch: int | None = None
    augment: bool = True
    resume: bool = True
    previews: bool = True
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise TrainingError(f"{name} must be a positive integer, not {value!r}",
                                    field=name)
        for name in ("seed", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise TrainingError(f"{name} must be a non-negative integer, not {value!r}",
                                    field=name)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TrainingError(f"learning_rate must be positive, not {self.learning_rate!r}",
                                field="learning_rate")
        if not self.train_split:
            raise TrainingError(f"train_split must name a split, not {self.train_split!r}",
                                field="train_split")
        if self.valid_splits is not None:
            if isinstance(self.valid_splits, str) or not all(self.valid_splits):
                raise TrainingError(f"valid_splits must be a list of split names, not "
                                    f"{self.valid_splits!r}", field="valid_splits")
            # A tuple: the options stay hashable and cannot change under the run.
            object.__setattr__(self, "valid_splits", tuple(self.valid_splits))

