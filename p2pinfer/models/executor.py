"""Run layers [start, stop) of a manifest: what a hop calls for its span.

Span interface: `run` takes an `Activations` dict (or a single tensor when the span's first layer
takes exactly one tensor, e.g. {"x"}) and always returns an `Activations` dict - exactly what the
next span takes, so the network layer serialises it as is. Inputs are checked against the
manifest's boundary specs (names, dtypes, shapes; dimension 0 is a batch of 1..MAX_BATCH) before
any compute. Weights are loaded from the store (hash-verified on read, then names/shapes checked
against the layer kind) and built layers are cached (LRU by weight bytes).

Thread safety: `run` may be called concurrently from worker threads (e.g. trio.to_thread);
building a layer happens once under a per-layer lock, and forward passes only read modules.
`threads` sets torch's intra-op thread count, which is process-wide in torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Mapping

import torch

from p2pinfer.errors import InputError, ModelError

from .layers import Activations, RegistryLayer, build_layer, param_bytes
from .manifest import Manifest, TensorSpec
from .shapes import TORCH_DTYPES, boundaries
from .store import ModelStore
from .weights import decode

MAX_BATCH = 64
DEFAULT_CACHE_BYTES = 4 << 30


def span_hashes(manifest: Manifest, start: int, stop: int) -> list[str]:
    """Weight blob hashes a peer needs to run [start, stop)."""
    check_span(manifest, start, stop)
    return list(dict.fromkeys(l.weights_hash for l in manifest.layers[start:stop] if l.weights_hash))


def check_span(manifest: Manifest, start: int, stop: int) -> None:
    if not (type(start) is int and type(stop) is int and 0 <= start < stop <= manifest.num_layers):
        raise ModelError(f"{manifest.name}: span [{start}, {stop}) is not within [0, {manifest.num_layers}) or is empty")


def check_inputs(expected: tuple[TensorSpec, ...], acts: object, where: str) -> Activations:
    """Refuse inputs that do not match the boundary spec (names, dtypes, shapes, batch 1..MAX_BATCH)."""
    if isinstance(acts, torch.Tensor):
        if len(expected) != 1:
            raise InputError(f"{where} takes {[s.name for s in expected]}, got a single tensor")
        acts = {expected[0].name: acts}
    if not isinstance(acts, Mapping) or set(acts) != {s.name for s in expected}:
        got = sorted(map(str, acts)) if isinstance(acts, Mapping) else type(acts).__name__
        raise InputError(f"{where} takes tensors {[s.name for s in expected]}, got {got}")
    batch = None
    for spec in expected:
        t = acts[spec.name]
        if not isinstance(t, torch.Tensor) or t.dtype != TORCH_DTYPES[spec.dtype]:
            raise InputError(f"{where}: {spec.name!r} must be a {spec.dtype} tensor, got {getattr(t, 'dtype', type(t).__name__)}")
        shape = tuple(t.shape)
        if len(shape) != len(spec.shape) or shape[1:] != spec.shape[1:] or not 1 <= shape[0] <= MAX_BATCH:
            raise InputError(f"{where}: {spec.name!r} must have shape [B, {', '.join(map(str, spec.shape[1:]))}] "
                             f"with B in 1..{MAX_BATCH}, got {list(shape)}")
        if batch not in (None, shape[0]):
            raise InputError(f"{where}: tensors disagree on the batch size")
        batch = shape[0]
    return {name: t.contiguous() for name, t in acts.items()}


class SpanExecutor:
    """Builds, caches and runs layer spans from a model store."""

    def __init__(self, store: ModelStore, *, threads: int | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if threads is not None:
            if threads < 1:
                raise ModelError("threads must be >= 1")
            torch.set_num_threads(threads)
        self.store = store
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, int], tuple[RegistryLayer, int]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._build_locks: dict[tuple[str, int], threading.Lock] = {}

    def prepare(self, manifest: Manifest, start: int, stop: int) -> None:
        """Load and verify a span's layers and its input spec ahead of the first request.

        The first shape check imports torch's meta-device machinery (about a second, once per
        process), so a hop may call this when it accepts an assignment rather than on the first frame.
        """
        check_span(manifest, start, stop)
        boundaries(manifest)
        for index in range(start, stop):
            self.layer(manifest, index)

    def missing_blobs(self, manifest: Manifest, start: int, stop: int) -> list[str]:
        return [h for h in span_hashes(manifest, start, stop) if not self.store.has_blob(h)]

    def run(self, manifest: Manifest, start: int, stop: int, x: Activations | torch.Tensor) -> Activations:
        """Layers [start, stop) on `x`, under torch.inference_mode."""
        check_span(manifest, start, stop)
        acts = check_inputs(boundaries(manifest)[start], x, f"{manifest.name} layer {start}")
        modules = [self.layer(manifest, i) for i in range(start, stop)]
        with torch.inference_mode():
            for index, module in enumerate(modules, start):
                try:
                    acts = module(acts)
                except (RuntimeError, IndexError, ValueError) as exc:
                    first = (str(exc).splitlines() or [type(exc).__name__])[0]
                    raise ModelError(f"{manifest.name} layer {index} ({manifest.layers[index].kind}) failed: {first}") from None
        return acts

    def layer(self, manifest: Manifest, index: int) -> RegistryLayer:
        """The built, weight-loaded module for one layer (cached)."""
        key = (manifest.model_id, index)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit[0]
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:
            with self._cache_lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit[0]
            module, nbytes = self._build(manifest, index), param_bytes(manifest.layers[index].kind, manifest.layers[index].config)
            with self._cache_lock:
                self._cache[key] = (module, nbytes)
                self._evict()
                self._build_locks.pop(key, None)
        return module

    def _build(self, manifest: Manifest, index: int) -> RegistryLayer:
        spec = manifest.layers[index]
        module = build_layer(spec.kind, spec.config, device="meta")
        if spec.weights_hash is not None:
            tensors = decode(self.store.get_blob(spec.weights_hash), spec.kind, spec.config)
            module.load_state_dict(tensors, strict=True, assign=True)
        return module.eval()

    def _evict(self) -> None:
        total = sum(n for _, n in self._cache.values())
        while total > self.cache_bytes and len(self._cache) > 1:
            _, (_, n) = self._cache.popitem(last=False)
            total -= n
