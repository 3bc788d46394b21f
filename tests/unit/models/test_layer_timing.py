"""Layer timing: what is timed, real models timed through the executor, the cache, the scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pinfer.core.profile import ModelProfile
from p2pinfer.core.snapshot import PeerSpec
from p2pinfer.core.costs import span_seconds
from p2pinfer.models import layer_timing, profiling, zoo
from p2pinfer.models.layer_timing import LAYER_TIMING_FILE, held_models, measure_layer_ms, time_layers
from p2pinfer.models.store import ModelStore


class FakeCpu:
    """A CPU clock that layer i advances by cost[i] and nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_warm_up_pass_and_the_untimed_preparation_are_not_counted() -> None:
    clock, calls = FakeCpu(), []
    cost = [0.010, 0.002, 0.030]

    def run_layer(index: int, acts: int) -> int:
        clock.now += cost[index] * (5 if len(calls) < 3 else 1)  # the warm-up pass is 5x slower
        calls.append(index)
        return acts + 1

    def before(index: int) -> None:
        clock.now += 1.0  # building an evicted layer: never timed

    times = time_layers(run_layer, 3, 0, passes=2, cpu_clock=clock, before=before)
    assert times == pytest.approx(cost) and calls == [0, 1, 2] * 3
    with pytest.raises(ValueError):
        time_layers(run_layer, 3, 0, passes=0, cpu_clock=clock)


@pytest.fixture
def mlp_store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    zoo.get_manifest("mlp", store=store)
    return store


def test_a_held_model_is_timed_cached_and_scaled_to_the_cores_we_may_use(
        mlp_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = zoo.get_manifest("mlp", store=mlp_store)
    cache = tmp_path / LAYER_TIMING_FILE
    monkeypatch.setattr(layer_timing, "usable_cores", lambda threads: 1.0)
    first = measure_layer_ms(mlp_store, threads=1, cache_path=cache)
    assert list(first) == [manifest.model_id] and len(first[manifest.model_id]) == manifest.num_layers
    assert all(0 < t < 1000 for t in first[manifest.model_id])
    assert json.loads(cache.read_text())["cpu_ms"] == {manifest.model_id: list(first[manifest.model_id])}

    def no_new_timing(*args: object, **kw: object) -> list[float]:
        raise AssertionError("a cached model was timed again")

    monkeypatch.setattr(layer_timing, "model_layer_cpu_ms", no_new_timing)
    monkeypatch.setattr(layer_timing, "usable_cores", lambda threads: 0.25)  # a quarter-core quota
    again = measure_layer_ms(mlp_store, threads=1, cache_path=cache)
    assert again[manifest.model_id] == pytest.approx([4 * t for t in first[manifest.model_id]])


def test_a_corrupt_cache_or_another_machine_key_means_timing_again(
        mlp_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / LAYER_TIMING_FILE
    monkeypatch.setattr(layer_timing, "usable_cores", lambda threads: 1.0)
    timed: list[str] = []
    real = layer_timing.model_layer_cpu_ms

    def counting(manifest, store, *, threads):  # type: ignore[no-untyped-def]
        timed.append(manifest.name)
        return real(manifest, store, threads=threads)

    monkeypatch.setattr(layer_timing, "model_layer_cpu_ms", counting)
    for content in ("{not json", json.dumps({"key": {"version": -1}, "cpu_ms": {}})):
        cache.write_text(content)
        assert measure_layer_ms(mlp_store, threads=1, cache_path=cache)
    assert timed == ["mlp", "mlp"]


def test_a_model_missing_a_weight_blob_is_not_held(mlp_store: ModelStore) -> None:
    manifest = zoo.get_manifest("mlp", store=mlp_store)
    assert [m.model_id for m in held_models(mlp_store)] == [manifest.model_id]
    blob = manifest.weight_hashes()[0]
    (mlp_store.root / "blobs" / blob[:2] / blob).unlink()
    assert held_models(mlp_store) == []


def test_timed_resnet_layers_price_a_span_as_it_runs(zoo_store: ModelStore) -> None:
    """ResNet-50 timed layer by layer through the executor: the planner's price of a span from
    those times is the sum of its layers' times, and the times follow the layers' FLOPs
    (a stage-3 bottleneck, ~0.2 GFLOP, takes far longer than the final linear layer)."""
    manifest = zoo.get_manifest("resnet50", store=zoo_store)
    profile: ModelProfile = profiling.profile(manifest, zoo_store)
    cpu_ms = layer_timing.model_layer_cpu_ms(manifest, zoo_store, threads=1)
    assert len(cpu_ms) == manifest.num_layers and cpu_ms[10] > 5 * cpu_ms[-1]
    peer = PeerSpec("node", 1.0, 1, 1.0, 1.0, 0.0, layer_ms={manifest.model_id: tuple(cpu_ms)})
    assert span_seconds(profile, 10, 20, peer) == pytest.approx(sum(cpu_ms[10:20]) / 1000)
