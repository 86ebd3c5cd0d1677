"""Loading Keras and its backend for the commands that need it, without start-up noise.

TensorFlow's C++ runtime writes start-up lines straight to the process's stderr
(``oneDNN custom operations are on...``, the ``absl::InitializeLog`` notice, CUDA
plugin registrations) before its logging is configured, so ``TF_CPP_MIN_LOG_LEVEL``
alone does not silence them (TensorFlow 2.21). :func:`load_backend` imports Keras with
file descriptor 2 captured, then writes back every captured line that is not one of
those, so real warnings and errors still reach the user.

This is command-line policy: library modules never touch the environment or stderr.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

__all__ = ["NOISE", "load_backend"]

#: Start-up lines dropped: C++ INFO lines (``I0000 00:00:... port.cc:153] ...``), the
#: absl notice, and the warnings of a GPU-less or TensorRT-less machine.
NOISE = re.compile(
    r"^(I\d{4} +[\d:.]+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[WE]\d{4} .*(Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning|failed call to cuInit|computation placer already registered"
    r"|Could not find cuda drivers))")


def _filtered(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


def load_backend() -> ModuleType:
    """Import Keras (and its backend) with the backend's start-up lines filtered out.

    Also sets ``TF_CPP_MIN_LOG_LEVEL=2`` (warnings and errors kept) for what
    TensorFlow logs later, unless the user set it. A no-op once Keras is imported.

    Returns:
        The ``keras`` module.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        return sys.modules["keras"]
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import keras
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = _filtered(captured.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return keras
