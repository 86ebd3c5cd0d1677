"""Training a model of the zoo on a decloud dataset, resumably; evaluating any model.

:func:`train` builds the model of a configuration, feeds it a dataset folder's splits
and writes everything into one output folder::

    model.keras         the trained model (best epoch's weights, no optimiser state)
    model_card.json     what it takes and gives, how it was trained, its metrics
    best.keras          the best epoch so far (ModelCheckpoint, with optimiser state)
    history.csv         the learning curve, one row per epoch (``epoch`` counts from 0)
    run.json            the run's settings, checked when the run is resumed
    backup/             weights, optimiser state and epoch of the last finished epoch
    previews/           epoch_NNN.png: cloudy input, prediction and target (validation)
    logs/               TensorBoard logs

Resuming: the backup is kept once training ends, so running :func:`train` again with
the same ``out_dir`` continues from the last finished epoch, after an interruption as
well as after a finished run (with a larger ``epochs``); ``resume=False`` starts over.
The model configuration must be the same as in ``run.json``. An interrupted run that
is resumed learns what an uninterrupted one does: weights, optimiser state and step
count come from the backup, each epoch's order and augmentation from the seed and the
epoch number, and the best value and patience of early stopping and checkpointing from
``history.csv`` (so a run stopped early stays stopped). The learning-rate schedule spans
the ``epochs`` of the current call.

Distribution: with more than one accelerator visible, the JAX backend trains with
``keras.distribution.DataParallel`` over all of them and TensorFlow builds and compiles
the model inside a ``tf.distribute.MirroredStrategy`` scope; the batch size is the
global one (split across devices; with JAX it must be a multiple of their number).
Otherwise (one GPU, or CPU only) training runs on a single device.

:func:`evaluate_model` runs any model (trained, or the weightless gap filling) over a
split and computes :func:`decloud.models.metrics.evaluate`'s metrics over the whole
split, batch by batch, pooled exactly as one call on the entire split would.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from scipy import ndimage

from decloud.constants import S2_NODATA, S2_SCALE, MaskClass
from decloud.datasets.reader import DT_PREFIX, TrainingDataset, load_manifest
from decloud.errors import DatasetError, DecloudError
from decloud.models.card import CARD_FILE, model_card, write_card
from decloud.models.config import GapfillConfig, ModelConfig
from decloud.models.losses import get_loss, pack_targets
from decloud.models.metrics import KINDS, METRIC_NAMES, SSIM_RADIUS, evaluate, metric_name
from decloud.models.metrics import get_metrics as keras_metrics
from decloud.models.zoo import ModelSpec, build
from decloud.writers import atomic_file

__all__ = [
    "BACKUP_DIR",
    "BEST_MODEL",
    "HISTORY_FILE",
    "LOG_DIR",
    "MODEL_CARD",
    "MODEL_FILE",
    "PREVIEW_DIR",
    "RUN_FILE",
    "Batches",
    "TrainResult",
    "TrainingError",
    "evaluate_model",
    "read_history",
    "train",
    "write_preview",
]

MODEL_FILE = "model.keras"
MODEL_CARD = CARD_FILE
BEST_MODEL = "best.keras"
HISTORY_FILE = "history.csv"
RUN_FILE = "run.json"
BACKUP_DIR = "backup"
PREVIEW_DIR = "previews"
LOG_DIR = "logs"

#: Validation samples drawn in each preview.
PREVIEW_SAMPLES = 4
#: Mask classes of the cloudy input that count as cloud (as the metrics count them).
_CLOUD_CLASSES = (int(MaskClass.CLOUD), int(MaskClass.CIRRUS), int(MaskClass.SHADOW))


class TrainingError(DecloudError):
    """A model cannot be trained as asked (no weights, another run in the folder...)."""


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured.

    Attributes:
        model_path: ``model.keras``, the best epoch's model.
        card_path: ``model_card.json``.
        history: The learning curve over every run in the folder (``history.csv``): a
            list per logged quantity, one value per epoch, ``epoch`` from 0.
        best_epoch: The epoch whose weights were kept, counted from 1 as Keras prints
            them (None if no epoch ran).
        metrics: Final metrics of the kept model on each validation split, by split.
        out_dir: The output folder.
    """

    model_path: Path
    card_path: Path
    history: dict[str, list[float]]
    best_epoch: int | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: Path | None = None


