"""Type stubs of the compiled loops of the read path (decloud/_kernels.c)."""

import numpy as np

def scale_nodata(src: np.ndarray, out: np.ndarray, nodata: int, has_nodata: bool,
                 scale: float, apply_scale: bool, offset: float) -> None: ...
def upsample2(src: np.ndarray, out: np.ndarray, row_index: np.ndarray, row_far: np.ndarray,
              col_index: np.ndarray, col_far: np.ndarray, nodata: int, has_nodata: bool,
              scale: float, apply_scale: bool, offset: float) -> None: ...
