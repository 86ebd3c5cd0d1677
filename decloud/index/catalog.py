"""The persistent catalog of products with their per-patch statistics, and its R-tree.

A catalog is a folder::

    catalog.sqlite     products, tiles and per-patch statistics (SQLite, WAL or DELETE)
    rtree.idx/.dat     R-tree of products over (longitude, latitude, time)
    .lock              serialises writers across processes

Paths: the catalog stores every product's path (and an S1 pair's files) absolute and
normalised (``os.path.abspath``: ``..`` and ``.`` removed, symbolic links kept as the
archive names them), whatever path the archive was given as, so that a catalog built
with ``--archive arch`` works from any working directory. A catalog of an earlier
decloud that stored a relative path is refused when it opens (:class:`CatalogError`
naming the path): rebuild it.

Full disk: an insert that fails for want of space (``ENOSPC``, SQLite's "database or
disk is full") rolls back and raises :class:`~decloud.errors.OutputWriteError` naming
the catalog and "no space left on device"; a rollback that fails too does not hide
that cause.

SQLite is the source of truth: every product is added in its own transaction, so an
interrupted ``add`` loses nothing already added and a rerun adds the rest. The R-tree
(package ``rtree``) is updated in the same locked section; if it ever disagrees with
SQLite (a crash between the two), it is rebuilt from SQLite when the catalog opens.
Writers hold an exclusive ``flock`` while writing, so two processes adding products at
once do not corrupt the catalog.

Shared filesystems: SQLite's WAL journal keeps its index in shared memory
(``catalog.sqlite-shm``), which processes on different nodes do not share: on NFS,
Lustre, GPFS, CIFS/SMB, BeeGFS, CephFS or a FUSE mount (sshfs...) WAL can corrupt the
catalog. ``journal_mode="auto"`` (the default of :meth:`Catalog.open` and
:meth:`Catalog.create`, and ``--journal-mode`` of ``decloud index``) reads the type of
the filesystem holding the catalog folder from ``/proc/self/mountinfo`` (the mount with
the longest matching mount point) and uses ``DELETE`` (a rollback journal, which needs
only the file locks these filesystems provide) there, WAL elsewhere; ``"wal"`` or
``"delete"`` force one. The mode and the reason are logged (``decloud.index.catalog``)
and kept in :attr:`Catalog.journal_mode` / :attr:`Catalog.journal_reason`. Processes
that only read (processors on Dask workers) open the catalog with ``read_only=True``:
an SQLite ``mode=ro`` connection, which never writes the database; a write through it
raises :class:`CatalogError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rtree
from rasterio.crs import CRS
from rtree.exceptions import RTreeError
from tqdm import tqdm

from decloud.archive import PRODUCT_FAULTS, Archive, fault_reason
from decloud.env import ensure_env, gdal_env
from decloud.errors import CatalogError, NoProductError, OutputWriteError, ProductError
from decloud.grid import Grid
from decloud.index.stats import STATS_RESOLUTION, PatchGrid, s1_patch_stats, s2_patch_stats
from decloud.products import Product, S1Product, S2Product, open_product

__all__ = ["SHARED_FILESYSTEMS", "AddReport", "Catalog", "CatalogError", "JournalMode", "Mount",
           "ProductRecord", "choose_journal_mode", "filesystem_type", "parse_mountinfo"]

_log = logging.getLogger(__name__)

#: The mount table :func:`filesystem_type` reads (Linux).
_MOUNTINFO = Path("/proc/self/mountinfo")

#: ``journal_mode`` of :meth:`Catalog.open`: chosen from the filesystem, or forced.
JournalMode = Literal["auto", "wal", "delete"]

#: Filesystem types on which SQLite's WAL is unsafe (no shared memory across nodes);
#: every ``fuse.*`` type (sshfs, glusterfs...) counts too.
SHARED_FILESYSTEMS: frozenset[str] = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph",
    "glusterfs", "afs", "panfs", "orangefs", "wekafs", "9p", "fuse", "fuseblk"})

SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    tile TEXT PRIMARY KEY, crs TEXT NOT NULL, transform TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE, files TEXT NOT NULL, tile TEXT NOT NULL,
    acquired REAL NOT NULL, platform TEXT NOT NULL, pass_direction TEXT,
    relative_orbit INTEGER, mask_origin TEXT,
    west REAL, south REAL, east REAL, north REAL);
CREATE INDEX IF NOT EXISTS products_tile ON products (tile, sensor, acquired);
CREATE TABLE IF NOT EXISTS patch_stats (
    product_id INTEGER PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    rows INTEGER NOT NULL, cols INTEGER NOT NULL,
    cloud BLOB, shadow BLOB, nodata BLOB NOT NULL);
"""


