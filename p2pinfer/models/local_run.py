"""`p2pinfer run MODEL --input X --local`: the whole model in this process, no network."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .executor import SpanExecutor
from .io import load_input
from .layers import Activations
from .store import ModelStore
from .zoo import get_manifest


@dataclass(frozen=True)
class LocalResult:
    """The model's output and the forward latency (preprocessed input -> output, weights already loaded)."""

    model: str
    model_id: str
    output: Activations
    latency_ms: float


def run_local(model: str, input_value: str, *, store: ModelStore, threads: int | None = None,
              executor: SpanExecutor | None = None) -> LocalResult:
    manifest = get_manifest(model, store=store)
    executor = executor or SpanExecutor(store, threads=threads)
    acts = load_input(manifest, input_value, store=store)
    executor.prepare(manifest, 0, manifest.num_layers)  # load + verify weights before timing
    start = time.perf_counter()
    out = executor.run(manifest, 0, manifest.num_layers, acts)
    latency_ms = (time.perf_counter() - start) * 1000.0
    return LocalResult(manifest.name, manifest.model_id, out, latency_ms)
