"""The single-date processor: one S2 date and the nearest S1 image through a zoo model.

Single-date models (``ssop_unet``, ``dsen2cr``, ``dsen2cr_nosar``) read keys of one
acquisition, ``t`` (``s2_t``, ``s2_20m_t``, ``s1_t``), and maybe the ``dem``. This
module finds their products in an archive (the tile's S2 product of the date, the S1
image of the tile nearest in time within a gap, the tile's DEM), wraps the model as a
:class:`~decloud.inference.method.KerasMethod` and runs the streaming engine
(:func:`decloud.inference.engine.run`) over the tile, keeping the date's clear pixels.

Models come from a trained ``.keras`` file and its card (:func:`load_method`), or,
for smoke tests and benchmarks, from a configuration with seeded random weights
(``untrained=True``): an untrained model's output means nothing, hence the explicit flag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from decloud.archive import Archive
from decloud.errors import InferenceError
from decloud.inference.engine import EngineOptions, RunRecord, run
from decloud.inference.method import KerasMethod
from decloud.inputs import AcquisitionProducts, InputProducts
from decloud.keys import KeyKind, parse_key

__all__ = ["ACQUISITION", "SingleDateOptions", "load_method", "single_date",
           "single_date_products"]

#: The acquisition single-date models read (``s2_t``, ``s1_t``).
ACQUISITION = "t"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_method(model: str | Path, *, untrained: bool = False, seed: int = 0) -> KerasMethod:
    """A model as a block method, with its checksums for provenance.

    Args:
        model: A trained ``.keras`` file (its ``model_card.json`` next to it) or a
            folder holding ``model.keras``; with ``untrained``, a configuration name or
            YAML file (:func:`decloud.models.registry.get_config`).
        untrained: Build the configuration with random weights (seeded by ``seed``).
        seed: Seed of the random weights.

    Raises:
        ModelCardError: A missing or unreadable model or card.
        ModelConfigError: An unknown configuration.
    """
    import keras  # only when a model is loaded

    from decloud.models.card import CARD_FILE, card_spec, load_model
    from decloud.models.registry import get_config
    from decloud.models.zoo import build

    if untrained:
        keras.utils.set_random_seed(seed)
        net, spec = build(get_config(model))
        return KerasMethod(net, spec, source=f"untrained:{model}:seed={seed}")
    path = Path(model)
    path = path / "model.keras" if path.is_dir() else path
    net, card = load_model(path)
    return KerasMethod(net, card_spec(card), checksum=_sha256(path),
                       card_checksum=_sha256(path.parent / CARD_FILE), source=str(path))


@dataclass(frozen=True)
class SingleDateOptions:
    """Options of :func:`single_date`.

    Attributes:
        max_s1_gap: The S1 image is the tile's nearest in time within this gap.
        engine: Engine options (block size, batch, composite...).
    """

    max_s1_gap: timedelta = timedelta(days=3)
    engine: EngineOptions = field(default_factory=EngineOptions)


def single_date_products(method: KerasMethod, archive: Archive, tile: str, day: date,
                         max_s1_gap: timedelta) -> InputProducts:
    """The products a single-date model reads for a tile and a date.

    Raises:
        InferenceError: The model is not a single-date model, or needs an S1 image
            or a DEM the archive does not have.
        NoProductError: No S2 product of the tile on the date.
    """
    kinds = set()
    for key in method.input_keys:
        kind, acquisition = parse_key(key.name)
        if kind is not KeyKind.DEM and acquisition != ACQUISITION:
            raise InferenceError(f"model {method.name} reads {key.name}: not a single-date "
                                 f"model (its keys must be of acquisition {ACQUISITION!r})",
                                 field="model")
        kinds.add(kind)
    s2 = archive.find_s2(tile, day)
    s1 = None
    if KeyKind.S1 in kinds:
        s1 = archive.nearest_s1(tile, s2.acquired, max_s1_gap)
        if s1 is None:
            raise InferenceError(f"model {method.name} needs S1: no S1 image of {tile} "
                                 f"within {max_s1_gap} of {s2.acquired:%Y-%m-%d %H:%M}",
                                 field="s1")
    dem = None
    if KeyKind.DEM in kinds:
        dem = archive.dem(tile)
        if dem is None:
            raise InferenceError(f"model {method.name} needs a DEM: the archive has none "
                                 f"for {tile}", field="dem")
    return InputProducts({ACQUISITION: AcquisitionProducts(s2, s1)}, dem,
                         reference=ACQUISITION)


def single_date(method: KerasMethod, archive: Archive, tile: str, day: date, out: str | Path,
                options: SingleDateOptions | None = None) -> RunRecord:
    """Reconstruct one S2 date of a tile with a single-date model.

    The output covers the S2 product's 10 m grid: ``<out>.tif`` (int16 reflectance x
    10000), ``<out>_quality.tif`` and the completion record ``<out>.json``
    (:func:`decloud.inference.engine.run`). The composite keeps the date's clear pixels
    unless ``options.engine.target`` is None.

    Raises:
        InferenceError: See :func:`single_date_products`.
        NoProductError: No S2 product of the tile on the date.
        OutputExistsError: The outputs exist and ``overwrite`` is off.
    """
    options = options or SingleDateOptions()
    products = single_date_products(method, archive, tile, day, options.max_s1_gap)
    s2 = products.acquisitions[ACQUISITION].s2
    if s2 is None:  # pragma: no cover - single_date_products always sets it
        raise InferenceError("no S2 product", field="s2")
    return run(method, products, s2.grid(), out, options.engine)
