"""Losses and metrics on packed targets: hand values, references, regions, Keras training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from decloud.constants import S2_NODATA
from decloud.errors import ArgumentError
from decloud.models.config import ModelConfigError
from decloud.models.losses import (
    CARLLoss,
    L1Loss,
    L2Loss,
    carl_loss,
    get_loss,
    pack_targets,
    unpack,
)
from decloud.models.metrics import (
    KINDS,
    METRIC_NAMES,
    PIXEL_COUNTS,
    REGIONS,
    ReconstructionMetric,
    batch_metric,
    evaluate,
    get_metrics,
    metric_name,
)

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ the hand example
# One 2 x 2 image, 2 bands, normalised values (raw = x 10000):
#   pixel   target T      cloudy I      prediction P   mask class       CSM  valid
#   (0, 0)  (0.1, 0.2)    (0.5, 0.6)    (0.2, 0.2)     1 cloud          1    1
#   (0, 1)  (0.3, 0.3)    (0.3, 0.4)    (0.3, 0.1)     0 clear          0    1
#   (1, 0)  (0.4, 0.0)    (0.4, 0.0)    (0.5, 0.2)     0 clear          0    1
#   (1, 1)  nodata        (0.7, 0.7)    (0.9, 0.9)     255 nodata       0    0
# Over the 3 valid pixels x 2 bands = 6 values:
#   |CSM (P - T) + (1 - CSM) (P - I)| = (0.1, 0.0) (0.0, 0.3) (0.1, 0.2) -> sum 0.7
#   |P - T|                           = (0.1, 0.0) (0.0, 0.2) (0.1, 0.2) -> sum 0.6
#   (P - T)^2                          = 0.01 + 0 + 0 + 0.04 + 0.01 + 0.04  = 0.1
CARL_1 = 0.7 / 6 + 1.0 * 0.6 / 6
CARL_HALF = 0.7 / 6 + 0.5 * 0.6 / 6
L1 = 0.6 / 6
L2 = 0.1 / 6
HAND_SCRIPT = """
import numpy as np
T = [[[1000, 2000], [3000, 3000]], [[4000, 0], [-10000, -10000]]]
I = [[[5000, 6000], [3000, 4000]], [[4000, 0], [7000, 7000]]]
P = [[[2000, 2000], [3000, 1000]], [[5000, 2000], [9000, 9000]]]
M = [[[1], [0]], [[0], [255]]]
batch = {"s2_target": np.array([T], np.int16), "s2_t": np.array([I], np.int16),
         "s2_mask_t": np.array([M], np.uint8)}
