"""What the multi-date reconstruction methods share: the block method and the series plug-in.

:class:`SeriesMethod` is the engine side (:class:`~decloud.inference.method.BlockMethod`)
of a method that reconstructs one *target* acquisition of a series from the others
(:mod:`.linear`, :mod:`.wlr`, :mod:`.patchgroup`). It reads, for each acquisition ``a``,
``s2_<a>`` (the output bands), ``s2_mask_<a>`` and ``dt_<a>`` (days from the reference
acquisition; NaN: no product, the acquisition is left out of that block), and calls the
subclass's numpy kernel :meth:`SeriesMethod.reconstruct` on each block of a batch. A
block without a product for the target takes the linear interpolation in time only when
the method's ``fallback`` allows it (else NaN); :meth:`SeriesMethod.report` counts those
pixels, and the engine's record keeps the count in its ``extra``.

Every kernel follows the same conventions: the series is ``(T, H, W, C)`` int16
(decloud's encoding, reflectance x 10000, nodata -10000); where the target itself is
usable (:func:`decloud.processors.gapfill.usable`: clear, away from the dilated clouds,
every band valid) its own value is returned with ``days`` 0; elsewhere the method's
prediction, reflectance x 10000 in float32, with ``days`` the temporal distance to the
sources used; NaN where nothing can be said.

:class:`SeriesDates` plugs any of the three into the time-series processor
(:func:`decloud.processors.timeseries.run_series`): each date of the tile is the target
of a series made of the tile's dates within ``window_days`` of it.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from decloud.constants import S2_10M_BANDS
from decloud.errors import ArgumentError
from decloud.inputs import AcquisitionProducts, InputProducts, KeyRequest
from decloud.keys import check_acquisition, day_offset
from decloud.processors.gapfill import series_keys

if TYPE_CHECKING:
    from decloud.archive import Archive
    from decloud.inference.engine import EngineOptions
    from decloud.inference.method import BlockResult
    from decloud.processors.timeseries import DatePlan
    from decloud.products import S2Product

__all__ = ["METHODS", "SeriesDates", "SeriesMethod", "build_method", "method_class"]


class SeriesMethod(ABC):
    """Base of the block methods that reconstruct a target acquisition from a series.

    Subclasses set :attr:`kind`, implement :meth:`reconstruct` and :meth:`parameters`,
    and set :attr:`margin` (and :attr:`size_multiple` when their blocks must lie on a
    lattice) in their constructor.

    Args:
        acquisitions: Acquisition names (``d0``, ``d1``...), one per date of the series.
        target: The acquisition reconstructed (one of ``acquisitions``), or its time in
            days from the reference acquisition (as the ``dt`` keys): the acquisition
            within half a day of it is then the target of each block.
        bands: The 10 m bands to reconstruct.
        buffer: Radius in pixels by which clouds, cirrus and shadows are dilated before
            an observation counts as usable.
        name: What the provenance calls the method (the kind by default).
        dates: The acquisition times, for the provenance only.

    Raises:
        ArgumentError: No acquisition, a target that is not one of them, a band that is
            not a 10 m band, a negative buffer.
    """

    #: The method's kind (``linear``, ``wlr``, ``patchgroup``).
    kind: ClassVar[str] = ""
    #: The per-pixel extras of every result: the temporal distance to the sources.
    extras: tuple[str, ...] = ("days",)
    #: Whether what the method cannot predict (blocks without a target product
    #: included) takes the linear interpolation in time; NaN otherwise. The linear
    #: method is that interpolation.
    fallback: bool = True

    def __init__(self, acquisitions: Sequence[str], target: str | float, *,
                 bands: Sequence[str] = tuple(S2_10M_BANDS), buffer: int = 0,
                 name: str | None = None, dates: Sequence[datetime] | None = None) -> None:
        if not acquisitions:
            raise ArgumentError(f"{self.kind} needs at least one acquisition",
                                field="acquisitions")
        self.acquisitions = tuple(check_acquisition(a) for a in acquisitions)
        self.target_days: float | None = None
        if isinstance(target, str):
            if target not in self.acquisitions:
                raise ArgumentError(f"target {target!r} is not one of the acquisitions "
                                    f"{', '.join(self.acquisitions)}", field="target")
        elif isinstance(target, (int, float)) and math.isfinite(target):
            self.target_days = float(target)
        else:
            raise ArgumentError(f"target {target!r} is neither an acquisition nor a finite "
                                "number of days", field="target")
        if buffer < 0:
            raise ArgumentError(f"dilation buffer {buffer} must be >= 0", field="buffer")
        unknown = [b for b in bands if b not in S2_10M_BANDS]
        if unknown or not bands:
            raise ArgumentError(f"bands {', '.join(unknown) or '(none)'}: {self.kind} "
                                f"reconstructs 10 m bands ({', '.join(S2_10M_BANDS)})",
                                field="bands")
        if dates is not None and len(dates) != len(self.acquisitions):
            raise ArgumentError(f"{len(dates)} dates for {len(self.acquisitions)} "
                                "acquisitions", field="dates")
        self.name = name or self.kind
        self.target: str | None = target if isinstance(target, str) else None
        self.buffer = int(buffer)
        self.dates = None if dates is None else tuple(dates)
        self.output_bands: tuple[str, ...] = tuple(bands)
        self.margin = self.buffer
        self.size_multiple = 1
        self.input_keys: tuple[KeyRequest, ...] = series_keys(self.acquisitions,
                                                              self.output_bands)
        #: Pixels filled by the fallback where the target has no product (:meth:`report`).
        self.fallback_pixels = 0
        self._lock = threading.Lock()

    @classmethod
    def from_dates(cls, dates: Sequence[datetime], target: int,
                   **options: Any) -> SeriesMethod:
        """The method over acquisitions ``d0``, ``d1``... at ``dates``, target ``d<target>``.

        Build the matching products with ``InputProducts({"d0": ..., "d1": ...},
        reference="d0")``; ``options`` are the constructor's keywords.

        Raises:
            ArgumentError: No dates, or a target index out of range.
        """
        if not 0 <= target < len(dates):
            raise ArgumentError(f"target index {target} is not one of the {len(dates)} "
                                "dates", field="target")
        return cls([f"d{i}" for i in range(len(dates))], f"d{target}", dates=list(dates),
                   **options)

    @abstractmethod
    def reconstruct(self, series: np.ndarray, masks: np.ndarray, times: np.ndarray,
                    target: int) -> tuple[np.ndarray, np.ndarray]:
        """The target's reconstruction on one block.

        Args:
            series: ``(T, H, W, C)`` int16 (reflectance x 10000, nodata -10000).
            masks: ``(T, H, W)`` uint8 :class:`~decloud.constants.MaskClass` layers.
            times: ``(T,)`` float64 days.
            target: Index of the target in the series.

        Returns:
            ``(H, W, C)`` float32 reflectance x 10000 and ``(H, W)`` float32 days, NaN
            where nothing can be said.
        """

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """The kernel's parameters, JSON-ready (what :meth:`describe` adds)."""

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        """Reconstruct a batch of padded blocks (inputs: key -> ``(B, H, W, C)``, dt ``(B, 1)``)."""
        # Imported here: decloud.inference's package imports the engine, which a numpy
        # kernel does not need.
        from decloud.inference.method import BlockResult
        from decloud.processors.gapfill import block_series, empty_outputs
        from decloud.processors.reconstruction._common import linear

        reflectance, days = empty_outputs(inputs, self.acquisitions, len(self.output_bands))
        for b in range(len(reflectance)):
            block = block_series(inputs, self.acquisitions, b)
            if block is None:
                continue
            acqs, series, masks, times = block
            target = self._target_index(acqs, times)
            if target is not None:
                reflectance[b], days[b] = self.reconstruct(series, masks, times, target)
                continue
            when = self._target_time()
            if when is not None and self.fallback:
                # The target has no product: only the interpolation can say something;
                # counted, so that the record does not credit the method with it.
                reflectance[b], days[b] = linear(series, masks, times, when, self.buffer)
                if self.kind != "linear":
                    with self._lock:
                        self.fallback_pixels += int(np.count_nonzero(np.isfinite(days[b])))
        return BlockResult(reflectance, {"days": days})

    def report(self) -> dict[str, Any]:
        """What the runs of this method did, JSON-ready (the engine's record ``extra``).

        ``fallback_pixels``: pixels of the padded blocks without a target product that
        the linear interpolation filled (:attr:`fallback`), not the method itself.
        """
        return {"fallback_pixels": self.fallback_pixels}

    def _target_index(self, acquisitions: Sequence[str], times: np.ndarray) -> int | None:
        """Index of the target among a block's acquisitions (None: no product there)."""
        if self.target is not None:
            return acquisitions.index(self.target) if self.target in acquisitions else None
        if self.target_days is None:
            return None
        distance = np.abs(times - self.target_days)
        nearest = int(np.argmin(distance))
        return nearest if distance[nearest] <= 0.5 else None

    def _target_time(self) -> float | None:
        """The target's days from the reference acquisition, when known."""
        if self.target_days is not None:
            return self.target_days
        if self.dates is not None and self.target is not None:
            return day_offset(self.dates[self.acquisitions.index(self.target)], self.dates[0])
        return None

    def describe(self) -> dict[str, Any]:
        """The method's parameters, JSON-ready."""
        return {"method": self.kind, "name": self.name, "acquisitions": list(self.acquisitions),
                "target": self.target, "target_days": self.target_days,
                "dates": None if self.dates is None else [d.isoformat() for d in self.dates],
                "bands": list(self.output_bands), "buffer_px": self.buffer,
                "margin_px": self.margin, "size_multiple": self.size_multiple,
                **self.parameters()}


