"""Requester and hops wired back to back with no sockets: setup, data, refusals, deadlines."""

from __future__ import annotations

import numpy as np
import pytest

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, Closed, HopSpec, State
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import CircuitError, HopRefusedError, WireError

NOW = 1_000_000
REQ = Identity.generate()
HOPS = [Identity.generate() for _ in range(3)]


def _span(start, stop, act):
    x = act["x"]
    for layer in range(start, stop):
        x = np.tanh(x * (layer + 1) + 0.5)
    return {"x": x.astype(np.float32)}


def _circuit(hops=HOPS, spans=((0, 2), (2, 3), (3, 5))):
    specs = [HopSpec(h.peer_id, (f"/ip4/127.0.0.1/tcp/{i}",), a, b) for i, (h, (a, b)) in enumerate(zip(hops, spans))]
    return CircuitMachine(REQ, model_id="toy", hops=specs, requester_addrs=("/ip4/127.0.0.1/tcp/9",), now_ms=NOW, ttl_ms=60_000)


def _setup(circuit, machines):
    for (spec, data), m in zip(circuit.assign_requests(), machines):
        action = m.on_assign(data, now_ms=NOW)
        assert isinstance(action, hopm.PrepareSpan), action
        reply = m.span_ready(action.assignment.circuit_id)
        circuit.on_reply(spec.peer_id, wire.encode(reply.message))
    return circuit


def _run(circuit, machines, x):
    seq, data = circuit.input_frame({"x": x})
    for i, m in enumerate(machines):
        action = m.on_frame(data, now_ms=NOW)
        assert isinstance(action, hopm.Compute), action
        a = m.assignment(action.circuit_id)
        send = m.compute_done(action.circuit_id, action.seq, _span(a.start, a.stop, action.act), action.trace + (i,))
        data = send.data
    assert send.final and send.peer_id == REQ.peer_id
    return circuit.on_result(HOPS[-1].peer_id, data)


def test_three_hops_compute_the_same_as_local():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    assert circuit.state is State.READY
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    for expected_seq in range(2):
        result = _run(circuit, machines, x)
        assert result.seq == expected_seq and result.trace == (0, 1, 2)
        np.testing.assert_array_equal(result.act["x"], _span(0, 5, {"x": x})["x"])


def test_each_hop_reads_only_its_own_input_link():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    _, data = circuit.input_frame({"x": np.ones(2, np.float32)})
    drop = machines[1].on_frame(data, now_ms=NOW)  # hop 2 gets link 0's frame
    assert isinstance(drop, hopm.Drop) and drop.reason == "wrong_link"
    forged = wire.decode(data, expect=[wire.ActivationFrame], max_size=1 << 20)
    relabelled = wire.encode(wire.ActivationFrame(circuit_id=forged.circuit_id, link=1, seq=forged.seq, nonce=forged.nonce, box=forged.box))
    assert machines[1].on_frame(relabelled, now_ms=NOW).reason == "tampered"


def test_refusal_fails_the_circuit_with_the_hop_and_reason():
    circuit = _circuit()
    (spec, data), *_ = circuit.assign_requests()
    m = hopm.HopMachine(HOPS[0])
    action = m.on_assign(data, now_ms=NOW)
    reply = m.span_refused(action.assignment.circuit_id, "unknown-model", "no model toy")
    assert circuit.on_reply(spec.peer_id, wire.encode(reply.message)) is State.FAILED
    assert isinstance(circuit.error, HopRefusedError) and circuit.error.reason == "unknown-model"
    with pytest.raises(CircuitError):
        circuit.input_frame({"x": np.ones(1, np.float32)})


def test_assignment_for_another_peer_is_refused_not_for_me():
    circuit = _circuit()
    (_, data), *_ = circuit.assign_requests()
    reply = hopm.HopMachine(HOPS[1]).on_assign(data, now_ms=NOW)
    assert reply.message.reason == "not-for-me"


def test_expired_assignment_and_busy_and_duplicate():
    circuit = _circuit()
    (_, data), *_ = circuit.assign_requests()
    assert hopm.HopMachine(HOPS[0]).on_assign(data, now_ms=NOW + 61_000).message.reason == "expired"
    m = hopm.HopMachine(HOPS[0], max_circuits=1)
    assert isinstance(m.on_assign(data, now_ms=NOW), hopm.PrepareSpan)
    assert m.on_assign(data, now_ms=NOW).message.reason == "duplicate-circuit"
    (_, other), *_ = _circuit().assign_requests()
    assert m.on_assign(other, now_ms=NOW).message.reason == "busy"


def test_result_from_wrong_peer_or_replayed_is_rejected_without_failing():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    seq, data = circuit.input_frame({"x": np.ones(2, np.float32)})
    for i, m in enumerate(machines):
        c = m.on_frame(data, now_ms=NOW)
        data = m.compute_done(c.circuit_id, c.seq, c.act, c.trace).data
    with pytest.raises(WireError, match="not the last hop"):
        circuit.on_result(HOPS[0].peer_id, data)
    circuit.on_result(HOPS[-1].peer_id, data)
    with pytest.raises(WireError, match="replay"):
        circuit.on_result(HOPS[-1].peer_id, data)
    assert circuit.state is State.READY and circuit.rejected == 2


def test_error_notice_fails_the_circuit_and_deadline_too():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    send = machines[1].compute_failed(circuit.circuit_id, 0, "compute-failed", "boom")
    assert send.peer_id == REQ.peer_id
    assert circuit.on_error(HOPS[1].peer_id, send.data) is State.FAILED
    assert "boom" in str(circuit.error)
    late = _setup(_circuit(), [hopm.HopMachine(h) for h in HOPS])
    assert late.check_deadline(NOW + 60_000) is State.FAILED


def test_spans_must_be_contiguous_and_peers_distinct():
    with pytest.raises(CircuitError, match="contiguous"):
        _circuit(spans=((0, 2), (3, 4), (4, 5)))
    with pytest.raises(CircuitError, match="at most one span"):
        _circuit(hops=[HOPS[0], HOPS[0], HOPS[1]])


def test_close_notice_travels_the_chain_and_frees_every_hop():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    _run(circuit, machines, np.ones((1, 2), np.float32))
    data = circuit.close_frame()
    assert circuit.state is State.CLOSED and circuit.close_frame() is None
    for m in machines:
        action = m.on_frame(data, now_ms=NOW)
        assert isinstance(action, hopm.Close)
        data = action.send.data
        m.forget(circuit.circuit_id)
        assert m.live_circuits == 0 and m.counters.closed_circuits == 1
    assert action.send.final and circuit.on_result(HOPS[-1].peer_id, data) == Closed(seq=1)
    with pytest.raises(CircuitError):
        circuit.input_frame({"x": np.ones(1, np.float32)})


def test_close_notice_cannot_be_forged_by_a_non_member():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    outsider = _setup(_circuit(), [hopm.HopMachine(h) for h in HOPS])  # same hops, other keys
    f = wire.decode(outsider.close_frame(), expect=[wire.ActivationFrame])
    forged = wire.encode(wire.ActivationFrame(circuit_id=circuit.circuit_id, link=0, seq=f.seq, nonce=f.nonce, box=f.box))
    assert machines[0].on_frame(forged, now_ms=NOW).reason == "tampered"
    assert machines[0].live_circuits == 1
