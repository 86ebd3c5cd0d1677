"""HTML reports: self-contained, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from decloud.errors import ArgumentError, OutputExistsError
from decloud.evaluation.metrics import regions_from_mask, score_arrays
from decloud.evaluation.report import (
    FigureSection,
    ImagesSection,
    Panel,
    ScoresSection,
    TableSection,
    TextSection,
    error_panel,
    png_bytes,
    quality_panel,
    true_colour_panels,
    write_report,
)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Written into a copy of the report (the report itself has no script): once the page
# has loaded, each image's decoded width goes into the DOM that --dump-dom prints.
_PROBE = ("<script>window.addEventListener('load', () => {for (const i of document.images)"
          " {i.setAttribute('data-natural-width', i.naturalWidth);} "
          "document.body.setAttribute('data-loaded', '1');});</script>")


def chromium() -> str:
    """The headless browser's executable, or skip saying why."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (.ci/run installs the distribution's "
                "'chromium' package where it can)")


def browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium offline, with a throw-away profile."""
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class _Dom(HTMLParser):
    """Tables, images (their attributes) and table cells of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[dict[str, str | None]] = []
        self.cells: list[str] = []
        self.body: dict[str, str | None] = {}
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "body":
            self.body = dict(attrs)
        elif tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", data[16:20])[0])


def _sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth = rng.random((48, 64, 3)) * 0.2 + 0.05
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    pred = truth + np.where(mask[..., None] == 1, rng.normal(0, 0.02, truth.shape), 0.0)
    return pred, truth, mask


def _report(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A report with every kind of section; the PNGs its images should show."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rng = np.random.default_rng(0)
    pred, truth, mask = _sample(rng)
    cloudy = np.where(mask[..., None] == 1, np.nan, truth)
    scores = score_arrays(pred, truth, bands=["B04", "B03", "B02"],
                          regions=regions_from_mask(mask))
    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot([1, 2, 3], [3, 1, 2])
    panels = [*true_colour_panels({"input": cloudy, "method": pred, "truth": truth},
                                  stretch_from="truth"),
              error_panel("method", pred, truth, vmax=0.05),
              quality_panel("quality", np.where(mask == 1, 1, 0).astype(np.uint8))]
    pngs = [png_bytes(p.image) for p in panels]
    sections = [
        TextSection("About", "Two paragraphs.\n\nThe second <b>escaped</b>."),
        ScoresSection("Metrics", scores),
        TableSection("Methods", ["method", "MAE", "pixels"],
                     [["nearest", 0.0123, 600], ["empty", None, 0]], note="a note"),
        FigureSection("A plot", fig),
        ImagesSection("Quicklooks", panels),
    ]
    path = write_report(tmp_path / "report.html", "A <test> report", sections,
                        meta={"reference": "truth.tif"})
    return path, pngs


def test_the_report_is_one_self_contained_file(tmp_path: Path) -> None:
    path, _ = _report(tmp_path)
    text = path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    # Nothing fetched from anywhere: every image is a data: URI, no link, no script.
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "<link" not in text
    assert "A &lt;test&gt; report" in text and "&lt;b&gt;escaped&lt;/b&gt;" in text
    with pytest.raises(OutputExistsError, match=r"report\.html"):
        write_report(path, "again", [])
    write_report(path, "again", [], overwrite=True)
    assert "<h1>again</h1>" in path.read_text()


def test_bad_sections_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="2 cells under 3 columns"):
        write_report(tmp_path / "r.html", "t", [TableSection("T", ["a", "b", "c"], [[1, 2]])])
    with pytest.raises(ArgumentError, match="uint8 RGB"):
        write_report(tmp_path / "r.html", "t",
                     [ImagesSection("I", [Panel("x", np.zeros((4, 4), np.float32))])])
    assert list(tmp_path.iterdir()) == []


def test_panels_share_one_stretch() -> None:
    truth = np.random.default_rng(1).random((20, 20, 3))
    brighter = truth + 0.2
    a, b = true_colour_panels({"truth": truth, "brighter": brighter}, stretch_from="truth")
    assert isinstance(a.image, np.ndarray) and isinstance(b.image, np.ndarray)
    # A per-image stretch would make both look alike; a common one keeps the bias.
    assert b.image.astype(int).mean() > a.image.astype(int).mean() + 20
    with pytest.raises(ArgumentError, match="stretch from"):
        true_colour_panels({"truth": truth}, stretch_from="nope")


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    exe = chromium()
    path, pngs = _report(tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", _PROBE + "</body>"))
    done = browser(exe, tmp_path / "profile", "--dump-dom", probe.as_uri())
    dom = _Dom()
    dom.feed(done.stdout)
    assert dom.body.get("data-loaded") == "1", done.stderr[-2000:]
    assert dom.tables == 2  # the metrics and the methods
    # Every image decoded, at its PNG's width (5 panels and the plot: 4 x 3 in at 50 dpi).
    widths = [int(img["data-natural-width"] or 0) for img in dom.images]
    assert widths == [200, *(_png_width(p) for p in pngs)]
    assert all(img["alt"] for img in dom.images)
    assert "no pixels" in dom.cells and "0.0123" in dom.cells
    # And a screenshot shows something (not a blank page).
    shot = tmp_path / "shot.png"
    browser(exe, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1000,1400",
            path.as_uri())
    from matplotlib import image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (1400, 1000) and float(pixels[..., :3].std()) > 0.05
