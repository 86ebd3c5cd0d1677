"""The model zoo: parameter counts and receptive fields against independent formulas,
inputs and outputs named by dataset keys, fully convolutional, normalisation inside."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from decloud.errors import ModelInputSizeError
from decloud.models import build, export, get_config, list_configs
from decloud.models.config import ModelConfig, UNetConfig

CHANNELS = {"s2": 4, "s2_20m": 6, "s1": 2}


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def unet_params(net: UNetConfig) -> int:
    """Count a U-Net's weights from its configuration, layer by layer."""
    w, c, n_dates = net.widths, net.convs_per_level, len(net.dates)
    stems = {tuple(s) for s in net.sources.values()}
    total = sum(conv(3, sum(CHANNELS[x] for x in s), w[0]) for s in stems)
    for lvl, width in enumerate(w):
        cin = w[0] if lvl == 0 else w[lvl - 1] + (1 if lvl == 1 and net.dem else 0)
        total += conv(3, cin, width) + (c - 1) * conv(3, width, width)
        if n_dates > 1:
            total += conv(1, n_dates * width, width)
    for lvl in range(len(w) - 2, -1, -1):
        total += 4 * w[lvl + 1] * w[lvl] + w[lvl]  # transposed 2 x 2
        total += conv(3, 2 * w[lvl], w[lvl]) + (c - 1) * conv(3, w[lvl], w[lvl])
    return total + conv(1, w[0], len(net.s2_bands))


def unet_receptive_field(net: UNetConfig) -> int:
    """Stem, encoder convs at each scale, pools, decoder convs (10 m pixels)."""
    depth, c = len(net.widths), net.convs_per_level
    encoder = sum(2 * c * 2**lvl for lvl in range(depth))
    pools = sum(2**lvl for lvl in range(depth - 1))
    decoder = sum(2 * c * 2**lvl for lvl in range(depth - 1))
    return 1 + 2 + encoder + pools + decoder


def test_dsen2cr_13_bands_matches_the_paper() -> None:
    config = get_config("dsen2cr").model_copy(deep=True)
    config.network.s2_bands = [f"B{i}" for i in range(13)]  # type: ignore[union-attr]
    config.network.s2_20m_bands = []  # type: ignore[union-attr]
    model, spec = build(config)
    f, b = 256, 16
    expected = conv(3, 13 + 2, f) + b * 2 * conv(3, f, f) + conv(3, f, 13)
    assert spec.params == model.count_params() == expected == 18_947_341
    assert spec.receptive_field == 1 + 2 * (2 + 2 * b)  # 34 convolutions of 3 x 3


@pytest.mark.parametrize("name", ["msop_unet", "msop_small", "ssop_unet", "os1_unet",
                                  "monthly6"])
def test_unet_params_and_receptive_field(name: str) -> None:
    config = get_config(name)
    net = config.network
    assert isinstance(net, UNetConfig)
    _, spec = build(config)
    assert spec.params == unet_params(net)
    assert spec.receptive_field == unet_receptive_field(net)
    assert spec.size_multiple == 2 ** (len(net.widths) - 1)


def test_sizes_of_the_named_models() -> None:
    sizes = {c.name: build(c)[1].params for c in list_configs()}
    assert 27e6 < sizes["msop_unet"] < 31e6  # decloud's OS2 U-Net: about 29 M
    assert 1.2e6 < sizes["msop_small"] < 1.8e6  # decloud's "david" size: about 1.5 M
    assert sizes["gapfill"] == 0
    assert {"gapfill", "ssop_unet", "dsen2cr", "dsen2cr_nosar", "msop_unet", "msop_small",
            "os1_unet", "monthly6", "monthly6_s1", "msop_allbands"} <= set(sizes)


def small(name: str, widths: list[int]) -> ModelConfig:
    config = get_config(name).model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = widths
    return config


def raw_inputs(spec_inputs: dict, size: int, rng: np.random.Generator) -> dict:
    out = {}
    for key, s in spec_inputs.items():
        side = size if s.resolution != 20.0 else size // 2
        if key.startswith("dt_"):
            out[key] = rng.uniform(-20, 20, (1, 1)).astype("float32")
        elif key.startswith("s1"):
            out[key] = rng.integers(1, 65535, (1, side, side, s.channels)).astype("float32")
        elif key == "dem":
            out[key] = rng.uniform(0, 2000, (1, side, side, 1)).astype("float32")
        else:
            out[key] = rng.integers(0, 6000, (1, side, side, s.channels)).astype("float32")
    return out


