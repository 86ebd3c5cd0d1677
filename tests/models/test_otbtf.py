"""OTBTF command lines: fields, padding, speed options and the margin check, without OTBTF."""

from __future__ import annotations

import math
import shlex
from typing import Any

import pytest

from decloud.errors import ExportError, MarginTooSmallError
from decloud.models import ModelSpec, build, get_config
from decloud.models.otbtf import (
    DEFAULT_EFIELD,
    DEFAULT_RAM_HINT_MB,
    EXECUTABLE,
    field_step,
    minimum_margin,
    otbtf_command,
    otbtf_settings,
    padded_size,
    serving_efield,
)
from decloud.models.registry import list_configs

NAMES = sorted(c.name for c in list_configs())


@pytest.fixture(scope="module", params=NAMES)
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    return build(get_config(request.param))[1]


def parse(command: str) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Environment, positional words and ``-option value`` pairs of a command line."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == EXECUTABLE and words[-1] == "float"  # -out's pixel type
    options = dict(zip(words[1:-1:2], words[2:-1:2], strict=True))
    return env, words, options


def expected_rfield(out_res: float, source_res: float, efield_out: int, crop: int) -> int:
    """Input patch of a source (its px) for an output patch of ``efield + 2 crop`` px.

    Written out per case from OTBTF's requested region (``floor(1 + (n - 1) r)`` px
    for ``n`` output px, ``r`` the output over the source spacing).
    """
    patch = efield_out + 2 * crop
    if out_res == source_res:
        return patch
    if out_res == 2 * source_res:  # 10 m source of a 20 m output: 2n - 1 px + padding
        return 2 * patch - 1
    assert 2 * out_res == source_res
    return patch // 2


def check_command(spec: ModelSpec, settings: dict[str, Any], key: str, efield: int,
                  margin: int) -> None:
    out = spec.outputs[key]
    ratio = int(out.resolution / 10)
    eo, crop = efield // ratio, margin // ratio
    env, _, options = parse(settings["commands"][key])
    images = [s for s in spec.inputs.values() if s.is_image]
    assert env["OTB_MAX_RAM_HINT"] == str(DEFAULT_RAM_HINT_MB)
    assert env.get("OTB_TF_NSOURCES") == (str(len(images)) if len(images) > 1 else None)
    assert options["-model.dir"] == "/abs/savedmodel"
    assert options["-model.fullyconv"] == "on"
    assert options["-output.names"] == f"{key}_crop{crop}"
    assert options["-output.efieldx"] == options["-output.efieldy"] == str(eo)
    # The writer streams exactly OTBTF's tiles: every field is computed once.
    assert options["-optim.tilesizex"] == options["-optim.tilesizey"] == str(eo)
    assert options["-out"] == (f"{key}.tif?&streaming:type=tiled&streaming:sizemode=height"
                               f"&streaming:sizevalue={eo}")
    assert options.get("-output.spcscale") == (None if ratio == 1 else str(ratio))
    # No -sourceN.nodata: OTBTF blanks whole tiles with it; decloud masks afterwards.
    assert not [k for k in options if k.endswith(".nodata")]
    sources = {v: k.split(".")[0] for k, v in options.items() if k.endswith(".placeholder")}
    assert set(sources) == {s.key for s in images}
    # 10 m sources first: source1 sets the grid OTBTF writes on.
    assert spec.inputs[options["-source1.placeholder"]].resolution == 10
    for name, source in sources.items():
        rf = expected_rfield(out.resolution, spec.inputs[name].resolution, eo, crop)
        assert options[f"{source}.rfieldx"] == options[f"{source}.rfieldy"] == str(rf)
        assert options[f"{source}.il"] == f"{name}.vrt"


