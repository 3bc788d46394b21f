"""Every message the circuit code produces validates against protocol/circuit.cddl (pycddl)."""

from __future__ import annotations

from pathlib import Path

import cbor2
import numpy as np
import pycddl
import pytest
from nacl.public import SealedBox

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, HopSpec
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.link import LinkEnd, open_frame

CDDL = (Path(__file__).parents[3] / "protocol" / "circuit.cddl").read_text()
ROOT = pycddl.Schema(CDDL)
NOW = 1_700_000_000_000
REQ, H1, H2 = Identity.generate(), Identity.generate(), Identity.generate()


def rule(name: str) -> pycddl.Schema:
    return pycddl.Schema(f"root = {name}\n{CDDL}")


def _produced() -> list[tuple[str, bytes]]:
    """Run a 2-hop circuit with pure machines and collect every message on the wire."""
    c = CircuitMachine(REQ, model_id="ab" * 32, hops=[HopSpec(H1.peer_id, ("/ip4/127.0.0.1/tcp/1",), 0, 1, ("cd" * 32,)),
                                                      HopSpec(H2.peer_id, (), 1, 2)],
                       requester_addrs=("/ip4/127.0.0.1/tcp/9",), now_ms=NOW, ttl_ms=1000)
    out: list[tuple[str, bytes]] = []
    machines = [hopm.HopMachine(H1), hopm.HopMachine(H2)]
    for (spec, data), m, ident in zip(c.assign_requests(), machines, [H1, H2]):
        out.append(("assign", data))
        inner = SealedBox(ident.x25519_private_key()).decrypt(wire.decode(data, expect=[wire.AssignRequest]).sealed)
        out += [("signed-assignment", inner), ("assignment", wire.decode(inner, expect=[wire.SignedAssignment]).body)]
        reply = m.span_ready(m.on_assign(data, now_ms=NOW).assignment.circuit_id)
        out.append(("accepted", wire.encode(reply.message)))
        c.on_reply(spec.peer_id, wire.encode(reply.message))
    refused = machines[0].on_assign(b"junk", now_ms=NOW).message
    out.append(("refused", wire.encode(refused)))
    _, data = c.input_frame({"x": np.ones((1, 4), np.float32), "mask": np.ones((1, 4), np.int64)})
    for m in machines:
        out.append(("frame", data))
        comp = m.on_frame(data, now_ms=NOW)
        out.append(("payload", wire.encode(wire.FramePayload(act=comp.act, trace=comp.trace))))
        done = m.finish(comp, comp.act, 7)
        out.append(("commit", done.commit.data))
        m.retain(comp.circuit_id, comp.seq, done.out_bytes)
        link = m.assignment(comp.circuit_id).in_link
        req = c.audit_request(link, comp.seq)
        out += [("audit-req", wire.encode(req)), ("audit-reply", m.on_audit(wire.encode(req), now_ms=NOW))]
        data = done.send.data
    out.append(("result", data))
    data = c.close_frame()
    for i, m in enumerate(machines):
        frame = wire.decode(data, expect=[wire.ActivationFrame])
        plaintext = open_frame(LinkEnd(c._keys[i], c.circuit_id, i), frame.seq, frame.nonce, frame.box)
        out.append(("close-notice", plaintext))
        data = m.on_frame(data, now_ms=NOW).send.data
    out.append(("error-notice", machines[1].compute_failed(c.circuit_id, 0, "compute-failed", "boom").data))
    out += [("weight-req", wire.encode(wire.WeightRequest(kind="blob", hash="cd" * 32))),
            ("weight-blob", wire.encode(wire.WeightBlob(hash="cd" * 32, data=b"abc"))),
            ("weight-missing", wire.encode(wire.WeightMissing(hash="cd" * 32))),
            ("receipt", wire.encode(wire.ReceiptDelivery(receipt=b"\xa0" * 300))),
            ("receipt-ack", wire.encode(wire.ReceiptAck(accepted=False, reason="wrong-hop")))]
    return out


PRODUCED = _produced()


@pytest.mark.parametrize("name, data", PRODUCED, ids=[n for n, _ in PRODUCED])
def test_produced_messages_validate(name, data):
    rule(name).validate_cbor(data)
    if name not in ("signed-assignment", "assignment", "payload", "close-notice"):
        ROOT.validate_cbor(data)  # everything that travels bare on a stream is a circuit-message


def test_every_registered_type_is_covered():
    """Every message type core/wire.py defines (other modules, e.g. core/handoff.py, register
    their own types when imported and test them against their own CDDL)."""
    produced_types = {cbor2.loads(d)["t"] for _, d in PRODUCED}
    assert produced_types == {t for t, cls in wire.DECODERS.items() if cls.__module__ == wire.__name__}


@pytest.mark.parametrize("name, bad", [
    ("frame", {"t": "frame", "circuit_id": b"short", "link": 0, "seq": 0, "nonce": b"\0" * 24, "box": b""}),
    ("refused", {"t": "refused", "circuit_id": b"", "hop": "h", "reason": "because", "message": ""}),
    ("payload", {"t": "payload", "act": cbor2.CBORTag(40, [[1], cbor2.CBORTag(81, b"\0" * 4)]), "trace": []}),
])
def test_schema_rejects_what_the_decoder_rejects(name, bad):
    with pytest.raises(pycddl.ValidationError):
        rule(name).validate_cbor(cbor2.dumps(bad))
