"""``decloud evaluate``: JSON, Markdown and HTML of full-image metrics; bad inputs refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from decloud.cli.main import cli
from decloud.evaluation.metrics import score_rasters
from decloud.keys import encode_s2
from tests.evaluation.test_metrics import _raster_case, _write


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_evaluate_writes_json_markdown_and_html(tmp_path: Path) -> None:
    p_path, r_path, _, q_path, *_ = _raster_case(tmp_path)
    out = tmp_path / "eval"
    code, text = run("evaluate", p_path, r_path, "--quality", q_path, "--out", out,
                     "--block", 32, "--input", r_path)
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.html", "evaluation.json",
                                                     "evaluation.md"]
    record = json.loads((out / "evaluation.json").read_text())
    expected = score_rasters(p_path, r_path, quality=q_path).to_dict()
    assert record["regions"].keys() == expected["regions"].keys() == {
        "all", "reconstructed", "clear"}
    for region, scores in expected["regions"].items():
        got = record["regions"][region]["overall"]
        assert got == pytest.approx(scores["overall"], rel=1e-10)
        assert got["n_pixels"] > 0
    assert record["quality"] == str(q_path) and record["bands"] == ["B04", "B03", "B02"]
    markdown = (out / "evaluation.md").read_text()
    assert "| reconstructed | all bands |" in markdown and "| clear | B02 |" in markdown
    assert "| region | band |" in text  # the table is printed too
    html = (out / "evaluation.html").read_text()
    # The table, 2 plots, 5 quicklooks (input, prediction, reference, error, quality).
    assert html.count("<table>") == 1 and html.count("<img ") == 7
    assert 'alt="cloudy input"' in html and 'alt="quality layer' in html


def test_an_empty_region_says_no_pixels(tmp_path: Path) -> None:
    p_path, r_path, *_ = _raster_case(tmp_path)
    everywhere = _write(tmp_path / "all_cloud.tif", np.ones((70, 45, 1), np.uint8), ["mask"],
                        dtype="uint8", nodata=255)
    code, text = run("evaluate", p_path, r_path, "--mask", everywhere, "--out",
                     tmp_path / "e")
    assert code == 0, text
    clear_rows = [row for row in text.splitlines() if row.startswith("| clear")]
    assert clear_rows and all("no pixels" in row and "0.0000" not in row
                              for row in clear_rows)
    record = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert record["regions"]["clear"]["overall"]["mae"] is None
    assert record["regions"]["clear"]["overall"]["n_pixels"] == 0
    assert "no pixels" in (tmp_path / "e" / "evaluation.html").read_text()


def test_mismatched_inputs_are_refused_naming_the_file(tmp_path: Path) -> None:
    p_path, r_path, *_ = _raster_case(tmp_path)
    with rasterio.open(r_path) as src:
        data = np.moveaxis(src.read(), 0, -1)
    shifted = _write(tmp_path / "shifted.tif", data, ["B04", "B03", "B02"],
                     transform=from_origin(600020, 5000000, 10, 10))
    code, text = run("evaluate", p_path, shifted, "--out", tmp_path / "e")
    assert code == 1 and "GridError" in text and "shifted.tif" in text
    other = _write(tmp_path / "nir.tif", encode_s2(np.zeros((70, 45, 3)) + 0.1),
                   ["B08", "B03", "B02"])
    code, text = run("evaluate", p_path, other, "--out", tmp_path / "e")
    assert code == 1 and "EvaluationError" in text and "nir.tif [bands]" in text
    code, text = run("evaluate", p_path, r_path, "--input", shifted, "--out", tmp_path / "e")
    assert code == 1 and "GridError" in text and "shifted.tif" in text
    assert not (tmp_path / "e").exists()  # refused before anything is written
    code, text = run("evaluate", p_path, other, "--bands", "B03,B2", "--out", tmp_path / "e")
    assert code == 0, text
    assert not (tmp_path / "shifted_evaluation").exists()


def test_the_cloudy_input_is_checked_by_the_library_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decloud.evaluation.report as report

    p_path, r_path, *_ = _raster_case(tmp_path)
    with rasterio.open(r_path) as src:
        data = np.moveaxis(src.read(), 0, -1)
    shifted = _write(tmp_path / "shifted.tif", data, ["B04", "B03", "B02"],
                     transform=from_origin(600020, 5000000, 10, 10))
    calls: list[tuple[Path, Path]] = []
    check = report.check_cloudy_input

    def spy(cloudy: Path, pred: Path) -> None:
        calls.append((Path(cloudy), Path(pred)))
        check(cloudy, pred)

    monkeypatch.setattr(report, "check_cloudy_input", spy)
    code, text = run("evaluate", p_path, r_path, "--input", shifted, "--bands", "B04",
                     "--out", tmp_path / "e")
    assert code == 1 and "GridError" in text and "shifted.tif [grid]" in text
    assert calls == [(shifted, p_path)] and not (tmp_path / "e").exists()


def test_an_earlier_evaluation_is_kept_unless_overwritten(tmp_path: Path) -> None:
    p_path, r_path, *_ = _raster_case(tmp_path)
    code, _ = run("evaluate", p_path, r_path)
    out = tmp_path / "pred_evaluation"  # the default folder, beside the prediction
    first = (out / "evaluation.json").read_text()
    code, text = run("evaluate", p_path, r_path, "--bands", "B04")
    assert code == 1 and "OutputExistsError" in text and "evaluation.json" in text
    assert (out / "evaluation.json").read_text() == first
    code, text = run("evaluate", p_path, r_path, "--bands", "B04", "--overwrite")
    assert code == 0, text
    assert json.loads((out / "evaluation.json").read_text())["bands"] == ["B04"]


@pytest.mark.slow
def test_evaluate_never_loads_the_deep_learning_backend(tmp_path: Path) -> None:
    p_path, r_path, *_ = _raster_case(tmp_path)
    code = ("import sys\nfrom decloud.cli.main import cli\n"
            f"cli(['evaluate', {str(p_path)!r}, {str(r_path)!r}, '--out', "
            f"{str(tmp_path / 'e')!r}], standalone_mode=False)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "oneDNN" not in out.stderr and "Warning" not in out.stderr
