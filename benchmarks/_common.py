"""Helpers shared by the benchmarks: machine facts, versions, git commit, result files.

Every benchmark writes ``benchmarks/results/<name>.json`` (the numbers, for tools) and
``benchmarks/results/<name>.md`` (the same numbers, for people) through
:func:`write_results`, which replaces both files atomically so that an interrupted run
never leaves a half-written result behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "git_commit",
    "load_average",
    "log",
    "machine_info",
    "median",
    "now_utc",
    "package_versions",
    "source_digest",
    "write_results",
]

#: The repository root (the parent of ``benchmarks/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where result files go.
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def _cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    """Total physical memory in bytes from ``/proc/meminfo``, None when unavailable."""
    try:
        with Path("/proc/meminfo").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the file counts in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Describe the machine a benchmark ran on.

    Returns:
        CPU model, logical core count, cores this process may use, RAM (GiB), OS and
        architecture.
    """
    ram = _ram_bytes()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "ram_gib": round(ram / 2**30, 1) if ram is not None else None,
        "os": platform.platform(),
        "machine": platform.machine(),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line describing a :func:`machine_info` result, for Markdown reports."""
    return (f"{machine['cpu_model']}, {machine['cpu_cores']} cores "
            f"({machine['cpu_cores_usable']} usable), {machine['ram_gib']} GiB RAM, "
            f"{machine['os']}")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, None where the OS does not say.

    Recorded before and after a run: a load well above zero means other processes
    competed for the CPU and the timings are pessimistic.
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str:
    """The short hash of ``HEAD``, or ``"uncommitted"`` when the repository has no commit.

    A working tree with local changes still reports ``HEAD``: the result describes the
    code as it was checked out plus whatever was being edited.
    """
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return out.stdout.strip() or "uncommitted"


def package_versions(packages: Sequence[str] = ("numpy", "rasterio", "decloud")) -> dict[str, str]:
    """Versions of Python, GDAL (as rasterio links it) and installed packages.

    Args:
        packages: Distribution names to look up; missing ones are reported as such.

    Returns:
        A name -> version mapping, ``python`` and ``gdal`` first.
    """
    versions = {"python": platform.python_version()}
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except ImportError:
        versions["gdal"] = "not installed"
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_digest(package: str = "decloud") -> str:
    """A short SHA-256 over the package's ``*.py`` files (relative path and content).

    Identifies the code measured when the working tree has no commit or local edits,
    which ``git rev-parse`` cannot tell apart.
    """
    root = REPO_ROOT / package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def now_utc() -> str:
    """The current UTC time as ISO 8601, to the second, with a ``Z`` suffix."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence of numbers."""
    return float(statistics.median(values))


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); results are for everyone to read.
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)  # os.replace: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(
    name: str, data: dict[str, Any], markdown: str, results_dir: Path = RESULTS_DIR
) -> tuple[Path, Path]:
    """Write a benchmark's results as ``<name>.json`` and ``<name>.md``, each atomically.

    Args:
        name: Base name of the result files, e.g. ``read_tile``.
        data: JSON-ready results.
        markdown: The human-readable report.
        results_dir: Target folder (created if needed).

    Returns:
        The JSON and Markdown paths.
    """
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    _atomic_write(json_path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    _atomic_write(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def log(message: str) -> None:
    """Print a progress line to stderr, flushed at once (benchmarks run for minutes)."""
    print(message, file=sys.stderr, flush=True)


def _ancestors() -> set[int]:
    """This process and its ancestors (a shell running us may name other benchmarks)."""
    pids = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command name
        except (OSError, ValueError, IndexError):
            break
        pids.add(pid)
    return pids


def others_running(names: Sequence[str]) -> list[str]:
    """``pid command`` of other running processes whose command line contains a name."""
    try:
        out = subprocess.run(["pgrep", "-af", "|".join(names)],
                             capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    mine = _ancestors()
    found = []
    for line in out.stdout.splitlines():
        pid, _, command = line.partition(" ")
        if pid.isdigit() and int(pid) not in mine:
            found.append(f"{pid} {command[:100]}")
    return found

