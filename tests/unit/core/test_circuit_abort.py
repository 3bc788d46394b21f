"""After a failure the requester can still tell the surviving hops to free the circuit (rule 8),
and a setup that times out names exactly the hops that never accepted."""

from __future__ import annotations

import numpy as np

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import State
from p2pinfer.errors import CircuitError

from tests.unit.core.test_circuit import HOPS, NOW, _circuit, _run, _setup


def test_abort_frame_from_a_failed_circuit_is_a_close_notice_the_first_hops_accept():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _setup(_circuit(), machines)
    _run(circuit, machines, np.ones((1, 2), np.float32))
    circuit.fail(CircuitError("the last hop died"))
    data = circuit.abort_frame()
    assert data is not None and circuit.state is State.CLOSED and circuit.abort_frame() is None
    for m in machines[:2]:  # the hops before the dead one forward it and forget the circuit
        action = m.on_frame(data, now_ms=NOW)
        assert isinstance(action, hopm.Close)
        data = action.send.data
        m.forget(circuit.circuit_id)
        assert m.live_circuits == 0


def test_pending_hops_are_the_ones_that_never_accepted():
    machines = [hopm.HopMachine(h) for h in HOPS]
    circuit = _circuit()
    requests = circuit.assign_requests()
    spec, data = requests[0]
    action = machines[0].on_assign(data, now_ms=NOW)
    circuit.on_reply(spec.peer_id, wire.encode(machines[0].span_ready(action.assignment.circuit_id).message))
    assert circuit.pending_hops() == (HOPS[1].peer_id, HOPS[2].peer_id)
    assert circuit.abort_frame() is None and circuit.state is State.CLOSED  # nobody to notify during setup