# Data ---------------------------------------------------------------------------------


def _target_keys(spec: ModelSpec, cloudy: str) -> list[str]:
    """Dataset keys :func:`~decloud.models.losses.pack_targets` reads for the outputs."""
    keys = list(spec.outputs)
    for key in spec.outputs:
        prefix = "s2_20m" if key.startswith("s2_20m_") else "s2"
        keys.append(f"{prefix}_{cloudy}")
    keys.append(f"s2_mask_{cloudy}")
    return list(dict.fromkeys(keys))


class Batches(keras.utils.PyDataset):
    """``(x, y)`` batches of a split for ``model.fit``: model inputs and packed targets.

    ``x`` holds the model's input keys as float32 (stored keys and the derived
    ``dt_<acq>``), ``y`` the packed targets of each output (2C + 2 channels, see
    :mod:`decloud.models.losses`). Each epoch has its own seeded order and augmentation,
    set by :meth:`set_epoch` (a callback calls it with Keras' epoch number, so that a
    resumed run draws what an uninterrupted one would; counting ``on_epoch_end`` calls
    would not do, as Keras also runs one to build the model).

    Args:
        data: The split.
        spec: The model's spec (inputs, outputs).
        batch_size: Samples per batch.
        cloudy: The reconstructed acquisition (``training.cloudy``).
        shuffle: Permute the samples each epoch.
        augment: Random rotation and flip per sample each epoch.
        seed: Seed of the order and augmentation.
        epoch: The first epoch's number.
        steps: Batches per epoch (the split's batches repeat if more are asked); all
            the split's batches by default.
    """

    def __init__(self, data: TrainingDataset, spec: ModelSpec, batch_size: int, cloudy: str,
                 *, shuffle: bool = False, augment: bool = False, seed: int = 0,
                 epoch: int = 0, steps: int | None = None) -> None:
        super().__init__()
        if len(data) == 0:
            raise DatasetError(f"split {data.split!r} has no samples", path=data.path,
                               field="split")
        self.data, self.batch_size, self.cloudy = data, batch_size, cloudy
        self.shuffle, self.augment, self.seed, self.epoch = shuffle, augment, seed, epoch
        self.inputs = list(spec.inputs)
        self.outputs = {k: s.channels for k, s in spec.outputs.items()}
        available = set(data.keys) | set(data.derived_keys)
        targets = [k for k in _target_keys(spec, cloudy) if k in available]
        self.keys = list(dict.fromkeys(self.inputs + targets))
        self.per_pass = math.ceil(len(data) / batch_size)
        self.steps = steps or self.per_pass
        self._refresh()

    def _refresh(self) -> None:
        self.order = self.data.order(shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)
        self.transforms = self.data.transforms(seed=self.seed, epoch=self.epoch) \
            if self.augment else None

    def __len__(self) -> int:
        return self.steps

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """The dataset arrays of batch ``index`` of the current epoch."""
        index %= self.per_pass
        chunk = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.data.batch(chunk, keys=self.keys, transforms=self.transforms)

    def model_inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``x`` of dataset arrays: the model's inputs as float32."""
        return {k: np.asarray(batch[k], dtype=np.float32) for k in self.inputs}

    def pack(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                           dict[str, np.ndarray]]:
        """``(x, y)`` of dataset arrays."""
        return self.model_inputs(batch), pack_targets(batch, self.outputs, cloudy=self.cloudy)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self.pack(self.raw(index))

    def set_epoch(self, epoch: int) -> None:
        """Draw the order and transforms of an epoch (from 0)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._refresh()


class _SetEpoch(keras.callbacks.Callback):
    """Tells the train batches which epoch begins; logs the learning rate at its end."""

    def __init__(self, data: Batches) -> None:
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Called before any batch of the epoch is read (prefetching included).
        self.data.set_epoch(epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            logs["learning_rate"] = float(rate)


def _check_compatible(spec: ModelSpec, manifest: Mapping[str, Any], dataset: Path) -> None:
    """The dataset has the model's keys, with its bands, at a size the model takes.

    Raises:
        DatasetError: A key is missing, its bands differ, or the patch size does not fit.
    """
    keys: dict[str, Any] = manifest["keys"]
    layout = manifest.get("resolved_layout") or manifest.get("layout") or {}
    acquisitions = set(layout.get("acquisitions", {}))
    needed = dict(spec.inputs) | dict(spec.outputs)
    for key, io in needed.items():
        if key.startswith(DT_PREFIX) and key.removeprefix(DT_PREFIX) in acquisitions:
            continue  # derived from the samples' dates
        if key not in keys:
            role = "output" if key in spec.outputs else "input"
            raise DatasetError(f"the model's {role} {key!r} is not in the dataset (keys: "
                               f"{', '.join(keys)})", path=dataset, field=key)
        bands = tuple(keys[key]["bands"])
        if bands != tuple(io.bands):
            raise DatasetError(f"{key}: the dataset has bands {list(bands)}, the model "
                               f"{spec.name!r} takes {list(io.bands)}", path=dataset, field=key)
    size = int(manifest["patch_size"])
    if size % spec.size_multiple:
        raise DatasetError(f"patch size {size} is not a multiple of {spec.size_multiple}, as "
                           f"model {spec.name!r} needs", path=dataset, field="patch_size")


# Evaluation ---------------------------------------------------------------------------


def _cloud_at(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Binary cloud mask ``(N, h, w)`` of a 10 m class mask, at an output's size.

    A 20 m pixel is cloud if any of its four 10 m pixels is (as the packed targets).
    """
    cloud: np.ndarray = np.isin(mask[..., 0] if mask.ndim == 4 else mask, _CLOUD_CLASSES)
    n, h, w = cloud.shape
    if (h, w) != tuple(shape[1:3]):
        f = h // shape[1]
        blocks = cloud[:, :shape[1] * f, :shape[2] * f].reshape(n, shape[1], f, shape[2], f)
        cloud = np.asarray(blocks.any(axis=(2, 4)))
    return cloud.astype(np.uint8)


