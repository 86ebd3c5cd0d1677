"""Self-contained HTML reports: metric tables, plots and quicklooks in one file.

:func:`write_report` ``(path, title, sections)`` writes one HTML file that needs
nothing else: no network, no scripts, no side files; images are embedded as base64
PNG ``data:`` URIs and the style sheet is inline. It is written atomically.

Sections, rendered in order, each with a title (``<h2>``) and an optional note:

* :class:`ScoresSection` ``(title, scores)``: the table of a
  :class:`~decloud.evaluation.metrics.Scores` (a row per region and band, pixel
  counts, "no pixels" for empty regions);
* :class:`TableSection` ``(title, header, rows)``: any table (one row per method...);
  floats are shown with 4 decimals, None as "no pixels";
* :class:`FigureSection` ``(title, figure)``: a plot, PNG bytes or a matplotlib
  figure (saved at its own size and dpi, then closed);
* :class:`ImagesSection` ``(title, panels)``: quicklooks side by side, each a
  :class:`Panel` ``(label, image)`` with an RGB uint8 ``(h, w, 3)`` array or PNG
  bytes. Panels are made by :func:`true_colour_panels` (input / each method / truth
  with one common stretch, so that they compare), :func:`error_panel` (mean absolute
  error over bands, one colour scale for every error map given the same ``vmax``)
  and :func:`quality_panel` (the engine's quality layer, one colour per class);
* :class:`TextSection` ``(title, text)``: paragraphs of plain text (escaped).

Every table is an HTML ``<table>`` and every image an ``<img>`` with an ``alt``
text (the tests find them in the DOM that a headless Chromium renders).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from decloud._version import __version__
from decloud.constants import MASK_NODATA
from decloud.errors import ArgumentError, GridError
from decloud.evaluation.metrics import KINDS, Scores, regions_from_mask
from decloud.grid import Grid
from decloud.quicklook import stretch
from decloud.writers import atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FigureSection",
    "ImagesSection",
    "Panel",
    "ScoresSection",
    "Section",
    "TableSection",
    "TextSection",
    "check_cloudy_input",
    "error_panel",
    "evaluation_report",
    "metrics_figure",
    "png_bytes",
    "quality_panel",
    "render_report",
    "true_colour_panels",
    "write_report",
]

#: Column titles of the metric kinds.
_KIND_TITLES: Final = {"mae": "MAE", "rmse": "RMSE", "psnr": "PSNR (dB)", "ssim": "SSIM",
                       "sam_deg": "SAM (°)", "cc": "CC"}

#: Colours of the engine's quality classes (clear, reconstructed, feathered, nodata).
QUALITY_COLOURS: Final = {0: (200, 200, 200), 1: (214, 39, 40), 2: (255, 160, 60),
                          255: (0, 0, 0)}

_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
p.note, p.meta { color: #555; font-size: .9em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eee; }
td.label, th.label { text-align: left; }
tr.overall td { font-weight: bold; background: #f6f6f6; }
td.empty { color: #999; font-style: italic; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 200px; }
figcaption { text-align: center; font-size: .85em; color: #333; }
img { image-rendering: pixelated; border: 1px solid #ccc; max-width: 100%; }
.panels img { width: 200px; }
"""


@dataclass(frozen=True)
class TextSection:
    """Paragraphs of plain text (blank lines separate them)."""

    title: str
    text: str


@dataclass(frozen=True)
class ScoresSection:
    """The metrics table of a :class:`~decloud.evaluation.metrics.Scores`."""

    title: str
    scores: Scores
    note: str = ""


