"""One line, exit 1, nothing half-written, the true cause.

Each case is built from the real fixtures (the sample archive, the tiny training
dataset, zoo models) and checks the exit code (command-line cases), that the message
names the file and the cause, and that no partial output remains.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import rtree
import tensorflow as tf  # type: ignore[import-untyped]
import yaml
from click.testing import CliRunner, Result

from decloud.archive import Archive
from decloud.cli.main import cli
from decloud.cli.train import metrics_table
from decloud.errors import ArgumentError, ModelCardError, NoProductError, OutputWriteError
from decloud.index.catalog import Catalog
from decloud.index.samplers import ConstantSampler, RandomSampler
from decloud.models import build, get_config
from decloud.models.card import CARD_FILE, load_model
from decloud.models.export import export_savedmodel
from decloud.models.losses import pack_targets
from decloud.models.metrics import metric_name, parse_metric_name
from decloud.products import S1Product
from tests.conftest import ARCHIVE, S1_VH, S1_VV, THEIA_CLEAR
from tests.reliability.conftest import truncate
from tests.training.conftest import dataset  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]

# Keras' own conversions of TensorFlow tensors (numpy 2), not decloud's.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line(result: Result) -> str:
    """The output of a failed command: exactly one line."""
    lines = [line for line in result.output.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("index:")]  # tqdm's bar, not a message
    assert len(lines) == 1, result.output
    return lines[0]


def temporaries(folder: Path) -> list[str]:
    """Temporary files or folders of decloud's atomic writers left under ``folder``."""
    return [p.name for p in folder.rglob(".*") if ".tmp" in p.name]


# ------------------------------------------------------------------ full disk, index


class _FullDatabase:
    """A SQLite connection whose disk fills when a product's statistics are inserted.

    As SQLite does on ``SQLITE_FULL``, the transaction is rolled back before the error
    is raised, so decloud's own ``ROLLBACK`` then fails ("no transaction is active"):
    the error that used to hide the cause.
    """

    def __init__(self, db: sqlite3.Connection, error: Exception) -> None:
        self.db, self.error = db, error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO patch_stats"):
            if isinstance(self.error, sqlite3.OperationalError):
                self.db.execute("ROLLBACK")
            raise self.error
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.mark.parametrize("error", [
    sqlite3.OperationalError("database or disk is full"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["sqlite-full", "enospc"])
def test_index_build_on_a_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            error: Exception) -> None:
    connect = sqlite3.connect

    def full_connect(*args: Any, **kwargs: Any) -> Any:
        return _FullDatabase(connect(*args, **kwargs), error)

    monkeypatch.setattr(sqlite3, "connect", full_connect)
    folder = tmp_path / "catalog"
    result = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(folder))
    monkeypatch.undo()
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"Error: OutputWriteError: {folder / 'catalog.sqlite'} [products]: ")
    assert "no space left on device" in line and "decloud index add" in line
    assert "no transaction is active" not in line and "rollback" not in line.lower()
    # Nothing half-written: the catalog opens, consistent, without the product.
    with Catalog.open(folder) as catalog:
        assert catalog.count() == 0
        assert catalog.search() == []


# ------------------------------------------------------------------ full disk, export


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path, Path]:
    """A small zoo model saved as .keras, with its configuration file."""
    config = get_config("msop_small")
    config = config.model_copy(update={"network": config.network.model_copy(
        update={"widths": [8, 16]})})
    keras.utils.set_random_seed(0)
    model, spec = build(config)
    folder = tmp_path_factory.mktemp("model")
    model.save(folder / "model.keras")
    config_file = folder / "small.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return model, spec, folder / "model.keras", config_file


def _archive_class() -> type:
    """The class ``keras.export.ExportArchive()`` makes on this backend (TF's own)."""
    return type(keras.export.ExportArchive())