class _Pooled:
    """Metrics of :func:`~decloud.models.metrics.evaluate` pooled over batches.

    Each batch's values are weighted by what they average (pixels x bands, images,
    SSIM windows, pixels for angles); RMSE and PSNR come from the pooled MSE. The
    result equals one :func:`evaluate` over all the batches at once.
    """

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, float] = {}

    def add(self, target: np.ndarray, prediction: np.ndarray, cloud: np.ndarray | None) -> None:
        values = evaluate(target, prediction, cloud=cloud)
        ok: np.ndarray = np.logical_not((target == S2_NODATA).any(axis=-1))
        is_cloud: np.ndarray = np.zeros_like(ok) if cloud is None else cloud.astype(bool)
        channels = target.shape[-1]
        r = SSIM_RADIUS
        inner = (slice(None), slice(r, -r), slice(r, -r))
        window_ok = ndimage.minimum_filter(ok.astype(np.uint8), size=(1, 2 * r + 1, 2 * r + 1))
        regions = {"all": ok, "masked": ok & is_cloud, "clear": ok & ~is_cloud}
        for region, sel in regions.items():
            pixels = float(sel.sum())
            weights = {
                "mae": pixels * channels, "mse": pixels * channels,
                "psnr_image": float(sel.any(axis=(1, 2)).sum()),
                "ssim": float((sel[inner] * window_ok[inner]).sum()) * channels,
                "sam": pixels,
            }
            for kind, weight in weights.items():
                name = metric_name(kind, region)
                self.total[name] = self.total.get(name, 0.0) + values[name] * weight
                self.count[name] = self.count.get(name, 0.0) + weight

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for region in ("all", "masked", "clear"):
            for kind in KINDS:
                name = metric_name(kind, region)
                base = metric_name("mse", region) if kind in ("rmse", "psnr") else name
                count = self.count.get(base, 0.0)
                mean = self.total.get(base, 0.0) / count if count > 0 else 0.0
                if count <= 0:
                    out[name] = 0.0
                elif kind == "rmse":
                    out[name] = math.sqrt(mean)
                elif kind == "psnr":
                    out[name] = -10.0 * math.log10(max(mean, 1e-10))
                else:
                    out[name] = mean
        return {name: out[name] for name in METRIC_NAMES}


