"""Model configurations: one schema for every network of the zoo.

A configuration file (``models/<name>.yaml``) names the architecture (``unet``,
``resnet`` or ``gapfill``) and its knobs; the builders of :mod:`decloud.models.zoo`
turn it into a Keras model whose inputs and outputs are named by the dataset keys
(``s2_t``, ``s1_tm1``, ``dem``, ``s2_target``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from decloud.constants import S2_10M_BANDS, S2_20M_BANDS
from decloud.errors import ModelConfigError

__all__ = [
    "GapfillConfig",
    "ModelConfig",
    "ModelConfigError",
    "ResNetConfig",
    "Source",
    "TrainingConfig",
    "UNetConfig",
    "load_config",
]

#: What a date of a model sees: 10 m S2 bands, 20 m S2 bands, S1.
Source = Literal["s2", "s2_20m", "s1"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UNetConfig(_Strict):
    """A U-Net over one or several dates, encoders shared across dates.

    Each date's sources are stacked (20 m bands upsampled to 10 m) and go through a
    stem convolution (one per distinct source set), then one encoder whose weights all
    dates share. Skip features are fused across dates (concatenation and a 1 x 1
    convolution) before the decoder.
    """

    kind: Literal["unet"] = "unet"
    dates: list[str]
    s2_bands: list[str] = Field(default_factory=lambda: list(S2_10M_BANDS))
    s2_20m_bands: list[str] = Field(default_factory=lambda: list(S2_20M_BANDS))
    sources: dict[str, list[Source]]
    widths: list[int] = Field(min_length=2)
    convs_per_level: int = Field(2, ge=1)
    dem: bool = False
    output_20m: bool = False
    residual: str | None = None

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        if set(self.sources) != set(self.dates):
            raise ValueError(f"sources must list exactly the dates {self.dates}")
        if any(not s for s in self.sources.values()):
            raise ValueError("every date needs at least one source")
        if self.residual is not None and "s2" not in self.sources.get(self.residual, []):
            raise ValueError(f"residual date {self.residual!r} must have s2")
        return self


class ResNetConfig(_Strict):
    """DSen2-CR (Meraner et al. 2020): a ResNet with a long skip adding the cloudy input.

    ``bands`` S2 bands at 10 m (20 m bands upsampled) plus VV/VH when ``sar``; ``blocks``
    residual blocks of two 3 x 3 convolutions with ``features`` channels, scaled by
    ``scaling``; the output adds the (normalised) cloudy input.
    """

    kind: Literal["resnet"] = "resnet"
    date: str = "t"
    sar: bool = True
    features: int = 256
    blocks: int = 16
    scaling: float = 0.1
    s2_bands: list[str] = Field(default_factory=lambda: list(S2_10M_BANDS))
    s2_20m_bands: list[str] = Field(default_factory=lambda: list(S2_20M_BANDS))


class GapfillConfig(_Strict):
    """Linear temporal interpolation between two clear dates: no weights to train."""

    kind: Literal["gapfill"] = "gapfill"
    before: str = "tm1"
    after: str = "tp1"
    s2_bands: list[str] = Field(default_factory=lambda: list(S2_10M_BANDS))


class TrainingConfig(_Strict):
    """Training defaults of a model (overridable on the command line).

    ``cloudy`` names the acquisition being reconstructed: its image and cloud mask go
    with the target to the loss (CARL) and to the masked/clear metrics.
    """

    loss: Literal["l1", "l2", "carl"] = "l1"
    cloudy: str = "t"
    carl_lambda: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 16
    epochs: int = 50
    patch_size: int = 256


class ModelConfig(_Strict):
    """A named model of the zoo."""

    name: str
    description: str = ""
    target: str = "target"
    network: Annotated[UNetConfig | ResNetConfig | GapfillConfig, Field(discriminator="kind")]
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    source: str | None = Field(default=None, exclude=True)


def load_config(path: str | Path) -> ModelConfig:
    """Read a model configuration file (YAML)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ModelConfigError(f"cannot read ({err.strerror})", path=path) from err
    except yaml.YAMLError as err:
        raise ModelConfigError(f"invalid YAML ({err})", path=path) from err
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelConfigError(first["msg"], path=path, field=where) from err
    config.source = str(path)
    return config
