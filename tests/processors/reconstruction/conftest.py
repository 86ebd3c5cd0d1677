"""Small real series for the reconstruction kernels: the T33TVM sample's clear date."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from decloud.keys import encode_s2

BANDS = ("B02", "B03", "B04", "B08")


@pytest.fixture(scope="session")
def reflectance() -> np.ndarray:
    """``(H, W, 4)`` int16 encoded reflectance of the sample's clear THEIA date."""
    from decloud.products import open_product
    from tests.conftest import THEIA_CLEAR

    return np.moveaxis(encode_s2(open_product(THEIA_CLEAR).read(list(BANDS))), 0, -1)


def blobs(shape: tuple[int, int], seed: int, density: float = 0.004,
          size: int = 4) -> np.ndarray:
    """Boolean cloud blobs (seeded random points dilated ``size`` times)."""
    rng = np.random.default_rng(seed)
    return ndimage.binary_dilation(rng.random(shape) < density, iterations=size)


def pad_window(array: np.ndarray, row0: int, col0: int, row1: int, col1: int,
               fill: int) -> np.ndarray:
    """``array[:, row0:row1, col0:col1]`` with ``fill`` outside the array (a padded read)."""
    height, width = array.shape[1:3]
    out = np.full((array.shape[0], row1 - row0, col1 - col0, *array.shape[3:]), fill,
                  dtype=array.dtype)
    r0, c0, r1, c1 = max(row0, 0), max(col0, 0), min(row1, height), min(col1, width)
    out[:, r0 - row0:r1 - row0, c0 - col0:c1 - col0] = array[:, r0:r1, c0:c1]
    return out
