"""End to end over real libp2p hosts: a 3-hop circuit on the zoo `mlp` equals local compute,
weights are fetched by hash, and refusals surface at the requester without hanging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.core.plan import Hop, Plan
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes
from p2pinfer.net.circuit_client import run_plan
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import CircuitError, HopRefusedError, NetworkError
from p2pinfer.net.hop_protocol import HOP_PROTOCOL, HopConfig

from tests.integration.circuit_swarm import FAST, swarm


def _local(store, manifest, x):
    with torch.inference_mode():
        return SpanExecutor(store).run(manifest, 0, manifest.num_layers, {"x": torch.from_numpy(x)})["x"].numpy()


async def test_three_hop_mlp_equals_local_and_fetches_weights(tmp_path):
    async with swarm(tmp_path, 3) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        spans = [(0, 1), (1, 3), (3, 4)]
        plan = Plan(objective="latency", hops=tuple(Hop(p.peer_id, a, b, 0.001, 0.001) for p, (a, b) in zip(s.hops, spans)),
                    transfer_out_s=0.001, predicted_latency_s=0.01, bottleneck_s=0.001)
        rng = np.random.default_rng(1)
        inputs = [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(4)]
        progress = []
        run = await run_plan(s.client, plan=plan, manifest=manifest, inputs=inputs, peer_addrs=s.addrs, max_in_flight=2,
                             on_result=lambda n, r: progress.append(n))
        assert progress == [1, 2, 3, 4]
        for act, out in zip(inputs, run.outputs):
            np.testing.assert_allclose(out["x"], _local(s.requester.store, manifest, act["x"]), atol=1e-5, rtol=0)
        assert [h.peer_id for h in run.hops] == [p.peer_id for p in s.hops]
        assert all(h.measured_compute_ms >= 0 for h in run.hops) and len(run.latency_ms) == 4
        assert all(h.predicted_compute_ms == 1.0 for h in run.hops) and 0 < run.setup_ms < run.wall_s * 1000
        for peer, (a, b) in zip(s.hops, spans):
            assert all(peer.store.has_blob(h) for h in span_hashes(manifest, a, b))  # fetched + verified
            assert peer.hop.counters.frames_forwarded == 4 and peer.hop.counters.dropped == 0
        # run_plan closed the circuit: the notice went down the chain and came back
        assert all(p.hop.machine.live_circuits == 0 and p.hop.counters.closed_circuits == 1 for p in s.hops)
        assert s.client.rejected_frames == 0 and not s.client._circuits
        # a hop holds only its own span's weights: hop 0 never fetched layer 3's
        assert not s.hops[0].store.has_blob(span_hashes(manifest, 3, 4)[0])


async def test_unknown_model_is_refused_with_a_clear_error(tmp_path):
    async with swarm(tmp_path, 2) as s:
        hops = [HopSpec(p.peer_id, p.addrs, i, i + 1) for i, p in enumerate(s.hops)]
        with pytest.raises(HopRefusedError) as info:
            await s.client.open_circuit(model_id="ab" * 32, hops=hops)
        assert info.value.reason == "unknown-model" and "refused" in str(info.value)


async def test_out_of_memory_refusal_and_unreachable_hop(tmp_path):
    async with swarm(tmp_path, 1, hop_config=HopConfig(mem_bytes=1000, **FAST)) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        hop = s.hops[0]
        spec = HopSpec(hop.peer_id, hop.addrs, 0, 4, tuple(span_hashes(manifest, 0, 4)))
        with pytest.raises(HopRefusedError) as info:
            await s.client.open_circuit(model_id=manifest.model_id, hops=[spec])
        assert info.value.reason == "out-of-memory" and info.value.peer_id == hop.peer_id
        ghost = Identity.generate().peer_id
        with pytest.raises(NetworkError, match=ghost[:12]):
            await s.client.open_circuit(model_id=manifest.model_id, hops=[HopSpec(ghost, ("/ip4/127.0.0.1/tcp/1",), 0, 4, spec.weight_hashes)])


async def test_next_hop_that_stops_serving_fails_the_circuit_with_a_clear_error(tmp_path):
    async with swarm(tmp_path, 2) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        hops = [HopSpec(p.peer_id, p.addrs, a, b, tuple(span_hashes(manifest, a, b))) for p, (a, b) in zip(s.hops, [(0, 2), (2, 4)])]
        circuit = await s.client.open_circuit(model_id=manifest.model_id, hops=hops)
        s.hops[1].host.remove_stream_handler(HOP_PROTOCOL)  # hop 2 stops serving after accepting
        with trio.fail_after(30), pytest.raises(CircuitError, match="next-hop-unreachable"):
            await circuit.infer({"x": np.zeros((1, 64), np.float32)}, timeout=25)
        assert s.hops[0].hop.counters.compute_failed == 1


async def test_emulated_uplinks_delay_each_frame_by_its_size(tmp_path):
    async with swarm(tmp_path, 1) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        hop = s.hops[0]
        seen: list[int] = []
        hop.hop.links.send_delay = lambda n: seen.append(n) or 0.2  # 0.2 s per frame on the hop's uplink
        s.client.send_delay = lambda n: seen.append(n) or 0.1
        spec = HopSpec(hop.peer_id, hop.addrs, 0, 4, tuple(span_hashes(manifest, 0, 4)))
        circuit = await s.client.open_circuit(model_id=manifest.model_id, hops=[spec])
        t0 = trio.current_time()
        await circuit.infer({"x": np.zeros((1, 64), np.float32)}, timeout=10)
        assert trio.current_time() - t0 >= 0.3 and len(seen) == 2 and seen[0] > 256  # input frame, result frame
