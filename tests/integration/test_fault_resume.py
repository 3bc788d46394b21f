"""Resumption (p2pinfer/resume.py, net/reroute_protocol.py) on real py-libp2p hosts: when a hop
of a running circuit dies, its in-flight inputs resume from a surviving upstream hop's retained
outputs, so the layers before the failure are never computed twice; with retention evicted the
requester falls back to restarting from the input; forged handoffs are refused and the hop keeps
serving.

The victim is made to hold its frames (its compute blocks until it is killed, like an
`[adversary] stall`), so that every input is in flight past the upstream hops when it dies; the
hops' executors are wrapped to record which layers they computed."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from nacl.public import SealedBox

from p2pinfer.core import handoff as ho
from p2pinfer.core import wire
from p2pinfer.core.verification import VerificationPolicy
from p2pinfer.crypto.handoff_sealing import HANDOFF_DOMAIN
from p2pinfer.crypto.identity import Identity, x25519_public_key_of
from p2pinfer.fault import FaultOptions
from p2pinfer.net.circuit_client import hop_specs
from p2pinfer.net.circuit_io import close_stream, open_stream
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.reroute_protocol import HANDOFF_PROTOCOL, request_handoff

from tests.conftest import async_wait_until
from tests.integration.fault_swarm import FAST, fault_swarm, inputs, max_error, mlp_node, name_of, reference

NO_CHECKS = FaultOptions(policy=VerificationPolicy.off(), deadline_grace_s=1.0, probe_setup_s=3.0)
N = 8  # = the requester's max_in_flight: every input is in flight when the victim dies


def record_and_hold(swarm: Any, victim: str, gate: threading.Event) -> list[tuple[str, int, int]]:
    """Wrap every member's executor to record (member, start, stop) per span computed; the
    victim's blocks (in its worker thread) until `gate` is set."""
    calls: list[tuple[str, int, int]] = []
    for m in swarm.members:
        inner = m.hop.hop.executor_fn

        def run(manifest: Any, start: int, stop: int, tensors: Any, inner: Any = inner, name: str = m.name) -> Any:
            if name == victim:
                gate.wait(timeout=60)
            calls.append((name, start, stop))
            return inner(manifest, start, stop, tensors)

        m.hop.hop.executor_fn = run
    return calls


def layer_counts(calls: list[tuple[str, int, int]], layers: int) -> list[int]:
    return [sum(1 for _n, a, b in calls if a <= layer < b) for layer in range(layers)]


async def kill_mid_stream(tmp_path: Path, position: int, *, swarm_options: Any = FAST) -> dict[str, Any]:
    """Stream N inputs; once every hop before `position` computed all of them, kill the hop at
    `position` (which holds them). Returns what the tests check."""
    configs = [mlp_node(f"p{i}", gflops=10.0 + 3 * i) for i in range(6)]
    xs = inputs(N, seed=3)
    async with fault_swarm(tmp_path, configs, options=NO_CHECKS, swarm_options=swarm_options) as (swarm, rq, hooks):
        snapshot, _ = await rq.snapshot()
        plan = rq.plan(rq.manifest("mlp"), snapshot, "throughput")
        assert len(plan.hops) >= 3
        hop = plan.hops[position]
        victim = name_of(swarm, hop.peer_id)
        upstream = [name_of(swarm, h.peer_id) for h in plan.hops[:plan.hops.index(hop)]]
        gate = threading.Event()
        calls = record_and_hold(swarm, victim, gate)

        async def killer() -> None:
            await async_wait_until(lambda: all(swarm.member(p).hop.hop.counters.frames_computed >= N for p in upstream),
                                   timeout=30, what="every upstream hop computed every input")
            swarm.kill(victim)
            gate.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(killer)
                started = time.perf_counter()
                with trio.fail_after(60):
                    result = await rq.infer_stream("mlp", xs)
        finally:
            gate.set()
        view = hooks.ledger.peer(hop.peer_id, hooks.clock())
        return dict(result=result, want=reference(rq.store, xs), plan=plan, boundary=hop.start, calls=calls,
                    holder=swarm.member(upstream[-1]).hop.hop.handoffs.counters, victim_failures=view.state.failures,
                    honest=[v for v in hooks.ledger.peers(hooks.clock()) if v.peer_id != hop.peer_id],
                    layers=rq.manifest("mlp").num_layers, wall_s=time.perf_counter() - started)