def evaluate_model(model: keras.Model, spec: ModelSpec, dataset: str | Path, split: str,
                   batch_size: int = 8, *, cloudy: str | None = None) -> dict[str, float]:
    """Metrics of a model over a whole split (trained models and gap filling alike).

    Predictions are made batch by batch (no augmentation) and compared with the targets
    in every region (all valid pixels, ``masked`` under the cloudy input's clouds and
    shadows, ``clear``) as :func:`decloud.models.metrics.evaluate` defines them, pooled
    over the split.

    Args:
        model: The model (its inputs and outputs named by dataset keys).
        spec: Its spec (:func:`~decloud.models.zoo.build` or the model card).
        dataset: The dataset folder.
        split: The split to evaluate on.
        batch_size: Samples per prediction batch.
        cloudy: The reconstructed acquisition whose mask defines the regions; the
            configuration's ``training.cloudy`` by default.

    Returns:
        ``{metric: value}`` for the main output (``s2_<target>``); other outputs'
        metrics are prefixed with their key (``s2_20m_target_mae``...).

    Raises:
        DatasetError: The dataset does not fit the model, or the split is unknown.
    """
    dataset = Path(dataset)
    cloudy = cloudy or spec.config.training.cloudy
    data = TrainingDataset(dataset, split)
    _check_compatible(spec, data.manifest, dataset)
    batches = Batches(data, spec, batch_size, cloudy)
    mask_key = f"s2_mask_{cloudy}"
    pooled = {key: _Pooled() for key in spec.outputs}
    for index in range(len(batches)):
        raw = batches.raw(index)
        predicted = model.predict_on_batch(batches.model_inputs(raw))
        if not isinstance(predicted, Mapping):
            predicted = dict(zip(spec.outputs, _as_list(predicted), strict=True))
        for key in spec.outputs:
            prediction = np.asarray(predicted[key], dtype=np.float32)
            target = raw[key]
            cloud = _cloud_at(raw[mask_key], target.shape) if mask_key in raw else None
            pooled[key].add(target, prediction, cloud)
    main = f"s2_{spec.config.target}"
    out: dict[str, float] = {}
    for key, acc in pooled.items():
        prefix = "" if key == main else f"{key}_"
        out.update({f"{prefix}{name}": value for name, value in acc.result().items()})
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


# Callbacks ----------------------------------------------------------------------------


class _SplitValidation(keras.callbacks.Callback):
    """Evaluates the model on more validation splits at each epoch's end.

    Adds ``val_<split>_<metric>`` (the compiled loss and metrics) to the epoch's logs,
    for the callbacks after it (CSV logger, TensorBoard) to record.
    """

    def __init__(self, splits: Mapping[str, Batches]) -> None:
        super().__init__()
        self.splits = splits

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        for split, data in self.splits.items():
            results = self.model.evaluate(data, verbose=0, return_dict=True)
            logs.update({f"val_{split}_{name}": float(v) for name, v in results.items()})


class _Previews(keras.callbacks.Callback):
    """Writes ``epoch_NNN.png``: per validation sample, cloudy input / prediction / target."""

    def __init__(self, folder: Path, batch: Mapping[str, np.ndarray], x: Mapping[str, Any],
                 output: str, cloudy_key: str | None, bands: Sequence[str]) -> None:
        super().__init__()
        self.folder, self.batch, self.x = folder, batch, dict(x)
        self.output, self.cloudy_key, self.bands = output, cloudy_key, tuple(bands)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        predicted = self.model.predict_on_batch(self.x)
        prediction = np.asarray(predicted[self.output] if isinstance(predicted, Mapping)
                                else _as_list(predicted)[0], dtype=np.float32)
        columns: list[tuple[str, np.ndarray]] = []
        if self.cloudy_key is not None:
            columns.append((f"input {self.cloudy_key}", self.batch[self.cloudy_key]))
        columns += [("prediction", prediction), (f"target {self.output}", self.batch[self.output])]
        write_preview(self.folder / f"epoch_{epoch + 1:03d}.png", columns, self.bands,
                      title=f"epoch {epoch + 1}")