def _method_classes() -> dict[str, type[SeriesMethod]]:
    from decloud.processors.reconstruction.linear import LinearMethod
    from decloud.processors.reconstruction.patchgroup import PatchGroupMethod
    from decloud.processors.reconstruction.wlr import WLRMethod

    return {"linear": LinearMethod, "wlr": WLRMethod, "patchgroup": PatchGroupMethod}


#: The method kinds :func:`build_method` and :class:`SeriesDates` know.
METHODS: tuple[str, ...] = ("linear", "wlr", "patchgroup")


def method_class(kind: str) -> type[SeriesMethod]:
    """The block-method class of a kind of :data:`METHODS`.

    Raises:
        ArgumentError: An unknown kind.
    """
    classes = _method_classes()
    if kind not in classes:
        raise ArgumentError(f"unknown reconstruction method {kind!r} (methods: "
                            f"{', '.join(METHODS)})", field="method")
    return classes[kind]


def build_method(kind: str, dates: Sequence[datetime], target: int,
                 **options: Any) -> SeriesMethod:
    """A method of :data:`METHODS` over ``dates`` (acquisitions ``d0``...), target index.

    ``options`` are the method's constructor keywords.

    Raises:
        ArgumentError: An unknown kind.
    """
    return method_class(kind).from_dates(dates, target, **options)


