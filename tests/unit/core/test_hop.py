"""The hop machine drops and counts every kind of bad frame and keeps serving."""

from __future__ import annotations

import os

import cbor2
import numpy as np

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, HopSpec
from p2pinfer.crypto.identity import Identity

NOW = 5_000_000
REQ, HOP = Identity.generate(), Identity.generate()


def _ready_circuit(machine):
    c = CircuitMachine(REQ, model_id="toy", hops=[HopSpec(HOP.peer_id, (), 0, 1)], requester_addrs=(), now_ms=NOW, ttl_ms=10_000)
    (_, data), = c.assign_requests()
    prep = machine.on_assign(data, now_ms=NOW)
    c.on_reply(HOP.peer_id, wire.encode(machine.span_ready(prep.assignment.circuit_id).message))
    return c


def test_bad_frames_are_counted_by_cause_and_good_ones_still_pass():
    m = hopm.HopMachine(HOP)
    c1, c2 = _ready_circuit(m), _ready_circuit(m)
    _, good = c1.input_frame({"x": np.ones(3, np.float32)})
    frame = wire.decode(good, expect=[wire.ActivationFrame], max_size=1 << 20)
    other_circuit = wire.encode(wire.ActivationFrame(circuit_id=c2.circuit_id, link=0, seq=frame.seq, nonce=frame.nonce, box=frame.box))
    unknown = wire.encode(wire.ActivationFrame(circuit_id=os.urandom(16), link=0, seq=0, nonce=frame.nonce, box=frame.box))
    flipped = wire.encode(wire.ActivationFrame(circuit_id=frame.circuit_id, link=0, seq=0, nonce=frame.nonce, box=frame.box[:-1] + bytes([frame.box[-1] ^ 1])))
    bad = {"malformed": [b"garbage", cbor2.dumps({"t": "frame"}), cbor2.dumps({"t": "result", **{k: v for k, v in wire._to_map(frame).items() if k != "t"}})],
           "unknown_circuit": [unknown], "tampered": [other_circuit, flipped]}
    for expected, frames in bad.items():
        for data in frames:
            drop = m.on_frame(data, now_ms=NOW)
            assert isinstance(drop, hopm.Drop) and drop.reason == expected, (expected, drop)
    assert isinstance(m.on_frame(good, now_ms=NOW), hopm.Compute)
    assert m.on_frame(good, now_ms=NOW).reason == "replayed"
    m.note_oversized()
    k = m.counters
    assert (k.malformed, k.unknown_circuit, k.tampered, k.replayed, k.oversized) == (3, 1, 2, 1, 1)
    assert k.dropped == 8
    _, good2 = c2.input_frame({"x": np.ones(3, np.float32)})
    assert isinstance(m.on_frame(good2, now_ms=NOW), hopm.Compute)


def test_frames_after_the_deadline_are_dropped_and_expire_forgets():
    m = hopm.HopMachine(HOP)
    c = _ready_circuit(m)
    _, data = c.input_frame({"x": np.ones(1, np.float32)})
    assert m.on_frame(data, now_ms=NOW + 10_000).reason == "unknown_circuit"
    assert m.expire(NOW + 10_000) == [c.circuit_id] and m.live_circuits == 0


def test_garbage_assignment_is_refused_as_malformed():
    m = hopm.HopMachine(HOP)
    reply = m.on_assign(b"\x00\x01", now_ms=NOW)
    assert reply.message.reason == "malformed" and m.counters.assignments_refused == 1
    sealed = wire.encode(wire.AssignRequest(sealed=b"x" * 100))
    assert m.on_assign(sealed, now_ms=NOW).message.reason == "not-for-me"


def test_circuit_state_machines_are_pure():
    """core/ imports no trio, libp2p or torch (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, p2pinfer.core.hop, p2pinfer.core.circuit, p2pinfer.core.wire, p2pinfer.core.codec; "
            "print(sorted(m for m in ('trio', 'libp2p', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_deadline_too_far_ahead_is_refused():
    c = CircuitMachine(REQ, model_id="toy", hops=[HopSpec(HOP.peer_id, (), 0, 1)], requester_addrs=(), now_ms=NOW, ttl_ms=10 * 3_600_000)
    (_, data), = c.assign_requests()
    reply = hopm.HopMachine(HOP).on_assign(data, now_ms=NOW)
    assert reply.message.reason == "malformed" and "deadline" in reply.message.message
