"""GDAL configuration held in one place, entered by the public entry points themselves.

Every public function or method of decloud that does raster I/O is decorated with
:func:`ensure_env` (as rasterio's own ``ensure_env``): it runs inside :func:`gdal_env`,
a :class:`rasterio.Env` with decloud's defaults, whether it is called from the CLI, a
notebook, a Dask worker or a thread. Inside an active decloud environment the decorator
does nothing, so nested calls do not re-enter (nor reset) it, and options a caller set
with :func:`gdal_env` (or a plain :class:`rasterio.Env` around decloud) are kept.
Decorated: ``read_on_grid``, ``Product.read``, ``S2Product.mask``, ``S1Product.read``,
``Dem.read``, ``build_stack``, ``write_dataset``, ``s2_patch_stats``, ``s1_patch_stats``,
``Catalog.add``; :class:`~decloud.writers.CogWriter` enters it from enter to exit and
:class:`~decloud.writers.BackgroundWriter` in its thread.

rasterio environments are per thread: a thread started by decloud (the background
writer) enters its own. Inside an environment rasterio installs its GDAL error handler,
which turns GDAL's messages into records of rasterio's Python loggers (``rasterio._env``,
``rasterio._err``: ``CPLE_AppDefined:JPEGLib:Corrupt JPEG data...``) instead of letting
GDAL print them on stderr: the entry points leak no raw GDAL warning, and an application
silences or collects them with :mod:`logging`.

Callers pass overrides explicitly instead of setting hidden environment variables.

GDAL's raster block cache is process-wide, so no per-thread environment sets it
(:func:`gdal_env` refuses ``GDAL_CACHEMAX``). A process entry point sizes it once,
before it starts any thread, with :func:`set_gdal_cache` (the streaming engine does,
from ``EngineOptions.gdal_cache_mb``); :func:`gdal_cache_bytes` reads back the size
GDAL uses. GDAL's own default, 5 % of the RAM, is the size when nobody sets it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import rasterio
import rasterio.env

from decloud.errors import GdalConfigError

__all__ = [
    "GDAL_DEFAULTS",
    "DecloudEnv",
    "decloud_env_active",
    "ensure_env",
    "env_if_needed",
    "gdal_cache_bytes",
    "gdal_env",
    "set_gdal_cache",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Defaults tuned for many small windowed reads of tiled rasters.
GDAL_DEFAULTS: dict[str, Any] = {
    # No GDAL_CACHEMAX here: rasterio passes it to GDALSetCacheMax64 in bytes (a past bug
    # set it to 1 KiB), and the block cache is process-wide, so a per-thread Env restoring
    # it on exit races with every other thread. GDAL's own default (5 % of RAM) is what
    # every thread shares; gdal_env refuses to override it.
    # Listing sibling files at every open is slow on big archives and network drives.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CHECK_DISK_FREE_SPACE": "YES",
}

#: Options that are process-wide in GDAL and so cannot be set by a per-thread Env.
_PROCESS_WIDE = frozenset({"GDAL_CACHEMAX"})

# Depth of decloud environments entered in each thread (rasterio's are per thread too).
_state = threading.local()


def _depth() -> int:
    depth: int = getattr(_state, "depth", 0)
    return depth


class DecloudEnv(rasterio.Env):
    """A :class:`rasterio.Env` that records, per thread, that decloud's settings are active."""

    def __enter__(self) -> DecloudEnv:
        super().__enter__()
        _state.depth = _depth() + 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        _state.depth = _depth() - 1
        super().__exit__(exc_type, exc_val, exc_tb)


def gdal_env(**overrides: Any) -> DecloudEnv:
    """Return a :class:`rasterio.Env` with decloud's GDAL defaults and ``overrides``.

    Args:
        **overrides: GDAL configuration options that replace the defaults.

    Returns:
        The environment, to be used as a context manager.

    Raises:
        GdalConfigError: An override is a process-wide option (``GDAL_CACHEMAX``),
            which a per-thread environment cannot set without racing other threads.
    """
    for key in overrides:
        if key.upper() in _PROCESS_WIDE:
            raise GdalConfigError(
                "is process-wide in GDAL and cannot be set per environment "
                "(rasterio would also read the number as bytes)", field=key)
    return DecloudEnv(**{**GDAL_DEFAULTS, **overrides})


def decloud_env_active() -> bool:
    """Whether a :func:`gdal_env` environment is active in the calling thread."""
    return _depth() > 0


def env_if_needed() -> contextlib.AbstractContextManager[Any]:
    """A :func:`gdal_env` to enter when none is active in this thread, else a no-op.

    Options of an enclosing plain :class:`rasterio.Env` win over decloud's defaults.
    """
    if decloud_env_active():
        return contextlib.nullcontext()
    outer = rasterio.env.getenv() if rasterio.env.hasenv() else {}
    # The caller's process-wide options are in force already: not set again per thread.
    kept = {k: v for k, v in outer.items() if k.upper() not in _PROCESS_WIDE}
    return DecloudEnv(**{**GDAL_DEFAULTS, **kept})


def ensure_env(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a raster I/O entry point so that it runs inside decloud's GDAL settings.

    The wrapper enters :func:`gdal_env` when no decloud environment is active in the
    calling thread and calls ``func`` directly otherwise (nested calls cost nothing).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if decloud_env_active():
            return func(*args, **kwargs)
        with env_if_needed():
            return func(*args, **kwargs)

    return wrapper


def gdal_cache_bytes() -> int:
    """The size of GDAL's process-wide raster block cache, in bytes, as GDAL reports it."""
    # rasterio answers GDAL_CACHEMAX with GDALGetCacheMax64, not the option's string.
    size = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    if isinstance(size, bool) or not isinstance(size, int):
        raise GdalConfigError(f"GDAL reported a block cache size of {size!r}, not bytes",
                              field="GDAL_CACHEMAX")
    return size


def set_gdal_cache(megabytes: int) -> int:
    """Size GDAL's process-wide raster block cache, in MiB, and check what GDAL took.

    The cache is shared by every thread of the process (and every raster it has
    open): call this once from a process entry point before it starts threads. The
    size stays set after the call; blocks over the new size are flushed by GDAL.

    Args:
        megabytes: Cache size in MiB (2**20 bytes).

    Returns:
        The cache size GDAL reports afterwards, in bytes (``megabytes * 2**20``).

    Raises:
        GdalConfigError: ``megabytes`` is not a positive integer, or GDAL reports
            another size than the one asked for.
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or megabytes < 1:
        raise GdalConfigError(f"the block cache size must be a positive number of MiB, "
                              f"not {megabytes!r}", field="GDAL_CACHEMAX")
    wanted = megabytes * 2**20
    # rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, in bytes (a number
    # of MiB passed as is would give a cache of a few bytes), process-wide.
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", wanted)
    reported = gdal_cache_bytes()
    if reported != wanted:
        raise GdalConfigError(f"GDAL reports a block cache of {reported} bytes after "
                              f"{wanted} were set", field="GDAL_CACHEMAX")
    return reported