@pytest.mark.parametrize("error", [
    tf.errors.ResourceExhaustedError(None, None, "saved_model.pb; No space left on device"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["resource-exhausted", "enospc"])
def test_savedmodel_export_on_a_full_disk_leaves_no_folder(
        tiny_model: tuple[Any, Any, Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    _, _, keras_file, config_file = tiny_model

    def full_disk(self: Any, filepath: str, *args: Any, **kwargs: Any) -> None:
        (Path(filepath) / "variables").mkdir(parents=True)
        (Path(filepath) / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0")
        raise error

    monkeypatch.setattr(_archive_class(), "write_out", full_disk)
    out = tmp_path / "savedmodel"
    result = CliRunner().invoke(cli, ["export", str(keras_file), "--format", "savedmodel",
                                      "--out", str(out), "--config", str(config_file)])
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"Error: OutputWriteError: {out}: ")
    assert "no space left on device" in line
    assert not out.exists() and temporaries(tmp_path) == []


def test_savedmodel_export_library_error_is_typed(tiny_model: tuple[Any, Any, Path, Path],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model, spec, _, _ = tiny_model

    def full_disk(self: Any, filepath: str, *args: Any, **kwargs: Any) -> None:
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(_archive_class(), "write_out", full_disk)
    with pytest.raises(OutputWriteError, match="no space left on device") as caught:
        export_savedmodel(model, spec, tmp_path / "sm")
    assert caught.value.path == str(tmp_path / "sm")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ corrupt models


def test_a_corrupt_keras_file_is_not_a_model_file(tiny_model: tuple[Any, Any, Path, Path],
                                                  tmp_path: Path,
                                                  dataset: Path) -> None:  # noqa: F811
    _, _, keras_file, config_file = tiny_model
    broken = tmp_path / "run" / "model.keras"
    broken.parent.mkdir()
    broken.write_bytes(keras_file.read_bytes())
    truncate(broken)
    (broken.parent / CARD_FILE).write_text("{}")
    with pytest.raises(ModelCardError, match="not a Keras model file") as caught:
        load_model(broken)
    assert caught.value.path == str(broken) and "File not found" not in str(caught.value)
    result = run("models", "evaluate", str(broken), "--dataset", str(dataset))
    assert result.exit_code == 1
    line = one_line(result)
    assert f"ModelCardError: {broken}: not a Keras model file" in line
    result = run("export", str(broken), "--format", "savedmodel", "--out",
                 str(tmp_path / "sm"), "--config", str(config_file))
    assert result.exit_code == 1
    assert f"{broken}: not a Keras model file" in one_line(result)
    assert not (tmp_path / "sm").exists()


# ------------------------------------------------------------------ empty regions


def test_an_empty_region_reads_no_pixels(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    # Gap filling on the demo dataset: its valid split has no clear pixel under the
    # cloudy acquisition, so the "clear" metrics have nothing to average.
    config = get_config("gapfill").model_dump(mode="json")
    config["network"]["s2_bands"] = ["B04", "B08"]
    config_file = tmp_path / "gapfill.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run("models", "evaluate", str(config_file), "--dataset", str(dataset))
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("gapfill"))
    assert row.split()[-2:] != ["0.0000"] and row.endswith("no pixels")
    result = run("models", "evaluate", str(config_file), "--dataset", str(dataset), "--json")
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)["gapfill"]
    assert values["mae_clear"] is None and values["pixels_clear"] == 0
    assert values["mae_masked"] > 0 and values["pixels_masked"] == values["pixels"] > 0


def test_the_training_summary_reads_no_pixels() -> None:
    table = metrics_table({"valid": {"mae": 0.01, "rmse": 0.02, "psnr": 30.0, "ssim": 0.9,
                                     "sam": 3.0, "mae_clear": None, "rmse_clear": None,
                                     "psnr_clear": None, "ssim_clear": None,
                                     "sam_clear": None, "pixels_clear": 0}})
    clear = next(line for line in table.splitlines() if " clear " in line)
    assert clear.split()[3:] == ["no", "pixels"] * 5
    assert "0.0000" not in clear


# ------------------------------------------------------------------ bad arguments


def test_layout_count_with_a_negative_seed_is_a_usage_error(tmp_path: Path) -> None:
    result = run("layout", "count", "os2-occitanie", "--catalog", str(tmp_path),
                 "--seed", "-1")
    assert result.exit_code == 2
    assert "Invalid value for '--seed': -1 is not in the range x>=0" in result.output
    assert "Traceback" not in result.output


def test_s1_read_with_a_bad_unit_names_the_product() -> None:
    product = S1Product.from_files([S1_VV, S1_VH])
    with pytest.raises(ArgumentError, match="unit must be 'db' or 'linear', not 'dB'") as err:
        product.read(unit="dB")
    assert err.value.field == "unit" and err.value.path == str(product.path)


def test_pack_targets_metric_names_and_samplers_give_typed_errors() -> None:
    batch = {"s2_target": np.zeros((1, 4, 4, 2), np.int16)}
    with pytest.raises(ArgumentError, match="no target 's2_other'") as err:
        pack_targets(batch, {"s2_other": 2})
    assert err.value.field == "s2_other"
    with pytest.raises(ArgumentError, match="3 expected"):
        pack_targets(batch, {"s2_target": 3})
    with pytest.raises(ArgumentError, match="unknown metric 'psnr' in region 'cloudy'"):
        metric_name("psnr", "cloudy")
    with pytest.raises(ArgumentError, match="unknown metric 'psnr_cloudy'"):
        parse_metric_name("psnr_cloudy")
    with pytest.raises(ArgumentError, match="seed must be an integer of at least 0, not -1"):
        RandomSampler(seed=-1)
    with pytest.raises(ArgumentError, match="seed must be an integer") as err:
        RandomSampler(seed="3")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="takes no option per_position") as err:
        RandomSampler(per_position=2)
    assert err.value.field == "per_position"
    with pytest.raises(ArgumentError, match=r"takes no option size \(options: per_position"):
        ConstantSampler(size=2)
    with pytest.raises(ArgumentError, match="per_position must be an integer"):
        ConstantSampler(per_position=1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------ archive, GDAL


def test_a_tile_not_in_the_archive_is_not_blamed_on_the_date() -> None:
    archive = Archive.from_root(ARCHIVE)
    with pytest.raises(NoProductError, match="tile T31TCJ is not in the archive") as err:
        archive.find_s2("31TCJ", archive.s2[0].acquired.date())
    assert err.value.field == "tile" and "T33TVM" in str(err.value)
    result = run("stack", "--archive", str(ARCHIVE), "--tile", "T31TCJ", "--date",
                 "2015-07-11", "--out", "x")
    assert result.exit_code == 1
    assert "tile T31TCJ is not in the archive" in one_line(result)
    # A tile that is there, on a date it lacks: the date is named.
    with pytest.raises(NoProductError, match="dates available") as err:
        archive.find_s2("T33TVM", archive.s2[0].acquired.date().replace(year=2001))
    assert err.value.field == "date"


def test_gdal_lines_do_not_reach_the_terminal(tmp_path: Path) -> None:
    product = tmp_path / THEIA_CLEAR.name
    shutil.copytree(THEIA_CLEAR, product)
    band = next(product.glob("*_FRE_B4.tif"))
    truncate(band)
    command = "from decloud.cli.main import cli; cli()"
    done = subprocess.run([sys.executable, "-c", command, "info", str(product)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: CorruptRasterError: {band}: ")
    assert "truncated" in lines[0]


def test_index_build_when_the_rtree_cannot_be_written(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(self: Any, *args: Any, **kwargs: Any) -> None:
        raise rtree.exceptions.RTreeError("Error in \"Index_InsertData\": No space left on device")

    monkeypatch.setattr(rtree.index.Index, "insert", full_disk)
    folder = tmp_path / "catalog"
    result = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(folder))
    monkeypatch.undo()
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"Error: OutputWriteError: {folder / 'rtree.idx'} [rtree]: ")
    assert "No space left on device" in line and "decloud index add" in line
    # SQLite kept the one product it committed; the R-tree is rebuilt when it opens.
    with Catalog.open(folder) as catalog:
        assert catalog.count() == 1 and len(catalog.search()) == 1


class _FullAtCreation:
    """A SQLite connection on a disk that fills while the schema is written."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def executescript(self, script: str) -> None:
        self.db.executescript(script.split(";")[0] + ";")  # a part of the file is written
        raise sqlite3.OperationalError("database or disk is full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_index_build_on_a_full_disk_leaves_no_half_made_catalog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FullAtCreation(connect(*a, **k)))
    folder = tmp_path / "catalog"
    result = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(folder))
    monkeypatch.undo()
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"Error: OutputWriteError: {folder / 'catalog.sqlite'}: ")
    assert "no space left on device" in line
    assert list(folder.glob("catalog.sqlite*")) == []
    # Once there is space again, the same command builds the catalog.
    result = run("index", "build", "--archive", str(ARCHIVE), "--catalog", str(folder))
    assert result.exit_code == 0, result.output
