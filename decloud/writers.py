"""Atomic writers: Cloud-Optimized GeoTIFFs and output folders.

Nothing is ever half-written or silently overwritten: every file is first written
under a temporary name in its destination folder and renamed into place only once
complete; an existing destination is an error unless overwriting is asked for.

Nothing is silently cast either: :class:`CogWriter` refuses data whose values its
dtype cannot hold (float reflectance into int16, 70000 into uint16) unless it is given
the encoder that maps them (e.g. :func:`decloud.keys.encode_s2`).
:class:`BackgroundWriter` runs one or several COG writers in a thread fed by a bounded
queue, so that encoding, compressing and writing overlap with computing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from decloud._version import __version__
from decloud.env import env_if_needed
from decloud.errors import (
    ArgumentError,
    LossyCastError,
    OutputExistsError,
    OutputWriteError,
)
from decloud.grid import Grid

__all__ = [
    "DEFAULT_COG_THREADS",
    "BackgroundWriter",
    "CogWriter",
    "atomic_dir",
    "atomic_file",
    "lossless_cast",
    "os_cause",
    "provenance_tags",
]

#: GDAL threads compressing a COG and computing its overviews. One, not ``ALL_CPUS``:
#: on a shared GPU host or a Dask worker every process writes at once, and
#: ``ALL_CPUS`` in each oversubscribes the machine. A caller that owns the machine
#: passes more (the output does not depend on it).
DEFAULT_COG_THREADS = 1

#: A function turning computed values into the stored encoding (float reflectance to
#: int16 x 10000 with nodata, for instance); it returns the array to write.
Encoder = Callable[[np.ndarray], np.ndarray]


def provenance_tags(
    inputs: Sequence[str], dates: Sequence[str] = (), **extra: Any
) -> dict[str, str]:
    """Tags recording how a raster was made: inputs, dates, software version, time."""
    tags = {
        "DECLOUD_VERSION": __version__,
        "DECLOUD_INPUTS": json.dumps(list(inputs)),
        "DECLOUD_DATES": json.dumps(list(dates)),
        "DECLOUD_CREATED": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tags.update({f"DECLOUD_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
                 for k, v in extra.items()})
    return tags


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def os_cause(err: OSError) -> str:
    """The cause of a failed write in words: a full disk says "no space left on device"."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device ({err})"
    return str(err)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("exists already (pass overwrite to replace it)", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, path.suffix)
    try:
        yield tmp
        tmp.replace(path)
    except OSError as err:
        raise OutputWriteError(f"writing failed, nothing was written: {os_cause(err)}",
                               path=path) from err
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; it replaces ``path`` when the block succeeds.

    An existing ``path`` is only replaced when ``overwrite`` is set, and only after
    the new folder is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("exists already (pass overwrite to replace it)", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = _temporary(path, ".old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except OSError as err:
        raise OutputWriteError(f"writing failed, nothing was written: {os_cause(err)}",
                               path=path) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class CogWriter:
    """Write a Cloud-Optimized GeoTIFF window by window, atomically.

    Windows go to a tiled temporary GeoTIFF; on a clean exit it is converted to a COG
    (tiled, compressed, with overviews) under a second temporary name, which is then
    renamed onto the destination. On error every temporary file is removed. The writer
    runs inside decloud's GDAL environment (:func:`decloud.env.ensure_env`) from enter
    to exit, and must be entered, written and exited in one thread.

    Data is cast to ``dtype`` only when no value changes (:func:`lossless_cast`):
    float data into an integer raster, or integers outside the dtype's range, raise
    :class:`~decloud.errors.LossyCastError` unless ``encoder`` maps them first.

    Args:
        path: Destination ``.tif``.
        grid: Grid of the output.
        count: Number of bands.
        dtype: Numpy dtype name.
        nodata: Nodata value.
        band_names: Band descriptions, one per band.
        tags: Dataset tags (see :func:`provenance_tags`).
        overwrite: Replace an existing destination.
        overview_resampling: ``average`` for continuous data, ``nearest`` for masks.
        blocksize: Tile size of the COG.
        encoder: Applied to every array before it is written (e.g.
            :func:`decloud.keys.encode_s2` for float reflectance into int16).
        threads: GDAL threads for the final COG conversion (compression and overviews);
            :data:`DEFAULT_COG_THREADS` by default, never ``ALL_CPUS``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        count: int,
        dtype: str,
        nodata: float | None,
        *,
        band_names: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        overwrite: bool = False,
        overview_resampling: Resampling = Resampling.average,
        blocksize: int = 512,
        encoder: Encoder | None = None,
        threads: int = DEFAULT_COG_THREADS,
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.count = count
        self.dtype = dtype
        self.nodata = nodata
        self.band_names = list(band_names) if band_names else []
        if self.band_names and len(self.band_names) != count:
            raise ArgumentError(f"{len(self.band_names)} band names for {count} bands",
                                path=self.path, field="band_names")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ArgumentError(f"threads must be a positive integer, not {threads!r}",
                                path=self.path, field="threads")
        self.tags = dict(tags or {})
        self.overwrite = overwrite
        self.overview_resampling = overview_resampling
        self.blocksize = blocksize
        self.encoder = encoder
        self.threads = threads
        self._tmp = _temporary(self.path, ".tif")
        self._dst: Any = None
        self._env = contextlib.ExitStack()

    def __enter__(self) -> CogWriter:
        if self.path.exists() and not self.overwrite:
            raise OutputExistsError("exists already (pass overwrite to replace it)",
                                    path=self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._env.enter_context(env_if_needed())
        try:
            self._dst = rasterio.open(
                self._tmp, "w", driver="GTiff", width=self.grid.width, height=self.grid.height,
                count=self.count, dtype=self.dtype, crs=self.grid.crs,
                transform=self.grid.transform, nodata=self.nodata, tiled=True,
                blockxsize=256, blockysize=256, compress="ZSTD", BIGTIFF="IF_SAFER",
            )
        except RasterioError as err:
            self._env.close()
            raise OutputWriteError(f"cannot create ({err})", path=self.path) from err
        return self

    def write(self, data: np.ndarray, window: Window | None = None) -> None:
        """Write ``(count, h, w)`` data at ``window`` (the whole grid when None).

        Raises:
            LossyCastError: The data (after the encoder, if any) has values the
                raster's dtype cannot hold; nothing of it is written.
        """
        if self._dst is None:
            raise OutputWriteError("the writer is not open: use it in a `with` block",
                                   path=self.path)
        if self.encoder is not None:
            data = self.encoder(data)
        if data.ndim != 3 or data.shape[0] != self.count:
            raise ArgumentError(f"data of shape {data.shape} is not ({self.count}, height, "
                                "width)", path=self.path, field="data")
        out = lossless_cast(data, self.dtype, path=self.path, band_names=self.band_names)
        try:
            self._dst.write(out, window=window)
        except RasterioError as err:
            raise OutputWriteError(f"write failed ({err})", path=self.path) from err

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cog = _temporary(self.path, ".tif")
        try:
            if self._dst is None:
                return
            if exc_type is None:
                for i, name in enumerate(self.band_names, start=1):
                    self._dst.set_band_description(i, name)
                self._dst.update_tags(**self.tags)
            self._dst.close()
            self._dst = None
            if exc_type is not None:
                return
            # GDAL_NUM_THREADS bounds the overview computation, NUM_THREADS the compression.
            with rasterio.Env(GDAL_NUM_THREADS=str(self.threads)):
                rasterio.shutil.copy(
                    self._tmp, cog, driver="COG", COMPRESS="DEFLATE",
                    PREDICTOR="YES", BLOCKSIZE=self.blocksize, OVERVIEWS="AUTO",
                    OVERVIEW_RESAMPLING=self.overview_resampling.name.upper(),
                    BIGTIFF="IF_SAFER", NUM_THREADS=str(self.threads),
                )
            cog.replace(self.path)
        except (RasterioError, OSError) as err:
            raise OutputWriteError(f"writing failed, nothing was written ({err})",
                                   path=self.path) from err
        finally:
            self._tmp.unlink(missing_ok=True)
            cog.unlink(missing_ok=True)
            self._env.close()


def lossless_cast(
    data: np.ndarray,
    dtype: str | np.dtype[Any],
    *,
    path: str | os.PathLike[str] | None = None,
    band_names: Sequence[str] = (),
) -> np.ndarray:
    """Cast ``(bands, ...)`` data to ``dtype`` if no value changes, else raise.

    Safe casts (int16 to int16, uint8 into uint16, int16 into float32) and float to a
    narrower float (float64 to float32: rounding, not truncation or wrapping) are always
    allowed. Other casts are checked on the values: float into an integer type needs
    finite, integral values in the type's range; integers into a narrower integer type
    need values in its range; large integers into a float need exactly representable
    values. The first band that fails is named in the error.

    Args:
        data: The array, bands first.
        dtype: The target dtype.
        path: The file written, named in the error.
        band_names: Band names, named in the error (``band <n>`` without them).

    Returns:
        The data as ``dtype`` (the same array when it has that dtype already).

    Raises:
        LossyCastError: A band holds values ``dtype`` cannot represent.
    """
    src, dst = data.dtype, np.dtype(dtype)
    if src == dst:
        return data
    if np.can_cast(src, dst, "safe") or (src.kind == "f" and dst.kind == "f"):
        return data.astype(dst)
    for i, band in enumerate(data):
        reason = _lossy(np.asarray(band), dst)
        if reason:
            name = band_names[i] if i < len(band_names) else f"band {i + 1}"
            raise LossyCastError(
                f"{src} data cannot be written as {dst} without changing values ({reason}): "
                "encode it first or give the writer its encoder (e.g. decloud.keys.encode_s2)",
                path=path, field=name)
    return data.astype(dst)


def _lossy(band: np.ndarray, dst: np.dtype[Any]) -> str:
    """Why casting ``band`` to ``dst`` changes values, or "" when it does not."""
    if band.size == 0:
        return ""
    src = band.dtype
    if src.kind == "c" and dst.kind != "c":
        return "complex values"
    if dst.kind in "iu" and src.kind == "f":
        if not np.isfinite(band).all():
            return "NaN or infinite values"
        if not (band == np.trunc(band)).all():
            return "fractional values"
        low, high = float(band.min()), float(band.max())
        info = np.iinfo(dst)
        if low < info.min or high > info.max:
            return f"values {low:g}..{high:g} outside {info.min}..{info.max}"
        return ""
    if dst.kind in "iu" and src.kind in "iub":
        low_i, high_i = int(band.min()), int(band.max())
        info = np.iinfo(dst)
        if low_i < info.min or high_i > info.max:
            return f"values {low_i}..{high_i} outside {info.min}..{info.max}"
        return ""
    if dst.kind == "f" and src.kind in "iu":
        # Integers up to 2**(mantissa bits + 1) are exact in a float.
        limit = 2 ** (np.finfo(dst).nmant + 1)
        if int(band.min()) < -limit or int(band.max()) > limit:
            return f"integers beyond +-{limit} are rounded in {dst}"
        return ""
    with np.errstate(invalid="ignore", over="ignore"):
        same = np.array_equal(band.astype(dst).astype(src), band, equal_nan=src.kind in "fc")
    return "" if same else f"values not representable in {dst}"


class _Signal:
    """A queue message to the writer thread."""

    def __init__(self, name: str) -> None:
        self.name = name


_CLOSE = _Signal("close")
_ABORT = _Signal("abort")


class _AbortedError(Exception):
    """Raised inside the writer thread to discard every output."""


class BackgroundWriter:
    """Run :class:`CogWriter` s in a thread fed by a bounded queue.

    :meth:`submit` hands an array to the writer thread and returns at once unless
    ``queue_size`` arrays are already waiting, in which case it blocks until one is
    written: memory stays bounded by ``queue_size + 1`` arrays per writer thread. The
    thread enters the writers (and decloud's GDAL environment, which is per thread),
    applies their encoders, checks casts, writes, and on :meth:`close` converts each to
    a COG. An error in the thread is raised in the caller at the next :meth:`submit` or
    at :meth:`close`; an error there or in the caller's block discards every output,
    as :class:`CogWriter` does: nothing half-written remains.

    Submitted arrays are handed over, not copied: do not modify one after submitting it.
    Typical use, with a model's float reflectance encoded in the thread::

        writer = CogWriter(path, grid, 4, "int16", S2_NODATA, encoder=encode_s2)
        with BackgroundWriter({"s2": writer}) as out:
            for core, padded in grid.windows(1024):
                out.submit("s2", predict(padded, core), core)

    Args:
        writers: The writers, by key (e.g. ``{"s2": CogWriter(...), "s2_mask": ...}``);
            not entered yet: the thread enters them.
        queue_size: Arrays waiting to be written at most.
    """

    def __init__(self, writers: Mapping[str, CogWriter], *, queue_size: int = 4) -> None:
        if not writers:
            raise ArgumentError("no writer given", field="writers")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ArgumentError(f"queue_size must be a positive integer, not {queue_size!r}",
                                field="queue_size")
        self.writers = dict(writers)
        self.queue_size = queue_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._signalled = False  # the thread has taken the close or abort signal

    def __enter__(self) -> BackgroundWriter:
        self._thread = threading.Thread(target=self._run, name="decloud-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            self._finish(_ABORT)
            self._raise_error()
        return self

    def submit(self, key: str, data: np.ndarray, window: Window | None = None) -> None:
        """Queue ``data`` for the writer ``key`` at ``window``; blocks while the queue is full.

        Raises:
            ArgumentError: No writer has this key.
            DecloudError: Any error of the writer thread (a lossy cast, a failed write).
        """
        if self._thread is None or self._closed:
            raise OutputWriteError("the background writer is not open: use it in a `with` "
                                   "block", path=next(iter(self.writers.values())).path)
        if key not in self.writers:
            raise ArgumentError(f"no writer {key!r} (writers: {sorted(self.writers)})",
                                field=key)
        self._raise_error()
        self._queue.put((key, data, window))

    def close(self) -> None:
        """Write what is queued, finish every COG and wait for the thread; re-raise its error."""
        self._finish(_CLOSE)
        self._raise_error()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The caller failed: drop what is queued and discard every output.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._finish(_ABORT)

    def _finish(self, signal: _Signal) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(signal)
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            self._work()
        except _AbortedError:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self._error = err
            self._opened.set()
            # Keep taking arrays so that a producer blocked on a full queue wakes up
            # and sees the error, until the caller closes.
            while not self._signalled:
                self._signalled = isinstance(self._queue.get(), _Signal)

    def _work(self) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(env_if_needed())
            for writer in self.writers.values():
                stack.enter_context(writer)
            self._opened.set()
            while True:
                item = self._queue.get()
                if isinstance(item, _Signal):
                    self._signalled = True
                    if item is _ABORT:
                        raise _AbortedError
                    return
                key, data, window = item
                self.writers[key].write(data, window)