@dataclass(frozen=True)
class SeriesDates:
    """Reconstruct each date of a series from the tile's dates within ``window_days``.

    The time-series processor's plug-in (:class:`~decloud.processors.timeseries.DateMethod`)
    for :data:`METHODS`.

    Attributes:
        method: ``linear``, ``wlr`` or ``patchgroup``.
        window_days: Dates within this many days are read and may be used.
        buffer: Dilation of clouds, cirrus and shadows, pixels.
        bands: The 10 m bands reconstructed.
        keep_clear: Keep the date's clear pixels bit-identical (mask-guided composite).
        options: Other keywords of the method's constructor (e.g. ``patch``).
    """

    method: str = "patchgroup"
    window_days: float = 60.0
    buffer: int = 2
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    keep_clear: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ArgumentError(f"unknown reconstruction method {self.method!r} (methods: "
                                f"{', '.join(METHODS)})", field="method")
        if not self.window_days > 0:
            raise ArgumentError(f"window_days {self.window_days} must be > 0",
                                field="window_days")

    @property
    def name(self) -> str:
        """The method's kind."""
        return self.method

    def parameters(self) -> dict[str, Any]:
        """The method's settings."""
        return {"method": self.method, "window_days": float(self.window_days),
                "buffer": self.buffer, "bands": list(self.bands),
                "keep_clear": self.keep_clear, "options": dict(self.options)}

    def plan(self, archive: Archive, tile: str, product: S2Product,
             products: Sequence[S2Product], engine: EngineOptions) -> DatePlan:
        """Acquisitions ``d0``, ``d1``... in time order, the date's own the target."""
        from decloud.processors.timeseries import DatePlan

        window = timedelta(days=self.window_days)
        series = [p for p in products if abs(p.acquired - product.acquired) <= window]
        names = [f"d{i}" for i in range(len(series))]
        own = next(i for i, p in enumerate(series) if p is product)
        method = build_method(self.method, [p.acquired for p in series], own,
                              bands=self.bands, buffer=self.buffer, **dict(self.options))
        inputs = InputProducts({n: AcquisitionProducts(s2=p)
                                for n, p in zip(names, series, strict=True)}, reference="d0")
        return DatePlan(method, inputs, names[own] if self.keep_clear else None)
