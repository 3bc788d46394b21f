"""Time every layer of the models this node holds: the measured per-layer term of the cost model.

Why: the compute calibration (models/calibrate.py) times one instance of each layer kind, and
the planner prices a layer as its FLOPs over its kind's rate. Layers of one kind differ in shape,
and so in FLOPs per CPU-second: on one full core ResNet-50's stage-3 bottlenecks ran 1.15-1.2x
their kind's rate and its stage-4 ones 0.85-0.9x, its max pool 1.6x. On the testbed the DEFER
split's [10, 20) on a 0.2-core node used 74-75 ms of CPU per input in streams; its kind rates
predicted 65, these layers timed one by one under the same quota 71 (docs/testbed.md).

So a node times the models it holds, as it runs them: each model whose manifest and every weight
blob are in its store, on the model's sample input (models/io.sample_input, the input its profile
is made with), through the node's own executor path (`SpanExecutor.run`, one layer per call), in
CPU seconds of the computing thread (wall time would count the neighbours, as in calibrate.py).
One warm-up pass, then TIMED_PASSES passes; a layer's time is its mean over them. About three
forward passes per model: ~0.5 s of CPU for ResNet-50 on one core here, so a few seconds at a
0.2-core node's first start. The CPU ms are cached per model (data dir, LAYER_TIMING_FILE, keyed
like the calibration); the wall ms advertised divide by the cores the node may use, read again at
every start. Layers are timed for whole models only: a record's `layer_ms` has one entry per layer.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from p2pinfer.core.records import MAX_TIMED_LAYERS, MAX_TIMED_MODELS
from p2pinfer.errors import P2PInferError

from .calibrate import cache_key as calibration_key, write_cache
from .cpu_quota import QuotaUnknown, usable_cores
from .executor import SpanExecutor
from .io import sample_input
from .manifest import Manifest
from .store import ModelStore

logger = logging.getLogger(__name__)

LAYER_TIMING_VERSION = 1
LAYER_TIMING_FILE = "layer_timing.json"  # in the node's data dir
TIMED_PASSES = 2


def time_layers(run_layer: Callable[[int, Any], Any], num_layers: int, x: Any, *, passes: int = TIMED_PASSES,
                cpu_clock: Callable[[], float] = time.thread_time,
                before: Callable[[int], None] = lambda index: None) -> list[float]:
    """CPU seconds of each layer: `run_layer(i, acts)` chained from `x`, one untimed warm-up pass,
    then the mean over `passes` timed ones. `before(i)` runs untimed ahead of every layer (the
    executor builds an evicted layer there, so loading weights is never timed)."""
    if passes < 1:
        raise ValueError("passes must be >= 1")
    totals = [0.0] * num_layers
    for timed in [False] + [True] * passes:
        acts = x
        for index in range(num_layers):
            before(index)
            began = cpu_clock()
            acts = run_layer(index, acts)
            if timed:
                totals[index] += cpu_clock() - began
    return [t / passes for t in totals]


def held_models(store: ModelStore) -> list[Manifest]:
    """The models whose manifest and every weight blob are in `store` (by id, at most
    MAX_TIMED_MODELS, each of at most MAX_TIMED_LAYERS layers)."""
    held = []
    for model_id in store.manifest_ids():
        try:
            manifest = store.get_manifest(model_id)
        except P2PInferError as exc:
            logger.warning("layer timing skips manifest %s: %s", model_id[:16], exc)
            continue
        if 0 < manifest.num_layers <= MAX_TIMED_LAYERS and all(map(store.has_blob, manifest.weight_hashes())):
            held.append(manifest)
    return held[:MAX_TIMED_MODELS]


def model_layer_cpu_ms(manifest: Manifest, store: ModelStore, *, threads: int) -> list[float]:
    """CPU ms of each layer of `manifest` on this thread (`threads` torch threads: the process's
    CPU time when more than one)."""
    executor = SpanExecutor(store, threads=threads)
    clock = time.thread_time if threads == 1 else time.process_time
    seconds = time_layers(lambda i, acts: executor.run(manifest, i, i + 1, acts), manifest.num_layers,
                          sample_input(manifest, store), cpu_clock=clock,
                          before=lambda i: executor.layer(manifest, i))
    return [max(s * 1000.0, 1e-3) for s in seconds]  # > 0: a record carries only positive times


def cache_key(threads: int) -> dict[str, Any]:
    """What cached layer times must match to be reused (the calibration's machine key)."""
    return {**calibration_key(threads), "version": LAYER_TIMING_VERSION}


def measure_layer_ms(store: ModelStore, *, threads: int, cache_path: Path | None) -> dict[str, tuple[float, ...]]:
    """Wall ms per layer at this node of every model it holds, by model id ({} when the cores it
    may use cannot be read: the record then carries no layer times and planners use its kind speeds)."""
    try:
        cores = usable_cores(threads)
    except QuotaUnknown as exc:
        logger.warning("layer times not advertised: %s", exc)
        return {}
    key = cache_key(threads)
    cached = _read_cache(cache_path, key) if cache_path is not None else {}
    cpu_ms: dict[str, list[float]] = {}
    for manifest in held_models(store):
        times = cached.get(manifest.model_id)
        if times is None or len(times) != manifest.num_layers:
            try:
                times = model_layer_cpu_ms(manifest, store, threads=threads)
            except P2PInferError as exc:  # a model that cannot run here is simply not advertised
                logger.warning("layer timing of %s failed: %s", manifest.name, exc)
                continue
            logger.info("layer times of %s (CPU ms): %s", manifest.name, [round(t, 2) for t in times])
        cpu_ms[manifest.model_id] = times
    if cache_path is not None and cpu_ms != cached:
        write_cache(cache_path, key, "layer timing", cpu_ms=cpu_ms)
    return {model_id: tuple(t / cores for t in times) for model_id, times in cpu_ms.items()}


def _read_cache(path: Path, key: Mapping[str, Any]) -> dict[str, list[float]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key:
            return {}
        return {str(m): _positive_floats(times) for m, times in doc["cpu_ms"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring unreadable layer timing cache %s (%s); measuring again", path, exc)
        return {}


def _positive_floats(values: Sequence[Any]) -> list[float]:
    out = [float(v) for v in values]
    if not out or not all(0 < v < float("inf") for v in out):
        raise ValueError(f"bad layer times {out[:4]}")
    return out