@dataclass(frozen=True)
class TableSection:
    """Any table: a header and rows of cells (str, int, float or None)."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str | int | float | None]]
    note: str = ""


@dataclass(frozen=True)
class FigureSection:
    """A plot: PNG bytes, or a matplotlib figure (rendered then closed)."""

    title: str
    figure: bytes | Figure
    note: str = ""


@dataclass(frozen=True)
class Panel:
    """One quicklook: a label and an RGB uint8 ``(h, w, 3)`` image or PNG bytes."""

    label: str
    image: np.ndarray | bytes


@dataclass(frozen=True)
class ImagesSection:
    """Quicklooks side by side (input / methods / truth, error maps, quality)."""

    title: str
    panels: Sequence[Panel]
    note: str = ""


#: Any section :func:`write_report` renders.
Section = TextSection | ScoresSection | TableSection | FigureSection | ImagesSection


def png_bytes(image: np.ndarray | bytes | Figure) -> bytes:
    """PNG bytes of an RGB uint8 ``(h, w, 3)`` array or a matplotlib figure (bytes as is).

    Raises:
        ArgumentError: An array that is not uint8 RGB.
    """
    if isinstance(image, bytes):
        return image
    buffer = io.BytesIO()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ArgumentError(f"expects a uint8 RGB image (h, w, 3), not {image.dtype} "
                                f"{image.shape}", field="image")
        # Imported here: matplotlib costs seconds per process, and only reports need it.
        from matplotlib import image as mpimg

        mpimg.imsave(buffer, image, format="png")
    else:
        from matplotlib import pyplot as plt

        image.savefig(buffer, format="png")
        plt.close(image)
    return buffer.getvalue()


def true_colour_panels(images: Mapping[str, np.ndarray], *, stretch_from: str | None = None,
                       low: float = 2.0, high: float = 98.0) -> list[Panel]:
    """True-colour panels of several images of one place, with one common stretch.

    Args:
        images: ``{label: reflectance (h, w, 3)}``, bands red, green, blue, NaN nodata.
        stretch_from: The label whose percentiles stretch every panel (the truth,
            typically); the first image's by default. A common stretch keeps the panels
            comparable (a per-image stretch would hide a method's bias).
        low: Lower percentile.
        high: Upper percentile.

    Raises:
        ArgumentError: No images, an image that is not ``(h, w, 3)``, or an unknown label.
    """
    if not images:
        raise ArgumentError("no images to show", field="images")
    key = stretch_from if stretch_from is not None else next(iter(images))
    if key not in images:
        raise ArgumentError(f"no image {key!r} to stretch from", field="stretch_from")
    for label, image in images.items():
        if image.ndim != 3 or image.shape[2] != 3:
            raise ArgumentError(f"{label}: expects (h, w, 3) red, green, blue, not "
                                f"{image.shape}", field="images")
    base = images[key]
    limits = []
    for band in range(3):
        values = base[..., band][np.isfinite(base[..., band])]
        lo, hi = np.percentile(values, [low, high]) if values.size else (0.0, 1.0)
        limits.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    panels = []
    for label, image in images.items():
        rgb = np.stack([np.clip((image[..., b] - lo) / (hi - lo), 0.0, 1.0)
                        for b, (lo, hi) in enumerate(limits)], axis=-1)
        out = np.nan_to_num(rgb * 255, nan=0.0).round().astype(np.uint8)
        out[~np.isfinite(image).all(axis=-1)] = 0
        panels.append(Panel(label, out))
    return panels


def error_panel(label: str, pred: np.ndarray, ref: np.ndarray, *, vmax: float | None = None,
                cmap: str = "magma") -> Panel:
    """Map of the mean absolute error over bands, ``(h, w, C)`` inputs; nodata black.

    Args:
        label: The panel's label.
        pred: Prediction ``(h, w, C)``, NaN nodata.
        ref: Reference, same shape.
        vmax: Error at the top of the colour scale (give every map the same one); the
            98th percentile of this map by default.
        cmap: A matplotlib colour map.
    """
    error = np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64)).mean(axis=-1)
    ok = np.isfinite(error)
    top = vmax if vmax is not None else (
        float(np.percentile(error[ok], 98)) if ok.any() else 1.0)
    scaled = stretch(error, 0.0, 100.0) if top <= 0 else np.clip(
        np.nan_to_num(error / top, nan=0.0), 0.0, 1.0)
    from matplotlib import colormaps

    rgb = (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)
    rgb[~ok] = 0
    return Panel(f"{label} (|error|, 0 to {top:.3g})", rgb)


def quality_panel(label: str, quality: np.ndarray) -> Panel:
    """The engine's quality layer, one colour per class (:data:`QUALITY_COLOURS`)."""
    quality = np.asarray(quality)
    rgb = np.full((*quality.shape, 3), 255, dtype=np.uint8)
    for value, colour in QUALITY_COLOURS.items():
        rgb[quality == value] = colour
    return Panel(f"{label} (grey: clear, red: reconstructed, orange: feathered, "
                 f"black: nodata)", rgb)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _cell(value: str | int | float | None) -> str:
    if value is None:
        return '<td class="empty">no pixels</td>'
    if isinstance(value, float | np.floating):
        return f"<td>{float(value):.4f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _note(note: str) -> str:
    return f'<p class="note">{html.escape(note)}</p>' if note else ""


def _scores_table(scores: Scores) -> str:
    head = ["Region", "Band", *(_KIND_TITLES[k] for k in KINDS), "Pixels", "SSIM pixels"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
             + "</tr>"]
    for region, band, m in scores.rows():
        cls = ' class="overall"' if band == "all bands" else ""
        cells = [f'<td class="label">{html.escape(region)}</td>',
                 f'<td class="label">{html.escape(band)}</td>']
        for kind in KINDS:
            text = m.formatted(kind)
            empty = ' class="empty"' if text in ("no pixels", "undefined", "-") else ""
            cells.append(f"<td{empty}>{html.escape(text)}</td>")
        cells += [f"<td>{m.n_pixels}</td>", f"<td>{m.n_ssim}</td>"]
        lines.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _render(section: Section) -> str:
    head = f"<section>\n<h2>{html.escape(section.title)}</h2>"
    if isinstance(section, TextSection):
        paragraphs = [p.strip() for p in section.text.split("\n\n") if p.strip()]
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    elif isinstance(section, ScoresSection):
        body = _scores_table(section.scores) + _note(
            section.note or f"Data range {section.scores.data_range:g}; PSNR per band "
            "from the band's MSE, overall from the MSE pooled over bands; SAM is the mean "
            "spectral angle; SSIM pixels: those whose whole 11 x 11 window is valid.")
    elif isinstance(section, TableSection):
        rows = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                            for h in section.header) + "</tr>"]
        for row in section.rows:
            if len(row) != len(section.header):
                raise ArgumentError(f"{section.title}: a row of {len(row)} cells under "
                                    f"{len(section.header)} columns", field="rows")
            rows.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
        body = "\n".join([*rows, "</table>"]) + _note(section.note)
    elif isinstance(section, FigureSection):
        body = _img(png_bytes(section.figure), section.title) + _note(section.note)
    elif isinstance(section, ImagesSection):
        figures = [f"<figure>{_img(png_bytes(p.image), p.label)}"
                   f"<figcaption>{html.escape(p.label)}</figcaption></figure>"
                   for p in section.panels]
        body = '<div class="panels">\n' + "\n".join(figures) + "\n</div>" + _note(section.note)
    else:
        raise ArgumentError(f"unknown report section {type(section).__name__}",
                            field="sections")
    return f"{head}\n{body}\n</section>"


