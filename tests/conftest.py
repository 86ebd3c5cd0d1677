"""Shared fixtures: the real-data sample archive in tests/data and copies to damage."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ARCHIVE = DATA / "archive"
THEIA = ARCHIVE / "S2" / "T33TVM" / "SENTINEL2A_20150909-100017-000_L2A_T33TVM_D_V1-8"
THEIA_CLEAR = ARCHIVE / "S2" / "T33TVM" / "SENTINEL2A_20150711-100008-000_L2A_T33TVM_D_V1-8"
SAFE_PB0400 = (ARCHIVE / "S2" / "T29UPU"
               / "S2A_MSIL2A_20170617T113321_N0400_R080_T29UPU_20170617T140000.SAFE")
SAFE_PB0205 = (ARCHIVE / "S2" / "T33UUP"
               / "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T140000.SAFE")
S1_VV = ARCHIVE / "S1" / "T29UPU" / "s1a_29UPU_vv_DES_023_20170617t064724.tif"
S1_VH = ARCHIVE / "S1" / "T29UPU" / "s1a_29UPU_vh_DES_023_20170617t064724.tif"
S1_STACK = ARCHIVE / "S1" / "T33UUP" / "s1a_33UUP_vvvh_ASC_146_20170613t165043.tif"
DEM = ARCHIVE / "DEM" / "T33TVM.tif"


@pytest.fixture
def archive_copy(tmp_path: Path) -> Path:
    """A private copy of the sample archive, free to damage."""
    dst = tmp_path / "archive"
    shutil.copytree(ARCHIVE, dst)
    return dst


def leftovers(folder: Path) -> list[Path]:
    """Every file under folder (to check that a failed job left nothing)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def file_identity(path: Path) -> tuple[int, int, str]:
    """Device, inode and SHA-256 of a file: equal before and after means not rewritten.

    Atomic writes replace a file by a new inode; an in-place rewrite keeps the inode but
    would change the bytes. Modification times are not used: their resolution (up to
    seconds on some file systems) lets a rewrite go unseen.
    """
    stat = path.stat()
    return stat.st_dev, stat.st_ino, hashlib.sha256(path.read_bytes()).hexdigest()