@pytest.mark.parametrize("option", ["default", "efield256", "efield512", "margin_plus"])
def test_command_of_each_model_and_option(spec: ModelSpec, option: str) -> None:
    k = spec.size_multiple
    step = field_step(k, [s.resolution for s in [*spec.inputs.values(),
                                                 *spec.outputs.values()]])
    efield = {"efield256": 256, "efield512": 512}.get(option, DEFAULT_EFIELD)
    efield = -(-efield // step) * step
    margin = spec.margin + (step if option == "margin_plus" else 0)
    settings = otbtf_settings(spec, margin=margin, efield=efield, model_dir="/abs/savedmodel")
    assert settings["margin_px"] == margin and settings["efield_px"] == efield
    assert settings["input_patch_px"] == efield + 2 * margin
    assert settings["minimum_margin_px"] == math.ceil(spec.receptive_field / 2)
    assert set(settings["commands"]) == set(spec.outputs)
    if not settings["servable"]:
        assert spec.name == "gapfill" and "dt_" in settings["reason"]
        assert all(c is None for c in settings["commands"].values())
        return
    assert settings["command"] == settings["commands"]["s2_target"]
    for key in spec.outputs:
        check_command(spec, settings, key, efield, margin)


def test_margin_below_half_the_receptive_field_is_refused() -> None:
    _, spec = build(get_config("msop_small"))  # receptive field 202, size multiple 16
    assert minimum_margin(spec.receptive_field) == 101
    with pytest.raises(MarginTooSmallError, match=r"msop_small.*margin 96 .*minimum is 101"):
        otbtf_settings(spec, margin=96)
    with pytest.raises(MarginTooSmallError, match="margin 16 "):
        otbtf_settings(spec, margin=16)
    # A multiple of the size multiple above the minimum is accepted.
    assert otbtf_settings(spec, margin=112)["margin_px"] == 112
    with pytest.raises(ExportError, match="multiple"):
        otbtf_settings(spec, margin=120)


def test_one_field_disables_tiling() -> None:
    _, spec = build(get_config("ssop_unet"))
    settings = otbtf_settings(spec, model_dir="/abs/savedmodel")
    cmd = otbtf_command(settings, "s2_target", {s: f"/w/{s}.vrt" for s in spec.inputs},
                        "/w/out.tif", efield=704, fields=(1, 1), ram_hint_mb=2000)
    env, words, options = parse(cmd.shell())
    assert options["-optim.disabletiling"] == "on" and "-optim.tilesizex" not in options
    assert options["-out"] == "/w/out.tif?&streaming:type=none"
    assert options["-output.efieldx"] == "704" and env["OTB_MAX_RAM_HINT"] == "2000"
    assert cmd.args == words and cmd.output == "/w/out.tif" and cmd.efield == 704
    with pytest.raises(ExportError, match="multiple of 8"):
        otbtf_command(settings, "s2_target", {s: "x" for s in spec.inputs}, "o.tif",
                      efield=700)
    with pytest.raises(ExportError, match="no raster"):
        otbtf_command(settings, "s2_target", {}, "o.tif", efield=704)


@pytest.mark.parametrize(("width", "height"), [(700, 600), (10980, 10980), (33, 2048),
                                               (1, 1), (1024, 1025)])
def test_padding_covers_the_whole_input(width: int, height: int) -> None:
    margin, step = 112, 16
    efield = serving_efield(width, height, DEFAULT_EFIELD, step)
    pw, ph, nx, ny = padded_size(width, height, margin, efield)
    # The output (the padded input less the margins) is whole fields covering the input.
    assert efield % step == 0 and efield <= DEFAULT_EFIELD
    assert (pw - 2 * margin, ph - 2 * margin) == (nx * efield, ny * efield)
    assert nx * efield >= width and ny * efield >= height
    assert (nx - 1) * efield < width and (ny - 1) * efield < height  # no field of padding only
    # Never smaller than one model input (OTBTF's obscure tensor-size error).
    assert min(pw, ph) >= efield + 2 * margin
    if max(width, height) <= DEFAULT_EFIELD:
        assert (nx, ny) == (1, 1) and efield == -(-max(width, height) // step) * step


def test_the_issue_example_is_covered() -> None:
    # 700 x 600 px gave 256 x 256 px of output before; now one 704 px field covers it.
    efield = serving_efield(700, 600, DEFAULT_EFIELD, 16)
    assert efield == 704
    assert padded_size(700, 600, 112, efield) == (928, 928, 1, 1)
    assert padded_size(10752, 10752, 112, 1024) == (11 * 1024 + 224, 11 * 1024 + 224, 11, 11)
