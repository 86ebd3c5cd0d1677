"""The docker images (docker/): Dockerfiles checked statically, the GPU image's JAX path.

No test needs Docker: the build test runs only where a daemon answers and is skipped,
with the reason, elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IMAGES = ("cpu", "gpu", "otbtf")


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_images(path: Path) -> list[str]:
    """The FROM images, ``${ARG}`` replaced by the ARG's default."""
    args: dict[str, str] = {}
    images = []
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        elif word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image))
    return images


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned_by_tag(image: str) -> None:
    bases = base_images(DOCKER / image / "Dockerfile")
    assert bases
    for base in bases:
        name, _, tag = base.rpartition(":")
        assert name and "/" not in tag, f"{base} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{base} is not pinned"


@pytest.mark.parametrize("image", IMAGES)
def test_package_is_installed_non_editable(image: str) -> None:
    runs = [rest for word, rest in instructions(DOCKER / image / "Dockerfile") if word == "RUN"]
    installs = [r for r in runs if re.search(r"\bpip install\b", r)]
    assert installs, "no pip install"
    for run in installs:
        words = shlex.split(run)
        assert "-e" not in words and "--editable" not in words
    # The repository itself (".") is what gets installed.
    assert any("." in shlex.split(r) for r in installs)


@pytest.mark.parametrize("image", IMAGES)
def test_copied_files_exist_and_entrypoint_is_decloud(image: str) -> None:
    steps = instructions(DOCKER / image / "Dockerfile")
    copies = [shlex.split(rest) for word, rest in steps if word == "COPY"]
    local = [c for c in copies if not any(w.startswith("--from") for w in c)]
    assert local
    for words in local:
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # The package build needs these, and the package data lies inside decloud/.
    copied = {s for words in local for s in words[:-1]}
    assert {"setup.cfg", "setup.py", "pyproject.toml", "decloud"} <= copied
    # .dockerignore keeps the context small (no .venv) and lets each of them in, but
    # no host-built extension (the image builds its own).
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1:].count("!decloud") == 1
    assert all(f"!{source.rstrip('/')}" in ignore for source in copied)
    assert "**/*.so" in ignore[ignore.index("!decloud") + 1:]
    assert any((ROOT / "decloud" / "models" / "configs").glob("*.yaml"))
    entrypoints = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoints[-1] == ["decloud"]


@pytest.mark.parametrize("image", ["cpu", "gpu"])
def test_the_compiled_loops_are_built_in_the_image(image: str) -> None:
    runs = [rest for word, rest in instructions(DOCKER / image / "Dockerfile") if word == "RUN"]
    install = next(r for r in runs if re.search(r"\bpip install\b", r))
    # A compiler for setup.py's optional extension, and a build that fails without it.
    assert install.index("install -y --no-install-recommends gcc") < install.index("pip install")
    assert install.index("pip install") < install.index('import decloud._kernels')


def test_image_specifics() -> None:
    gpu = instructions(DOCKER / "gpu" / "Dockerfile")
    assert ("ENV", "KERAS_BACKEND=jax") in gpu
    assert any("jax[cuda12]" in rest for word, rest in gpu if word == "RUN")
    otbtf = base_images(DOCKER / "otbtf" / "Dockerfile")
    assert otbtf[-1].startswith("mdl4eo/otbtf:") and otbtf[-1].endswith("-cpu")


def test_readmes_say_how_to_build_and_run_a_series() -> None:
    index = (DOCKER / "README.md").read_text()
    for image in IMAGES:
        text = (DOCKER / image / "README.md").read_text()
        assert f"docker build -f docker/{image}/Dockerfile" in text
        assert "process series" in text and "-v " in text
        assert f"({image}/README.md)" in index
    assert "--gpus all" in (DOCKER / "gpu" / "README.md").read_text()
    otbtf = (DOCKER / "otbtf" / "README.md").read_text()
    assert "--engine otbtf" in otbtf and "engine: otbtf" in otbtf


def test_job_file_sets_the_engine(tmp_path: Path) -> None:
    """``engine: otbtf`` in a job file, as the OTBTF image's README says, is accepted."""
    from click.testing import CliRunner

    from decloud.cli.main import cli

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"engine": "otbtf", "method": "gapfill"}))
    result = CliRunner().invoke(cli, ["process", "series", "--job", str(job), "--tile", "T1",
                                      "--start", "2023-04-01", "--end", "2023-04-02",
                                      "--archive", str(tmp_path), "--out", str(tmp_path / "o")])
    # The job's engine reached the command: gap-filling is refused with it.
    assert result.exit_code == 2 and "gapfill has no model" in result.output


BLOCK_TF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("tensorflow is blocked")
sys.meta_path.insert(0, Block())
from decloud.cli.main import cli
cli(sys.argv[1:])
"""


@pytest.mark.slow
def test_gpu_image_path_runs_without_tensorflow(tmp_path: Path) -> None:
    """The GPU image's setting (KERAS_BACKEND=jax): a model runs with TensorFlow blocked."""
    pytest.importorskip("jax")
    from decloud.models.registry import get_config
    from tests.conftest import ARCHIVE

    config = get_config("ssop_unet").model_dump(mode="json", exclude={"source"})
    config["name"] = "tiny_ssop"
    config["network"].update(widths=[4, 8, 8], dem=False)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "x.tif"
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TF, "process", "single-date", "--archive", str(ARCHIVE),
         "--tile", "T29UPU", "--date", "2017-06-17", "--model", str(tmp_path / "tiny.yaml"),
         "--allow-untrained", "--out", str(out), "--block-size", "64"],
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["blocks"]["total"] == 4


def _daemon() -> str | None:
    """Why no image can be built here, or None when a Docker daemon answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        return f"no Docker daemon reachable ({done.stderr.strip().splitlines()[-1:]})"
    return None


@pytest.mark.slow
def test_cpu_image_builds_and_runs(tmp_path: Path) -> None:
    reason = _daemon()
    if reason is not None:
        pytest.skip(reason)
    tag = "decloud-test:cpu"
    subprocess.run(["docker", "build", "-f", str(DOCKER / "cpu" / "Dockerfile"), "-t", tag,
                    str(ROOT)], check=True, timeout=3600)
    done = subprocess.run(["docker", "run", "--rm", tag, "models", "list"],
                          capture_output=True, text=True, check=True, timeout=600)
    assert "msop_small" in done.stdout
