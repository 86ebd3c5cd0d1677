"""Shared fixtures of the training tests: a tiny dataset of the sample archive, a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from decloud.archive import Archive
from decloud.datasets import PlanOptions, WriteOptions, plan_dataset, write_dataset
from decloud.index.catalog import Catalog
from decloud.layouts import load_layout
from decloud.models import load_config
from decloud.models.config import ModelConfig
from tests.conftest import ARCHIVE

LAYOUT = Path(__file__).parents[2] / "pipelines" / "demo-os2-belgium.yaml"

# OS2-like, tiny: S2 (B04, B08) + S1 at t-1, t, t+1, two levels, residual on t.
TINY = """\
name: tiny
description: a tiny OS2-like U-Net for the tests
network:
  kind: unet
  dates: [tm1, t, tp1]
  sources: {tm1: [s2, s1], t: [s2, s1], tp1: [s2, s1]}
  s2_bands: [B04, B08]
  widths: [8, 16]
  residual: t
training: {loss: l1, learning_rate: 1.0e-3, batch_size: 6, epochs: 3, patch_size: 32}
"""


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 samples of T31UFS (18 train, 6 valid), 32 px, B04 B08 / B11."""
    root = tmp_path_factory.mktemp("training")
    with Catalog.create(root / "catalog", patch_size=32) as catalog:
        assert not catalog.add(Archive.from_root(ARCHIVE)).failed
        plan = plan_dataset(catalog, load_layout(LAYOUT), PlanOptions(
            24, ("T31UFS",), seed=0, splits={"train": 0.75, "valid": 0.25}, split_block=1,
            split_buffer=0))
        return write_dataset(catalog, plan, root / "ds", WriteOptions(
            patch_size=32, shard_size=8, progress=False, bands10=("B04", "B08"),
            bands20=("B11",)))


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's configuration file."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny(tiny_file: Path) -> ModelConfig:
    """The tiny model's configuration."""
    return load_config(tiny_file)
