"""A hop serves several circuits at once with compute in worker threads (the trio loop stays
responsive), and a compute failure reaches the requester as a clear error, not a hang."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.errors import CircuitError
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes

from tests.integration.circuit_swarm import swarm


def _specs(s, manifest, spans):
    return [HopSpec(p.peer_id, p.addrs, a, b, tuple(span_hashes(manifest, a, b))) for p, (a, b) in zip(s.hops, spans)]


async def test_concurrent_circuits_and_a_responsive_loop(tmp_path):
    async with swarm(tmp_path, 2) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        durations: list[float] = []
        for peer in s.hops:  # make compute heavy enough to matter: real matmuls after the span
            inner = peer.hop.executor_fn

            def heavy(m, a, b, x, inner=inner):
                t0 = time.perf_counter()
                w = torch.randn(384, 384)
                for _ in range(150):
                    w = torch.tanh(w @ w)
                durations.append(time.perf_counter() - t0)
                return inner(m, a, b, x)
            peer.hop.executor_fn = heavy
        circuits = [await s.client.open_circuit(model_id=manifest.model_id, hops=_specs(s, manifest, [(0, 2), (2, 4)])) for _ in range(3)]
        gaps: list[float] = []
        results: dict[int, np.ndarray] = {}

        async def ticker() -> None:
            last = time.perf_counter()
            while True:
                await trio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def one(i: int) -> None:
            x = np.full((1, 64), 0.1 * i, np.float32)
            results[i] = (await circuits[i].infer({"x": x}, timeout=60)).act["x"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            async with trio.open_nursery() as inner_nursery:
                for i in range(3):
                    inner_nursery.start_soon(one, i)
            nursery.cancel_scope.cancel()
        executor = SpanExecutor(s.requester.store)
        for i, got in results.items():
            with torch.inference_mode():
                local = executor.run(manifest, 0, 4, {"x": torch.full((1, 64), 0.1 * i)})["x"].numpy()
            np.testing.assert_allclose(got, local, atol=1e-5, rtol=0)
        assert len(results) == 3 and all(p.hop.counters.frames_computed == 3 for p in s.hops)
        # had compute run on the trio thread, the loop would have stalled for a whole span
        typical = sorted(durations)[len(durations) // 2]
        assert max(gaps) < 0.5 * typical, f"trio loop blocked {max(gaps):.3f}s; one span computes in {typical:.3f}s"


async def test_wrong_shaped_input_fails_the_circuit_with_the_hops_reason(tmp_path):
    async with swarm(tmp_path, 2) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        circuit = await s.client.open_circuit(model_id=manifest.model_id, hops=_specs(s, manifest, [(0, 1), (1, 4)]))
        with trio.fail_after(20), pytest.raises(CircuitError, match="bad-input"):
            await circuit.infer({"x": np.ones((1, 63), np.float32)}, timeout=15)
        assert s.hops[0].hop.counters.compute_failed == 1
