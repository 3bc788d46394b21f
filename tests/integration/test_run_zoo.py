"""Issue 5 point 6: every zoo model over 3-5 hops of a real in-process swarm equals `run_local`,
and minilm's distributed embeddings (streamed, pipelined) equal sentence-transformers' own.

Each model gets its own 5-node swarm whose peers offer just enough memory that the plan needs
at least 3 hops; the hops enforce that memory (they refuse bigger spans), so the split is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from p2pinfer.models import profiling, zoo
from p2pinfer.models.io import sample_input
from p2pinfer.models.local_run import LocalResult, run_local
from p2pinfer.models.store import ModelStore

from tests.integration.run_swarm import memories_for_hops, node_config, swarm_and_requester

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "minilm_reference.json"
TEXT = "peer-to-peer inference on small devices"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """One store for the module (content-addressed; the swarm shares it, see p2pinfer/swarm.py)."""
    return ModelStore(tmp_path_factory.mktemp("run-zoo-store"))


def _input_for(name: str, store: ModelStore, tmp: Path) -> str:
    """The --input value: text for minilm, an .npy file of the model's sample input otherwise."""
    manifest = zoo.get_manifest(name, store=store)
    if manifest.preprocess == "text":
        return TEXT
    path = tmp / f"{name}.npy"
    np.save(path, next(iter(sample_input(manifest, store).values())).numpy())
    return str(path)


def _run_local_one_thread(name: str, value: str, store: ModelStore) -> LocalResult:
    """`run --local --threads 1`: the same kernels the swarm's nodes run (one torch thread each).
    Outputs such as mobilenetv2's logits are large enough that float32 sums reordered by a
    different thread count differ by ~1e-5 absolute (measured 1.2e-5); equal kernels agree."""
    before = torch.get_num_threads()
    try:
        return run_local(name, value, store=store, threads=1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", zoo.names())
async def test_zoo_model_over_three_or_more_hops_equals_local(name: str, store: ModelStore, tmp_path: Path) -> None:
    value = _input_for(name, store, tmp_path)
    local = _run_local_one_thread(name, value, store)
    mem = memories_for_hops(profiling.profile(zoo.get_manifest(name, store=store), store))
    configs = [node_config(f"n{i}", mem_bytes=m, gflops=20.0 + 3 * i) for i, m in enumerate(mem)]
    async with swarm_and_requester(configs, store) as (_swarm, requester):
        result = await requester.infer(name, value)
    assert 3 <= len(result.plan.hops) <= 5
    assert [(h.start, h.stop) for h in result.hops] == [(h.start, h.stop) for h in result.plan.hops]
    assert all(h.measured_ms > 0 for h in result.hops)
    (key, got), = result.output.items()
    want = local.output[key].numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    assert float(np.max(np.abs(got - want))) <= 1e-5
    doc = result.to_json_dict()
    assert doc["output"]["shape"] == list(want.shape) and len(doc["hops"]) == len(result.plan.hops)


async def test_minilm_stream_over_three_hops_equals_sentence_transformers(store: ModelStore) -> None:
    ref = json.loads(REFERENCE.read_text())
    mem = memories_for_hops(profiling.profile(zoo.get_manifest("minilm", store=store), store))
    configs = [node_config(f"m{i}", mem_bytes=m, gflops=20.0 + i) for i, m in enumerate(mem)]
    async with swarm_and_requester(configs, store) as (_swarm, requester):
        done: list[int] = []
        result = await requester.infer_stream("minilm", ref["sentences"], on_result=done.append)
    assert len(result.plan.hops) >= 3 and done == list(range(1, len(ref["sentences"]) + 1))
    assert result.throughput_rps > 0 and len(result.latency_ms) == len(ref["sentences"])
    for out, expected in zip(result.outputs, ref["embeddings"]):
        ours, want = out["embedding"][0], np.asarray(expected, dtype=np.float32)
        cosine = float(ours @ want / (np.linalg.norm(ours) * np.linalg.norm(want)))
        assert cosine >= 0.99999
        assert float(np.max(np.abs(ours - want))) <= 1e-5