pred = np.array([P], np.float32)
"""


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    scope: dict[str, object] = {}
    exec(HAND_SCRIPT, scope)
    y = pack_targets(scope["batch"], {"s2_target": 2})["s2_target"]  # type: ignore[arg-type]
    return y, scope["pred"]  # type: ignore[return-value]


def loss_value(loss: keras.losses.Loss, y: np.ndarray, pred: np.ndarray) -> float:
    return float(keras.ops.convert_to_numpy(loss(y, pred)))


def metric_value(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    return float(keras.ops.convert_to_numpy(batch_metric(name, y, pred)))


def test_carl_by_hand() -> None:
    y, pred = hand_example()
    assert loss_value(get_loss("carl"), y, pred) == pytest.approx(CARL_1, rel=1e-5)
    assert loss_value(get_loss("carl", 0.5), y, pred) == pytest.approx(CARL_HALF, rel=1e-5)
    assert loss_value(carl_loss(0.5), y, pred) == pytest.approx(CARL_HALF, rel=1e-5)
    # A cloudy pixel is pulled to the target, a clear one to the cloudy input.
    loss = carl_loss(0.0)
    assert loss_value(loss, y, pred) == pytest.approx(0.7 / 6, rel=1e-5)
    config = loss.get_config()
    assert config["lambda_"] == 0.0
    assert isinstance(CARLLoss.from_config(config), CARLLoss)


def test_l1_l2_ignore_invalid_pixels() -> None:
    y, pred = hand_example()
    assert isinstance(get_loss("l1"), L1Loss) and isinstance(get_loss("L2"), L2Loss)
    for name, expected in (("l1", L1), ("l2", L2), ("carl", CARL_1)):
        loss = get_loss(name)
        assert loss_value(loss, y, pred) == pytest.approx(expected, rel=1e-5)
        other = pred.copy()
        other[0, 1, 1] = [-3e4, 5e4]  # the invalid pixel: no effect
        assert loss_value(loss, y, other) == pytest.approx(expected, rel=1e-5)
        # No valid pixel at all: 0, not NaN.
        empty = y.copy()
        empty[..., -1] = 0
        assert loss_value(loss, empty, pred) == 0.0
    with pytest.raises(ModelConfigError, match="unknown loss 'l3'"):
        get_loss("l3")


def test_pack_targets_layout() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 10000, (2, 4, 4, 4)).astype(np.int16)
    target[0, 0, 1, 2] = S2_NODATA
    cloudy = rng.integers(0, 10000, (2, 4, 4, 4)).astype(np.int16)
    cloudy[1, 3, 3, :] = S2_NODATA
    target20 = rng.integers(0, 10000, (2, 2, 2, 6)).astype(np.int16)
    target20[1, 1, 0, :] = S2_NODATA
    cloudy20 = rng.integers(0, 10000, (2, 2, 2, 6)).astype(np.int16)
    mask = np.zeros((2, 4, 4, 1), np.uint8)
    mask[0, 0, 0] = 1    # cloud: 20 m pixel (0, 0)
    mask[0, 3, 2] = 2    # cirrus: 20 m pixel (1, 1)
    mask[1, 2, 1] = 3    # shadow: 20 m pixel (1, 0)
    mask[1, 0, 3] = 255  # nodata: not a cloud
    batch = {"s2_target": target, "s2_t": cloudy, "s2_mask_t": mask,
             "s2_20m_target": target20, "s2_20m_t": cloudy20}
    packed = pack_targets(batch, {"s2_target": 4, "s2_20m_target": 6})
    y = packed["s2_target"]
    assert y.shape == (2, 4, 4, 10) and y.dtype == np.float32
    expected_target = np.where(target == S2_NODATA, 0, target)
    np.testing.assert_array_equal(y[..., :4], expected_target)
    expected_cloudy = cloudy.astype(np.float32)
    expected_cloudy[1, 3, 3] = target[1, 3, 3]  # nodata of the cloudy input: the target
    np.testing.assert_array_equal(y[..., 4:8], expected_cloudy)
    np.testing.assert_array_equal(y[..., 8], np.isin(mask[..., 0], (1, 2, 3)))
    valid = np.ones((2, 4, 4), np.float32)
    valid[0, 0, 1] = 0
    np.testing.assert_array_equal(y[..., 9], valid)

    y20 = packed["s2_20m_target"]
    assert y20.shape == (2, 2, 2, 14)
    np.testing.assert_array_equal(y20[..., :6], np.where(target20 == S2_NODATA, 0, target20))
    np.testing.assert_array_equal(y20[..., 6:12], cloudy20)
    cloud20 = np.zeros((2, 2, 2), np.float32)
    cloud20[0, 0, 0] = cloud20[0, 1, 1] = cloud20[1, 1, 0] = 1  # 2 x 2 max
    np.testing.assert_array_equal(y20[..., 12], cloud20)
    valid20 = np.ones((2, 2, 2), np.float32)
    valid20[1, 1, 0] = 0
    np.testing.assert_array_equal(y20[..., 13], valid20)

    # unpack gives the normalised pieces back.
    t, i, c, v = (keras.ops.convert_to_numpy(a) for a in unpack(y, 4))
    np.testing.assert_allclose(t, expected_target / 10000, rtol=1e-6)
    np.testing.assert_allclose(i, expected_cloudy / 10000, rtol=1e-6)
    assert c.shape == v.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(unpack(y)[3]), v)

    # No cloudy image: zeros; no mask of the cloudy acquisition: all reconstructed.
    alone = pack_targets({"s2_target": target}, {"s2_target": 4}, cloudy="tm1")["s2_target"]
    np.testing.assert_array_equal(alone[..., 4:8], 0)
    np.testing.assert_array_equal(alone[..., 8], 1)
    # A mask stored without a channel axis works too.
    flat = pack_targets({**batch, "s2_mask_t": mask[..., 0]}, {"s2_target": 4})
    np.testing.assert_array_equal(flat["s2_target"], y)

    with pytest.raises(ValueError, match="3 expected"):
        pack_targets(batch, {"s2_target": 3})
    with pytest.raises(ValueError, match="neither"):
        pack_targets(batch, {"s1_target": 2})
    with pytest.raises(ArgumentError, match="no target 's2_other'"):
        pack_targets(batch, {"s2_other": 4})


# ------------------------------------------------------------------ references


def random_case(seed: int = 0, n: int = 2, h: int = 40, w: int = 48, c: int = 4,
                cloud_fraction: float = 0.3) -> dict[str, np.ndarray]:
    """Raw int16 target and prediction, a class mask; ``t``/``p`` normalised float64."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 10000, (n, h, w, c))
    # A prediction correlated with the target, so that SSIM and SAM are not trivial.
    p = np.clip(t + rng.normal(0, 1200, t.shape), 0, 10000).round()
    mask = np.where(rng.uniform(size=(n, h, w, 1)) < cloud_fraction,
                    rng.integers(1, 4, (n, h, w, 1)), 0).astype(np.uint8)
    return {"target": t.astype(np.int16), "pred": p.astype(np.float32), "mask": mask,
            "t": t / 10000.0, "p": p / 10000.0, "cloud": mask[..., 0] > 0}


