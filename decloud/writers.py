"""Atomic writers: Cloud-Optimized GeoTIFFs and output folders.

Nothing is ever half-written or silently overwritten: every file is first written
under a temporary name in its destination folder and renamed into place only once
complete; an existing destination is an error unless overwriting is asked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
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
from decloud.errors import OutputExistsError, OutputWriteError
from decloud.grid import Grid

__all__ = ["CogWriter", "atomic_dir", "atomic_file", "provenance_tags"]


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
        raise OutputWriteError(f"writing failed, nothing was written ({err})", path=path) from err
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
        raise OutputWriteError(f"writing failed, nothing was written ({err})", path=path) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class CogWriter:
    """Write a Cloud-Optimized GeoTIFF window by window, atomically.

    Windows go to a tiled temporary GeoTIFF; on a clean exit it is converted to a COG
    (tiled, compressed, with overviews) under a second temporary name, which is then
    renamed onto the destination. On error every temporary file is removed.

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
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.count = count
        self.dtype = dtype
        self.nodata = nodata
        self.band_names = list(band_names) if band_names else []
        assert not self.band_names or len(self.band_names) == count, "one name per band"
        self.tags = dict(tags or {})
        self.overwrite = overwrite
        self.overview_resampling = overview_resampling
        self.blocksize = blocksize
        self._tmp = _temporary(self.path, ".tif")
        self._dst: Any = None

    def __enter__(self) -> CogWriter:
        if self.path.exists() and not self.overwrite:
            raise OutputExistsError("exists already (pass overwrite to replace it)",
                                    path=self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._dst = rasterio.open(
                self._tmp, "w", driver="GTiff", width=self.grid.width, height=self.grid.height,
                count=self.count, dtype=self.dtype, crs=self.grid.crs,
                transform=self.grid.transform, nodata=self.nodata, tiled=True,
                blockxsize=256, blockysize=256, compress="ZSTD", BIGTIFF="IF_SAFER",
            )
        except RasterioError as err:
            raise OutputWriteError(f"cannot create ({err})", path=self.path) from err
        return self

    def write(self, data: np.ndarray, window: Window | None = None) -> None:
        """Write ``(count, h, w)`` data at ``window`` (the whole grid when None)."""
        assert self._dst is not None, "use CogWriter as a context manager"
        assert data.ndim == 3 and data.shape[0] == self.count, f"bad shape {data.shape}"
        try:
            self._dst.write(data.astype(self.dtype, copy=False), window=window)
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
            if exc_type is None:
                for i, name in enumerate(self.band_names, start=1):
                    self._dst.set_band_description(i, name)
                self._dst.update_tags(**self.tags)
            self._dst.close()
            if exc_type is not None:
                return
            rasterio.shutil.copy(
                self._tmp, cog, driver="COG", COMPRESS="DEFLATE",
                PREDICTOR="YES", BLOCKSIZE=self.blocksize, OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING=self.overview_resampling.name.upper(),
                BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
            )
            cog.replace(self.path)
        except (RasterioError, OSError) as err:
            raise OutputWriteError(f"writing failed, nothing was written ({err})",
                                   path=self.path) from err
        finally:
            self._tmp.unlink(missing_ok=True)
            cog.unlink(missing_ok=True)