def render_report(title: str, sections: Sequence[Section], *,
                  meta: Mapping[str, Any] | None = None) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    info = {"decloud": __version__, **(meta or {})}
    meta_line = "; ".join(f"{k}: {v}" for k, v in info.items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>",
        "<body>", f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(meta_line)}</p>',
        *(_render(s) for s in sections), "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike[str], title: str, sections: Sequence[Section], *,
                 meta: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a self-contained HTML report, atomically.

    Args:
        path: The ``.html`` file.
        title: The report's title.
        sections: Its sections, in order (see the module's documentation).
        meta: Lines of provenance shown under the title (inputs, date...); decloud's
            version is always shown.
        overwrite: Replace an existing report.

    Returns:
        The path written.

    Raises:
        OutputExistsError: The file exists and ``overwrite`` is false.
        ArgumentError: A section that cannot be rendered.
    """
    text = render_report(title, sections, meta=meta)  # rendered first: no partial file
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def metrics_figure(scores: Scores, kind: str = "mae") -> Figure:
    """Bar chart of one metric per band, one bar per region (a band's bars side by side).

    Empty regions have no bar. The figure is for a :class:`FigureSection`.
    """
    from matplotlib.figure import Figure as _Figure

    fig = _Figure(figsize=(max(6.0, 0.7 * len(scores.bands) + 3), 3.4), dpi=100)
    ax = fig.subplots()
    regions = list(scores.regions)
    width = 0.8 / max(1, len(regions))
    x = np.arange(len(scores.bands))
    for i, region in enumerate(regions):
        values = [getattr(scores[region].bands[b], kind) for b in scores.bands]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(regions) - 1) / 2) * width, heights, width,
               label=f"{region} ({scores[region].overall.n_pixels} px)")
    ax.set_xticks(x, scores.bands)
    ax.set_ylabel(_KIND_TITLES[kind])
    ax.set_title(f"{_KIND_TITLES[kind]} per band and region")
    # Below the axes: inside, it would hide the bars of some band.
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12),
              ncols=len(regions), frameon=False)
    fig.tight_layout()
    return fig


def check_cloudy_input(cloudy: str | os.PathLike[str], pred: str | os.PathLike[str]) -> None:
    """Refuse a cloudy input that is not on the prediction's grid.

    Raises:
        GridError: The grids differ (naming ``cloudy``, field ``grid``).
    """
    if Grid.from_raster(cloudy) != Grid.from_raster(pred):
        raise GridError("the cloudy input is not on the prediction's grid", path=cloudy,
                        field="grid")


def evaluation_report(path: str | os.PathLike[str], scores: Scores, pred: str | os.PathLike[str],
                      ref: str | os.PathLike[str], *, mask: str | os.PathLike[str] | None = None,
                      quality: str | os.PathLike[str] | None = None,
                      cloudy: str | os.PathLike[str] | None = None, size: int = 512,
                      overwrite: bool = False) -> Path:
    """The report of ``decloud evaluate``: tables, plots and quicklooks of two rasters.

    Quicklooks (read decimated to ``size`` px on the longest side): the cloudy input
    (if given), the prediction and the reference in true colour with the reference's
    stretch (when they have B04, B03 and B02), the map of the absolute error over the
    scored bands, and the quality layer or cloud mask that defined the regions.

    Args:
        path: The ``.html`` file.
        scores: The scores (:func:`~decloud.evaluation.metrics.score_rasters`).
        pred: The prediction raster.
        ref: The reference raster.
        mask: The cloud mask raster, if the regions came from one.
        quality: The quality layer, if the regions came from one.
        cloudy: The cloudy input the prediction was made from, shown first.
        size: Longest side of the quicklooks, px.
        overwrite: Replace an existing report.

    Raises:
        GridError: ``cloudy`` is not on the prediction's grid (:func:`check_cloudy_input`).
    """
    from decloud.evaluation.metrics import read_layer, read_reflectance

    if cloudy is not None:
        check_cloudy_input(cloudy, pred)
    rgb = ("B04", "B03", "B02")
    _, p = read_reflectance(pred, scores.bands, size=size)
    _, r = read_reflectance(ref, scores.bands, size=size)
    panels: list[Panel] = []
    if all(b in scores.bands for b in rgb):
        idx = [scores.bands.index(b) for b in rgb]
        images = {"prediction": p[..., idx], "reference": r[..., idx]}
        if cloudy is not None:
            images = {"cloudy input": read_reflectance(cloudy, rgb, size=size)[1], **images}
        panels += true_colour_panels(images, stretch_from="reference")
    panels.append(error_panel("prediction - reference", p, r))
    if quality is not None:
        panels.append(quality_panel("quality layer", read_layer(quality, size=size)[0]))
    elif mask is not None:
        layer, nodata = read_layer(mask, size=size)
        regions = regions_from_mask(layer, nodata if nodata is not None else MASK_NODATA)
        coded = np.full(layer.shape, 255, dtype=np.uint8)
        coded[regions["clear"]] = 0
        coded[regions["reconstructed"]] = 1
        panels.append(quality_panel("cloud mask", coded))
    sections: list[Section] = [
        ScoresSection("Metrics", scores),
        FigureSection("MAE per band", metrics_figure(scores, "mae")),
        FigureSection("PSNR per band", metrics_figure(scores, "psnr")),
        ImagesSection("Quicklooks", panels,
                      note="True colour with the reference's 2-98 % stretch; quicklooks are "
                           "decimated, the metrics are computed at full resolution."),
    ]
    meta = {"prediction": pred, "reference": ref, **({"input": cloudy} if cloudy else {}),
            **({"mask": mask} if mask else {}),
            **({"quality": quality} if quality else {})}
    return write_report(path, f"Evaluation of {Path(pred).name}", sections, meta=meta,
                        overwrite=overwrite)
