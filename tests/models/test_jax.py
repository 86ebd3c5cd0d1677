"""The JAX backend against TensorFlow: same models, losses and metrics, to 1e-4.

Keras picks its backend when it is imported, so the test process runs TensorFlow (the
default) and the JAX side runs in a subprocess with ``KERAS_BACKEND=jax``. Every named
model of the zoo is built at a small size on TensorFlow, saved as ``.keras`` and run on a
few tiny inputs; the subprocess loads the same files on JAX and runs the same inputs.
Losses (L1, L2, CARL) and every metric are computed on one packed batch with clouds and
nodata on both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from decloud.constants import S2_NODATA
from decloud.models import build, list_configs
from decloud.models.config import ModelConfig, ResNetConfig, UNetConfig
from decloud.models.losses import get_loss, pack_targets
from decloud.models.metrics import KINDS, METRIC_NAMES, REGIONS, batch_metric, get_metrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # about 25 s of CPU, most of it JAX compiling

SIZE = 16  # a multiple of every small model's size multiple
TOLERANCE = 1e-4
LOSSES = {"l1": ("l1", 1.0), "l2": ("l2", 1.0), "carl": ("carl", 1.0),
          "carl_half": ("carl", 0.5)}
#: Stateful metrics (Keras variables updated over two batches): every kind, every region.
POOLED = [f"{k}_{REGIONS[i % 3]}".removesuffix("_all") for i, k in enumerate(KINDS)]
#: LLVM optimisation off on the JAX side: otherwise XLA takes seconds to compile each
#: random initializer a loaded model runs (about a minute in all, 10 s without); XLA's
#: graph optimisations still run and float32 values agree to rounding.
FAST_XLA = "--xla_backend_optimization_level=0"

JAX_SIDE = """
import json, sys
from pathlib import Path
import keras
import numpy as np
assert keras.backend.backend() == "jax", keras.backend.backend()
# The custom layers, losses and metrics register themselves on import.
from decloud.models import losses, metrics, normalization, zoo  # noqa: F401
from decloud.models.losses import get_loss
from decloud.models.metrics import METRIC_NAMES, batch_metric, get_metrics

folder = Path(sys.argv[1])
names = json.loads((folder / "names.json").read_text())
for name in names:
    model = keras.saving.load_model(folder / f"{name}.keras", compile=False)
    inputs = dict(np.load(folder / f"{name}_in.npz"))
    out = model.predict(inputs, verbose=0)
    np.savez(folder / f"{name}_jax.npz", **out)
case = np.load(folder / "case.npz")
y, pred = case["y"], case["pred"]
LOSSES = json.loads((folder / "losses.json").read_text())
values = {k: float(get_loss(n, lam)(y, pred)) for k, (n, lam) in LOSSES.items()}
values.update({f"batch_{m}": float(batch_metric(m, y, pred)) for m in METRIC_NAMES})
for metric in get_metrics(json.loads((folder / "pooled.json").read_text())):
    metric.update_state(y[:1], pred[:1])
    metric.update_state(y[1:], pred[1:])
    values[f"pooled_{metric.name}"] = float(metric.result())
(folder / "jax_values.json").write_text(json.dumps(values))
print("jax done", len(names))
"""


def small(config: ModelConfig) -> ModelConfig:
    """The same architecture with few weights (the JAX check is about the code, not size)."""
    config = config.model_copy(deep=True)
    net = config.network
    if isinstance(net, UNetConfig):
        net.widths = [4, 8]
    elif isinstance(net, ResNetConfig):
        net.features, net.blocks = 8, 2
    return config


def model_inputs(spec_inputs: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Two samples of raw dataset encodings by key (20 m keys at half size)."""
    out = {}
    for key, s in spec_inputs.items():
        side = SIZE // 2 if s.resolution == 20.0 else SIZE
        if key.startswith("dt_"):
            out[key] = rng.uniform(-20, 20, (2, 1)).astype("float32")
        elif key.startswith("s1"):
            out[key] = rng.integers(1, 65535, (2, side, side, s.channels)).astype("float32")
        elif key == "dem":
            out[key] = rng.uniform(0, 2000, (2, side, side, 1)).astype("float32")
        else:
            out[key] = rng.integers(0, 6000, (2, side, side, s.channels)).astype("float32")
    return out


