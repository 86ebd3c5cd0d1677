"""Copies of the real fixtures to break, one case at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SAFE_PB0400, THEIA_CLEAR


@pytest.fixture
def safe_copy(tmp_path: Path) -> Path:
    """A private copy of the PB 04.00 SAFE L2A fixture, in an S2 root of its own."""
    dst = tmp_path / "S2" / SAFE_PB0400.name
    shutil.copytree(SAFE_PB0400, dst)
    return dst


@pytest.fixture
def theia_copy(tmp_path: Path) -> Path:
    """A private copy of a THEIA fixture, in an S2 root of its own."""
    dst = tmp_path / "S2" / THEIA_CLEAR.name
    shutil.copytree(THEIA_CLEAR, dst)
    return dst


def edit_text(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace ``old`` by ``new`` in a text file (``count`` times, -1 for all); it must be there."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def truncate(path: Path, fraction: float = 0.5) -> None:
    """Cut a file to a fraction of its size, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
