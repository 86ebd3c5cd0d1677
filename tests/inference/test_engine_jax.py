"""The engine on the JAX backend: a tiny zoo model streamed equals its whole-image run.

Keras picks its backend when it is imported, so the JAX side runs in a subprocess with
``KERAS_BACKEND=jax`` (as in ``tests/models/test_jax.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # JAX start-up and compilation: about 15 s of CPU

ROOT = Path(__file__).resolve().parents[2]

JAX_SIDE = """
import json
import keras
import numpy as np
from rasterio.windows import Window
assert keras.backend.backend() == "jax", keras.backend.backend()
from decloud.inference import EngineOptions, KerasMethod, default_block_size, iter_blocks
from decloud.inputs import AcquisitionProducts, InputProducts
from decloud.models.registry import get_config
from decloud.models.zoo import build
from decloud.products import Dem, open_product
from tests.conftest import DEM, THEIA

config = get_config("ssop_unet").model_copy(deep=True)
config.network.widths = [4, 8, 8]
config.network.sources = {"t": ["s2"]}
keras.utils.set_random_seed(7)
method = KerasMethod(*build(config))
s2 = open_product(THEIA)
products = InputProducts({"t": AcquisitionProducts(s2)}, Dem.open(DEM), reference="t")
grid = s2.grid().subgrid(Window(3, 5, 77, 61))

def assemble(block):
    out = np.full((grid.height, grid.width, 4), -1.0, np.float32)
    for b in iter_blocks(method, products, grid, EngineOptions(block_size=block, batch_size=2)):
        r, c = int(b.core.row_off), int(b.core.col_off)
        out[r:r + b.reflectance.shape[0], c:c + b.reflectance.shape[1]] = b.reflectance
    return out

whole, blocks = assemble(256), assemble(20)
ok = np.isfinite(whole)
print(json.dumps({"nan_equal": bool(np.array_equal(ok, np.isfinite(blocks))),
                  "max_diff": float(np.abs(whole[ok] - blocks[ok]).max()),
                  "unwritten": int((blocks == -1).sum()),
                  "default_block_size": default_block_size()}))
"""


def test_streamed_equals_whole_on_jax() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                        "--xla_backend_optimization_level=0".strip()}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(JAX_SIDE)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nan_equal"] and result["unwritten"] == 0
    assert result["max_diff"] <= 1e-3
    assert result["default_block_size"] in (1280, 2048)  # 2048 where JAX sees a GPU
