"""`p2pinfer run --swarm DIR --input-file FILE --json`: an embedded swarm from a directory of
node configs, many inputs (an .npy batch, or one text per line) streamed through one pipelined
circuit; every output equals local compute, and the JSON carries the outputs and throughput.
(In-process `main`: the CLI starts its own trio run, so these are sync tests.) Also: several
concurrent requests on one Requester, each over its own circuit, each get their own result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trio

from p2pinfer.cli import main
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.io import tokenize
from p2pinfer.models.store import ModelStore

from tests.integration.run_swarm import node_config, swarm_and_requester, swarm_dir


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, str]:
    assert main(["run", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_npy_batch_streams_through_aswarm_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore(tmp_path / "store")
    manifest = zoo.get_manifest("mlp", store=store)
    batch = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    threads = torch.get_num_threads()
    doc, err = _run_json(capsys, "mlp", "--input-file", str(tmp_path / "batch.npy"), "--swarm", str(swarm_dir(tmp_path)),
                         "--data-dir", str(store.root))
    assert "embedded local swarm (3 in-process nodes" in err and "5 inputs in" in err
    assert torch.get_num_threads() == threads  # the swarm's one-thread setting does not leak
    assert doc["count"] == 5 and doc["throughput_rps"] > 0 and doc["plan"]["objective"] == "throughput"
    with torch.inference_mode():
        want = SpanExecutor(store).run(manifest, 0, manifest.num_layers, {"x": torch.from_numpy(batch)})["x"].numpy()
    got = np.stack([np.asarray(o["data"], np.float32) for o in doc["outputs"]])
    assert got.shape == (5, 10) and float(np.max(np.abs(got - want))) <= 1e-5


def test_text_lines_stream_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore(tmp_path / "store")
    manifest = zoo.get_manifest("minilm", store=store)
    lines = ["the first sentence", "", "a second, different sentence"]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    doc, _err = _run_json(capsys, "minilm", "--input-file", str(tmp_path / "lines.txt"), "--swarm",
                          str(swarm_dir(tmp_path)), "--data-dir", str(store.root), "--objective", "latency")
    assert doc["count"] == 2 and doc["plan"]["objective"] == "latency"
    executor = SpanExecutor(store)
    for text, out in zip([line for line in lines if line], doc["outputs"]):
        want = executor.run(manifest, 0, manifest.num_layers, tokenize(manifest, text, store=store))["embedding"]
        assert float(np.max(np.abs(np.asarray(out["data"], np.float32) - want.numpy().reshape(-1)))) <= 1e-5


async def test_concurrent_requests_on_one_requester_each_get_their_own_result(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    manifest = zoo.get_manifest("mlp", store=store)
    inputs = [np.full((1, 64), v, np.float32) for v in (-1.0, 0.25, 0.5, 2.0)]
    results: dict[int, np.ndarray] = {}
    configs = [node_config(f"c{i}", gflops=10.0 + i) for i in range(3)]
    async with swarm_and_requester(configs, store) as (_swarm, requester):
        async def one(i: int) -> None:
            results[i] = (await requester.infer("mlp", inputs[i])).output["x"]

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(len(inputs)):
                    nursery.start_soon(one, i)
    executor = SpanExecutor(store)
    for i, x in enumerate(inputs):
        want = executor.run(manifest, 0, manifest.num_layers, {"x": torch.from_numpy(x)})["x"].numpy()
        assert float(np.max(np.abs(results[i] - want))) <= 1e-5
