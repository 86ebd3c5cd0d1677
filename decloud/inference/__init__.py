"""The streaming engine: block methods applied over whole scenes, seamlessly.

* :mod:`.method`: the :class:`BlockMethod` interface, :class:`BlockResult` and
  :class:`KerasMethod` (a zoo model as a method);
* :mod:`.engine`: :func:`run` (blocks with a halo, prefetch threads, batching,
  composite, encoding, background COG writing, completion record) and
  :func:`iter_blocks` (the same stream, before encoding);
* :mod:`.composite`: the mask-guided composite and the quality layer.

Names are imported lazily: ``import decloud.inference`` does not import Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.inference.composite import (
        QUALITY_CLEAR,
        QUALITY_FEATHERED,
        QUALITY_NODATA,
        QUALITY_RECONSTRUCTED,
        CompositeOptions,
        composite,
    )
    from decloud.inference.engine import (
        BlockOutput,
        EngineOptions,
        RunRecord,
        StreamTiming,
        default_block_size,
        iter_blocks,
        record_path,
        run,
    )
    from decloud.inference.method import BlockMethod, BlockResult, KerasMethod

__all__ = [
    "QUALITY_CLEAR",
    "QUALITY_FEATHERED",
    "QUALITY_NODATA",
    "QUALITY_RECONSTRUCTED",
    "BlockMethod",
    "BlockOutput",
    "BlockResult",
    "CompositeOptions",
    "EngineOptions",
    "KerasMethod",
    "RunRecord",
    "StreamTiming",
    "composite",
    "default_block_size",
    "iter_blocks",
    "record_path",
    "run",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(("QUALITY_CLEAR", "QUALITY_FEATHERED", "QUALITY_NODATA",
                     "QUALITY_RECONSTRUCTED", "CompositeOptions", "composite"), "composite"),
    **dict.fromkeys(("BlockOutput", "EngineOptions", "RunRecord", "StreamTiming",
                     "default_block_size", "iter_blocks", "record_path", "run"), "engine"),
    **dict.fromkeys(("BlockMethod", "BlockResult", "KerasMethod"), "method"),
}, __all__)
