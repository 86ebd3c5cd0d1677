"""The commands that load Keras print none of TensorFlow's start-up lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from decloud.cli.backend import NOISE, _filtered

# Lines TensorFlow 2.21 writes to fd 2 before its logging is set up (CPU and GPU hosts).
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795940772.310194    9783 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors "
    "from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1732000000.123456    4242 cuda_dnn.cc:8310] Unable to register cuDNN "
    "factory: Attempting to register factory for plugin cuDNN when one has already been "
    "registered",
    "W0000 00:00:1732000000.223456    4242 tf_trt: TF-TRT Warning: Could not find TensorRT",
]
#: What a user must still see.
KEPT = [
    "W0000 00:00:1732000000.3    4242 op_level_cost_estimator.cc:699] Error in "
    "PredictCost() for the op: Conv2D",
    "/x/keras/src/foo.py:12: UserWarning: something the user should know",
    "E0000 00:00:1732000000.4    4242 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
]


def test_filter_drops_startup_lines_only() -> None:
    assert all(NOISE.match(line) for line in STARTUP)
    assert not any(NOISE.match(line) for line in KEPT)
    text = "\n".join([STARTUP[0], KEPT[0], STARTUP[1], KEPT[1], KEPT[2], STARTUP[2]]) + "\n"
    assert _filtered(text) == "\n".join(KEPT[:3]) + "\n"


def _decloud(*args: str) -> subprocess.CompletedProcess[str]:
    # A fresh process through the console entry point: Keras is imported in it.
    return subprocess.run([sys.executable, "-c", "from decloud.cli.main import cli; cli()",
                           *args], capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.slow
def test_models_list_prints_no_backend_noise() -> None:
    result = _decloud("models", "list")
    assert result.returncode == 0, result.stderr
    assert "msop_small" in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
def test_backend_errors_still_reach_the_user() -> None:
    # A failing command after the backend loaded: its error is shown, the noise is not.
    result = _decloud("models", "show", "nope")
    assert result.returncode == 1
    assert "unknown model 'nope'" in result.stderr
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr
