"""The catalog on shared filesystems: journal mode from the mount table, read-only opens."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from decloud.errors import CatalogError
from decloud.index import catalog as catalog_module
from decloud.index.catalog import (
    Catalog,
    Mount,
    choose_journal_mode,
    filesystem_type,
    parse_mountinfo,
)
from tests.index.conftest import GRID, PATCHES, T0

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
61 27 0:52 / /work rw,relatime shared:30 master:2 - nfs4 fs01:/export/work rw,vers=4.2
62 61 0:53 / /work/local rw,relatime - ext4 /dev/nvme0n1 rw
63 27 0:54 / /workshop rw,relatime - xfs /dev/sdb1 rw
64 27 0:55 / /lustre/scratch rw - lustre 10.0.0.1@o2ib:/scratch rw,flock
65 27 0:56 /home/me /mnt/my\040laptop rw,nosuid - fuse.sshfs me@laptop:/home/me rw
66 27 0:57 / /gpfs rw - gpfs gpfs0 rw
67 27 0:58 / /work/local rw - tmpfs tmpfs rw
broken line without separator
"""


def test_mountinfo_lines_are_parsed() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 9  # the broken line is skipped
    assert mounts[2] == Mount("/work", "nfs4", "fs01:/export/work")  # optional fields
    assert mounts[6] == Mount("/mnt/my laptop", "fuse.sshfs", "me@laptop:/home/me")


@pytest.mark.parametrize(("path", "fstype"), [
    ("/work/catalog", "nfs4"), ("/work", "nfs4"),
    ("/work/local/cat", "tmpfs"),  # the last mount on a mount point hides the earlier
    ("/workshop/cat", "xfs"),  # a name that starts like /work is not under it
    ("/lustre/scratch/a/b", "lustre"), ("/mnt/my laptop/cat", "fuse.sshfs"),
    ("/gpfs/x", "gpfs"), ("/var/cat", "ext4"),
])
def test_the_longest_mount_point_gives_the_type(path: str, fstype: str) -> None:
    assert filesystem_type(path, MOUNTINFO) == fstype


@pytest.mark.parametrize(("path", "requested", "mode"), [
    ("/work/cat", "auto", "delete"), ("/lustre/scratch/cat", "auto", "delete"),
    ("/mnt/my laptop/cat", "auto", "delete"), ("/gpfs/cat", "auto", "delete"),
    ("/work/local/cat", "auto", "wal"), ("/var/cat", "auto", "wal"),
    ("/work/cat", "wal", "wal"), ("/var/cat", "delete", "delete"),
])
def test_the_journal_mode_follows_the_filesystem(path: str, requested: str, mode: str) -> None:
    chosen, reason = choose_journal_mode(path, requested, MOUNTINFO)  # type: ignore[arg-type]
    assert chosen == mode
    assert ("shared filesystem" in reason) == (requested == "auto" and mode == "delete")


def test_an_unknown_journal_mode_is_refused() -> None:
    with pytest.raises(CatalogError, match="auto, wal or delete") as caught:
        choose_journal_mode("/var/cat", "truncate", MOUNTINFO)  # type: ignore[arg-type]
    assert caught.value.field == "journal_mode"