@dataclass(frozen=True)
class ProductRecord:
    """A product as the catalog knows it."""

    id: int
    sensor: str
    kind: str
    path: str
    files: tuple[str, ...]
    tile: str
    acquired: datetime
    platform: str
    pass_direction: str | None
    relative_orbit: int | None
    mask_origin: str | None

    @property
    def hours(self) -> float:
        """Acquisition time in hours since 1970 (what windows are compared in)."""
        return (self.acquired - _EPOCH).total_seconds() / 3600.0

    def open(self) -> Product:
        """Open the product again (to read pixels)."""
        if self.sensor == "S1":
            return S1Product.from_files([Path(f) for f in self.files])
        return open_product(self.path)


@dataclass
class AddReport:
    """What :meth:`Catalog.add` did."""

    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _tile(product: Product) -> str:
    """The product's tile; the catalog files statistics by tile, so one is required."""
    if product.tile is None:
        raise CatalogError("the product's tile is unknown: the catalog files products by tile",
                           path=product.path, field="tile")
    return product.tile


def _days(when: datetime) -> float:
    return (when - _EPOCH).total_seconds() / 86400.0


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``: where a filesystem is mounted, and its type."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text, in its order (see proc(5)).

    Lines it cannot read (no ``-`` separator) are skipped.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2])))
    return mounts


