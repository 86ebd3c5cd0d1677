"""bfloat16 in the engine: within 1e-2 reflectance of float32 where allowed, refused elsewhere.

The validated models (:data:`BFLOAT16_MODELS`) run with seeded weights (no trained
model ships) on real fixture inputs: the T33TVM THEIA dates (B2, B3, B4, B8) and the
DEM fixture, with the S1 pairs of T31UFS (the only S1 fixtures) as their S1 inputs.
TensorFlow runs here; JAX in a subprocess (Keras picks its backend at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rasterio.windows import Window

from decloud.errors import InferenceError, PrecisionError
from decloud.inference.engine import EngineOptions
from decloud.inference.precision import (
    BFLOAT16_MODELS,
    BFLOAT16_TOLERANCE,
    apply_precision,
    check_precision,
)
from tests.conftest import ARCHIVE, DEM

ROOT = Path(__file__).resolve().parents[2]
SIDE = 64


def fixture_inputs(input_keys: Any) -> dict[str, np.ndarray]:
    """A batch of one ``SIDE`` px block of real fixture inputs for an OS2 model's keys."""
    from decloud.inputs import AcquisitionProducts, InputProducts, read_inputs
    from decloud.products import Dem, S1Product, open_product

    theia = sorted((ARCHIVE / "S2" / "T33TVM").iterdir())
    optical = InputProducts({a: AcquisitionProducts(open_product(theia[i]))
                             for a, i in (("tm1", 0), ("t", 1), ("tp1", 4))},
                            Dem.open(DEM), reference="t")
    vv = sorted((ARCHIVE / "S1" / "T31UFS").glob("*_vv_*"))
    radar = InputProducts({a: AcquisitionProducts(s1=S1Product.from_files(
        [vv[i], Path(str(vv[i]).replace("_vv_", "_vh_"))]))
        for a, i in (("tm1", 0), ("t", 3), ("tp1", 5))}, reference="t")
    s1 = [k for k in input_keys if k.name.startswith("s1_")]
    rest = [k for k in input_keys if not k.name.startswith("s1_")]
    t = optical.acquisitions["t"].s2
    s1_grid = radar.acquisitions["t"].s1.grid()  # type: ignore[union-attr]
    arrays = read_inputs(rest, optical, t.grid(), Window(18, 18, SIDE, SIDE))  # type: ignore[union-attr]
    arrays.update(read_inputs(s1, radar, s1_grid, Window(0, 0, SIDE, SIDE)))
    return {k: v[None] for k, v in arrays.items()}


def compare(name: str, *, again: bool = True) -> dict[str, Any]:
    """Seeded ``name`` on the fixture block: max |bfloat16 - float32| and more.

    ``again``: switch back to float32 and give the largest change from the first run.
    """
    import keras

    from decloud.inference.method import KerasMethod
    from decloud.models.registry import get_config
    from decloud.models.zoo import build

    keras.utils.set_random_seed(0)
    method = KerasMethod(*build(get_config(name)))
    inputs = fixture_inputs(method.input_keys)
    reference = method(inputs).reflectance
    apply_precision(method, "bfloat16")
    reduced = method(inputs).reflectance
    dtypes = {layer: str(method.model.get_layer(layer).compute_dtype)
              for layer in ("enc0_conv0", "normalize_s2_t")}
    back = reference
    if again:
        apply_precision(method, "float32")
        back = method(inputs).reflectance
    return {"max_diff": float(np.abs(reduced - reference).max()),
            "finite": bool(np.isfinite(reduced).all() and np.isfinite(reference).all()),
            "conv_dtype": dtypes["enc0_conv0"], "normalize_dtype": dtypes["normalize_s2_t"],
            "float32_again": float(np.abs(back - reference).max()),
            "output_dtype": str(reduced.dtype)}


def check(result: dict[str, Any]) -> None:
    assert result["finite"]
    assert result["conv_dtype"] == "bfloat16"  # the model really ran in bfloat16...
    assert result["normalize_dtype"] == "float32"  # ...but not on raw values
    assert 0.0 < result["max_diff"] <= BFLOAT16_TOLERANCE  # 1e-2 reflectance
    assert result["float32_again"] == 0.0
    assert result["output_dtype"] == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BFLOAT16_MODELS))
def test_bfloat16_is_within_tolerance_on_tensorflow(name: str) -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow side (the JAX side has its own test)")
    check(compare(name))


JAX_SIDE = """
import json, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from decloud.inference.precision import BFLOAT16_MODELS
from tests.inference.test_precision import compare
# Switching back is checked on TensorFlow: one compilation less here.
print(json.dumps({name: compare(name, again=False) for name in sorted(BFLOAT16_MODELS)}))
"""


@pytest.mark.slow
def test_bfloat16_is_within_tolerance_on_jax() -> None:
    # XLA's optimisation passes cost minutes on the wide msop_unet; precision is the same.
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                        "--xla_backend_optimization_level=0".strip()}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_SIDE)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == BFLOAT16_MODELS
    for result in results.values():
        check(result)


def test_other_models_and_methods_are_refused() -> None:
    with pytest.raises(PrecisionError, match="not validated for model 'dsen2cr'") as caught:
        check_precision("bfloat16", "dsen2cr")
    assert caught.value.field == "precision"
    check_precision("float32", "dsen2cr")  # float32 is always allowed
    with pytest.raises(PrecisionError, match="Keras models only"):
        apply_precision(object(), "bfloat16")  # e.g. gap-filling (numpy)
    apply_precision(object(), "float32")


def test_engine_options_refuse_an_unknown_precision() -> None:
    with pytest.raises(InferenceError, match="float32, bfloat16"):
        EngineOptions(precision="float16")
    assert EngineOptions(precision="bfloat16").describe()["precision"] == "bfloat16"


def test_the_engine_refuses_bfloat16_before_writing_anything(tmp_path: Path) -> None:
    from decloud.inference.engine import run
    from decloud.inputs import AcquisitionProducts, InputProducts
    from decloud.processors.gapfill import GapFillMethod
    from decloud.products import open_product

    theia = sorted((ARCHIVE / "S2" / "T33TVM").iterdir())
    method = GapFillMethod(["tm1", "tp1"], 0.0, bands=["B04", "B08"])
    products = InputProducts({a: AcquisitionProducts(open_product(theia[i]))
                              for a, i in (("tm1", 0), ("t", 1), ("tp1", 4))}, reference="t")
    grid = products.acquisitions["t"].s2.grid()  # type: ignore[union-attr]
    with pytest.raises(PrecisionError, match="Keras models only"):
        run(method, products, grid, tmp_path / "out.tif", EngineOptions(precision="bfloat16"))
    assert list(tmp_path.iterdir()) == []


def test_a_bfloat16_run_warns_that_trained_weights_are_not_validated(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from types import SimpleNamespace

    import keras

    from decloud.inference.precision import set_precision

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="conv")])
    spec = SimpleNamespace(name="msop_small", outputs=())
    with caplog.at_level(logging.WARNING, logger="decloud.inference.precision"):
        set_precision(model, spec, "float32")  # type: ignore[arg-type]
        assert not caplog.records
        set_precision(model, spec, "bfloat16")  # type: ignore[arg-type]
    assert model.get_layer("conv").compute_dtype == "bfloat16"
    assert "msop_small runs in bfloat16" in caplog.text
    assert "within 0.01 reflectance" in caplog.text and "not validated" in caplog.text
    with pytest.raises(PrecisionError, match="trained weights are not validated"):
        check_precision("bfloat16", "dsen2cr")
