"""Models shipped to Dask workers by reference, loaded once per worker process.

A series' plug-in (:class:`~decloud.processors.timeseries.ModelDates`,
:class:`~decloud.processors.timeseries.MultiTemporalDates`,
:class:`~decloud.processors.monthly.MonthlyModel`...) holds a compiled Keras model.
Pickling it into every task would send the weights with each date and rebuild (and
recompile) the model per task. :func:`portable` wraps such a plug-in instead: what
travels is a :class:`ModelRef` (the model's source file or configuration, its checksum
and output), and each worker process resolves it once through a module-level cache
(:func:`resolve`) keyed by that reference; the dates a worker runs after the first
reuse the same model. A worker restarted after a crash is a new process: it loads the
model again, once.

A model file changed on disk after the run started is refused (its checksum no longer
matches), so every date of a run is made by the same weights. An untrained
configuration (seeded random weights, for smoke tests and benchmarks) travels with its
weights: rebuilding it from its seed on a worker is not reproducible, because Dask's
own threads draw from Python's global ``random`` between the seeding and the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from decloud.errors import InferenceError

if TYPE_CHECKING:
    from decloud.inference.method import KerasMethod

__all__ = ["ModelRef", "PortablePlugin", "loads", "portable", "resolve"]

#: Prefix of :attr:`KerasMethod.source` for seeded, untrained configurations.
_UNTRAINED = "untrained:"

_CACHE: dict[tuple[str, str | None, str, str | None], KerasMethod] = {}
_LOCK = threading.Lock()  # a worker with several threads resolves once
_LOADS = [0]  # models this process loaded (a list: module state without `global`)


@dataclass(frozen=True, eq=False)
class ModelRef:
    """What a worker needs to load a model: a few strings (and an untrained one's weights).

    Attributes:
        source: The ``.keras`` file, or ``untrained:<config>:seed=<n>``
            (:attr:`KerasMethod.source <decloud.inference.method.KerasMethod>`).
        checksum: SHA-256 of the file (None for an untrained configuration).
        output_key: The model output written.
        weights: An untrained configuration's weights (None for a file).
        weights_digest: SHA-256 of ``weights``.
        backend: Called once per process before Keras is first imported (the CLI
            passes its quiet loader so workers print no backend start-up lines).
    """

    source: str
    checksum: str | None
    output_key: str
    weights: tuple[Any, ...] | None = None
    weights_digest: str | None = None
    backend: Callable[[], object] | None = None

    @classmethod
    def of(cls, method: KerasMethod, backend: Callable[[], object] | None = None) -> ModelRef:
        """The reference of a loaded model.

        Raises:
            InferenceError: A model built in memory (no file or configuration to load
                it from on a worker).
        """
        if not method.source:
            raise InferenceError(f"model {method.name} was built in memory: save it to a "
                                 ".keras file to run it on Dask workers", field="model")
        if not method.source.startswith(_UNTRAINED):
            return cls(method.source, method.checksum, method.output_key, backend=backend)
        weights = tuple(method.model.get_weights())
        digest = hashlib.sha256()
        for array in weights:
            digest.update(array.tobytes())
        return cls(method.source, method.checksum, method.output_key, weights,
                   digest.hexdigest(), backend)

    @property
    def key(self) -> tuple[str, str | None, str, str | None]:
        """The cache key: source, checksum, output and weights digest."""
        return (self.source, self.checksum, self.output_key, self.weights_digest)

    def load(self) -> KerasMethod:
        """Load the model (no cache: :func:`resolve` caches).

        Raises:
            InferenceError: The file's checksum differs from the reference's.
            ModelCardError: The file or its card cannot be read.
        """
        if self.backend is not None:
            self.backend()
        from decloud.inference.method import KerasMethod
        from decloud.processors.single_date import load_method

        if self.source.startswith(_UNTRAINED):
            config, _, seed = self.source[len(_UNTRAINED):].rpartition(":seed=")
            loaded = load_method(config, untrained=True, seed=int(seed))
            if self.weights is not None:
                loaded.model.set_weights(list(self.weights))
        else:
            loaded = load_method(self.source)
            if loaded.checksum != self.checksum:
                raise InferenceError(f"model file {self.source} changed since the run "
                                     f"started (checksum {loaded.checksum}, expected "
                                     f"{self.checksum})", field="model")
        if loaded.output_key == self.output_key:
            return loaded
        return KerasMethod(loaded.model, loaded.spec, output_key=self.output_key,
                           checksum=loaded.checksum, card_checksum=loaded.card_checksum,
                           source=loaded.source)


def resolve(ref: ModelRef) -> KerasMethod:
    """The model of ``ref``, loaded the first time this process asks for it."""
    with _LOCK:
        method = _CACHE.get(ref.key)
        if method is None:
            method = _CACHE[ref.key] = ref.load()
            _LOADS[0] += 1
        return method


def loads() -> int:
    """How many models this process has loaded through :func:`resolve`."""
    return _LOADS[0]


class PortablePlugin:
    """A plug-in whose model travels as a :class:`ModelRef` and is resolved per process.

    It behaves as the plug-in it wraps (``name``, ``parameters()``, ``plan(...)`` with
    the wrapped plug-in's arguments: a series' date or a monthly synthesis' month). The
    wrapped plug-in is rebuilt on a worker from its other fields and the resolved model.

    Args:
        plugin: A dataclass plug-in with a ``method`` field holding the model.
        ref: The model's reference.
    """

    def __init__(self, plugin: Any, ref: ModelRef) -> None:
        self._cls = type(plugin)
        self._fields = {f.name: getattr(plugin, f.name) for f in dataclasses.fields(plugin)
                        if f.init and f.name != "method"}
        self._ref = ref
        self._local: Any = plugin
        self.name: str = str(plugin.name)

    def __getstate__(self) -> dict[str, Any]:
        # The model stays behind: workers resolve the reference.
        return {**self.__dict__, "_local": None}

    def _plugin(self) -> Any:
        if self._local is None:
            self._local = self._cls(method=resolve(self._ref), **self._fields)
        return self._local

    @property
    def ref(self) -> ModelRef:
        """The model's reference."""
        return self._ref

    def parameters(self) -> dict[str, Any]:
        """The wrapped plug-in's parameters."""
        return dict(self._plugin().parameters())

    def plan(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped plug-in's plan (its model resolved in this process)."""
        return self._plugin().plan(*args, **kwargs)


def portable(plugin: Any, backend: Callable[[], object] | None = None) -> Any:
    """``plugin`` ready to ship to workers: wrapped when it holds a Keras model.

    A dataclass plug-in whose ``method`` field is a
    :class:`~decloud.inference.method.KerasMethod` is wrapped in a
    :class:`PortablePlugin`; any other plug-in (gap-filling: numpy only) is returned
    as it is.

    Raises:
        InferenceError: The model was built in memory (see :meth:`ModelRef.of`), or it
            is a subclass of ``KerasMethod`` (``OtbtfMethod``: ``--engine otbtf``),
            which :meth:`ModelRef.load` would turn into the native engine on workers.
    """
    from decloud.inference.method import KerasMethod

    if isinstance(plugin, PortablePlugin) or not dataclasses.is_dataclass(plugin):
        return plugin
    model = getattr(plugin, "method", None)
    if not isinstance(model, KerasMethod):
        return plugin
    if type(model) is not KerasMethod:
        # A reference carries the model only, not how it is served: refuse rather
        # than switch engine silently.
        raise InferenceError(f"{type(model).__name__} cannot run on Dask workers: only "
                             "the native engine's KerasMethod is shipped by reference",
                             field="engine")
    return PortablePlugin(plugin, ModelRef.of(model, backend))
