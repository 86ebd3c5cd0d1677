"""One bad product never stops a scan: the errors a broken file can raise are caught by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import decloud.archive as archive_module
import decloud.index.catalog as catalog_module
from decloud.archive import Archive, fault_reason
from decloud.errors import MetadataError
from decloud.index import Catalog
from decloud.products import Product, open_product
from tests.conftest import SAFE_PB0205, SAFE_PB0400


@pytest.fixture
def two_products(tmp_path: Path) -> Path:
    root = tmp_path / "S2"
    for src in (SAFE_PB0400, SAFE_PB0205):
        shutil.copytree(src, root / src.name)
    return root


@pytest.mark.parametrize("error", [ValueError("could not convert string to float: 'x'"),
                                   ZeroDivisionError("float division by zero"),
                                   UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid byte"),
                                   OSError(5, "Input/output error")])
def test_library_errors_of_one_product_are_isolated(
    two_products: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def flaky(path: Path) -> Product:
        if path.name == SAFE_PB0400.name:
            raise error
        return open_product(path)

    monkeypatch.setattr(archive_module, "open_product", flaky)
    archive = Archive.scan(two_products)
    assert [p.name for p in archive.s2] == [SAFE_PB0205.name]
    assert [p.path.name for p in archive.problems] == [SAFE_PB0400.name]
    assert archive.problems[0].reason.startswith(type(error).__name__)


def test_other_errors_are_not_swallowed(two_products: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the listed faults are caught: a bug in decloud itself still surfaces."""
    def buggy(path: Path) -> Product:
        raise RuntimeError("a bug")

    monkeypatch.setattr(archive_module, "open_product", buggy)
    with pytest.raises(RuntimeError, match="a bug"):
        Archive.scan(two_products)


def test_fault_reason_names_the_inner_file() -> None:
    err = MetadataError("is 0", path="/a/P.SAFE/MTD_MSIL2A.xml", field="BOA_QUANTIFICATION_VALUE")
    assert fault_reason("/a/P.SAFE", err) == (
        "/a/P.SAFE/MTD_MSIL2A.xml: [BOA_QUANTIFICATION_VALUE] is 0")
    assert fault_reason("/a/P.SAFE/MTD_MSIL2A.xml", err) == "[BOA_QUANTIFICATION_VALUE] is 0"


def test_index_add_isolates_a_product_whose_statistics_fail(
    two_products: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = catalog_module.s2_patch_stats

    def flaky(product: Product, *args: object, **kwargs: object) -> object:
        if product.name == SAFE_PB0400.name:
            raise ValueError("cannot reshape array")
        return real(product, *args, **kwargs)

    monkeypatch.setattr(catalog_module, "s2_patch_stats", flaky)
    with Catalog.create(tmp_path / "catalog") as catalog:
        report = catalog.add(Archive.scan(two_products))
    assert [Path(p).name for p in report.added] == [SAFE_PB0205.name]
    ((path, reason),) = report.failed.items()
    assert Path(path).name == SAFE_PB0400.name and reason.startswith("ValueError")
