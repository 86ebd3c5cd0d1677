"""Acquisition layouts: shipped files, CNES JSON import, seeded resolution, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from decloud.cli.layout import layout
from decloud.errors import DecloudError, LayoutError
from decloud.layouts import (
    Acquisition,
    Layout,
    RandInt,
    S1Spec,
    S2Spec,
    layout_table,
    load_layout,
)

LAYOUTS = Path(__file__).resolve().parents[2] / "acquisition_layouts"
SHIPPED = sorted(LAYOUTS.glob("*.yaml"))
KINDS = ("meraner", "os1", "os2", "gfa", "gfb", "monthly6")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------- shipped layouts


def test_twelve_shipped_layouts() -> None:
    assert sorted(p.name for p in SHIPPED) == sorted(
        f"{kind}-{region}.yaml" for kind in KINDS for region in ("occitanie", "burkina"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_layout_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    spec = load_layout(path)
    assert spec.name == path.stem and spec.source == str(path)
    assert spec.description and path.read_text().startswith("# ")
    assert spec.dem and spec.keys()[-1] == "dem"
    dumped = yaml.safe_dump(spec.model_dump(mode="json", exclude={"source"}), sort_keys=False)
    again = load_layout(write(tmp_path, "again.yaml", dumped))
    assert again == spec and again.source != spec.source
    assert list(again.acquisitions) == list(spec.acquisitions)


def test_os2_keys() -> None:
    spec = load_layout(LAYOUTS / "os2-occitanie.yaml")
    assert spec.reference_name == "t"
    assert spec.keys() == [
        "s2_tm1", "s2_20m_tm1", "s2_mask_tm1", "s1_tm1",
        "s2_t", "s2_20m_t", "s2_mask_t", "s1_t",
        "s2_target", "s2_20m_target", "s2_mask_target",
        "s2_tp1", "s2_20m_tp1", "s2_mask_tp1", "s1_tp1",
        "dem",
    ]
    assert spec.acquisitions["tm1"] == Acquisition(
        window_hours=(-720, -240), s2=S2Spec(cloud=(0, 100)), s1=S1Spec(max_gap_hours=72))


def test_burkina_variants_are_sparser() -> None:
    for kind in KINDS:
        occ = load_layout(LAYOUTS / f"{kind}-occitanie.yaml")
        bur = load_layout(LAYOUTS / f"{kind}-burkina.yaml")
        assert list(occ.acquisitions) == list(bur.acquisitions)
        for name, acq in bur.acquisitions.items():
            ref = occ.acquisitions[name]
            if acq.s1 is not None:
                assert ref.s1 is not None
                assert (ref.s1.max_gap_hours, acq.s1.max_gap_hours) == (72, 144)
            if acq.window_hours is not None:
                assert ref.window_hours is not None
                (start, end), (ref_start, ref_end) = acq.window_hours, ref.window_hours
                assert end - start > ref_end - ref_start  # wider
            assert acq.s2 == ref.s2


def test_monthly6_windows() -> None:
    spec = load_layout(LAYOUTS / "monthly6-occitanie.yaml")
    assert spec.reference_name == "t0"
    windows = [spec.acquisitions[f"t{i}"].window_hours for i in range(1, 6)]
    assert windows == [(100, 140), (220, 260), (340, 380), (460, 500), (580, 620)]
    assert spec.acquisitions["t3"].s2 == S2Spec(cloud=(RandInt(randint=(0, 2)), 100))
    assert not spec.is_resolved()


def test_table() -> None:
    text = layout_table(load_layout(LAYOUTS / "monthly6-burkina.yaml"))
    assert "monthly6-burkina" in text and "rand[0-2]-100" in text
    assert "+/-144 h" in text and "2.5 .. 7.5 d (60 .. 180 h)" in text
    assert "origin" in text and "dem: yes" in text
    sib = Layout(name="gf", siblings=[["t", "target"]], acquisitions={
        "t": Acquisition(reference=True, s2=S2Spec(),
                         s1=S1Spec(pass_direction="DES", relative_orbits=[8, 110])),
        "target": Acquisition(window_hours=(-24, 24), s2=S2Spec(cloud=(0, 0)))})
    text = layout_table(sib)
    assert "siblings: t = target" in text and "DES, orbits 8,110" in text


def test_cli_show() -> None:
    result = CliRunner().invoke(layout, ["show", str(LAYOUTS / "os2-occitanie.yaml")])
    assert result.exit_code == 0, result.output
    assert "layout os2-occitanie" in result.output
    assert "dataset keys: s2_tm1, s2_20m_tm1, s2_mask_tm1, s1_tm1, s2_t" in result.output


def test_cli_show_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(layout, ["show", str(tmp_path / "nope.yaml")])
    assert isinstance(result.exception, LayoutError)  # the main group prints it


# ---------------------------------------------------------------- CNES JSON import


def cnes_step(low: object, high: object, *, s1: bool = True, origin: bool = False,
              window: tuple[int, int] | None = None, gap: int = 72) -> dict[str, object]:
    sensors: dict[str, object] = {
        "S2": {"type": "S2", "min_cloud_percent": low, "max_cloud_percent": high}}
    step: dict[str, object] = {"acquisition": sensors}
    if s1:
        sensors["S1"] = {"type": "S1"}
        step["max_s1s2_gap_hours"] = gap
    if origin:
        step["timeframe_origin"] = "True"
    if window is not None:
        step["timeframe_start_hours"], step["timeframe_end_hours"] = window
    return step


CNES_OS2 = {
    "t-1": cnes_step(0, 100, window=(-720, -240)),
    "t": cnes_step(1, 100, origin=True),
    "target": cnes_step(0, 0, s1=False, window=(-240, 240)),
    "t+1": cnes_step(0, 100, window=(240, 720)),
}
RAND = "random.randint(0, 2)"
CNES_MONTHLY = {
    "t0": cnes_step(RAND, 100, origin=True),
    **{f"t{i}": cnes_step(RAND, 100, window=(a, b)) for i, (a, b) in enumerate(
        [(100, 140), (220, 260), (340, 380), (460, 500), (580, 620)], start=1)},
    "target": cnes_step(0, 0, s1=False, window=(100, 500)),
}


@pytest.mark.parametrize(("raw", "shipped"), [(CNES_OS2, "os2-occitanie"),
                                              (CNES_MONTHLY, "monthly6-occitanie")])
def test_cnes_json_equals_yaml(raw: dict[str, object], shipped: str, tmp_path: Path) -> None:
    path = write(tmp_path, f"AL-{shipped}.json", json.dumps(raw, indent=2))
    imported = load_layout(path)
    expected = load_layout(LAYOUTS / f"{shipped}.yaml")
    assert imported.name == f"AL-{shipped}" and not imported.dem
    assert list(imported.acquisitions) == list(expected.acquisitions)
    assert imported.acquisitions == expected.acquisitions
    assert imported.siblings == expected.siblings
    assert [*imported.keys(), "dem"] == expected.keys()


def test_cnes_json_options_and_inverted_window(tmp_path: Path) -> None:
    # CNES decloud orders timeframe ends itself (AL-TEST.json has -240, -360).
    raw = {**CNES_OS2, "t-1": cnes_step(0, 100, window=(-240, -360)),
           "options": {"siblings": [["t", "target"]]}}
    spec = load_layout(write(tmp_path, "al.json", json.dumps(raw, indent=2)))
    assert spec.acquisitions["tm1"].window_hours == (-360, -240)
    assert spec.siblings == [["t", "target"]]


# ------------------------------------------------------------------------ resolve


def test_resolve_reproducible_and_varies() -> None:
    spec = load_layout(LAYOUTS / "monthly6-occitanie.yaml")

    def drawn(seed: int) -> tuple[float | RandInt, ...]:
        resolved = spec.resolve(np.random.default_rng(seed))
        assert resolved.is_resolved() and resolved.source == spec.source
        return tuple(a.s2.cloud[0] for a in resolved.acquisitions.values() if a.s2)

    assert drawn(7) == drawn(7)
    draws = {drawn(seed) for seed in range(20)}
    assert len(draws) > 1
    assert {v for d in draws for v in d} == {0, 1, 2}  # target's fixed 0 included
    assert not spec.is_resolved()  # resolve() copies


def test_resolve_draw_order_and_swap() -> None:
    spec = Layout(name="x", acquisitions={
        "t": Acquisition(reference=True, s2=S2Spec(
            cloud=(RandInt(randint=(60, 80)), RandInt(randint=(10, 20))))),
        "u": Acquisition(window_hours=(0, 10), s2=S2Spec(cloud=(RandInt(randint=(0, 100)), 100))),
    })
    rng = np.random.default_rng(3)
    expected = [int(rng.integers(60, 81)), int(rng.integers(10, 21)), int(rng.integers(0, 101))]
    resolved = spec.resolve(np.random.default_rng(3))
    assert resolved.acquisitions["t"].s2 is not None and resolved.acquisitions["u"].s2
    assert resolved.acquisitions["t"].s2.cloud == (expected[1], expected[0])  # swapped
    assert resolved.acquisitions["u"].s2.cloud == (expected[2], 100)
    fixed = load_layout(LAYOUTS / "os2-occitanie.yaml")
    assert fixed.is_resolved() and fixed.resolve(np.random.default_rng(0)) == fixed


# ------------------------------------------------------------------------- errors

OS2 = """\
# a comment
name: os2
acquisitions:
  tm1:
    window_hours: [-720, -240]
    s2: {cloud: [0, 100]}
    s1: {max_gap_hours: 72}
  t:
    reference: true
    s2:
      cloud: [1, 100]
    s1: {max_gap_hours: 72}
  target:
    window_hours: [-240, 240]
    s2: {cloud: [0, 0]}