def packed(case: dict[str, np.ndarray]) -> np.ndarray:
    batch = {"s2_target": case["target"], "s2_t": case["target"], "s2_mask_t": case["mask"]}
    return pack_targets(batch, {"s2_target": case["target"].shape[-1]})["s2_target"]


def ref_sam(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    cos = (p * t).sum(-1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(t, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def ref_ssim_map(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM map of one image, mean over bands, on the valid interior."""
    maps = [structural_similarity(t[..., b], p[..., b], gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1, full=True)[1]
            for b in range(t.shape[-1])]
    return np.mean(maps, axis=0)[5:-5, 5:-5]


def test_psnr_ssim_sam_match_references() -> None:
    case = random_case()
    y, t, p = packed(case), case["t"], case["p"]
    ev = evaluate(case["target"], case["pred"])  # all clear: masked metrics are empty
    keras_values = {name: metric_value(name, y, case["pred"]) for name in METRIC_NAMES}

    ssim = np.mean([structural_similarity(t[i], p[i], channel_axis=-1, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False,
                                          data_range=1) for i in range(len(t))])
    psnr = peak_signal_noise_ratio(t, p, data_range=1)
    psnr_image = np.mean([peak_signal_noise_ratio(t[i], p[i], data_range=1)
                          for i in range(len(t))])
    mse = np.mean((p - t) ** 2)
    references = {"ssim": ssim, "psnr": psnr, "psnr_image": psnr_image,
                  "sam": ref_sam(p, t).mean(), "mae": np.abs(p - t).mean(), "mse": mse,
                  "rmse": np.sqrt(mse)}
    assert 0.5 < ssim < 0.99 and 3 < references["sam"] < 30  # a meaningful case
    for name, expected in references.items():
        assert keras_values[name] == pytest.approx(expected, rel=1e-3 if name == "ssim" else 1e-4)
        assert ev[name] == pytest.approx(expected, rel=1e-9 if name != "sam" else 1e-7)
    # ``clear`` is every valid pixel of an image without clouds in evaluate.
    for kind in KINDS:
        assert ev[f"{kind}_clear"] == ev[kind] and ev[f"{kind}_masked"] is None
    # The empty region says so: no value, a pixel count of 0.
    n, h, w = case["target"].shape[:3]
    assert (ev["pixels"], ev["pixels_clear"], ev["pixels_masked"]) == (n * h * w, n * h * w, 0)


def test_regions_select_the_right_pixels() -> None:
    case = random_case(seed=3)
    target = case["target"].copy()
    target[0, 20, 30, 1] = S2_NODATA  # one invalid pixel
    case["target"] = target
    y, t, p, cloud = packed(case), case["t"], case["p"], case["cloud"]
    valid = np.ones(cloud.shape, bool)
    valid[0, 20, 30] = False
    ev = evaluate(target, case["pred"], case["mask"])
    err = p - t
    angle = ref_sam(p, t)
    ssim_maps = np.stack([ref_ssim_map(t[i], p[i]) for i in range(len(t))])
    window_ok = np.ones(ssim_maps.shape, bool)
    window_ok[0, 20 - 10 : 20 + 1, 30 - 10 : 30 + 1] = False  # windows holding (20, 30)
    for region, sel in (("all", valid), ("masked", valid & cloud), ("clear", valid & ~cloud)):
        assert 0 < sel.sum() < sel.size
        mse = np.mean(err[sel] ** 2)
        images = [np.mean(err[i][sel[i]] ** 2) for i in range(len(t))]
        centre = sel[:, 5:-5, 5:-5] & window_ok
        expected = {"mae": np.abs(err[sel]).mean(), "mse": mse, "rmse": np.sqrt(mse),
                    "psnr": 10 * np.log10(1 / mse),
                    "psnr_image": np.mean([10 * np.log10(1 / m) for m in images]),
                    "ssim": ssim_maps[centre].mean(), "sam": angle[sel].mean()}
        for kind, value in expected.items():
            name = metric_name(kind, region)
            tol = 1e-3 if kind == "ssim" else 1e-4
            assert metric_value(name, y, case["pred"]) == pytest.approx(value, rel=tol), name
            assert ev[name] == pytest.approx(value, rel=1e-7), name


def test_empty_regions_and_perfect_predictions() -> None:
    case = random_case(seed=4, n=1, h=16, w=16, cloud_fraction=0.0)
    y = packed(case)
    ev = evaluate(case["target"], case["pred"], case["mask"])
    for kind in KINDS:
        # Keras logs stay numeric (curves, early stopping); evaluate says "nothing".
        assert metric_value(f"{kind}_masked", y, case["pred"]) == 0.0
        assert ev[f"{kind}_masked"] is None
    assert ev["pixels_masked"] == 0 and ev["pixels_clear"] == ev["pixels"] == 16 * 16
    perfect = case["target"].astype(np.float32)
    assert metric_value("psnr", y, perfect) == pytest.approx(100.0)
    assert metric_value("sam", y, perfect) == pytest.approx(0.0, abs=1e-3)
    assert metric_value("ssim", y, perfect) == pytest.approx(1.0, rel=1e-5)
    assert evaluate(case["target"], perfect)["psnr_image"] == pytest.approx(100.0)


def test_metrics_accumulate_over_batches() -> None:
    case = random_case(seed=5, n=4, h=24, w=24)
    y, pred = packed(case), case["pred"]
    for name in ("psnr_masked", "rmse", "psnr_image", "ssim_clear", "sam"):
        metric = get_metrics([name])[0]
        metric.update_state(y[:1], pred[:1])
        metric.update_state(y[1:], pred[1:])
        pooled = metric_value(name, y, pred)
        assert float(metric.result()) == pytest.approx(pooled, rel=1e-5), name
        metric.reset_state()
        assert float(metric.result()) == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        get_metrics(["psnr_cloudy"])
    with pytest.raises(ValueError, match="repeated"):
        get_metrics(["mae", "mae"])
    assert len(METRIC_NAMES) == len(KINDS) * len(REGIONS) == len(get_metrics())


# ------------------------------------------------------------------ Keras


@pytest.mark.slow
def test_fit_logs_every_metric_and_saves(tmp_path: Path) -> None:
    case = random_case(seed=6, n=8, h=16, w=16)
    x, y = case["target"].astype(np.float32), packed(case)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 4), name="s2_t")
    outputs = keras.layers.Conv2D(4, 3, padding="same", name="s2_target")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=get_loss("carl", 0.5), metrics=get_metrics())
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, y))
    logged = set(history.history)
    expected = {"loss", "val_loss", *METRIC_NAMES, *(f"val_{n}" for n in METRIC_NAMES)}
    assert expected <= logged, expected - logged
    assert all(np.isfinite(v[0]) for v in history.history.values())

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, CARLLoss) and loaded.loss.lambda_ == 0.5
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(after) >= set(METRIC_NAMES)
    for name in ("loss", "psnr_masked", "ssim"):
        assert after[name] == pytest.approx(before[name], rel=1e-5)
    again = ReconstructionMetric.from_config(get_metrics(["sam_clear"])[0].get_config())
    assert again.name == "sam_clear" and again.kind == "sam" and again.region == "clear"


JAX_SCRIPT = HAND_SCRIPT + f"CARL_1, CARL_HALF = {CARL_1!r}, {CARL_HALF!r}\n" + """
import keras
assert keras.backend.backend() == "jax"
from skimage.metrics import structural_similarity
from decloud.models.losses import get_loss, pack_targets
from decloud.models.metrics import batch_metric
y = pack_targets(batch, {"s2_target": 2})["s2_target"]
for lam, expected in ((1.0, CARL_1), (0.5, CARL_HALF)):
    value = float(get_loss("carl", lam)(y, pred))
    assert abs(value - expected) < 1e-5 * expected, (value, expected)
rng = np.random.default_rng(0)
t = rng.integers(0, 10000, (1, 40, 40, 3))
p = np.clip(t + rng.normal(0, 1200, t.shape), 0, 10000).round()
y = pack_targets({"s2_target": t.astype(np.int16)}, {"s2_target": 3})["s2_target"]
ref = structural_similarity(t[0] / 1e4, p[0] / 1e4, channel_axis=-1, gaussian_weights=True,
                            sigma=1.5, use_sample_covariance=False, data_range=1)
value = float(batch_metric("ssim", y, p.astype(np.float32)))
assert abs(value - ref) < 1e-3 * ref, (value, ref)
print("jax ok")
"""


@pytest.mark.slow
def test_jax_backend() -> None:
    # jax is in the dev extra: no skip. TensorFlow against JAX: tests/models/test_jax.py.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_SCRIPT)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jax ok" in done.stdout


def test_evaluate_single_image_and_mask_shapes() -> None:
    case = random_case(seed=7, n=1, h=24, w=24)
    batched = evaluate(case["target"], case["pred"], case["mask"])
    for mask in (case["mask"][0], case["mask"][0, ..., 0], case["mask"][..., 0]):
        single = evaluate(case["target"][0], case["pred"][0], mask)
        assert single == pytest.approx(batched, rel=1e-12)
    binary = evaluate(case["target"][0], case["pred"][0], case["cloud"][0])
    assert binary == pytest.approx(batched, rel=1e-12)
    assert batched["psnr_image"] == pytest.approx(batched["psnr"], rel=1e-12)
    no_data = evaluate(case["target"][0], case["pred"][0], valid=np.zeros((24, 24), bool))
    assert all(no_data[name] is None for name in METRIC_NAMES)
    assert all(no_data[name] == 0 for name in PIXEL_COUNTS)
    with pytest.raises(ValueError, match="does not fit"):
        evaluate(case["target"][0], case["pred"][0], np.zeros((12, 12), bool))
    with pytest.raises(ValueError, match="must be equal"):
        evaluate(case["target"][0], case["pred"][0, :10])


def test_ssim_of_images_smaller_than_the_window() -> None:
    case = random_case(seed=8, n=2, h=8, w=8)  # e.g. the 20 m output of a 16 px patch
    y = packed(case)
    assert metric_value("ssim", y, case["pred"]) == 0.0
    assert evaluate(case["target"], case["pred"])["ssim"] is None  # no complete window
    assert metric_value("mae", y, case["pred"]) > 0
