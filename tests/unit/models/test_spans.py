"""Running a model span by span equals running it whole, for every zoo model and several cut sets."""

from __future__ import annotations

import threading

import pytest
import torch

from p2pinfer.errors import InputError, ModelError
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore

from .conftest import sample_input


def cut_sets(num_layers: int) -> list[list[int]]:
    """Three different partitions: halves, thirds, and one layer per span near the ends."""
    L = num_layers
    return [[0, L // 2, L], [0, L // 3, 2 * L // 3, L], [0, 1, 2, L - 1, L]]


@pytest.mark.parametrize("name", zoo.names())
def test_spans_compose_to_the_whole_model(name: str, zoo_store: ModelStore, executor: SpanExecutor) -> None:
    manifest = zoo.get_manifest(name, store=zoo_store)
    x = sample_input(manifest, zoo_store)
    whole = executor.run(manifest, 0, manifest.num_layers, x)
    (out_name,) = whole
    assert out_name == manifest.outputs[0].name and list(whole[out_name].shape) == list(manifest.outputs[0].shape)
    assert whole[out_name].std() > 1e-3, "a degenerate output would make the comparison meaningless"
    for cuts in cut_sets(manifest.num_layers):
        acts = x
        for start, stop in zip(cuts, cuts[1:]):
            acts = executor.run(manifest, start, stop, acts)
            assert all(isinstance(t, torch.Tensor) for t in acts.values())
        diff = (acts[out_name] - whole[out_name]).abs().max().item()
        assert diff <= 1e-6, f"{name} cuts {cuts}: max abs diff {diff}"


def test_concurrent_spans_from_worker_threads(zoo_store: ModelStore) -> None:
    manifest = zoo.get_manifest("mobilenetv2", store=zoo_store)
    executor = SpanExecutor(zoo_store)  # cold cache: threads race to build the same layers
    x = sample_input(manifest, zoo_store)
    expected = SpanExecutor(zoo_store).run(manifest, 0, manifest.num_layers, x)["x"]
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            mid = executor.run(manifest, 0, 9, x)
            results.append(executor.run(manifest, 9, manifest.num_layers, mid)["x"])
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4
    assert all(torch.equal(r, expected) for r in results)


def test_single_tensor_input_is_accepted_for_single_input_spans(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    manifest = zoo.get_manifest("mlp", store=zoo_store)
    x = torch.ones(3, 64)  # batch of 3
    assert executor.run(manifest, 0, 2, x)["x"].shape == (3, 256)


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.ones(1, 63), "must have shape"),
        (lambda: torch.ones(1, 64, dtype=torch.float64), "must be a float32"),
        (lambda: {"y": torch.ones(1, 64)}, "takes tensors ['x']"),
        (lambda: torch.ones(65, 64), "B in 1..64"),
    ],
)
def test_bad_span_inputs_are_refused_before_compute(zoo_store: ModelStore, executor: SpanExecutor, make_input, message: str) -> None:
    manifest = zoo.get_manifest("mlp", store=zoo_store)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        executor.run(manifest, 0, 2, make_input())


def test_span_bounds_and_text_span_inputs(zoo_store: ModelStore, executor: SpanExecutor) -> None:
    mlp = zoo.get_manifest("mlp", store=zoo_store)
    for start, stop in ((0, 0), (2, 1), (-1, 2), (0, 5)):
        with pytest.raises(ModelError, match="span"):
            executor.run(mlp, start, stop, torch.ones(1, 64))
    minilm = zoo.get_manifest("minilm", store=zoo_store)
    x = sample_input(minilm, zoo_store)
    hidden = executor.run(minilm, 0, 1, x)
    assert set(hidden) == {"hidden", "attention_mask"} and hidden["hidden"].dtype == torch.float32
    with pytest.raises(InputError, match="takes tensors"):
        executor.run(minilm, 1, 2, {"hidden": hidden["hidden"]})  # the mask must travel too
    bad_ids = dict(x, input_ids=torch.full_like(x["input_ids"], 10**6))
    with pytest.raises(ModelError, match="layer 0 \\(bert_embeddings\\) failed"):
        executor.run(minilm, 0, 1, bad_ids)