def _display(images: Sequence[np.ndarray], bands: Sequence[str]) -> list[np.ndarray]:
    """RGB uint8 images: true colour (B04, B03, B02), else grey of the first band.

    Every image gets the stretch of the last one (the target): its 2-98 % percentiles
    per channel, so that colours compare across columns and clouds saturate to white.
    """
    rgb = [bands.index(b) for b in ("B04", "B03", "B02")] \
        if {"B04", "B03", "B02"} <= set(bands) else [0, 0, 0]
    views = []
    for raw in images:
        values = np.asarray(raw, dtype=np.float32)[..., rgb]
        views.append(np.where(values == S2_NODATA, np.nan, values / S2_SCALE))
    reference = views[-1].reshape(-1, 3)
    out = []
    ok = np.isfinite(reference).all(axis=1)
    lo, hi = (np.percentile(reference[ok], [2.0, 98.0], axis=0) if ok.any()
              else (np.zeros(3), np.ones(3)))
    scale = np.where(hi > lo, hi - lo, 1.0)
    for view in views:
        image = np.clip((view - lo) / scale, 0.0, 1.0)
        image = np.where(np.isfinite(image).all(axis=-1, keepdims=True), image, 0.0)
        out.append((image * 255).round().astype(np.uint8))
    return out


def write_preview(path: Path, columns: Sequence[tuple[str, np.ndarray]],
                  bands: Sequence[str], *, title: str = "") -> Path:
    """Write a PNG grid: one row per sample, one column per image batch ``(n, H, W, C)``.

    Args:
        path: The PNG (written atomically, replaced if it exists).
        columns: ``(title, raw reflectance x 10000)`` per column, same samples.
        bands: The images' bands (true colour needs B04, B03 and B02).
        title: Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = len(columns[0][1])
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        for ax, image in zip(axes[r], _display([c[1][r] for c in columns], list(bands)),
                             strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, (name, _) in zip(axes[0], columns, strict=True):
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


class _CsvHistory(keras.callbacks.Callback):
    """The learning curve in a CSV file, one row per epoch, rewritten atomically.

    Unlike ``keras.callbacks.CSVLogger(append=True)``, a resumed run that logs other
    quantities (another set of validation splits) widens the header instead of writing
    rows that do not match it, and a crash never leaves a half-written row.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"epoch": str(epoch)}
        for key, value in (logs or {}).items():
            with contextlib.suppress(TypeError, ValueError):
                row[key] = repr(float(value))
        rows: list[dict[str, str]] = []
        header = ["epoch"]
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header = list(reader.fieldnames or header)
                rows = [r for r in reader if r.get("epoch") != str(epoch)]
        header += sorted(k for k in row if k not in header)
        with atomic_file(self.path, overwrite=True) as tmp, tmp.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows([*rows, row])


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that picks up the best value and patience of earlier runs."""

    def __init__(self, *, state: tuple[float, int, int] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.state is not None:
            self.best, self.best_epoch, self.wait = self.state


# History and resuming -----------------------------------------------------------------


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as lists by column (the last row of an epoch logged twice wins)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_epoch: dict[int, dict[str, str]] = {}
    for row in rows:
        with contextlib.suppress(KeyError, ValueError):
            by_epoch[int(row["epoch"])] = row
    columns = list(rows[0]) if rows else []
    out: dict[str, list[float]] = {c: [] for c in columns}
    for epoch in sorted(by_epoch):
        for c in columns:
            value = by_epoch[epoch].get(c)
            out[c].append(float(value) if value not in (None, "") else math.nan)
    return out


def _truncate_history(path: Path, epochs: int) -> None:
    """Keep the rows of epochs below ``epochs`` (those of the backup's state)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < epochs]
    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def _best(history: Mapping[str, list[float]], monitor: str) -> tuple[float, int] | None:
    """The best (lowest) monitored value and its epoch (from 0)."""
    values = history.get(monitor, [])
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    value, position = min(finite)
    return value, int(history["epoch"][position])


def _backup_epoch(folder: Path) -> int:
    """Epochs finished according to the backup (0 without one)."""
    path = folder / "training_metadata.json"
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _run_settings(config: ModelConfig, dataset: Path, settings: Mapping[str, Any]) -> dict[str,
                                                                                       Any]:
    return {"model": config.model_dump(mode="json"), "dataset": str(dataset.resolve()),
            **settings}


def _check_resumable(out_dir: Path, run: Mapping[str, Any]) -> None:
    """A resumed run must train the same network (its weights are restored)."""
    path = out_dir / RUN_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"unreadable run settings ({err})", path=path) from err
    if previous.get("model", {}).get("network") != run["model"]["network"] or \
            previous.get("model", {}).get("target") != run["model"]["target"]:
        raise TrainingError(
            f"the folder holds a run of another network (model "
            f"{previous.get('model', {}).get('name')!r}); use another output folder, or "
            "start over (resume=False, --restart)", path=out_dir, field="model")


