"""Dataset keys come from the key module: grammar, order, encodings, refused names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decloud.datasets import PlanOptions, WriteOptions, dataset_keys
from decloud.errors import DatasetError, LayoutError
from decloud.keys import KINDS, REFERENCE_RESOLUTION, KeyKind, make_key, parse_key
from decloud.layouts import Layout, load_layout


def test_dataset_keys_follow_the_kind_table(layout: Layout) -> None:
    keys = dataset_keys(layout, 32, ("B04", "B08"), ("B11",))
    assert list(keys) == layout.keys()
    assert list(keys)[:4] == ["s2_tm1", "s2_20m_tm1", "s2_mask_tm1", "s1_tm1"]
    for name, spec in keys.items():
        kind, acq = parse_key(name)
        assert (spec.kind, spec.acquisition) == (kind, acq)
        assert name == make_key(kind, acq)
        table = KINDS[kind]
        assert (spec.dtype, spec.nodata, spec.scale, spec.encoding, spec.resolution) == (
            table.dtype, table.nodata, table.scale, table.encoding, table.resolution)
        assert spec.size * spec.resolution == 32 * REFERENCE_RESOLUTION
        # The nodata value is one of the dtype's values.
        assert np.array(spec.nodata, dtype=spec.dtype) == spec.nodata
    assert keys["s2_t"].bands == ("B04", "B08") and keys["s2_20m_t"].bands == ("B11",)
    assert keys["s1_t"].bands == KINDS[KeyKind.S1].default_bands
    assert keys["s2_20m_t"].shape == (16, 16, 1)
    # The manifest records the kind as its text.
    assert keys["s2_mask_t"].describe()["kind"] == "s2_mask"


def test_reserved_acquisition_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nacquisitions:\n  mask:\n    reference: true\n"
                    "    s2: {cloud: [0, 100]}\n")
    with pytest.raises(LayoutError, match="reserved"):
        load_layout(path)


def test_options_are_checked_when_made() -> None:
    with pytest.raises(DatasetError, match="even"):
        WriteOptions(patch_size=33)
    with pytest.raises(DatasetError, match="shard size"):
        WriteOptions(shard_size=0)
    with pytest.raises(DatasetError, match="twice"):
        WriteOptions(bands10=("B04", "b4"))
    with pytest.raises(DatasetError, match="no band"):
        WriteOptions(bands10=())
    assert WriteOptions(bands20=()).bands20 == ()  # no s2_20m key (10 m-only archives)
    with pytest.raises(DatasetError, match="even"):
        PlanOptions(3, patch_size=33)
    assert WriteOptions(bands10=("b4", "B8")).bands10 == ("B04", "B08")
    assert WriteOptions(dem_root="dems").dem_root == Path("dems")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="positive"):
        PlanOptions(0)
    with pytest.raises(DatasetError, match="seed"):
        PlanOptions(3, seed=-1)
    with pytest.raises(DatasetError, match="not both"):
        PlanOptions(3, splits={"a": 1.0}, rois={"b": Path("x")})
    assert PlanOptions(3, ["T31UFS"]).tiles == ("T31UFS",)  # type: ignore[arg-type]


def test_npz_members_are_numpys_npy_bytes(tmp_path: Path) -> None:
    """write_npz writes each array's memory itself: the bytes are numpy's own format."""
    import io
    import zipfile

    from decloud.datasets.format import write_npz

    rng = np.random.default_rng(0)
    arrays = {"s2_t": rng.integers(-10000, 10000, (3, 8, 8, 4)).astype(np.int16),
              "dt_t": rng.random((3, 1)).astype(np.float32),
              "s2_mask_t": rng.integers(0, 5, (3, 8, 8, 1)).astype(np.uint8),
              "empty": np.zeros((0, 2), np.uint16),
              "meta": np.array(['{"index": 0}', '{"index": 1}'], dtype=str)}
    write_npz(tmp_path / "a.npz", arrays)
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        for name, array in arrays.items():
            want = io.BytesIO()
            np.lib.format.write_array(want, array, allow_pickle=False)
            assert archive.read(f"{name}.npy") == want.getvalue(), name
    loaded = np.load(tmp_path / "a.npz")
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded[name], array)
