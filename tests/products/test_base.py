"""The product model: abstract bases every reader implements, and its own checks."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decloud.errors import MissingBandError, ProductFormatError
from decloud.products import READERS, Product, S1Product, S2Product, TheiaProduct, open_product
from decloud.products.base import BandFile
from tests.conftest import S1_VV, THEIA

BAND = BandFile(name="B04", path="b04.tif", resolution=10.0)


def test_bases_are_abstract() -> None:
    assert inspect.isabstract(Product) and inspect.isabstract(S2Product)
    assert {"matches", "open"} <= Product.__abstractmethods__
    assert {"matches", "open", "_mask_name", "_product_mask"} <= S2Product.__abstractmethods__
    fields: dict[str, Any] = {"path": Path("x"), "platform": "S2A", "tile": "T31TEJ",
                              "acquired": datetime(2020, 1, 1).astimezone(), "bands": {}}
    for base in (Product, S2Product):
        with pytest.raises(TypeError, match="abstract"):
            base(**fields)  # type: ignore[abstract]


def test_a_reader_missing_a_method_cannot_be_made() -> None:
    @dataclasses.dataclass(kw_only=True)
    class NoMask(S2Product):  # matches and open, but no mask methods
        @classmethod
        def matches(cls, path: Path) -> bool:
            return False

        @classmethod
        def open(cls, path: Path) -> NoMask:
            raise NotImplementedError

    assert NoMask.__abstractmethods__ == {"_mask_name", "_product_mask"}
    with pytest.raises(TypeError, match="_mask_name"):
        NoMask(path=Path("x"), platform="S2A", tile=None,  # type: ignore[abstract]
               acquired=datetime(2020, 1, 1).astimezone(), bands={"B04": BAND})


def test_every_registered_reader_implements_its_base() -> None:
    assert READERS, "no reader registered"
    for reader in READERS:
        assert issubclass(reader, Product), reader
        assert not inspect.isabstract(reader), (reader, reader.__abstractmethods__)
        assert reader.kind and reader.sensor in ("S1", "S2"), reader
        if reader.sensor == "S2":
            assert issubclass(reader, S2Product), reader
    # One reader per sensor and format: THEIA, SAFE, generic stacks, S1Tiling.
    assert {r.kind for r in READERS} >= {"theia", "safe", "stack", "s1tiling"}


def test_opened_products_are_instances_of_the_bases() -> None:
    theia, s1 = open_product(THEIA), open_product(S1_VV)
    assert isinstance(theia, S2Product) and isinstance(theia, Product)
    assert isinstance(s1, Product) and not isinstance(s1, S2Product)


def test_product_checks_its_fields() -> None:
    product = open_product(THEIA)
    with pytest.raises(ProductFormatError, match="no time zone") as err:
        dataclasses.replace(product, acquired=datetime(2015, 9, 9, 10, 0, 17))
    assert err.value.field == "acquired" and err.value.path == str(THEIA)
    with pytest.raises(ProductFormatError, match="no band") as err:
        dataclasses.replace(product, bands={})
    assert err.value.field == "bands"


def test_s1_product_needs_files() -> None:
    with pytest.raises(ProductFormatError, match="at least one file") as err:
        S1Product.from_files([])
    assert err.value.field == "paths"


def test_theia_without_clm_has_no_product_mask() -> None:
    product = open_product(THEIA)
    assert isinstance(product, TheiaProduct)
    bare = dataclasses.replace(product, masks={})
    assert bare.mask_origin == "computed"
    with pytest.raises(MissingBandError, match="no CLM mask") as err:
        bare._product_mask(bare.grid(), None, None)
    assert err.value.field == "CLM"
    # The mask falls back on the computed one instead.
    assert bare.mask().dtype == np.uint8


def test_read_fills_a_given_buffer_like_a_new_array() -> None:
    from rasterio.windows import Window

    from decloud.errors import ArgumentError
    from tests.conftest import SAFE_PB0400

    for path in (THEIA, SAFE_PB0400):  # scale only; scale and offset (PB 04.00)
        product = open_product(path)
        bands = ["B02", "B8A", "B11", "B04"]  # 10 m and 20 m, interleaved
        window = Window(-3, 5, 40, 31)  # off the edge: NaN outside
        expected = product.read(bands, None, window)
        buffer = np.full((5, 40, 50), 7.0, np.float32)
        view = buffer[1:, :31, 5:45]
        assert product.read(bands, None, window, out=view) is view
        np.testing.assert_array_equal(view.view(np.uint32), expected.view(np.uint32))
        assert (buffer[0] == 7.0).all() and (buffer[:, 31:] == 7.0).all()
        with pytest.raises(ArgumentError, match="out"):
            product.read(bands, None, window, out=np.empty((4, 31, 40), np.float64))


def test_s1_read_fills_a_given_buffer() -> None:
    image = open_product(S1_VV)
    expected = image.read(["VV"], unit="linear")
    buffer = np.empty(expected.shape, np.float32)
    assert image.read(["VV"], unit="linear", out=buffer) is buffer
    np.testing.assert_array_equal(buffer, expected)