@pytest.mark.parametrize("position", [-1, 1], ids=["last-hop", "middle-hop"])
async def test_a_killed_hop_is_resumed_from_upstream_without_recomputing_the_prefix(tmp_path: Path, position: int) -> None:
    out = await kill_mid_stream(tmp_path, position)
    assert max_error(out["result"].outputs, out["want"]) <= 1e-5
    counts = layer_counts(out["calls"], out["layers"])
    b = out["boundary"]
    # each input once, plus the one failure probe of each hop before the victim (failover rule 4,
    # fed the requester's own input); restarting from the input would add every resumed input again
    assert b >= 1 and counts[:b] == [N + 1] * b, f"layers before {b} computed {counts[:b]} times, want {N + 1} each"
    assert all(c >= N for c in counts[b:])
    assert out["holder"].served >= 1 and out["holder"].frames_sent == N and out["holder"].refused == 0
    assert out["result"].attempts == 1  # everything was in flight: resumed, no new circuit from the input
    assert out["victim_failures"] >= 1
    assert out["honest"] and all(v.state.failures == 0 and v.state.timeouts == 0 for v in out["honest"])


async def test_evicted_retention_falls_back_to_restarting_from_the_input(tmp_path: Path) -> None:
    no_retention = replace(FAST, hop=replace(FAST.hop, retain_outputs=0))
    out = await kill_mid_stream(tmp_path, -1, swarm_options=no_retention)
    assert max_error(out["result"].outputs, out["want"]) <= 1e-5
    counts = layer_counts(out["calls"], out["layers"])
    assert counts[0] > N + 1  # beyond the inputs and the probe: restarted from the input
    assert out["holder"].frames_sent == 0 and out["holder"].missing >= N
    assert out["result"].attempts >= 2


async def _raw_handoff(host: Any, peer_id: str, addrs: tuple[str, ...], data: bytes) -> ho.HandoffReply:
    stream = await open_stream(host, peer_id, HANDOFF_PROTOCOL, timeout=10, addrs=addrs)
    try:
        await write_frame(stream, data, max_size=wire.MAX_CONTROL_FRAME, timeout=10)
        return wire.decode(await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=10), expect=[ho.HandoffReply])
    finally:
        await close_stream(stream)


async def test_forged_handoffs_are_refused_and_the_hop_keeps_serving(tmp_path: Path) -> None:
    configs = [mlp_node(f"p{i}", gflops=10.0 + 3 * i) for i in range(5)]
    xs = inputs(2, seed=4)
    async with fault_swarm(tmp_path, configs, options=NO_CHECKS) as (swarm, rq, _hooks):
        manifest = rq.manifest("mlp")
        snapshot, addrs = await rq.snapshot()
        specs = hop_specs(rq.plan(manifest, snapshot, "latency"), manifest, addrs)
        want = reference(rq.store, xs)
        circuit = await rq.client.open_circuit(model_id=manifest.model_id, hops=specs)
        async with circuit:
            first = await circuit.infer(xs[0], timeout=20)
            np.testing.assert_allclose(first.act["x"], want[:1], atol=1e-5)
            holder, other = specs[0], specs[1]
            handoffs = swarm.member(name_of(swarm, holder.peer_id)).hop.hop.handoffs.counters
            base = ho.Handoff(circuit_id=circuit.circuit_id, hop=holder.peer_id, requester=rq.identity.peer_id, link=0,
                              seqs=(0,), to_circuit=os.urandom(16), to_seq=0, to_key=os.urandom(32),
                              next_hop=wire.NextHop(other.peer_id, other.addrs, False),
                              deadline_ms=int(time.time() * 1000) + 60_000)
            attacker = Identity.generate()
            # a valid signature by a peer that is not the circuit's requester
            reply = await request_handoff(rq.host, attacker, replace(base, requester=attacker.peer_id), holder.addrs,
                                          timeout=10)
            assert (reply.ok, reply.reason, reply.sent) == (False, "wrong-requester", ())
            box = SealedBox(x25519_public_key_of(holder.peer_id))
            body = wire.encode(base)
            forged = wire.encode(ho.SignedHandoff(body=body, sig=attacker.sign(HANDOFF_DOMAIN, body)))
            unsigned = wire.encode(ho.SignedHandoff(body=body, sig=b""))
            for data, reason in ((forged, "bad-signature"), (unsigned, "bad-signature")):
                reply = await _raw_handoff(rq.host, holder.peer_id, holder.addrs,
                                           wire.encode(ho.HandoffRequest(sealed=box.encrypt(data))))
                assert (reply.ok, reply.reason) == (False, reason)
            reply = await _raw_handoff(rq.host, holder.peer_id, holder.addrs, b"\xa1\x61t\x63bad")
            assert (reply.ok, reply.reason) == (False, "malformed")
            assert handoffs.refused == 4 and handoffs.frames_sent == 0 and handoffs.served == 0
            second = await circuit.infer(xs[1], timeout=20)  # the hop kept serving the circuit
            np.testing.assert_allclose(second.act["x"], want[1:2], atol=1e-5)
