"""Packaging: shipped configurations and layouts are package data, and the built wheel works.

The fast tests read the package data through :mod:`importlib.resources` (as an installed
package does). The slow ones build the wheel from a copy of the repository, check what
it holds, install it (non-editable, no dependencies: those of this environment are
reused) into a folder of its own and run the ``decloud`` command from outside the
repository, so that the source tree cannot be what gets imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

from decloud.errors import LayoutError
from decloud.layouts import SHIPPED_LAYOUTS, load_layout, shipped_layouts
from decloud.models import MODELS_DIR, get_config, list_configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "decloud" / "models" / "configs"
LAYOUTS = ROOT / "decloud" / "layouts" / "shipped"
#: What the repository copy for the build leaves out (git-ignored outputs).
IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                                 ".*cache*", ".hypothesis", "demo_output")


def stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


# ----------------------------------------------------------------- package data, fast


def test_top_level_folders_link_to_the_package_data() -> None:
    assert (ROOT / "models").resolve() == CONFIGS.resolve()
    assert (ROOT / "acquisition_layouts").resolve() == LAYOUTS.resolve()
    assert len(stems(CONFIGS)) >= 10 and len(stems(LAYOUTS)) >= 12


def test_model_registry_reads_the_package_resources() -> None:
    assert sorted(r.name for r in MODELS_DIR.iterdir() if r.name.endswith(".yaml")) == \
        sorted(p.name for p in CONFIGS.glob("*.yaml"))
    # get_config looks names up by file name, list_configs shows the names inside.
    assert [c.name for c in list_configs()] == stems(CONFIGS)
    config = get_config("msop_small")
    assert Path(str(config.source)).resolve() == (CONFIGS / "msop_small.yaml").resolve()


def test_layouts_load_by_shipped_name() -> None:
    assert shipped_layouts() == stems(LAYOUTS)
    assert SHIPPED_LAYOUTS.joinpath("os2-occitanie.yaml").is_file()
    for name in shipped_layouts():
        by_name = load_layout(name)
        by_path = load_layout(ROOT / "acquisition_layouts" / f"{name}.yaml")
        assert by_name.name == name
        assert by_name.model_dump(exclude={"source"}) == by_path.model_dump(exclude={"source"})
        assert Path(str(by_name.source)).resolve() == (LAYOUTS / f"{name}.yaml").resolve()


@pytest.mark.parametrize("name", ["os2-nowhere", "sub/os2-occitanie", "OS2-OCCITANIE"])
def test_unknown_layout_name_lists_the_shipped_ones(name: str) -> None:
    with pytest.raises(LayoutError, match=r"nor a shipped layout.*os2-occitanie") as info:
        load_layout(name)
    assert info.value.path == name


def test_dependencies_a_backend_jax_in_dev_no_otb() -> None:
    setup = ConfigParser()
    setup.read(ROOT / "setup.cfg")
    # A plain install must build the named models: Keras needs its default backend.
    core = setup["options"]["install_requires"].split()
    assert any(r.startswith("keras") for r in core)
    assert any(r.startswith("tensorflow") for r in core)
    extras = setup["options.extras_require"]
    assert "otb" not in extras  # pyotb needs OTB's bindings; OTBTF goes through otbcli
    assert any(line.strip().startswith("jax") for line in extras["dev"].splitlines())
    assert "dask-jobqueue" in extras["cluster"]
    assert not any(p.name == "pyotb" or "import pyotb" in p.read_text()
                   for p in (ROOT / "decloud").rglob("*.py"))


# ----------------------------------------------------------------- the wheel, slow


def run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=600, check=False, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built offline from a copy of the repository (the tree is shared)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=IGNORED)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", tmp / "dist", source])
    (built,) = (tmp / "dist").glob("decloud-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The wheel installed alone in a folder, and how to run its ``decloud`` command."""
    tmp = tmp_path_factory.mktemp("installed")
    target, elsewhere = tmp / "site", tmp / "elsewhere"
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--target", target, wheel])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3")
    return {"target": target, "script": target / "bin" / "decloud",
            "kwargs": {"cwd": elsewhere, "env": env}}


@pytest.mark.slow
def test_wheel_holds_the_package_and_its_data_only(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/", 1)[0] for n in names}
    # decloud-<version>-<tags>.whl: a platform wheel when decloud/_kernels.c was built.
    assert tops == {"decloud", "-".join(wheel.name.split("-")[:2]) + ".dist-info"}, tops
    shipped = {f"decloud/models/configs/{p.name}" for p in CONFIGS.glob("*.yaml")}
    shipped |= {f"decloud/layouts/shipped/{p.name}" for p in LAYOUTS.glob("*.yaml")}
    assert shipped <= names, shipped - names
    with zipfile.ZipFile(wheel) as zf:
        for name in shipped:
            assert zf.read(name) == (ROOT / name).read_bytes(), name
    # Every module of the source tree (a folder without __init__.py would be missing).
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "decloud").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= names, sources - names
    data = [n for n in names if n.endswith((".tif", ".zip", ".npz", ".jp2", ".nc", ".keras"))]
    assert not data and not [n for n in names if "README" in n], data
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any("tensorflow-cpu" in r and "extra ==" not in r for r in requires)
    assert not any("pyotb" in r for r in requires) and "Provides-Extra: otb" not in metadata


@pytest.mark.slow
def test_installed_wheel_runs_the_named_models_and_layouts(installed: dict[str, object]) -> None:
    target, script = Path(str(installed["target"])), installed["script"]
    kwargs = installed["kwargs"]
    assert isinstance(kwargs, dict)
    where = run([sys.executable, "-c", "import decloud; print(decloud.__file__)"], **kwargs)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout

    listed = json.loads(run([script, "models", "list", "--json"], **kwargs).stdout)
    assert [row["name"] for row in listed] == stems(CONFIGS)

    shown = run([script, "layout", "show", "os2-occitanie"], **kwargs).stdout
    assert "dataset keys: s2_tm1, s2_20m_tm1" in shown and "dem" in shown

    spec = json.loads(run([script, "models", "show", "msop_small", "--json"], **kwargs).stdout)
    assert spec["name"] == "msop_small"

    # decloud train finds the named model and gets as far as the (missing) dataset.
    cwd = Path(str(kwargs["cwd"]))
    done = subprocess.run([str(script), "train", "--model", "msop_small", "--dataset",
                           str(cwd / "no_dataset"), "--out", str(cwd / "run")],
                          capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "DatasetError" in done.stderr and "no_dataset" in done.stderr, done.stderr[-2000:]
