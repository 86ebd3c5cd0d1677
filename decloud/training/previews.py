"""Preview PNGs of training: per validation sample, cloudy input / prediction / target.

matplotlib is imported only when a preview is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from decloud.constants import S2_NODATA, S2_SCALE
from decloud.evaluation import predict_outputs
from decloud.keys import KeyKind, make_key
from decloud.models.zoo import ModelSpec
from decloud.training.data import Batches
from decloud.writers import atomic_file

__all__ = ["PREVIEW_SAMPLES", "Previews", "preview_callback", "write_preview"]

#: Validation samples drawn in each preview.
PREVIEW_SAMPLES = 4


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

    Returns:
        ``path``.
    """
    # matplotlib costs seconds to import: only when a preview is drawn.
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


class Previews(keras.callbacks.Callback):
    """Writes ``epoch_NNN.png`` after each epoch (see :func:`preview_callback`).

    Args:
        folder: Where the PNGs go.
        spec: The model's spec.
        batch: The raw dataset arrays of the samples shown.
        output: The output key shown (``s2_<target>``).
        cloudy_key: The cloudy input shown first, if the dataset has it.
    """

    def __init__(self, folder: Path, spec: ModelSpec, batch: Mapping[str, np.ndarray],
                 output: str, cloudy_key: str | None) -> None:
        super().__init__()
        self.folder, self.spec, self.batch = folder, spec, batch
        self.x = {k: np.asarray(batch[k], dtype=np.float32) for k in spec.inputs}
        self.output, self.cloudy_key = output, cloudy_key
        self.bands = tuple(spec.outputs[output].bands)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Predict the samples and write ``epoch_NNN.png`` (from 001)."""
        prediction = predict_outputs(self.model, self.spec, self.x)[self.output]
        columns: list[tuple[str, np.ndarray]] = []
        if self.cloudy_key is not None:
            columns.append((f"input {self.cloudy_key}", self.batch[self.cloudy_key]))
        columns += [("prediction", prediction), (f"target {self.output}", self.batch[self.output])]
        write_preview(self.folder / f"epoch_{epoch + 1:03d}.png", columns, self.bands,
                      title=f"epoch {epoch + 1}")


def preview_callback(folder: Path, spec: ModelSpec, source: Batches, cloudy: str) -> Previews:
    """Previews of the first :data:`PREVIEW_SAMPLES` samples of a split, unaugmented.

    Args:
        folder: Where the PNGs go.
        spec: The model's spec.
        source: Batches of the split shown (the first validation split, or train).
        cloudy: The reconstructed acquisition, shown as the first column.
    """
    data = source.data
    indexes = np.arange(min(PREVIEW_SAMPLES, len(data)))
    output = make_key(KeyKind.S2, spec.config.target)
    cloudy_key: str | None = make_key(KeyKind.S2, cloudy)
    if cloudy_key not in data.keys:
        cloudy_key = None
    keys = list(dict.fromkeys(source.keys + [output] + ([cloudy_key] if cloudy_key else [])))
    return Previews(folder, spec, data.batch(indexes, keys=keys), output, cloudy_key)
