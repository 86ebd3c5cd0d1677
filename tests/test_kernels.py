"""Tests of decloud/_kernels.c beyond the read tests of tests/test_grid.py.

The compiled loops are optional (setup.py builds them with ``optional=True``), so a
failed compile would be silent and the compiled-path tests of test_grid.py would skip:
the first test makes ``make test`` fail instead wherever the extension could be built.
"""

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest


def _can_compile() -> bool:
    """Whether this interpreter can build C extensions: a compiler and Python.h."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(cc) and shutil.which(cc[0]) is not None and header.is_file()


def test_kernels_are_built_where_a_c_compiler_is_present() -> None:
    """A C compiler and Python's headers here: decloud._kernels must import."""
    import decloud.grid

    if not _can_compile():
        pytest.skip("no C compiler or Python headers: the numpy read path is expected")
    try:
        import decloud._kernels
    except ImportError as exc:
        pytest.fail(f"decloud._kernels is not built although a C compiler is present ({exc}); "
                    "rebuild it: make test (or pip install -e .)")
    assert decloud.grid.COMPILED_LOOPS
    assert decloud.grid._kernels is not None


def test_compiled_loops_flag_and_run_record_say_whether_the_loops_are_used() -> None:
    """COMPILED_LOOPS is whether the extension imported; run records carry it."""
    import decloud.grid
    from decloud.inference.engine import RunRecord

    try:
        import decloud._kernels
        built = True
    except ImportError:
        built = False
    assert decloud.grid.COMPILED_LOOPS is built
    record = RunRecord({}, {}, {}, {}, {}, {}, {}, {})
    assert record.compiled_loops is built
    assert '"compiled_loops": ' + str(built).lower() in record.to_json()


# Out of each type's range: a cast would wrap them (-1 as uint16 is 65535).
_OUT_OF_RANGE = [("uint16", -1), ("uint16", 65536), ("int16", -32769), ("int16", 32768)]


@pytest.mark.parametrize(("dtype", "nodata"), _OUT_OF_RANGE)
def test_scale_nodata_rejects_a_nodata_outside_the_source_type(dtype: str, nodata: int) -> None:
    kernels = pytest.importorskip("decloud._kernels")
    src = np.full((3, 4), np.iinfo(dtype).max, dtype)
    out = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=f"nodata {nodata} "):
        kernels.scale_nodata(src, out, nodata, True, 1.0, False, 0.0)
    # Without nodata the value is unused, and the edge values of the type are accepted.
    kernels.scale_nodata(src, out, nodata, False, 1.0, False, 0.0)
    assert (out == np.iinfo(dtype).max).all()
    kernels.scale_nodata(src, out, int(np.iinfo(dtype).max), True, 1.0, False, 0.0)
    assert np.isnan(out).all()


@pytest.mark.parametrize(("dtype", "nodata"), _OUT_OF_RANGE)
@pytest.mark.parametrize("strided", [False, True])
def test_upsample2_rejects_a_nodata_outside_the_source_type(dtype: str, nodata: int,
                                                            strided: bool) -> None:
    """Both the contiguous and the strided path (which compares in int32)."""
    kernels = pytest.importorskip("decloud._kernels")
    full = np.full((4, 10), np.iinfo(dtype).max, dtype)
    src = full[:, ::2] if strided else full[:, :5]
    out = np.zeros((4, 6), np.float32)
    row_index = np.array([0, 0, 1, 1], np.int32)
    row_far = np.array([1, 0, 1, 0], np.uint8)
    col_index = np.array([0, 0, 1, 1, 2, 2], np.int32)
    col_far = np.array([1, 0, 1, 0, 1, 0], np.uint8)
    args = (row_index, row_far, col_index, col_far)
    with pytest.raises(ValueError, match=f"nodata {nodata} "):
        kernels.upsample2(src, out, *args, nodata, True, 1.0, False, 0.0)
    kernels.upsample2(src, out, *args, nodata, False, 1.0, False, 0.0)
    assert (out == np.iinfo(dtype).max).all()
    kernels.upsample2(src, out, *args, int(np.iinfo(dtype).max), True, 1.0, False, 0.0)
    assert np.isnan(out).all()