# Devices ------------------------------------------------------------------------------


def _accelerators() -> int:
    """Number of accelerators (GPUs, TPUs) the backend sees."""
    # keras.distribution lists devices as "cpu:0", "gpu:0", "tpu:0" on every backend.
    return sum(not d.lower().startswith("cpu") for d in keras.distribution.list_devices())


@contextlib.contextmanager
def _distribution(devices: int) -> Iterator[contextlib.AbstractContextManager[Any]]:
    """Yield the scope to build and compile in; set data parallelism if several devices.

    JAX: a global ``DataParallel`` distribution (restored on exit); TensorFlow: a
    ``MirroredStrategy`` scope; otherwise (one device, or torch) a null scope.
    """
    backend = keras.backend.backend()
    if devices <= 1 or backend not in ("jax", "tensorflow"):
        yield contextlib.nullcontext()
        return
    if backend == "jax":
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            yield contextlib.nullcontext()
        finally:
            keras.distribution.set_distribution(previous)
        return
    tf = importlib.import_module("tensorflow")
    yield tf.distribute.MirroredStrategy().scope()


@contextlib.contextmanager
def _precision(mixed: bool, accelerated: bool) -> Iterator[None]:
    """Mixed precision while building and training (float16 on GPU, bfloat16 on CPU)."""
    if not mixed:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if accelerated
                                            else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# Training -----------------------------------------------------------------------------


def _tensorboard_available() -> bool:
    """Keras' TensorBoard callback writes with ``tf.summary``: TensorFlow and TensorBoard."""
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tensorboard"):
        return True
    warnings.warn("no TensorBoard logs: the tensorboard (and tensorflow) packages are not "
                  "installed", stacklevel=3)
    return False


def _valid_splits(manifest: Mapping[str, Any], train_split: str,
                  asked: Sequence[str] | None, dataset: Path) -> list[str]:
    splits = list(manifest["splits"])
    if train_split not in splits:
        raise DatasetError(f"no split {train_split!r} to train on (splits: "
                           f"{', '.join(splits)})", path=dataset, field="split")
    if asked is None:
        return [s for s in splits if s != train_split and manifest["splits"][s]["samples"]]
    for split in asked:
        if split not in splits:
            raise DatasetError(f"no validation split {split!r} (splits: {', '.join(splits)})",
                               path=dataset, field="split")
    return list(dict.fromkeys(asked))


