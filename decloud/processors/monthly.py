"""Monthly synthesis: one cloud-free image per month of a tile.

Two ways to make a month's image, both through the streaming engine and the resumable
job runner of :mod:`decloud.processors.timeseries` (completion records, ``series.json``
settings, ``summary.json``/``summary.md``, quicklooks):

* :class:`MonthlyGapFill`: gap-filling on a regular time grid. The target is the
  middle of the month; every pixel takes its nearest usable (clear, away from clouds)
  observations before and after it among the S2 dates from ``window_days`` before the
  month's first day to ``window_days`` after its last day, and interpolates linearly
  (:class:`~decloud.processors.gapfill.GapFillMethod`; one side only: that observation).
* :class:`MonthlyModel`: a 6-date model (``monthly6``: acquisitions ``t0`` to ``t5``).
  Acquisition ``t<k>`` is the tile's S2 date nearest to ``month start + k x spacing``
  (5 days by default, the spacing of the ``monthly6`` layouts), with its nearest S1
  image and the DEM when the model reads them.

Neither keeps any date's pixels (a synthesis is not one date): the reconstruction is
written everywhere it has a value. Outputs: ``<TILE>_<YYYYMM>_<name>.tif`` with the
engine's quality (and days) layers and completion record.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decloud.archive import Archive, normalize_tile
from decloud.errors import ArgumentError, InferenceError, NoProductError
from decloud.inputs import AcquisitionProducts, InputProducts
from decloud.keys import KeyKind, parse_key
from decloud.processors.timeseries import (
    DatePlan,
    DateReport,
    SeriesJob,
    SeriesOptions,
    run_jobs,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from decloud.inference.engine import EngineOptions
    from decloud.inference.method import KerasMethod
    from decloud.products import S2Product

__all__ = ["MonthlyGapFill", "MonthlyModel", "month_bounds", "monthly_synthesis"]


def month_bounds(year: int, month: int) -> tuple[datetime, datetime, datetime]:
    """First instant, middle and last instant (exclusive end) of a month, UTC.

    Raises:
        ArgumentError: A month outside 1-12.
    """
    if not 1 <= month <= 12:
        raise ArgumentError(f"month {month} is not in 1-12", field="months")
    first = datetime(year, month, 1, tzinfo=UTC)
    end = first + timedelta(days=calendar.monthrange(year, month)[1])
    return first, first + (end - first) / 2, end


@dataclass(frozen=True)
class MonthlyGapFill:
    """A month by gap-filling at its middle from the dates of the month +- a window.

    Attributes:
        window_days: Dates this many days before and after the month are read too.
        buffer: Dilation of clouds, cirrus and shadows, pixels.
        bands: The 10 m bands reconstructed.
    """

    window_days: float = 15.0
    buffer: int = 2
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    name: str = "monthly_gapfill"

    def __post_init__(self) -> None:
        if not self.window_days >= 0:
            raise ArgumentError(f"window_days {self.window_days} must be >= 0",
                                field="window_days")

    def parameters(self) -> dict[str, Any]:
        """The gap-filling settings."""
        return {"method": "gapfill", "window_days": float(self.window_days),
                "buffer": self.buffer, "bands": list(self.bands)}

    def plan(self, archive: Archive, tile: str, year: int, month: int,
             products: Sequence[S2Product]) -> DatePlan:
        """Acquisitions ``d0``, ``d1``... of the month +- the window, target mid-month.

        Raises:
            NoProductError: No S2 date in the month +- the window.
        """
        from decloud.processors.gapfill import GapFillMethod

        first, middle, end = month_bounds(year, month)
        window = timedelta(days=self.window_days)
        series = [p for p in products if first - window <= p.acquired < end + window]
        if not series:
            raise NoProductError(f"no S2 product of {normalize_tile(tile)} from "
                                 f"{first - window:%Y-%m-%d} to {end + window:%Y-%m-%d}",
                                 field="dates")
        names = [f"d{i}" for i in range(len(series))]
        # Farther than half a month plus the window: outside the month +- the window.
        method = GapFillMethod.from_dates([p.acquired for p in series], middle,
                                          bands=self.bands, buffer=self.buffer,
                                          max_days=(end - middle + window).total_seconds()
                                          / 86400.0)
        inputs = InputProducts({n: AcquisitionProducts(s2=p)
                                for n, p in zip(names, series, strict=True)}, reference="d0")
        return DatePlan(method, inputs, None)


@dataclass(frozen=True)
class MonthlyModel:
    """A month by a 6-date model (``monthly6``): ``t<k>`` nearest to start + k x spacing.

    Attributes:
        method: The model (:func:`decloud.processors.single_date.load_method`).
        spacing: Time between the acquisitions' nominal dates.
        max_s1_gap: The S1 image of each date is the nearest within this gap.
    """

    method: KerasMethod
    spacing: timedelta = timedelta(days=5)
    max_s1_gap: timedelta = timedelta(days=3)

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.method.name)

    def acquisitions(self) -> list[str]:
        """The model's acquisitions ``t0``, ``t1``... in order.

        Raises:
            InferenceError: The model does not read acquisitions ``t0`` to ``t<n>``.
        """
        names = sorted({acq for key in self.method.input_keys
                        for kind, acq in [parse_key(key.name)] if kind is not KeyKind.DEM
                        and acq is not None})
        expected = [f"t{i}" for i in range(len(names))]
        if not names or sorted(names) != sorted(expected):
            raise InferenceError(f"model {self.method.name} reads acquisitions "
                                 f"{', '.join(names) or '(none)'}: a monthly model reads "
                                 "t0, t1, ... (the monthly6 configurations)", field="model")
        return expected

    def parameters(self) -> dict[str, Any]:
        """The model (its checksum), the spacing and the S1 gap."""
        described = self.method.describe()
        return {"method": "model", "model": described.get("name", self.name),
                "model_checksum": described.get("model_checksum"),
                "spacing_days": self.spacing.total_seconds() / 86400.0,
                "max_s1_gap_hours": self.max_s1_gap.total_seconds() / 3600.0}

    def plan(self, archive: Archive, tile: str, year: int, month: int,
             products: Sequence[S2Product]) -> DatePlan:
        """The S2 date nearest each nominal date of the month (and S1, DEM if read).

        Raises:
            NoProductError: No S2 product in the month.
            InferenceError: Not a monthly model, or an S1 image or DEM it needs is missing.
        """
        names = self.acquisitions()
        first, _, end = month_bounds(year, month)
        inside = [p for p in products if first <= p.acquired < end]
        if not inside:
            raise NoProductError(f"no S2 product of {normalize_tile(tile)} in "
                                 f"{year}-{month:02d}", field="dates")
        kinds = {parse_key(key.name)[0] for key in self.method.input_keys}
        acquisitions: dict[str | None, AcquisitionProducts] = {}
        for k, name in enumerate(names):
            nominal = first + k * self.spacing
            s2 = min(inside, key=lambda p: abs(p.acquired - nominal))
            s1 = None
            if KeyKind.S1 in kinds:
                s1 = archive.nearest_s1(tile, s2.acquired, self.max_s1_gap)
                if s1 is None:
                    raise InferenceError(f"no S1 image of {normalize_tile(tile)} within "
                                         f"{self.max_s1_gap} of {s2.acquired:%Y-%m-%d}",
                                         field="s1")
            acquisitions[name] = AcquisitionProducts(s2, s1)
        dem = None
        if KeyKind.DEM in kinds:
            dem = archive.dem(tile)
            if dem is None:
                raise InferenceError(f"model {self.method.name} needs a DEM: the archive "
                                     f"has none for {normalize_tile(tile)}", field="dem")
        return DatePlan(self.method, InputProducts(acquisitions, dem, reference=names[0]),
                        None)


def monthly_synthesis(archive: Archive, tile: str, year: int,
                      method: MonthlyGapFill | MonthlyModel, out_dir: str | Path,
                      options: SeriesOptions | None = None, *,
                      months: Sequence[int] = tuple(range(1, 13))) -> list[DateReport]:
    """One image per month of ``year`` (``months``), resumably.

    Args:
        archive: The archive.
        tile: The tile.
        year: The year.
        method: :class:`MonthlyGapFill` or :class:`MonthlyModel`.
        out_dir: Output folder; ``<TILE>_<YYYYMM>_<name>.tif`` per month.
        options: Engine options, strictness, quicklooks, progress.
        months: The months (1-12).

    Returns:
        One report per month (a month without data is ``failed`` with the reason).

    Raises:
        NoProductError: The tile has no S2 product.
        ProcessorRerunError: The folder holds a synthesis of other settings.
    """
    for month in months:
        month_bounds(year, month)  # validates
    products = sorted(archive.select_s2(tile), key=lambda p: p.acquired)
    if not products:
        raise NoProductError(f"tile {normalize_tile(tile)} has no S2 product in the archive",
                             field="tile")
    out_dir = Path(out_dir)
    options = options or SeriesOptions()
    settings = {"processor": "monthly", "tile": normalize_tile(tile),
                "method": method.parameters()}
    planned: Any = method
    if options.execution is not None and options.execution.distributed:
        from decloud.distributed.models import portable

        planned = portable(method, options.execution.backend)  # the model by reference
    jobs = [SeriesJob(label=f"{year}-{month:02d}",
                      out=out_dir / f"{normalize_tile(tile)}_{year}{month:02d}_{method.name}.tif",
                      plan=_planner(planned, archive, tile, year, month, products))
            for month in months]
    return run_jobs(jobs, products[0].grid(), out_dir, settings, options,
                    title=f"{normalize_tile(tile)} monthly synthesis {year} ({method.name})")


def _planner(method: MonthlyGapFill | MonthlyModel, archive: Archive, tile: str, year: int,
             month: int, products: Sequence[S2Product]
             ) -> Callable[[EngineOptions], DatePlan]:
    return lambda engine: method.plan(archive, tile, year, month, products)
