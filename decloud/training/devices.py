"""Device policy of training: data parallelism over accelerators, mixed precision.

With more than one accelerator visible, the JAX backend trains with
``keras.distribution.DataParallel`` over all of them and TensorFlow builds and compiles
the model inside a ``tf.distribute.MirroredStrategy`` scope; the batch size is the
global one (split across devices; with JAX it must be a multiple of their number).
Otherwise (one GPU, or CPU only) training runs on a single device.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import keras

__all__ = ["accelerators", "distribution", "precision"]


def accelerators() -> int:
    """Number of accelerators (GPUs, TPUs) the backend sees."""
    # keras.distribution lists devices as "cpu:0", "gpu:0", "tpu:0" on every backend.
    return sum(not d.lower().startswith("cpu") for d in keras.distribution.list_devices())


@contextlib.contextmanager
def distribution(devices: int) -> Iterator[contextlib.AbstractContextManager[Any]]:
    """Yield the scope to build and compile in; set data parallelism if several devices.

    JAX: a global ``DataParallel`` distribution (restored on exit); TensorFlow: a
    ``MirroredStrategy`` scope; otherwise (one device, or torch) a null scope.

    Args:
        devices: Accelerators to train on (:func:`accelerators`).
    """
    backend = keras.backend.backend()
    if devices <= 1 or backend not in ("jax", "tensorflow"):
        yield contextlib.nullcontext()
        return
    if backend == "jax":
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            yield contextlib.nullcontext()
        finally:
            keras.distribution.set_distribution(previous)
        return
    tf = importlib.import_module("tensorflow")
    yield tf.distribute.MirroredStrategy().scope()


@contextlib.contextmanager
def precision(mixed: bool, accelerated: bool) -> Iterator[None]:
    """Mixed precision while building and training (float16 on GPU, bfloat16 on CPU).

    The global policy is restored on exit, so the canonical model saved afterwards is
    built in float32.

    Args:
        mixed: Compute in reduced precision; False leaves the policy alone.
        accelerated: An accelerator trains (float16), else the CPU (bfloat16).
    """
    if not mixed:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if accelerated
                                            else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