def _prepare_output(out_dir: Path, run: Mapping[str, Any], start: int, *,
                    resume: bool) -> None:
    """Create the output folder, clear a previous run (not resuming), write ``run.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for folder in (BACKUP_DIR, PREVIEW_DIR, LOG_DIR):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
        for name in (HISTORY_FILE, BEST_MODEL, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
    # Rows logged after the backup (an epoch interrupted between the two) are redone.
    _truncate_history(out_dir / HISTORY_FILE, start)
    with atomic_file(out_dir / RUN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def _save_model(model: keras.Model, path: Path) -> Path:
    """Save a ``.keras`` file atomically (the temporary name keeps the suffix)."""
    with atomic_file(path, overwrite=True) as tmp:
        model.save(tmp)
    return path


def train(
    config: ModelConfig,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    loss: str | None = None,
    seed: int = 0,
    mixed_precision: bool = False,
    train_split: str = "train",
    valid_splits: Sequence[str] | None = None,
    patience: int = 10,
    steps_per_epoch: int | None = None,
    augment: bool = True,
    resume: bool = True,
    previews: bool = True,
    tensorboard: bool = True,
    progress: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train a model configuration on a dataset folder; write the model and its card.

    Args:
        config: The model configuration (:func:`~decloud.models.registry.get_config`).
        dataset: The dataset folder (``decloud dataset create``).
        out_dir: The output folder (layout in the module docstring); a previous run
            there is resumed.
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
            ``val_<split>_<metric>``. Default: every non-empty split but the train one.
        patience: Epochs without improvement of the monitored loss before stopping.
        steps_per_epoch: Batches per epoch (default: the whole train split).
        augment: Random rotations and flips of the train samples.
        resume: Continue the run found in ``out_dir``; False starts over (its backup,
            history, previews, logs and best checkpoint are removed first).
        previews: Write ``previews/epoch_NNN.png`` after each epoch.
        tensorboard: Write TensorBoard logs to ``logs/``.
        progress: Show Keras' progress bar.
        callbacks: More Keras callbacks.

    Returns:
        What was written and measured.

    Raises:
        TrainingError: The model has no weights (gap filling), or ``out_dir`` holds a run
            of another network.
        DatasetError: The dataset does not fit the model (keys, bands, patch size) or
            lacks a split.
    """
    if isinstance(config.network, GapfillConfig):
        raise TrainingError(f"model {config.name!r} (gap filling) has no weights to train; "
                            "evaluate it with decloud.models.training.evaluate_model",
                            field="model")
    dataset, out_dir = Path(dataset), Path(out_dir)
    settings = config.training
    epochs = int(epochs or settings.epochs)
    batch_size = int(batch_size or settings.batch_size)
    learning_rate = float(learning_rate or settings.learning_rate)
    loss_name = loss or settings.loss
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value <= 0:
            raise TrainingError(f"{name} must be positive, not {value}", field=name)
    manifest = load_manifest(dataset)
    splits = _valid_splits(manifest, train_split, valid_splits, dataset)
    run = _run_settings(config, dataset, {
        "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
        "loss": loss_name, "carl_lambda": settings.carl_lambda, "seed": seed,
        "mixed_precision": mixed_precision, "train_split": train_split,
        "valid_splits": splits, "patience": patience, "steps_per_epoch": steps_per_epoch,
        "augment": augment})

    backup = out_dir / BACKUP_DIR
    history_path = out_dir / HISTORY_FILE
    if resume:
        _check_resumable(out_dir, run)
    start = _backup_epoch(backup) if resume else 0

    devices = _accelerators()
    keras.utils.set_random_seed(seed)
    with _precision(mixed_precision, devices > 0), _distribution(devices) as scope:
        with scope:
            model, spec = build(config)
            _check_compatible(spec, manifest, dataset)
            # Checked: only now is the output folder touched.
            _prepare_output(out_dir, run, start, resume=resume)
            cloudy = settings.cloudy
            train_data = Batches(TrainingDataset(dataset, train_split), spec, batch_size, cloudy,
                                 shuffle=True, augment=augment, seed=seed, epoch=start,
                                 steps=steps_per_epoch)
            valid = {s: Batches(TrainingDataset(dataset, s), spec, batch_size, cloudy)
                     for s in splits}
            schedule = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=max(1, epochs * len(train_data)), alpha=0.01)
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=schedule),
                loss={k: get_loss(loss_name, settings.carl_lambda) for k in spec.outputs},
                metrics={k: keras_metrics() for k in spec.outputs})
        monitor = "val_loss" if splits else "loss"
        previous = read_history(history_path)
        best = _best(previous, monitor) if start else None
        last = start - 1
        wait = last - best[1] if best else 0
        stopped = best is not None and wait >= patience and last > 0
        all_callbacks: list[keras.callbacks.Callback] = [_SetEpoch(train_data)]
        if len(splits) > 1:
            all_callbacks.append(_SplitValidation({s: valid[s] for s in splits[1:]}))
        all_callbacks += [
            keras.callbacks.ModelCheckpoint(
                out_dir / BEST_MODEL, monitor=monitor, mode="min", save_best_only=True,
                initial_value_threshold=best[0] if best and (out_dir / BEST_MODEL).is_file()
                else None),
            _ResumableEarlyStopping(
                monitor=monitor, mode="min", patience=patience, restore_best_weights=True,
                state=(best[0], best[1], wait) if best else None),
            _CsvHistory(history_path),
        ]
        if tensorboard and _tensorboard_available():
            all_callbacks.append(keras.callbacks.TensorBoard(out_dir / LOG_DIR))
        if previews:
            all_callbacks.append(_preview_callback(out_dir / PREVIEW_DIR, spec, valid, splits,
                                                   train_data, cloudy))
        all_callbacks += list(callbacks)
        # Last: a backup of epoch n means every record of epoch n is written.
        all_callbacks.append(keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False))
        if start < epochs and not stopped:
            model.fit(train_data, validation_data=valid[splits[0]] if splits else None,
                      epochs=epochs, callbacks=all_callbacks, verbose=1 if progress else 0,
                      # Batches are shuffled by their own seeded order: Keras' shuffling
                      # of batch indexes would not be the same after a resume.
                      shuffle=False)

    history = read_history(history_path)
    best = _best(history, monitor)
    # The canonical model: float32 policy, best epoch's weights, no optimiser state.
    final, final_spec = build(config)
    if (out_dir / BEST_MODEL).is_file():
        final.set_weights(keras.saving.load_model(out_dir / BEST_MODEL,
                                                  compile=False).get_weights())
    else:
        final.set_weights(model.get_weights())
    metrics = {s: evaluate_model(final, final_spec, dataset, s, batch_size, cloudy=cloudy)
               for s in splits}
    model_path = _save_model(final, out_dir / MODEL_FILE)
    card = model_card(final_spec, config, dataset_manifest=manifest, dataset_path=dataset,
                      metrics=metrics, seed=seed, history=history,
                      training={k: v for k, v in run.items() if k not in ("model", "dataset")}
                      | {"best_epoch": best[1] + 1 if best else None, "monitor": monitor})
    card_path = write_card(out_dir / MODEL_CARD, card)
    return TrainResult(model_path=model_path, card_path=card_path, history=history,
                       best_epoch=best[1] + 1 if best else None, metrics=metrics,
                       out_dir=out_dir)


def _preview_callback(folder: Path, spec: ModelSpec, valid: Mapping[str, Batches],
                      splits: Sequence[str], train_data: Batches,
                      cloudy: str) -> _Previews:
    """Previews of the first samples of the first validation split (or of train)."""
    source = valid[splits[0]] if splits else train_data
    data = source.data
    indexes = np.arange(min(PREVIEW_SAMPLES, len(data)))
    output = f"s2_{spec.config.target}"
    cloudy_key = f"s2_{cloudy}" if f"s2_{cloudy}" in data.keys else None
    keys = list(dict.fromkeys(source.keys + [output] + ([cloudy_key] if cloudy_key else [])))
    batch = data.batch(indexes, keys=keys)
    x = {k: np.asarray(batch[k], dtype=np.float32) for k in spec.inputs}
    return _Previews(folder, batch, x, output, cloudy_key, spec.outputs[output].bands)
