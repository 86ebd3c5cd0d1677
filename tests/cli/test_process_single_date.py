"""``decloud process single-date``: untrained and trained models, refusals, provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from decloud.cli.main import cli
from tests.conftest import ARCHIVE

pytest.importorskip("keras")

BASE = ["process", "single-date", "--archive", str(ARCHIVE), "--tile", "T29UPU",
        "--date", "2017-06-17", "--block-size", "48", "--batch-size", "2"]


def _tiny_config(path: Path, *, dem: bool = False) -> Path:
    """A tiny single-date S2 + S1 U-Net configuration (YAML)."""
    from decloud.models.registry import get_config

    config = get_config("ssop_unet").model_dump(mode="json", exclude={"source"})
    config["name"] = "tiny_ssop"
    config["network"].update(widths=[4, 8, 8], dem=dem)
    path.write_text(yaml.safe_dump(config))
    return path


def test_untrained_run_writes_outputs_and_record(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "tiny.yaml")
    out = tmp_path / "out" / "T29UPU_20170617.tif"
    result = CliRunner().invoke(cli, [*BASE, "--model", str(config), "--allow-untrained",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["blocks"]["total"] == 9  # 120 x 120 px in 48 px blocks
    assert record["method"]["source"].startswith("untrained:")
    assert record["parameters"]["gdal_cache_bytes"] == 256 * 2**20  # --gdal-cache-mb default
    s1 = record["inputs"]["acquisitions"]["t"]["s1"]["files"]
    assert sorted(Path(f).name[:10] for f in s1) == ["s1a_29UPU_", "s1a_29UPU_"]
    with rasterio.open(out) as src, rasterio.open(out.parent / "T29UPU_20170617_quality.tif"
                                                  ) as quality:
        assert src.width == src.height == 120 and src.count == 4
        assert sum(record["pixels"].values()) == 120 * 120
        assert int(np.count_nonzero(quality.read(1) == 0)) == record["pixels"]["clear"]
    again = CliRunner().invoke(cli, [*BASE, "--model", str(config), "--allow-untrained",
                                     "--out", str(out)])
    assert again.exit_code == 1 and "exists already" in again.output


def test_trained_model_file_and_checksums(tmp_path: Path) -> None:
    import keras

    from decloud.models.card import CARD_FILE, model_card, write_card
    from decloud.models.registry import get_config
    from decloud.models.zoo import build

    config = get_config(_tiny_config(tmp_path / "tiny.yaml"))
    keras.utils.set_random_seed(3)
    model, spec = build(config)
    model.save(tmp_path / "model.keras")
    write_card(tmp_path / CARD_FILE, model_card(spec, config))
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(cli, [*BASE, "--model", str(tmp_path), "--out", str(out),
                                      "--no-composite"])
    assert result.exit_code == 0, result.output
    method = json.loads(out.with_suffix(".json").read_text())["method"]
    assert method["model_checksum"] == hashlib.sha256(
        (tmp_path / "model.keras").read_bytes()).hexdigest()
    assert method["card_checksum"] == hashlib.sha256(
        (tmp_path / CARD_FILE).read_bytes()).hexdigest()
    with rasterio.open(out) as src:
        assert json.loads(src.tags()["DECLOUD_METHOD"])["model_checksum"] == \
            method["model_checksum"]
        with rasterio.open(tmp_path / "out_quality.tif") as quality:
            assert not (quality.read(1) == 0).any()  # no composite: nothing kept


def test_refusals(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path / "tiny.yaml", dem=True)
    out = str(tmp_path / "o.tif")
    named = CliRunner().invoke(cli, [*BASE, "--model", "ssop_unet", "--out", out])
    assert named.exit_code == 2 and "--allow-untrained" in named.output
    no_dem = CliRunner().invoke(cli, [*BASE, "--model", str(config), "--allow-untrained",
                                      "--out", out])
    assert no_dem.exit_code == 1 and "needs a DEM" in no_dem.output
    far = CliRunner().invoke(cli, [*BASE, "--model", str(_tiny_config(tmp_path / "t.yaml")),
                                   "--allow-untrained", "--out", out, "--max-s1-gap", "1"])
    assert far.exit_code == 1 and "no S1 image" in far.output
    assert list(tmp_path.glob("o*")) == []


def test_precision_is_refused_with_otbtf_and_for_unvalidated_models(tmp_path: Path) -> None:
    out = str(tmp_path / "o.tif")
    otbtf = CliRunner().invoke(cli, [*BASE, "--model", "ssop_unet", "--allow-untrained",
                                     "--out", out, "--engine", "otbtf",
                                     "--precision", "bfloat16"])
    assert otbtf.exit_code == 2 and "--precision has no effect there" in otbtf.output
    other = CliRunner().invoke(cli, [*BASE, "--model", str(_tiny_config(tmp_path / "t.yaml")),
                                     "--allow-untrained", "--out", out,
                                     "--precision", "bfloat16"])
    assert other.exit_code == 1 and "not validated for model 'tiny_ssop'" in other.output
    assert list(tmp_path.glob("o*")) == []


def test_gdal_cache_option_reaches_the_engine() -> None:
    from decloud.cli.options import GDAL_CACHE_MB, engine_from_options
    from decloud.inference.engine import DEFAULT_GDAL_CACHE_MB

    assert GDAL_CACHE_MB == DEFAULT_GDAL_CACHE_MB  # the CLI's copy of the engine's default
    for command in ("single-date", "multi-temporal"):
        shown = CliRunner().invoke(cli, ["process", command, "--help"], terminal_width=200)
        assert "--gdal-cache-mb" in shown.output and "[default: 256" in shown.output
    options = engine_from_options(None, 1, 2, 2, 3, False, False, gdal_cache_mb=96)
    assert options.gdal_cache_mb == 96
    refused = CliRunner().invoke(cli, [*BASE, "--model", "ssop_unet", "--allow-untrained",
                                       "--out", "o.tif", "--gdal-cache-mb", "0"])
    assert refused.exit_code == 2 and "--gdal-cache-mb" in refused.output
