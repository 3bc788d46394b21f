"""Hostile input to a running hop: garbage, oversized, unauthenticated, replayed and
other-circuit frames are rejected and counted, forged assignments are refused, and the hop keeps
serving a legitimate circuit throughout."""

from __future__ import annotations

import os

import numpy as np
import torch
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint
from nacl.public import SealedBox

from p2pinfer.core import wire
from p2pinfer.core.circuit import HopSpec
from p2pinfer.crypto.identity import Identity, x25519_public_key_of
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes
from p2pinfer.net.circuit_io import open_stream
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.hop_protocol import CIRCUIT_PROTOCOL, HOP_PROTOCOL

from tests.conftest import async_wait_until
from tests.integration.circuit_swarm import swarm


def _x(seed):
    return {"x": np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32)}


async def test_bad_frames_are_dropped_and_counted_and_other_circuits_keep_working(tmp_path):
    async with swarm(tmp_path, 1) as s:
        manifest = zoo.get_manifest("mlp", store=s.requester.store)
        hop = s.hops[0]
        spec = HopSpec(hop.peer_id, hop.addrs, 0, 4, tuple(span_hashes(manifest, 0, 4)))
        a = await s.client.open_circuit(model_id=manifest.model_id, hops=[spec])
        b = await s.client.open_circuit(model_id=manifest.model_id, hops=[spec])
        raw = await s.requester.host.new_stream(ID.from_base58(hop.peer_id), [HOP_PROTOCOL])
        send = lambda data: write_frame(raw, data, max_size=wire.MAX_ACTIVATION_FRAME, timeout=5)  # noqa: E731

        _, legit = a.machine.input_frame(_x(0))
        f = wire.decode(legit, expect=[wire.ActivationFrame], max_size=1 << 20)
        other = wire.ActivationFrame(circuit_id=b.circuit_id, link=0, seq=f.seq, nonce=f.nonce, box=f.box)
        forged = wire.ActivationFrame(circuit_id=a.circuit_id, link=0, seq=99, nonce=os.urandom(24), box=os.urandom(300))
        for data in [b"garbage \xff\x00", wire.encode(other), wire.encode(forged), legit, legit]:
            await send(data)
        k = hop.hop.counters
        await async_wait_until(lambda: k.replayed == 1, timeout=10, what="replayed frame counted")
        assert (await a.receive(timeout=10)).seq == f.seq  # the one legitimate copy was computed
        # the hop's forwarder counts a frame once written, which may be after the requester read it
        await async_wait_until(lambda: k.frames_forwarded >= 1, timeout=10, what="legitimate frame forwarded")
        assert (k.malformed, k.tampered, k.replayed, k.frames_forwarded) == (1, 2, 1, 1)

        oversized = await s.requester.host.new_stream(ID.from_base58(hop.peer_id), [HOP_PROTOCOL])
        await oversized.write(encode_uvarint(1 << 40) + b"\0" * 16)
        await async_wait_until(lambda: k.oversized == 1, timeout=10, what="oversized frame counted")

        # circuit B (and A, on its own stream) still work after all that
        for circuit, seed in [(b, 1), (a, 2)]:
            result = await circuit.infer(_x(seed), timeout=10)
            with torch.inference_mode():
                local = SpanExecutor(s.requester.store).run(manifest, 0, 4, {"x": torch.from_numpy(_x(seed)["x"])})["x"].numpy()
            np.testing.assert_allclose(result.act["x"], local, atol=1e-5, rtol=0)
        assert k.dropped == 5 and hop.hop.machine.live_circuits == 2


async def _assign_raw(s, hop, request: bytes) -> wire.AssignmentRefused:
    stream = await open_stream(s.requester.host, hop.peer_id, CIRCUIT_PROTOCOL, timeout=5, addrs=hop.addrs)
    await write_frame(stream, request, max_size=wire.MAX_CONTROL_FRAME, timeout=5)
    reply = await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=5)
    return wire.decode(reply, expect=[wire.AssignmentRefused])


async def test_forged_and_garbage_assignments_are_refused_with_reasons(tmp_path):
    async with swarm(tmp_path, 1) as s:
        hop, requester, mallory = s.hops[0], s.requester.identity, Identity.generate()
        a = wire.Assignment(
            circuit_id=os.urandom(16), hop=hop.peer_id, requester=requester.peer_id, model_id="ab" * 32, start=0, stop=1,
            weight_hashes=(), in_link=0, in_key=os.urandom(32), out_key=os.urandom(32),
            next_hop=wire.NextHop(requester.peer_id, (), True), deadline_ms=2**42)
        body = wire.encode(a)
        forged = wire.SignedAssignment(body=body, sig=mallory.sign("assignment/v1", body))
        sealed = SealedBox(x25519_public_key_of(hop.peer_id)).encrypt(wire.encode(forged))
        assert (await _assign_raw(s, hop, wire.encode(wire.AssignRequest(sealed=sealed)))).reason == "bad-signature"
        assert (await _assign_raw(s, hop, b"\xa1\x61t\x66assign")).reason == "malformed"
        assert (await _assign_raw(s, hop, wire.encode(wire.AssignRequest(sealed=os.urandom(200))))).reason == "not-for-me"
        assert hop.hop.counters.assignments_refused == 3 and hop.hop.machine.live_circuits == 0