def loss_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Packed targets with clouds, shadows and nodata, and a correlated prediction."""
    shape = (2, 24, 24, 4)
    target = rng.integers(0, 10000, shape)
    pred = np.clip(target + rng.normal(0, 1200, shape), 0, 10000).round().astype(np.float32)
    cloudy = np.clip(target + rng.normal(0, 3000, shape), 0, 10000).astype(np.int16)
    mask = np.where(rng.uniform(size=(*shape[:3], 1)) < 0.3,
                    rng.integers(1, 4, (*shape[:3], 1)), 0).astype(np.uint8)
    target = target.astype(np.int16)
    target[:, :3, :5] = S2_NODATA  # a nodata corner in the target
    batch = {"s2_target": target, "s2_t": cloudy, "s2_mask_t": mask}
    return pack_targets(batch, {"s2_target": 4})["s2_target"], pred


def tf_values(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    values = {k: float(get_loss(n, lam)(y, pred)) for k, (n, lam) in LOSSES.items()}
    values.update({f"batch_{m}": float(batch_metric(m, y, pred)) for m in METRIC_NAMES})
    for metric in get_metrics(POOLED):
        metric.update_state(y[:1], pred[:1])
        metric.update_state(y[1:], pred[1:])
        values[f"pooled_{metric.name}"] = float(metric.result())
    return values


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Everything computed on TensorFlow here and on JAX in a subprocess."""
    assert keras.backend.backend() == "tensorflow", "the JAX side is compared to TensorFlow"
    folder = tmp_path_factory.mktemp("jax")
    rng = np.random.default_rng(0)
    names, tf_out = [], {}
    for config in list_configs():
        model, spec = build(small(config))
        inputs = model_inputs(spec.inputs, rng)
        model.save(folder / f"{spec.name}.keras")
        np.savez(folder / f"{spec.name}_in.npz", **inputs)
        tf_out[spec.name] = model.predict(inputs, verbose=0)
        names.append(spec.name)
    y, pred = loss_case(rng)
    np.savez(folder / "case.npz", y=y, pred=pred)
    (folder / "names.json").write_text(json.dumps(names))
    (folder / "losses.json").write_text(json.dumps(LOSSES))
    (folder / "pooled.json").write_text(json.dumps(POOLED))
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()}
    env.setdefault("JAX_PLATFORMS", "cpu")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_SIDE), str(folder)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jax_out = {n: dict(np.load(folder / f"{n}_jax.npz")) for n in names}
    return {"names": names, "tf": tf_out, "jax": jax_out, "tf_values": tf_values(y, pred),
            "jax_values": json.loads((folder / "jax_values.json").read_text())}


def test_every_named_model_is_checked(both_backends: dict[str, Any]) -> None:
    names = both_backends["names"]
    assert len(names) >= 10 and {"gapfill", "dsen2cr", "msop_small", "ssop_unet"} <= set(names)


@pytest.mark.parametrize("name", [c.name for c in list_configs()])
def test_model_outputs_match(both_backends: dict[str, Any], name: str) -> None:
    tf_out, jax_out = both_backends["tf"][name], both_backends["jax"][name]
    assert set(jax_out) == set(tf_out)
    for key, expected in tf_out.items():
        got = jax_out[key]
        assert got.shape == expected.shape, key
        # Outputs are reflectance x 10000: 1e-4 relative to the output's scale.
        scale = max(float(np.abs(expected).max()), 1.0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * scale,
                                   err_msg=f"{name} {key}")
        assert np.ptp(expected) > 0, f"{name} {key}: constant output proves nothing"


def test_losses_and_metrics_match(both_backends: dict[str, Any]) -> None:
    tf_v, jax_v = both_backends["tf_values"], both_backends["jax_values"]
    assert set(jax_v) == set(tf_v)
    assert len(tf_v) == len(LOSSES) + len(METRIC_NAMES) + len(POOLED)
    for key, expected in tf_v.items():
        assert np.isfinite(expected) and expected != 0.0, key
        assert jax_v[key] == pytest.approx(expected, rel=TOLERANCE, abs=1e-6), key
