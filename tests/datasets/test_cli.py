"""``decloud dataset create / info / preview``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from decloud.cli.dataset import dataset
from decloud.cli.main import cli
from decloud.index.catalog import Catalog
from tests.datasets.conftest import TILE

Runner = Callable[..., tuple[int, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Runner:
    # Through the real entry point (its error handling), with the group registered.
    monkeypatch.setitem(cli.commands, "dataset", dataset)

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["dataset", *args])
        return result.exit_code, result.output

    return invoke


def test_create_info_preview(run: Runner, catalog: Catalog, layout_file: Path,
                             tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["create", "--catalog", str(catalog.folder), "--layout", str(layout_file),
            "--tile", TILE, "--samples", "4", "--seed", "3", "--patch-size", "32",
            "--shard-size", "2", "--bands10", "B04,B08", "--bands20", "B11",
            "--split", "train=0.5", "--split", "val=0.5", "--split-block", "1",
            "--split-buffer", "0", "--out", str(out), "--quiet"]
    code, text = run(*args)
    assert code == 0, text
    assert "plan:" in text and (out / "manifest.json").exists()
    code, text = run(*args)
    assert code == 0, text  # same command: complete already, nothing to do
    code, text = run(*[a if a != "3" else "4" for a in args])
    assert code == 1 and "DatasetError" in text and "another dataset" in text
    code, text = run("info", str(out))
    assert code == 0 and "s2_20m_t" in text and "int16" in text and "16x16x1" in text
    assert "seed 3" in text
    split = "train" if "train" in text.split("splits")[1].split("keys")[0] else "val"
    code, text = run("preview", str(out), str(tmp_path / "p.png"), "--n", "2",
                        "--split", split)
    assert code == 0, text
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_create_usage_errors(run: Runner, catalog: Catalog, layout_file: Path,
                             tmp_path: Path) -> None:
    base = ["create", "--catalog", str(catalog.folder), "--layout", str(layout_file),
            "--samples", "2", "--out", str(tmp_path / "ds")]
    code, text = run(*base, "--split", "train")
    assert code == 2 and "name=value" in text
    code, text = run(*base, "--split", "a=1", "--roi", "b=x.geojson")
    assert code == 2 and "not both" in text
    code, text = run(*base, "--tile", TILE, "--patch-size", "32")
    assert code == 1 and "has no band B02" in text and not (tmp_path / "ds").exists()
    code, text = run("info", str(tmp_path))
    assert code == 1 and "no manifest.json" in text