def test_keys_any_size_and_20m_outputs() -> None:
    model, spec = build(small("msop_allbands", [4, 8, 8]))
    assert set(model.input) == {"dem", "s2_tm1", "s2_20m_tm1", "s1_tm1", "s2_t", "s2_20m_t",
                                "s1_t", "s2_tp1", "s2_20m_tp1", "s1_tp1"}
    rng = np.random.default_rng(0)
    for size in (spec.size_multiple * 4, spec.size_multiple * 7):
        out = model.predict(raw_inputs(spec.inputs, size, rng), verbose=0)
        assert out["s2_target"].shape == (1, size, size, 4)
        assert out["s2_20m_target"].shape == (1, size // 2, size // 2, 6)


def test_receptive_field_by_impulse_response() -> None:
    """An impulse spreads over at most the receptive field (positive weights, ReLU)."""
    config = small("ssop_unet", [4, 4, 4])
    config.network.dem = False  # type: ignore[union-attr]
    config.network.residual = None  # type: ignore[union-attr]
    model, spec = build(config)
    for weight in model.weights:
        weight.assign(np.full(weight.shape, 0.05 if "kernel" in weight.path else 0.0,
                              "float32"))
    size = 128
    inputs = {k: np.zeros((1, size, size, s.channels), "float32") for k, s in
              spec.inputs.items()}
    inputs["s2_t"][0, size // 2, size // 2, :] = 5000.0
    response = model.predict(inputs, verbose=0)["s2_target"][0, :, :, 0]
    cols = np.flatnonzero(np.abs(response).max(axis=0) > 0)
    extent = cols[-1] - cols[0] + 1
    assert spec.receptive_field - 2 * spec.size_multiple <= extent <= spec.receptive_field


def test_gapfill_interpolates_raw_values() -> None:
    model, _ = build(get_config("gapfill"))
    before = np.full((1, 4, 4, 4), 1000.0, "float32")
    after = np.full((1, 4, 4, 4), 3000.0, "float32")
    after[0, 0, 0, :] = -10000.0  # nodata after: take the other date
    out = model.predict({"s2_tm1": before, "s2_tp1": after, "dt_tm1": np.array([[-10.0]]),
                         "dt_tp1": np.array([[30.0]])}, verbose=0)["s2_target"]
    # t is 10 days after t-1 and 30 days before t+1: weights 3/4 and 1/4.
    np.testing.assert_allclose(out[0, 1, 1], 1500.0, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0], 1000.0, rtol=1e-6)


def test_residual_model_starts_near_its_input() -> None:
    model, spec = build(small("ssop_unet", [4, 8]))
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    rng = np.random.default_rng(1)
    x = raw_inputs(spec.inputs, 16, rng)
    out = model.predict(x, verbose=0)["s2_target"]
    np.testing.assert_allclose(out, x["s2_t"], rtol=1e-5)  # zero correction: the input


JAX_CHECK = """
import numpy as np, keras
from decloud.models import build, get_config
config = get_config("ssop_unet").model_copy(deep=True)
config.network.widths = [4, 8]
model, spec = build(config)
x = {k: np.ones((1, 16, 16, s.channels), "float32") for k, s in spec.inputs.items()}
print(keras.backend.backend(), model.predict(x, verbose=0)["s2_target"].shape)
"""


@pytest.mark.slow
def test_same_model_code_on_jax() -> None:
    # jax is in the dev extra: no skip. Values against TensorFlow: tests/models/test_jax.py.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}  # fast compiles (test_jax.py)
    proc = subprocess.run([sys.executable, "-c", JAX_CHECK], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "jax (1, 16, 16, 4)" in proc.stdout


# --- geometry of tiled runs: the spec's margin and crops, the checked entry point ----

def tiny(name: str) -> tuple[Any, Any]:
    config = get_config(name).model_copy(deep=True)
    net = config.network
    if isinstance(net, UNetConfig):
        net.widths = [4, 8, 8]
    elif hasattr(net, "features"):
        net.features, net.blocks = 8, 2  # type: ignore[union-attr]
    return build(config)


@pytest.mark.parametrize("name", ["ssop_unet", "msop_allbands", "dsen2cr", "gapfill"])
def test_margin_and_crops_are_properties_of_the_spec(name: str) -> None:
    _, spec = tiny(name)
    k, rf, m = spec.size_multiple, spec.receptive_field, spec.margin
    # Half the receptive field, rounded up to the size multiple, at least one multiple.
    assert m % k == 0 and m >= k and 2 * m >= rf - 1 and m - k < max(rf / 2, k)
    crops = spec.crops()
    for key, out in spec.outputs.items():
        assert crops[key] * out.resolution / 10.0 == m  # 20 m outputs: half as many px
    assert export.default_margin(spec) == m  # the exporter takes it from the spec
    assert spec.describe()["margin_px"] == m  # and the model card records it
    if k > 1:
        with pytest.raises(ModelInputSizeError, match=f"multiple of the size multiple {k}"):
            spec.crops(k + 1)
