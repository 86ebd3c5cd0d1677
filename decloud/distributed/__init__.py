"""Scale-out on Dask distributed: the dates of a series as tasks on a cluster.

* :mod:`.cluster`: :class:`Execution` (``--workers``, ``--threads-per-worker``,
  ``--scheduler``, ``--cluster-config``) and :func:`open_client`.
* :mod:`.runner`: :func:`run_on_cluster`, one idempotent task per date or month,
  reports gathered in the client (summary, STAC collection).
* :mod:`.models`: :func:`portable`, the model sent by reference and loaded once per
  worker process.
* :mod:`.jobqueue`: SLURM/PBS clusters from a YAML file (dask-jobqueue).
* :mod:`.gpus`: one worker per GPU.

The names load on first use: importing ``decloud.distributed`` loads neither Dask nor
Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.distributed.cluster import Execution, open_client
    from decloud.distributed.models import ModelRef, PortablePlugin, loads, portable, resolve
    from decloud.distributed.runner import remove_temporaries, run_on_cluster

__all__ = [
    "Execution",
    "ModelRef",
    "PortablePlugin",
    "loads",
    "open_client",
    "portable",
    "remove_temporaries",
    "resolve",
    "run_on_cluster",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Execution": "cluster", "open_client": "cluster",
    "ModelRef": "models", "PortablePlugin": "models", "loads": "models",
    "portable": "models", "resolve": "models",
    "remove_temporaries": "runner", "run_on_cluster": "runner",
}, __all__)