dem: true
"""


def test_template_is_valid(tmp_path: Path) -> None:
    assert load_layout(write(tmp_path, "ok.yaml", OS2)).keys()[-1] == "dem"


@pytest.mark.parametrize(("old", "new", "line", "field", "words"), [
    # a typo in a field name
    ("      cloud: [1, 100]", "      clould: [1, 100]", 11, "acquisitions.t.s2.clould",
     "did you mean 'cloud'"),
    # an inverted window
    ("[-720, -240]", "[-240, -720]", 5, "acquisitions.tm1.window_hours", "inverted"),
    # a cloud range above 100
    ("{cloud: [0, 0]}", "{cloud: [0, 120]}", 15, "acquisitions.target.s2.cloud.1",
     "outside [0, 100]"),
    # fixed bounds min > max, in the long form
    ("{cloud: [0, 0]}", "{cloud: {min: 50, max: 10}}", 15, "acquisitions.target.s2.cloud",
     "inverted"),
    # a bad randint, pointed at inside the long form
    ("{cloud: [0, 0]}", "\n      cloud:\n        min: {randint: [0, 200]}", 17,
     "acquisitions.target.s2.cloud.0.randint.1", "outside [0, 100]"),
    # two references
    ("    window_hours: [-240, 240]\n", "    reference: true\n", 14,
     "acquisitions.target.reference", "several references"),
    # no reference
    ("    reference: true\n", "    window_hours: [0, 0]\n", 3, "acquisitions", "no reference"),
    # ... which is first noticed as a missing window
    ("    reference: true\n", "", 8, "acquisitions.t.window_hours", "reference: true"),
    # a window given for the reference
    ("    reference: true\n", "    reference: true\n    window_hours: [-1, 1]\n", 10,
     "acquisitions.t.window_hours", "leave window_hours out"),
    # no window for another acquisition
    ("    window_hours: [-240, 240]\n", "", 13, "acquisitions.target.window_hours",
     "required"),
    # neither s2 nor s1
    ("    s2: {cloud: [0, 0]}\n", "    description: nothing\n", 13, "acquisitions.target",
     "s2, s1 or both"),
    # a bad acquisition name
    ("  tm1:", "  t-1:", 4, "acquisitions.t-1", "must match"),
    # empty acquisitions
    (OS2[OS2.index("acquisitions:"):OS2.index("dem:")], "acquisitions: {}\n", 3,
     "acquisitions", "at least one"),
    # a sibling naming an unknown acquisition
    ("dem: true\n", "dem: true\nsiblings:\n  - [t, targt]\n", 18, "siblings.0.1",
     "'targt' is not an acquisition"),
    # a sibling without s2
    ("    s2: {cloud: [0, 0]}\n", "    s1: {}\n",  # target becomes S1-only
     18, "siblings.0.1", "has no s2"),
    # an unknown pass direction
    ("    s1: {max_gap_hours: 72}\n  target", "    s1: {pass_direction: up}\n  target", 12,
     "acquisitions.t.s1.pass_direction", "'ASC' or 'DES'"),
    # a key written twice
    ("  target:\n", "  t:\n    reference: true\n    s2: {}\n  target:\n", 13, "acquisitions.t",
     "written twice"),
    # a missing top-level field: the line of the mapping that lacks it
    ("name: os2\n", "", 2, "name", "missing required field 'name'"),
])
def test_yaml_errors(tmp_path: Path, old: str, new: str, line: int, field: str,
                     words: str) -> None:
    assert old in OS2
    text = OS2.replace(old, new, 1)
    if "has no s2" in words:
        text += "siblings:\n  - [t, target]\n"
    path = write(tmp_path, "bad-layout.yaml", text)
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    err = info.value
    assert err.message.startswith(f"line {line}: "), (err.message, text)
    assert err.field == field and f"[{field}]" in str(err)
    assert err.path == str(path) and "bad-layout.yaml" in str(err)
    assert words in err.message


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", OS2.replace("[0, 100]}", "[0, 100]", 1))
    with pytest.raises(LayoutError, match=r"broken\.yaml: line 7: invalid YAML"):
        load_layout(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(LayoutError, match="line 1: a layout is a YAML mapping"):
        load_layout(write(tmp_path, "x.yaml", text))


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"nope\.yaml: layout file not found"):
        load_layout(tmp_path / "nope.yaml")
    with pytest.raises(LayoutError, match="unknown layout format"):
        load_layout(write(tmp_path, "x.toml", "name = 1"))
    assert issubclass(LayoutError, DecloudError)


def test_json_injection_is_refused(tmp_path: Path) -> None:
    raw = {**CNES_OS2, "target": cnes_step("__import__('os')", 0, s1=False, window=(-1, 1))}
    text = json.dumps(raw, indent=2)
    path = write(tmp_path, "evil.json", text)
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "__import__" in row)
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    err = info.value
    assert err.message.startswith(f"line {line}: unsupported cloud bound")
    assert err.field == "target.acquisition.S2.min_cloud_percent"
    assert "evil.json" in str(err)


@pytest.mark.parametrize(("step", "new", "key", "field", "words"), [
    ("t+1", cnes_step(0, 100, origin=True), '"timeframe_origin"', "t+1.timeframe_origin",
     "several references"),
    ("t+1", cnes_step(0, 150, window=(240, 720)), '"max_cloud_percent": 150',
     "t+1.acquisition.S2.max_cloud_percent", "outside [0, 100]"),
    ("t+1", cnes_step(0, 100, window=(240, 720)) | {"timeframe_orign": 1},
     '"timeframe_orign"', "t+1.timeframe_orign", "unknown field"),
    ("t", cnes_step(1, 100, origin=True) | {"timeframe_start_hours": 5},
     '"timeframe_start_hours": 5', "t.timeframe_start_hours", "leave window_hours out"),
    ("t-1", cnes_step(0, 100, window=(-720, -240)) | {"acquisition": {"S3": {"type": "S3"}}},
     '"type": "S3"', "t-1.acquisition.S3.type", "unknown sensor type"),
])
def test_json_errors(tmp_path: Path, step: str, new: dict[str, object], key: str, field: str,
                     words: str) -> None:
    raw = {**CNES_OS2, step: new}  # same key: the order is kept
    text = json.dumps(raw, indent=2)
    path = write(tmp_path, "al.json", text)
    rows = text.splitlines()
    first = rows.index(f'  "{step}": {{')
    line = next(i for i, row in enumerate(rows, start=1) if i > first and key in row)
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    assert info.value.message.startswith(f"line {line}: "), (info.value.message, line)
    assert info.value.field == field and words in info.value.message
    assert "al.json" in str(info.value)


def test_json_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="line 2: invalid JSON"):
        load_layout(write(tmp_path, "al.json", '{\n  "t": ,\n}'))
