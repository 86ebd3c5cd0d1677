"""The checked entry point that runs a model: typed errors for sizes it cannot take,
padding to the size multiple and cropping back."""

from __future__ import annotations

import numpy as np
import pytest

from decloud.errors import ModelInputSizeError
from decloud.models import predict
from decloud.models.inference import input_nodata
from decloud.windows import pad_to_multiple
from tests.models.test_zoo import raw_inputs, tiny


def test_predict_refuses_sizes_the_model_cannot_take() -> None:
    model, spec = tiny("ssop_unet")  # size multiple 4
    rng = np.random.default_rng(0)
    good = raw_inputs(spec.inputs, 32, rng)
    assert predict(model, spec, good)["s2_target"].shape == (1, 32, 32, 4)
    odd = raw_inputs(spec.inputs, 30, rng)
    with pytest.raises(ModelInputSizeError, match=r"ssop_unet cannot take a 30 x 30 px") as err:
        predict(model, spec, odd)
    assert "multiples of 4" in str(err.value) and err.value.field in spec.inputs
    mixed = {**good, "s1_t": odd["s1_t"]}
    with pytest.raises(ModelInputSizeError, match="s1_t covers 30 x 30"):
        predict(model, spec, mixed)
    with pytest.raises(ModelInputSizeError, match="needs input dem"):
        predict(model, spec, {k: v for k, v in good.items() if k != "dem"})
    with pytest.raises(ModelInputSizeError, match=r"expected \(batch, height, width, 2\)"):
        predict(model, spec, {**good, "s1_t": good["s2_t"]})
    with pytest.raises(ModelInputSizeError, match="16 x 34"):
        spec.check_size(16, 32 + 2)
    spec.check_size(16, 32)


@pytest.mark.parametrize(("name", "height", "width"), [("ssop_unet", 30, 23),
                                                        ("dsen2cr", 31, 27)])
def test_predict_pads_any_size_and_crops_back(name: str, height: int, width: int) -> None:
    model, spec = tiny(name)
    rng = np.random.default_rng(2)
    inputs = {}
    for key, s in spec.inputs.items():
        h, w = -(-height // round(s.ratio)), -(-width // round(s.ratio))
        inputs[key] = rng.uniform(1, 5000, (1, h, w, s.channels)).astype("float32")
    got = predict(model, spec, inputs, pad=True)
    # Reference: pad by hand with each key's nodata to the multiple, run, cut.
    k = spec.size_multiple
    padded = {key: pad_to_multiple(x, round(k / spec.inputs[key].ratio),
                                   fill=input_nodata(key), axes=(1, 2))[0]
              for key, x in inputs.items()}
    full = model.predict(padded, verbose=0)
    for key, out in spec.outputs.items():
        h, w = -(-height // round(out.ratio)), -(-width // round(out.ratio))
        assert got[key].shape == (1, h, w, out.channels)
        np.testing.assert_allclose(got[key], full[key][:, :h, :w], atol=1e-3)
