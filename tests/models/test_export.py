"""Exports: SavedModel for OTBTF and ONNX agree with Keras, are named by the dataset keys."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner

from decloud.cli.export import export
from decloud.errors import ExportError, MarginTooSmallError, OutputExistsError
from decloud.models import ModelConfig, ModelSpec, build, get_config
from decloud.models.card import CARD_FILE, model_card, write_card
from decloud.models.export import (
    DEFAULT_EFIELD,
    OTBTF_FILE,
    check_agreement,
    crop_name,
    default_margin,
    export_onnx,
    export_savedmodel,
    otbtf_settings,
)
from decloud.models.otbtf import DEFAULT_RAM_HINT_MB


def small(name: str, **network: Any) -> ModelConfig:
    """A registered configuration with a narrower network (fast to build and run)."""
    config = get_config(name)
    return config.model_copy(update={"network": config.network.model_copy(update=network)})


CONFIGS = {
    "unet": lambda: small("msop_small", widths=[8, 16, 32]),  # 7 inputs, DEM, residual
    "gapfill": lambda: get_config("gapfill"),                 # non-image dt_* inputs
    "resnet": lambda: small("dsen2cr", features=8, blocks=2),  # 20 m input and output
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def built(request: pytest.FixtureRequest) -> tuple[Any, ModelSpec]:
    keras.utils.set_random_seed(0)
    return build(CONFIGS[request.param]())


@pytest.fixture(scope="module")
def exported(built: tuple[Any, ModelSpec], tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[Any, ModelSpec, Path, Path]:
    model, spec = built
    folder = tmp_path_factory.mktemp(spec.name)
    return (model, spec, export_savedmodel(model, spec, folder / "savedmodel"),
            export_onnx(model, spec, folder / "model.onnx"))


def test_exports_agree_on_two_sizes(exported: tuple[Any, ModelSpec, Path, Path]) -> None:
    model, spec, saved, onnx_path = exported
    k, m = spec.size_multiple, default_margin(spec)
    first = check_agreement(model, spec, saved, onnx_path)
    # Another height and width (not square, batch of 2): the dims are free.
    height, width = 2 * m + 6 * k, 2 * m + 3 * k
    second = check_agreement(model, spec, saved, onnx_path, size=(height, width), batch=2,
                             seed=1)
    for diffs in (first, second):
        crops = {crop_name(key, m * 10 // int(s.resolution)) for key, s in spec.outputs.items()}
        assert set(diffs) == ({f"savedmodel/{key}" for key in spec.outputs}
                              | {f"savedmodel/{name}" for name in crops}
                              | {f"onnx/{key}" for key in spec.outputs})
        assert max(diffs.values()) <= 1e-4


def test_savedmodel_signature(exported: tuple[Any, ModelSpec, Path, Path]) -> None:
    _, spec, saved, _ = exported
    loaded = tf.saved_model.load(str(saved))
    assert {"serve", "serving_default"} <= set(loaded.signatures)
    args, inputs = loaded.signatures["serve"].structured_input_signature
    assert args == () and set(inputs) == set(spec.inputs)
    for key, s in spec.inputs.items():
        assert inputs[key].name == key and inputs[key].dtype == tf.float32
        image = s.resolution > 0
        expected = (None, None, None, s.channels) if image else (None, s.channels)
        assert tuple(inputs[key].shape) == expected
    outputs = loaded.signatures["serve"].structured_outputs
    m = default_margin(spec)
    for key, s in spec.outputs.items():
        crop = m * 10 // int(s.resolution)
        assert {key, f"{key}_crop{crop}"} <= set(outputs)
        assert tuple(outputs[f"{key}_crop{crop}"].shape) == (None, None, None, s.channels)


def test_onnx_graph(exported: tuple[Any, ModelSpec, Path, Path]) -> None:
    _, spec, _, onnx_path = exported
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    graph = proto.graph
    assert {i.name for i in graph.input} == set(spec.inputs)
    assert {o.name for o in graph.output} == set(spec.outputs)
    for value in [*graph.input, *graph.output]:
        s = {**spec.inputs, **spec.outputs}[value.name]
        dims = value.type.tensor_type.shape.dim
        assert dims[-1].dim_value == s.channels
        suffix = "_20m" if s.resolution == 20 else ""
        free = ["batch", f"height{suffix}", f"width{suffix}"] if s.resolution else ["batch"]
        assert [d.dim_param for d in dims[:-1]] == free


def test_otbtf_json(exported: tuple[Any, ModelSpec, Path, Path]) -> None:
    _, spec, saved, _ = exported
    settings = json.loads((saved / OTBTF_FILE).read_text())
    m = default_margin(spec)
    assert settings["margin_px"] == m and settings["input_patch_px"] == DEFAULT_EFIELD + 2 * m
    assert {i["placeholder"] for i in settings["inputs"]} == set(spec.inputs)
    assert all(i["dtype"] == "float32" for i in settings["inputs"])
    if spec.name == "gapfill":  # dt_* are not images: nothing OTBTF can serve
        assert settings["command"] is None and "dt_tm1" in settings["reason"]
        return
    # One command per output (10 m and 20 m); the first is also ``command``.
    assert set(settings["commands"]) == set(spec.outputs)
    assert settings["command"] == settings["commands"]["s2_target"]
    args = shlex.split(settings["command"])
    assert args[:2] == [f"OTB_TF_NSOURCES={len(spec.inputs)}",
                        f"OTB_MAX_RAM_HINT={DEFAULT_RAM_HINT_MB}"]
    assert args[2] == "otbcli_TensorflowModelServe" and args[-1] == "float"  # -out's type
    options = dict(zip(args[3:-1:2], args[4:-1:2], strict=True))
    assert options["-model.dir"] == str(saved) and options["-model.fullyconv"] == "on"
    assert options["-output.names"] == f"s2_target_crop{m}"
    assert options["-output.efieldx"] == options["-output.efieldy"] == str(DEFAULT_EFIELD)
    placeholders = {v: k.split(".")[0] for k, v in options.items() if k.endswith("placeholder")}
    assert set(placeholders) == set(spec.inputs)
    for key, source in placeholders.items():
        patch = (DEFAULT_EFIELD + 2 * m) * 10 // int(spec.inputs[key].resolution)
        assert options[f"{source}.rfieldx"] == options[f"{source}.rfieldy"] == str(patch)
        assert options[f"{source}.il"] == f"{key}.vrt"


def test_model_dir_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, spec = build(get_config("gapfill"))
    monkeypatch.chdir(tmp_path)
    saved = export_savedmodel(model, spec, "savedmodel")
    settings = json.loads((tmp_path / "savedmodel" / OTBTF_FILE).read_text())
    assert saved == Path("savedmodel")
    assert settings["model_dir"] == str(tmp_path / "savedmodel")


@pytest.mark.slow
def test_msop_unet_savedmodel(tmp_path: Path) -> None:
    model, spec = build(get_config("msop_unet"))
    saved = export_savedmodel(model, spec, tmp_path / "msop_unet")
    _, inputs = tf.saved_model.load(str(saved)).signatures["serve"].structured_input_signature
    assert set(inputs) == {"s2_tm1", "s1_tm1", "s2_t", "s1_t", "s2_tp1", "s1_tp1", "dem"}
    assert all(inputs[k].name == k and inputs[k].shape[1:3] == (None, None) for k in inputs)
    # Every weight stored once (keras-team/keras#23553 would store them twice).
    reader = tf.train.load_checkpoint(str(saved / "variables" / "variables"))
    stored = sum(math.prod(shape) for name, shape in reader.get_variable_to_shape_map().items()
                 if "VARIABLE_VALUE" in name)
    assert stored == model.count_params()
    settings = json.loads((saved / OTBTF_FILE).read_text())
    assert (settings["receptive_field_px"], settings["size_multiple"]) == (202, 16)
    assert settings["margin_px"] == 112 and "s2_target_crop112" in settings["command"]
    assert re.search(r"-source1\.il s2_tm1\.vrt -source1\.rfieldx 1248 ", settings["command"])


def test_otbtf_settings_20m_output() -> None:
    _, spec = build(small("msop_allbands", widths=[8, 16]))
    settings = otbtf_settings(spec, margin=12, efield=128, model_dir="sm")
    ten, twenty = settings["outputs"]
    assert (ten["name"], ten["efield"], ten["spcscale"]) == ("s2_target_crop12", 128, 1)
    assert ten["rfields"]["s2_t"] == 152 and ten["rfields"]["s2_20m_t"] == 76
    # The 20 m output: crop and efield in 20 m px, spacing scale 2 (OTBTF's requested
    # region maps 64 px at 20 m onto 2 * 64 - 1 + padding px at 10 m).
    assert (twenty["name"], twenty["efield"], twenty["spcscale"]) == ("s2_20m_target_crop6",
                                                                      64, 2)
    assert twenty["rfields"]["s2_t"] == 151 and twenty["rfields"]["s2_20m_t"] == 76
    assert "-output.spcscale 2" in settings["commands"]["s2_20m_target"]


def test_bad_margin_and_efield(tmp_path: Path) -> None:
    model, spec = build(small("msop_small", widths=[8, 16, 32]))  # size multiple 4
    with pytest.raises(ExportError, match="multiple"):
        export_savedmodel(model, spec, tmp_path / "a", margin=26)
    # Receptive field 46: a margin below 23 px leaves seams.
    with pytest.raises(MarginTooSmallError, match=r"msop_small: margin 20 .*minimum is 23"):
        export_savedmodel(model, spec, tmp_path / "c", margin=20)
    with pytest.raises(ExportError, match="multiple"):
        export_savedmodel(model, spec, tmp_path / "b", efield=250)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_disagreement_is_reported(tmp_path: Path) -> None:
    model, spec = build(small("msop_small", widths=[8, 16, 32]))
    saved = export_savedmodel(model, spec, tmp_path / "savedmodel")
    onnx_path = export_onnx(model, spec, tmp_path / "model.onnx")
    head = model.get_layer("head")
    head.bias.assign(head.bias + 0.01)  # the Keras model moves away from its exports
    with pytest.raises(ExportError, match=r"savedmodel/s2_target 0\.01.*onnx/s2_target 0\.01"):
        check_agreement(model, spec, saved, onnx_path)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    model, spec = build(get_config("gapfill"))
    saved = export_savedmodel(model, spec, tmp_path / "savedmodel")
    onnx_path = export_onnx(model, spec, tmp_path / "model.onnx")
    before = onnx_path.read_bytes()
    with pytest.raises(OutputExistsError):
        export_savedmodel(model, spec, saved)
    with pytest.raises(OutputExistsError):
        export_onnx(model, spec, onnx_path)
    assert onnx_path.read_bytes() == before
    export_savedmodel(model, spec, saved, margin=2, overwrite=True)
    assert json.loads((saved / OTBTF_FILE).read_text())["margin_px"] == 2
    export_onnx(model, spec, onnx_path, overwrite=True)
    # Nothing left but the two exports (temporary folders are renamed or removed).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "savedmodel"]


def test_other_backend_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, spec = build(get_config("gapfill"))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ExportError, match="TensorFlow backend"):
        export_savedmodel(model, spec, tmp_path / "savedmodel")


@pytest.mark.slow
def test_cli_exports_a_saved_model(tmp_path: Path) -> None:
    config = small("msop_small", widths=[8, 16, 32])
    model, spec = build(config)
    keras_file = tmp_path / "run" / "model.keras"
    keras_file.parent.mkdir()
    model.save(keras_file)
    runner = CliRunner()
    # No model card and no --config: the spec cannot be rebuilt.
    result = runner.invoke(export, [str(keras_file), "--format", "onnx",
                                    "--out", str(tmp_path / "m.onnx")])
    assert isinstance(result.exception, ExportError) and "--config" in str(result.exception)
    write_card(keras_file.parent / CARD_FILE, model_card(spec, config))
    result = runner.invoke(export, [str(keras_file), "--format", "savedmodel",
                                    "--out", str(tmp_path / "savedmodel")])
    assert result.exit_code == 0, result.output
    assert "savedmodel/s2_target_crop24: max abs difference" in result.output
    assert "otbcli_TensorflowModelServe" in result.output
    # --config (a YAML file here) instead of the card, and ONNX.
    yaml_file = tmp_path / "small.yaml"
    yaml_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (keras_file.parent / CARD_FILE).unlink()
    result = runner.invoke(export, [str(keras_file), "--format", "onnx", "--config",
                                    str(yaml_file), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnx/s2_target: max abs difference" in result.output
    diffs = check_agreement(model, spec, tmp_path / "savedmodel", tmp_path / "m.onnx")
    assert max(diffs.values()) <= 1e-4
    # A second run refuses to overwrite.
    result = runner.invoke(export, [str(keras_file), "--format", "onnx", "--config",
                                    str(yaml_file), "--out", str(tmp_path / "m.onnx")])
    assert isinstance(result.exception, OutputExistsError)


def test_cli_rejects_a_config_of_another_model(tmp_path: Path) -> None:
    model, _ = build(get_config("gapfill"))
    keras_file = tmp_path / "model.keras"
    model.save(keras_file)
    result = CliRunner().invoke(export, [str(keras_file), "--format", "onnx", "--config",
                                         "ssop_unet", "--out", str(tmp_path / "m.onnx")])
    assert isinstance(result.exception, ExportError)
    assert not (tmp_path / "m.onnx").exists()


def test_random_inputs_are_realistic() -> None:
    from decloud.models.export import _random_inputs

    _, spec = build(small("dsen2cr", features=8, blocks=2))
    x = _random_inputs(spec, 32, 48, 1, np.random.default_rng(0))
    assert x["s2_t"].shape == (1, 32, 48, 4) and x["s2_20m_t"].shape == (1, 16, 24, 6)
    valid = x["s2_t"][x["s2_t"] != -10000]
    assert valid.min() >= 0 and valid.max() <= 6000 and np.all(valid == np.round(valid))
    assert x["s1_t"].max() <= 65535 and x["s1_t"].dtype == np.float32