def _fake_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str) -> Path:
    """Declare ``tmp_path/shared`` a mount of ``fstype`` in the table the catalog reads."""
    shared = (tmp_path / "shared").resolve()
    table = tmp_path / "mountinfo"
    table.write_text("27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                     f"61 27 0:52 / {shared} rw - {fstype} server:/export rw\n")
    monkeypatch.setattr(catalog_module, "_MOUNTINFO", table)
    return shared


def _add_one(catalog: Catalog, i: int = 0) -> int:
    nodata = np.zeros(PATCHES.shape, np.uint8)
    return catalog.insert_record(
        sensor="S2", kind="test", path=f"/archive/p{i}", files=[f"/archive/p{i}"],
        tile="T31TEJ", acquired=T0, platform="S2A", pass_direction=None, relative_orbit=None,
        mask_origin=None, arrays={"nodata": nodata, "cloud": nodata}, grid=GRID)


def test_a_catalog_on_nfs_uses_a_rollback_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    shared = _fake_mounts(tmp_path, monkeypatch, "nfs4")
    with caplog.at_level(logging.INFO, logger="decloud.index.catalog"), \
            Catalog.create(shared / "cat", patch_size=64) as catalog:
        assert catalog.journal_mode == "delete"
        assert "shared filesystem (nfs4)" in catalog.journal_reason
        _add_one(catalog)
        assert not (shared / "cat" / "catalog.sqlite-wal").exists()
    assert "journal mode delete" in caplog.text and "nfs4" in caplog.text
    # What SQLite records in the file: a reader elsewhere sees the same mode.
    with sqlite3.connect(shared / "cat" / "catalog.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    # The explicit option wins.
    with Catalog.open(shared / "cat", journal_mode="wal") as catalog:
        assert catalog.journal_mode == "wal"


def test_a_local_catalog_keeps_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _fake_mounts(tmp_path, monkeypatch, "xfs")
    with Catalog.create(shared / "cat") as catalog:
        assert catalog.journal_mode == "wal"
    with Catalog.open(shared / "cat", journal_mode="delete") as catalog:
        assert catalog.journal_mode == "delete"


@pytest.mark.parametrize("fstype", ["nfs4", "ext4"])
def test_a_read_only_catalog_reads_and_refuses_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str) -> None:
    shared = _fake_mounts(tmp_path, monkeypatch, fstype)
    with Catalog.create(shared / "cat") as writer:
        pid = _add_one(writer)
        # A reader opened while the writer is open sees what it committed.
        with Catalog.open(shared / "cat", read_only=True) as reader:
            assert reader.read_only and [r.id for r in reader.records()] == [pid]
            assert reader.search() == [pid]
            assert reader.stats([pid], "cloud").shape == (1, *PATCHES.shape)
            for write in (lambda: _add_one(reader, 1),
                          lambda: reader.register_tile("T31TEK", GRID),
                          reader.rebuild_rtree):
                with pytest.raises(CatalogError, match="opened read-only") as caught:
                    write()
                assert caught.value.field == "read_only"
                assert caught.value.path == str(shared / "cat")
            # SQLite itself refuses: the connection is mode=ro, not only decloud's check.
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader._db.execute("DELETE FROM products")
        assert writer.count() == 1


def test_a_read_only_open_does_not_rebuild_the_rtree(tmp_path: Path) -> None:
    with Catalog.create(tmp_path / "cat") as catalog:
        _add_one(catalog)
    for suffix in (".idx", ".dat"):
        (tmp_path / "cat" / f"rtree{suffix}").unlink()
    with pytest.raises(CatalogError, match="cannot rebuild it") as caught:
        Catalog.open(tmp_path / "cat", read_only=True)
    assert caught.value.field == "rtree"
    with Catalog.open(tmp_path / "cat") as catalog:  # a writable open repairs it
        assert len(catalog.search()) == 1


def test_the_cli_option_sets_the_journal(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from decloud.cli.main import cli

    (tmp_path / "archive" / "S2").mkdir(parents=True)
    Catalog.create(tmp_path / "cat").close()
    result = CliRunner().invoke(cli, ["index", "add", "--archive", str(tmp_path / "archive"),
                                      "--catalog", str(tmp_path / "cat"),
                                      "--journal-mode", "delete"])
    assert result.exit_code == 0, result.output
    assert "catalog journal: delete (delete asked for)" in result.output
    with sqlite3.connect(tmp_path / "cat" / "catalog.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_journal_mode_sqlite_cannot_switch_is_refused(tmp_path: Path) -> None:
    with Catalog.create(tmp_path / "cat", journal_mode="wal"):
        pass
    path = tmp_path / "cat" / "catalog.sqlite"
    other = sqlite3.connect(path)  # another process holding the database open
    try:
        other.execute("SELECT count(*) FROM sqlite_master").fetchone()
        with pytest.raises(CatalogError, match=r"kept journal mode .* instead of delete") \
                as caught:
            Catalog.open(tmp_path / "cat", journal_mode="delete")
        assert caught.value.path == str(path)
        assert caught.value.field == "journal_mode"
    finally:
        other.close()
    with Catalog.open(tmp_path / "cat", journal_mode="delete") as catalog:
        assert catalog.journal_mode == "delete"
