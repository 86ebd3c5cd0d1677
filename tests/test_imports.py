"""Light imports and clean layers.

Engine-side modules (the grid, readers, input reader, writers, key grammar) are imported
by every Dask worker and engine process: they must not pull in matplotlib, tqdm,
TensorFlow or Keras (seconds per process). Each check runs in a fresh interpreter, as
a worker would start. The layer test reads every module's imports (those under
``TYPE_CHECKING`` and inside functions too) and checks that no stage imports a later
one, as ``ROADMAP.md`` orders them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "decloud"

HEAVY = ("matplotlib", "tqdm", "tensorflow", "keras")


def _loaded(statement: str) -> list[str]:
    """Heavy packages loaded by running ``statement`` in a fresh interpreter."""
    code = (f"import sys\n{statement}\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=PACKAGE.parent)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", [
    "decloud", "decloud.grid", "decloud.products", "decloud.inputs", "decloud.writers",
    "decloud.keys", "decloud.masks", "decloud.archive", "decloud.env",
])
def test_engine_side_modules_are_light(module: str) -> None:
    assert _loaded(f"import {module}") == []


def test_the_issue_acceptance_line() -> None:
    subprocess.run([sys.executable, "-c", "import decloud.grid, sys; assert 'matplotlib' not in "
                    "sys.modules and 'tensorflow' not in sys.modules"], check=True,
                   cwd=PACKAGE.parent)


def test_the_package_loads_its_names_on_first_use() -> None:
    # Importing decloud loads none of its submodules; each name loads its own.
    code = ("import decloud; assert 'decloud.stack' not in sys.modules and "
            "'decloud.products' not in sys.modules; decloud.Grid; "
            "assert 'decloud.grid' in sys.modules and 'decloud.stack' not in sys.modules; "
            "from decloud import build_stack; assert 'decloud.stack' in sys.modules")
    _loaded(code)  # the asserts run in the subprocess (check=True)


def test_package_names_are_all_reachable() -> None:
    import decloud

    for name in decloud.__all__:
        assert getattr(decloud, name) is not None, name
    assert set(decloud.__all__) <= set(dir(decloud))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = decloud.nope  # type: ignore[attr-defined]


def test_the_cli_starts_without_the_backend() -> None:
    # Keras loads in the commands that need it, not when `decloud --help` starts.
    assert not {"tensorflow", "keras"} & set(_loaded("import decloud.cli.main"))


# Layers ---------------------------------------------------------------------------------

#: Stage of each top-level module or subpackage of decloud; a module may import its own
#: stage and earlier ones only.
LAYERS: dict[str, int] = {
    "_version": 0, "_lazy": 0, "_kernels": 0, "constants": 0, "errors": 0, "env": 0,
    "keys": 0, "s1": 0,
    "io": 1, "grid": 1, "windows": 1, "writers": 1, "quicklook": 1, "masks": 1,
    "products": 2, "archive": 2,
    "index": 3, "layouts": 3, "datasets": 3, "inputs": 3, "stack": 3,
    "models": 4,
    "evaluation": 5,
    "training": 6,
    "export": 7, "inference": 7, "stac": 7, "processors": 8, "distributed": 8,
    "benchmark": 8,
    "cli": 9,
}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str, int]]:
    """``(importing module, imported decloud module, line)`` for every decloud import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            # "from decloud import grid" imports decloud.grid: keep the deepest module.
            targets = {n for n in names if n.split(".")[0] == "decloud"}
            found += [(module, t, node.lineno) for t in targets if _stage(t) in LAYERS
                      or len(t.split(".")) == 1]
    return found


def test_every_module_has_a_stage() -> None:
    stages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    assert stages <= set(LAYERS), f"give these a stage in LAYERS: {stages - set(LAYERS)}"


def test_no_stage_imports_a_later_one() -> None:
    wrong = [f"{module} imports {target} (line {line})"
             for module, target, line in _imports()
             if _stage(module)  # the package's own lazy __init__ names every stage
             and _stage(target) and LAYERS[_stage(target)] > LAYERS[_stage(module)]]
    assert wrong == []


def test_masks_and_products_do_not_import_each_other_both_ways() -> None:
    pairs = {(_stage(m), _stage(t)) for m, t, _ in _imports()}
    assert ("masks", "products") not in pairs


def test_the_dataset_reader_loads_no_plotting_or_progress_bars() -> None:
    # Training workers import the reader: matplotlib (preview) and tqdm (writer) load
    # only with the modules that use them (decloud.datasets is lazy).
    loaded = set(_loaded("import decloud.datasets.reader"))
    assert not {"matplotlib", "tqdm", "keras"} & loaded
    assert "matplotlib" in _loaded("from decloud.datasets import preview")
