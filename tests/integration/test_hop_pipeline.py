"""A hop overlaps reading, computing and forwarding (net/hop_pipeline.py): a stream through hops
whose compute and (emulated) uplink each take about the same time runs at about one of them per
frame, not their sum; the read-ahead stays bounded; a dead next hop does not wedge the stream."""

from __future__ import annotations

import time

import numpy as np
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes
from p2pinfer.net.hop_protocol import HOP_PROTOCOL

from tests.conftest import async_wait_until
from tests.integration.circuit_swarm import swarm

COMPUTE_S = 0.15  # per frame and hop: the span's compute (emulated in the worker thread)
SEND_S = 0.15  # per frame and hop: the emulated uplink
N = 8


def _specs(s, manifest, spans):
    return [HopSpec(p.peer_id, p.addrs, a, b, tuple(span_hashes(manifest, a, b))) for p, (a, b) in zip(s.hops, spans)]


def _slow_hop(peer, starts: list[float], in_flight: list[int]) -> None:
    """Compute takes COMPUTE_S and each output SEND_S on the wire; record when each compute starts
    and how many frames the hop holds then (read but not yet forwarded)."""
    inner, counters = peer.hop.executor_fn, peer.hop.counters

    def slow(m, a, b, x):
        starts.append(time.perf_counter())
        in_flight.append(counters.frames_in - counters.frames_forwarded)
        time.sleep(COMPUTE_S)  # a span's compute, in the hop's worker thread
        return inner(m, a, b, x)

    peer.hop.executor_fn = slow
    peer.hop.links.send_delay = lambda _n: SEND_S


async def test_a_stream_through_two_hops_overlaps_compute_and_forwarding(tmp_path):
    async with swarm(tmp_path, 2) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        starts: list[list[float]] = [[], []]
        in_flight: list[list[int]] = [[], []]
        for i, peer in enumerate(s.hops):
            _slow_hop(peer, starts[i], in_flight[i])
        circuit = await s.client.open_circuit(model_id=manifest.model_id, hops=_specs(s, manifest, [(0, 2), (2, 4)]))
        xs = [np.full((1, 64), 0.01 * i, np.float32) for i in range(N)]
        with trio.fail_after(60):
            for x in xs:  # the whole stream at once: the hops' flow control must hold it back
                await circuit.send({"x": x})
            results = [await circuit.receive(timeout=30) for _ in range(N)]
            await circuit.aclose()
        assert [r.seq for r in results] == sorted(r.seq for r in results)  # in order, end to end
        executor = SpanExecutor(s.requester.store)
        with torch.inference_mode():
            for x, r in zip(xs, results):
                np.testing.assert_allclose(r.act["x"], executor.run(manifest, 0, 4, {"x": torch.from_numpy(x)})["x"].numpy(), atol=1e-5)
        for i, peer in enumerate(s.hops):
            gaps = sorted(b - a for a, b in zip(starts[i], starts[i][1:]))
            median = gaps[len(gaps) // 2]
            # serialised, a hop starts a frame every COMPUTE_S + SEND_S (0.30 s) at best; overlapped,
            # every max(COMPUTE_S, SEND_S) (0.15 s). The bound sits halfway, with room for a busy host.
            assert median < 0.75 * (COMPUTE_S + SEND_S), f"hop {i}: a frame every {median:.3f}s, gaps {gaps}"
            assert peer.hop.counters.frames_forwarded == N and peer.hop.counters.frames_computed == N
            # read-ahead is bounded: reader + queue + compute + queue + forwarder (depth 1)
            assert 2 <= max(in_flight[i]) <= 5, in_flight[i]
        await async_wait_until(lambda: all(p.hop.machine.live_circuits == 0 for p in s.hops), timeout=10, what="circuit closed")
        assert all(not p.hop._pipelines._by_circuit and not p.hop.links.circuits() for p in s.hops)


async def test_a_dead_next_hop_fails_every_input_without_wedging_the_stream(tmp_path):
    async with swarm(tmp_path, 2) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        circuit = await s.client.open_circuit(model_id=manifest.model_id, hops=_specs(s, manifest, [(0, 2), (2, 4)]))
        s.hops[1].host.remove_stream_handler(HOP_PROTOCOL)  # hop 2 stops serving after accepting
        with trio.fail_after(30):
            for i in range(N):
                await circuit.send({"x": np.full((1, 64), 0.01 * i, np.float32)})
        first = s.hops[0].hop.counters
        # every input is read, computed and reported as failed: the stream never stops moving
        await async_wait_until(lambda: first.compute_failed == N, timeout=30, what="every input reported")
        assert first.frames_computed == N and first.frames_forwarded == 0