def filesystem_type(path: str | os.PathLike[str], mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (``ext4``, ``nfs4``...).

    Args:
        path: A file or folder (links are followed: the data's filesystem counts).
        mountinfo: A mountinfo text; ``/proc/self/mountinfo`` when None.

    Returns:
        The type of the mount with the longest mount point containing the path (the
        last mounted, if several share it), or None where mountinfo cannot be read
        (not Linux).
    """
    if mountinfo is None:
        try:
            mountinfo = _MOUNTINFO.read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return None if best is None else best.fstype


def choose_journal_mode(folder: str | os.PathLike[str], requested: JournalMode = "auto",
                        mountinfo: str | None = None) -> tuple[str, str]:
    """The SQLite journal mode of a catalog in ``folder`` and why (see the module doc).

    Args:
        folder: The catalog folder.
        requested: ``auto`` chooses from the filesystem; ``wal`` or ``delete`` force it.
        mountinfo: A mountinfo text (``/proc/self/mountinfo`` when None).

    Returns:
        ``("wal" or "delete", reason)``.

    Raises:
        CatalogError: ``requested`` is not auto, wal or delete.
    """
    if requested not in ("auto", "wal", "delete"):
        raise CatalogError(f"journal mode must be auto, wal or delete, not {requested!r}",
                           path=folder, field="journal_mode")
    if requested != "auto":
        return requested, f"{requested} asked for"
    fstype = filesystem_type(folder, mountinfo)
    if fstype is None:
        return "wal", "filesystem type unknown (no /proc/self/mountinfo): WAL"
    if fstype in SHARED_FILESYSTEMS or fstype.startswith("fuse."):
        return "delete", (f"the catalog is on a shared filesystem ({fstype}), where SQLite's "
                          "WAL is unsafe: rollback journal (DELETE)")
    return "wal", f"local filesystem ({fstype}): WAL"


class Catalog:
    """A catalog folder. Use :meth:`create` or :meth:`open`.

    Attributes:
        journal_mode: SQLite's journal mode in use (``wal``, ``delete``...).
        journal_reason: Why it was chosen.
        read_only: The catalog was opened read-only (``mode=ro``): it cannot be written.
    """

    def __init__(self, folder: Path, *, journal_mode: JournalMode = "auto",
                 read_only: bool = False) -> None:
        self.folder = Path(folder)
        self.read_only = read_only
        path = self.folder / "catalog.sqlite"
        if read_only:
            # mode=ro: SQLite itself refuses to write, whatever the caller does.
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=120, isolation_level=None)
            self.journal_reason = "read-only connection (mode=ro): the file's mode"
        else:
            self._db = sqlite3.connect(path, timeout=120, isolation_level=None)
            mode, self.journal_reason = choose_journal_mode(self.folder, journal_mode)
            # SQLite keeps WAL while another connection holds the database (it either
            # says "locked" or answers the old mode): on NFS that is the unsafe case the
            # rollback journal exists for, so it is refused, never just logged.
            try:
                self._db.execute(f"PRAGMA journal_mode={mode.upper()}")
                got = str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            except sqlite3.OperationalError as err:
                got = f"unchanged ({err})"
            if got != mode:
                self._db.close()
                raise CatalogError(
                    f"SQLite kept journal mode {got} instead of {mode} ({self.journal_reason})"
                    ": another process has the catalog open; close it and retry",
                    path=path, field="journal_mode")
        self.journal_mode = str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        _log.info("catalog %s: journal mode %s (%s)", self.folder, self.journal_mode,
                  self.journal_reason)
        self._db.execute("PRAGMA foreign_keys=ON")
        self.patch_size = int(self._meta("patch_size") or 64)

    def _writable(self, what: str) -> None:
        """Refuse a write to a catalog opened read-only."""
        if self.read_only:
            raise CatalogError(f"the catalog was opened read-only: {what} needs it opened "
                               "for writing (Catalog.open(..., read_only=False))",
                               path=self.folder, field="read_only")

    # Creation and opening ---------------------------------------------------------

    @classmethod
    def create(cls, folder: str | Path, *, patch_size: int = 64,
               journal_mode: JournalMode = "auto") -> Catalog:
        """Create an empty catalog (the folder may exist but must hold no catalog).

        ``journal_mode``: see :func:`choose_journal_mode` (the module doc).

        Raises:
            CatalogError: A catalog exists already, or the patch size is invalid.
            OutputWriteError: The database cannot be written (full disk...): no
                half-made catalog is left.
        """
        folder = Path(folder)
        if (folder / "catalog.sqlite").exists():
            raise CatalogError("a catalog exists already here (use `decloud index add`)",
                               path=folder)
        if patch_size <= 0 or patch_size % 2:
            raise CatalogError(f"patch size must be a positive even number, not {patch_size}",
                               path=folder, field="patch_size")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "catalog.sqlite"
        try:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                db.executescript(_SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("patch_size", str(patch_size)),
                    ("stats_resolution", str(STATS_RESOLUTION)),
                    ("created", datetime.now(UTC).isoformat(timespec="seconds"))])
            finally:
                db.close()
        except (sqlite3.Error, OSError) as err:
            # A catalog without its meta rows would be refused later: leave none.
            for suffix in ("", "-wal", "-shm", "-journal"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            cause = "no space left on device" if _disk_full(err) else "writing failed"
            raise OutputWriteError(f"the catalog could not be created, nothing was left: "
                                   f"{cause} ({err})", path=path) from err
        return cls.open(folder, journal_mode=journal_mode)

    @classmethod
    def open(cls, folder: str | Path, *, journal_mode: JournalMode = "auto",
             read_only: bool = False) -> Catalog:
        """Open a catalog, rebuilding its R-tree if it disagrees with SQLite.

        Args:
            folder: The catalog folder.
            journal_mode: ``auto`` (DELETE on a shared filesystem, else WAL), ``wal``
                or ``delete`` (see the module doc); not used with ``read_only``.
            read_only: Open an SQLite ``mode=ro`` connection (workers that only read):
                every write raises :class:`CatalogError`.

        Raises:
            CatalogError: No catalog, another schema, relative paths, or (read-only)
                an R-tree that needs rebuilding.
        """
        folder = Path(folder)
        if not (folder / "catalog.sqlite").is_file():
            raise CatalogError("no catalog here (create one with `decloud index build`)",
                               path=folder)
        catalog = cls(folder, journal_mode=journal_mode, read_only=read_only)
        version = catalog._meta("schema_version")
        if version != str(SCHEMA_VERSION):
            raise CatalogError(f"catalog schema {version}, this decloud reads "
                               f"{SCHEMA_VERSION}", path=folder, field="schema_version")
        relative = catalog._db.execute(
            "SELECT path FROM products WHERE path NOT LIKE '/%' LIMIT 1").fetchone()
        if relative is not None:
            catalog.close()
            raise CatalogError(
                f"the catalog stores product paths relative to the folder it was built "
                f"from (e.g. {relative[0]!r}; made by an earlier decloud), which cannot "
                "be known from here: rebuild it with `decloud index build`", path=folder,
                field="path")
        with catalog._lock(exclusive=False):
            consistent = catalog._rtree_count() == catalog.count()
        if not consistent:
            if read_only:
                catalog.close()
                raise CatalogError("the R-tree disagrees with the database (an interrupted "
                                   "add) and a read-only catalog cannot rebuild it: run "
                                   "`decloud index add` or open it for writing once",
                                   path=folder, field="rtree")
            with catalog._lock(exclusive=True):
                catalog.rebuild_rtree()
        return catalog

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        with contextlib.suppress(sqlite3.OperationalError):
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None
        return None

    # Locking and the R-tree ------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        lock = self.folder / ".lock"
        if self.read_only and not lock.exists():
            yield  # a read-only folder: no writer can be at work in it
            return
        with lock.open("r" if self.read_only else "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _rtree(self) -> rtree.index.Index:
        props = rtree.index.Property()
        props.dimension = 3
        return rtree.index.Index(str(self.folder / "rtree"), properties=props)

    def _rtree_count(self) -> int:
        if not (self.folder / "rtree.idx").exists():
            return -1 if self.count() else 0
        index = self._rtree()
        try:
            return int(index.count(index.bounds)) if len(index) else 0
        finally:
            index.close()

    def rebuild_rtree(self) -> None:
        """Rebuild the R-tree from SQLite (bulk-loaded)."""
        self._writable("rebuilding the R-tree")
        for suffix in (".idx", ".dat"):
            (self.folder / f"rtree{suffix}").unlink(missing_ok=True)
        rows = self._db.execute(
            "SELECT id, west, south, acquired, east, north FROM products").fetchall()
        props = rtree.index.Property()
        props.dimension = 3
        entries = ((pid, (w, s, t / 86400.0, e, n, t / 86400.0), None)
                   for pid, w, s, t, e, n in rows)
        if rows:
            index = rtree.index.Index(str(self.folder / "rtree"), entries, properties=props)
        else:
            index = rtree.index.Index(str(self.folder / "rtree"), properties=props)
        index.close()

    # Adding products -------------------------------------------------------------

    def known_paths(self) -> set[str]:
        """Paths of the products already in the catalog."""
        return {row[0] for row in self._db.execute("SELECT path FROM products")}

    def tile_grid(self, tile: str) -> Grid | None:
        """The 10 m grid registered for a tile."""
        row = self._db.execute("SELECT crs, transform, width, height FROM tiles WHERE tile = ?",
                               (tile,)).fetchone()
        if row is None:
            return None
        from affine import Affine

        return Grid(CRS.from_user_input(row[0]), Affine(*json.loads(row[1])), row[2], row[3])

    def _register_tile(self, tile: str, product: Product) -> Grid:
        grid = self.tile_grid(tile)
        if grid is None:
            native = product.grid()
            self.register_tile(tile, native if native.resolution == 10.0
                               else native.at_resolution(10.0))
            # Read back: another process may have registered the tile first (INSERT OR
            # IGNORE), and its grid is the one statistics must be on.
            grid = self.tile_grid(tile)
            if grid is None:
                raise CatalogError(f"tile {tile} could not be registered", path=self.folder,
                                   field="tiles")
        return grid

    @ensure_env
    def add(self, archive: Archive, *, workers: int = 1, progress: bool = False) -> AddReport:
        """Compute statistics of the archive's products not yet in the catalog, and add them.

        Each product is committed on its own: an interruption keeps what was added.
        Products that cannot be read are reported in :attr:`AddReport.failed`, and so
        are the archive's entries its scan could not open (an unreadable S1 file, a
        truncated band): nothing is dropped without being counted.

        Raises:
            OutputWriteError: The catalog cannot be written (full disk): the products
                added before are kept, the one being added is rolled back.
        """
        self._writable("adding products")
        report = AddReport()
        for problem in archive.problems:
            report.failed[str(problem.path)] = problem.reason
        known = self.known_paths()
        products: list[Product] = [*archive.s2, *archive.s1]
        todo: list[Product] = []
        for product in products:
            if _key(product) in known:
                report.skipped.append(_key(product))
            elif product.tile is None:
                report.failed[_key(product)] = "tile unknown"
            else:
                todo.append(product)
        # S2 first: they register the tile grids that S1 statistics are computed on.
        todo.sort(key=lambda p: (p.sensor != "S2", p.tile or "", p.acquired))
        for product in todo:
            if product.sensor == "S2" and product.tile and self.tile_grid(product.tile) is None:
                self._register_tile(product.tile, product)

        def stats(product: Product, grid: Grid) -> dict[str, np.ndarray]:
            patches = PatchGrid(grid, self.patch_size)
            # GDAL configuration is per thread: each worker gets decloud's.
            with gdal_env():
                if isinstance(product, S2Product):
                    return s2_patch_stats(product, patches)
                if isinstance(product, S1Product):
                    return s1_patch_stats(product, patches)
                raise ProductError(f"{product.sensor} products have no patch statistics",
                                   path=product.path, field="sensor")

        # Grids are looked up here: the SQLite connection stays in this thread.
        grids = {p.tile: self.tile_grid(p.tile) for p in todo if p.tile is not None}
        jobs = []
        for product in todo:
            grid = (grids.get(product.tile) if product.tile else None) or product.grid()
            jobs.append((product, grid if grid.resolution == 10.0 else grid.at_resolution(10.0)))
        bar = tqdm(total=len(jobs), desc="index", unit="product",
                   disable=None if progress else True)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(stats, p, g): (p, g) for p, g in jobs}
            for future in as_completed(futures):
                product, grid = futures[future]
                bar.update()
                try:
                    self._insert(product, future.result(), grid)
                    report.added.append(_key(product))
                except OutputWriteError as err:
                    # The catalog cannot be written (full disk): not this product's
                    # fault, and every other would fail alike. Stop, say what is kept.
                    pool.shutdown(wait=True, cancel_futures=True)
                    bar.close()
                    raise OutputWriteError(
                        f"{err.message}; the {len(report.added)} product(s) added before "
                        "are kept: free some space and run `decloud index add`",
                        path=err.path, field=err.field) from err
                except PRODUCT_FAULTS as err:
                    report.failed[_key(product)] = fault_reason(_key(product), err)
        bar.close()
        return report

    def add_stats(self, product: Product, arrays: dict[str, np.ndarray]) -> int:
        """Add a product with statistics computed elsewhere; returns its id.

        Raises:
            CatalogError: The product's tile is unknown (statistics are per tile).
        """
        return self._insert(product, arrays, self._register_tile(_tile(product), product))

    def _insert(self, product: Product, arrays: dict[str, np.ndarray], grid: Grid) -> int:
        files = [_absolute(f) for f in product.files] if isinstance(product, S1Product) \
            else [_key(product)]
        return self.insert_record(
            sensor=product.sensor, kind=product.kind, path=_key(product), files=files,
            tile=_tile(product), acquired=product.acquired, platform=product.platform,
            pass_direction=product.pass_direction, relative_orbit=product.relative_orbit,
            mask_origin=product.mask_origin if isinstance(product, S2Product) else None,
            arrays=arrays, grid=grid)

    def register_tile(self, tile: str, grid: Grid) -> None:
        """Record a tile's 10 m grid (statistics of its products are on it)."""
        self._writable("registering a tile")
        with self._lock(exclusive=True):
            self._db.execute("INSERT OR IGNORE INTO tiles VALUES (?, ?, ?, ?, ?)", (
                tile, grid.crs.to_wkt(), json.dumps(list(grid.transform)[:6]), grid.width,
                grid.height))

    def insert_record(
        self, *, sensor: str, kind: str, path: str, files: Sequence[str], tile: str,
        acquired: datetime, platform: str, pass_direction: str | None,
        relative_orbit: int | None, mask_origin: str | None, arrays: dict[str, np.ndarray],
        grid: Grid,
    ) -> int:
        """Add one product and its statistics in one transaction; returns its id.

        A product already present (same path, e.g. added by another process meanwhile)
        is left as it is and its id returned. ``path`` and ``files`` are stored absolute
        (see the module docstring).

        Raises:
            OutputWriteError: The disk is full (nothing of the product is kept).
        """
        self._writable("adding a product")
        path = _absolute(path)
        files = [_absolute(f) for f in files]
        west, south, east, north = _lonlat_bounds(grid)
        nodata = arrays["nodata"]
        with self._lock(exclusive=True):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO products (sensor, kind, path, files, tile, acquired, "
                    "platform, pass_direction, relative_orbit, mask_origin, west, south, east, "
                    "north) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sensor, kind, path, json.dumps(list(files)), tile,
                     (acquired - _EPOCH).total_seconds(), platform, pass_direction,
                     relative_orbit, mask_origin, west, south, east, north))
                if cursor.rowcount == 0:
                    self._db.execute("ROLLBACK")
                    row = self._db.execute("SELECT id FROM products WHERE path = ?",
                                           (path,)).fetchone()
                    return int(row[0])
                pid = int(cursor.lastrowid or 0)
                self._db.execute(
                    "INSERT INTO patch_stats VALUES (?, ?, ?, ?, ?, ?)",
                    (pid, nodata.shape[0], nodata.shape[1],
                     _blob(arrays.get("cloud")), _blob(arrays.get("shadow")), _blob(nodata)))
                self._db.execute("COMMIT")
            except BaseException as err:
                self._rollback(err)
                if _disk_full(err):
                    raise OutputWriteError(
                        f"adding {path} failed, none of it was kept: no space left on "
                        f"device ({err})", path=self.folder / "catalog.sqlite",
                        field="products") from err
                raise
            t = _days(acquired)
            try:
                index = self._rtree()
                try:
                    index.insert(pid, (west, south, t, east, north, t))
                finally:
                    index.close()
            except (OSError, RTreeError) as err:
                # SQLite holds the product: the R-tree is rebuilt from it at next open.
                raise OutputWriteError(
                    f"the R-tree could not be updated ({err}); the catalog holds {path} "
                    "and rebuilds its R-tree when it next opens", path=self.folder / "rtree.idx",
                    field="rtree") from err
        return pid

    def _rollback(self, cause: BaseException) -> None:
        """Roll back the open transaction; a rollback that fails must not hide ``cause``.

        SQLite may have rolled back already (a full disk ends the transaction), and the
        ``ROLLBACK`` then fails with "no transaction is active": that is not news.
        """
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as err:
            cause.add_note(f"(rollback: {err})")

    # Queries ---------------------------------------------------------------------

    def count(self, sensor: str | None = None) -> int:
        """Number of products (of a sensor)."""
        if sensor is None:
            return int(self._db.execute("SELECT COUNT(*) FROM products").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM products WHERE sensor = ?",
                                    (sensor,)).fetchone()[0])

    def tiles(self) -> list[str]:
        """Tiles with products."""
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT tile FROM products ORDER BY tile")]

    def records(self, tile: str | None = None, sensor: str | None = None,
                ids: Sequence[int] | None = None) -> list[ProductRecord]:
        """Products, by time, optionally of one tile and sensor or with given ids."""
        sql = ("SELECT id, sensor, kind, path, files, tile, acquired, platform, "
               "pass_direction, relative_orbit, mask_origin FROM products WHERE 1=1")
        args: list[Any] = []
        if tile is not None:
            sql += " AND tile = ?"
            args.append(tile)
        if sensor is not None:
            sql += " AND sensor = ?"
            args.append(sensor)
        if ids is not None:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        rows = self._db.execute(sql + " ORDER BY acquired, id", args).fetchall()
        return [ProductRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5],
                              datetime.fromtimestamp(r[6], UTC), r[7], r[8], r[9], r[10])
                for r in rows]

    def stats(self, product_ids: Sequence[int], key: str) -> np.ndarray:
        """Stacked statistics ``(len(ids), rows, cols)`` uint8 of one key."""
        if not product_ids:
            return np.zeros((0, 0, 0), np.uint8)
        column = {"cloud": "cloud", "shadow": "shadow", "nodata": "nodata"}[key]
        rows = {r[0]: r[1:] for r in self._db.execute(
            f"SELECT product_id, rows, cols, {column} FROM patch_stats WHERE product_id IN "
            f"({','.join('?' * len(product_ids))})", list(product_ids))}
        first = rows[product_ids[0]]
        out = np.zeros((len(product_ids), first[0], first[1]), np.uint8)
        for i, pid in enumerate(product_ids):
            n_rows, n_cols, blob = rows[pid]
            if blob is not None:
                out[i] = np.frombuffer(blob, np.uint8).reshape(n_rows, n_cols)
        return out

    def search(self, bounds: tuple[float, float, float, float] | None = None,
               start: datetime | None = None, end: datetime | None = None) -> list[int]:
        """Ids of products whose footprint meets lon/lat ``bounds``, acquired in [start, end]."""
        if start is not None and end is not None and end < start:
            raise NoProductError(f"empty date range: {start} is after {end}", field="dates")
        west, south, east, north = bounds or (-180.0, -90.0, 180.0, 90.0)
        t0 = _days(start) if start else -1e7
        t1 = _days(end) if end else 1e7
        with self._lock(exclusive=False):
            index = self._rtree()
            try:
                return sorted(int(i) for i in index.intersection(
                    (west, south, t0, east, north, t1)))
            finally:
                index.close()

    def info(self) -> dict[str, Any]:
        """A summary: patch size, products per tile and sensor, date range."""
        tiles: dict[str, dict[str, Any]] = {}
        for tile, sensor, n, t0, t1 in self._db.execute(
                "SELECT tile, sensor, COUNT(*), MIN(acquired), MAX(acquired) FROM products "
                "GROUP BY tile, sensor ORDER BY tile, sensor"):
            tiles.setdefault(tile, {})[sensor] = {
                "products": n,
                "first": datetime.fromtimestamp(t0, UTC).date().isoformat(),
                "last": datetime.fromtimestamp(t1, UTC).date().isoformat()}
        return {"folder": str(self.folder), "patch_size": self.patch_size,
                "products": self.count(), "tiles": tiles}


def _absolute(path: str | os.PathLike[str]) -> str:
    """An absolute, normalised path; symbolic links are kept as the archive names them."""
    # Not Path.resolve(): it follows links, and an archive of links would be renamed.
    return os.path.abspath(path)  # noqa: PTH100


def _key(product: Product) -> str:
    """The catalog key of a product: its absolute path (the VV file's for an S1 pair)."""
    if isinstance(product, S1Product):
        return _absolute(product.files[0])
    return _absolute(product.path)


def _disk_full(err: BaseException) -> bool:
    """The error says the disk (or the database's quota) is full."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, sqlite3.OperationalError):
        return "database or disk is full" in str(err) or getattr(
            err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


def _blob(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.ascontiguousarray(array, np.uint8).tobytes()


def _lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds,
                                                densify_pts=21)
    return west, south, east, north
