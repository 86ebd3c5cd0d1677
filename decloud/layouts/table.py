"""A readable text summary of a layout (in the spirit of CNES decloud's ``summarize``)."""

from __future__ import annotations

from decloud.layouts.model import Acquisition, Layout, RandInt

__all__ = ["layout_table"]

_HEADER = ("acquisition", "ref", "window", "sensors", "S2 cloud %", "nodata % S2/S1",
           "S1 gap", "S1 pass/orbits")


def _num(value: float) -> str:
    return f"{value:g}"


def _window(acq: Acquisition) -> str:
    if acq.window_hours is None:
        return "origin"
    start, end = acq.window_hours
    return (f"{_num(round(start / 24, 1))} .. {_num(round(end / 24, 1))} d "
            f"({_num(start)} .. {_num(end)} h)")


def _bound(bound: float | RandInt) -> str:
    return bound.label() if isinstance(bound, RandInt) else _num(bound)


def _row(name: str, acq: Acquisition) -> tuple[str, ...]:
    s2, s1 = acq.s2, acq.s1
    sensors = "+".join(n for n, spec in (("S2", s2), ("S1", s1)) if spec is not None)
    cloud = "" if s2 is None else f"{_bound(s2.cloud[0])}-{_bound(s2.cloud[1])}"
    nodata = "/".join("-" if spec is None else _num(spec.nodata_max) for spec in (s2, s1))
    gap = pass_orbits = ""
    if s1 is not None:
        # With no S2 there is nothing to be close to: the gap does not apply.
        gap = f"+/-{_num(s1.max_gap_hours)} h" if s2 is not None else "-"
        parts: list[str] = [s1.pass_direction or "any"]
        if s1.relative_orbits:
            parts.append("orbits " + ",".join(str(o) for o in s1.relative_orbits))
        pass_orbits = ", ".join(parts)
    return (name, "*" if acq.reference else "", _window(acq), sensors, cloud, nodata, gap,
            pass_orbits)


def layout_table(layout: Layout) -> str:
    """Summarise a layout as a text table, one row per acquisition.

    Columns: name, reference mark (``*``), time window relative to the reference (days,
    then hours), sensors, S2 cloud range (random bounds shown as ``rand[0-2]``), nodata
    maxima, S1-S2 gap and S1 pass/orbits; then lines for the DEM and the siblings.

    Args:
        layout: The layout to describe.

    Returns:
        Multi-line text without a trailing newline.
    """
    rows = [_HEADER, *(_row(name, acq) for name, acq in layout.acquisitions.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    title = f"layout {layout.name}" + (f" ({layout.source})" if layout.source else "")
    lines = [title]
    if layout.description:
        lines.append(layout.description)
    lines += ["", fmt(rows[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in rows[1:]]
    lines += ["", f"dem: {'yes' if layout.dem else 'no'}",
              "siblings: " + ("; ".join(" = ".join(g) for g in layout.siblings)
                              if layout.siblings else "none")]
    if not layout.is_resolved():
        lines.append("random cloud bounds are drawn per sample with the sampler's seed")
    return "\n".join(lines)
