"""The hop's side of a circuit as a sans-IO state machine: bytes in, actions out.

Rules (the network adapter in net/hop_protocol.py only moves bytes and runs compute):

1. An assignment is acted on only after it unseals with our key, decodes strictly, its
   signature verifies for the requester it names, it names us, and its deadline is in the future.
   Any failure -> `Reply(AssignmentRefused(reason))`, nothing stored.
2. A verified assignment whose deadline lies more than `max_ttl_ms` ahead is refused
   ("malformed"); one for a circuit we already know is refused ("duplicate-circuit"); beyond
   `max_circuits` live circuits we refuse with "busy". Otherwise the circuit is PENDING and we
   emit `PrepareSpan`: the adapter checks the model/kinds/memory and fetches missing weights,
   then calls `span_ready` (-> Reply(Accepted), circuit READY) or `span_refused`.
3. A frame is decoded strictly (size limit enforced by the caller before parsing), must name a
   READY circuit, our input link, authenticate under the input-link key, and not be a replay.
   Failures are counted per cause and produce `Drop(reason)`; the circuit is unaffected.
4. An authentic CloseNotice -> `Close(send)`: forward the sealed notice to the next peer, then
   forget the circuit (the adapter calls `forget`). Frames are handled in stream order, so
   every frame before the notice has already been forwarded.
   An accepted frame -> `Compute(circuit, seq, activation)`. The adapter runs the span and calls
   `compute_done` (-> `Send` of the sealed output frame to the next hop, or of a ResultFrame to
   the requester) or `compute_failed` (-> `Send` of an ErrorFrame to the requester). The output
   reuses the input's seq on the next link, so a stream of inputs stays in order end to end.
5. Time is passed in as `now_ms` (Unix ms). `expire(now_ms)` forgets circuits past their deadline.
6. Commit and retain (core/commitments.py, core/retention.py): `finish` (pure, worker thread)
   seals the output AND a HopCommit for the requester (digests of the input read and the output
   written, MAC'd with the report key); the adapter sends the commit before the output and calls
   `retain`, which keeps the output's canonical bytes (bounded per circuit) until the circuit
   is forgotten or expires.
7. Audits (core/audit.py): `on_audit` answers an AuditRequest for a live circuit, our input
   link, with a valid requester MAC, with our retained output sealed under the report key
   (held=False when evicted); anything else -> `Drop`, counted as `audit_refused`.

`compute_done` reads but never mutates state, so the adapter may call it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from p2pinfer.core import audit, wire
from p2pinfer.core.codec import Activation
from p2pinfer.core.commitments import activation_bytes, activation_digest, digest, make_commit, report_key
from p2pinfer.core.retention import RetentionBuffer
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.link import FrameAuthError, FrameReplayError, LinkEnd, LinkReceiver, seal_frame
from p2pinfer.crypto.sealing import open_assignment
from p2pinfer.errors import RecordError, WireError


@dataclass
class HopCounters:
    """What the hop did with what it was sent; exposed for logs, tests and the ledger."""

    assignments_accepted: int = 0
    assignments_refused: int = 0
    frames_in: int = 0
    frames_computed: int = 0
    frames_forwarded: int = 0
    malformed: int = 0
    oversized: int = 0
    unknown_circuit: int = 0
    wrong_link: int = 0
    tampered: int = 0
    replayed: int = 0
    compute_failed: int = 0
    expired_circuits: int = 0
    closed_circuits: int = 0
    audits_answered: int = 0
    audit_refused: int = 0

    @property
    def dropped(self) -> int:
        return self.malformed + self.oversized + self.unknown_circuit + self.wrong_link + self.tampered + self.replayed


@dataclass(frozen=True)
class Reply:
    """Answer on the stream the assignment came in on."""

    message: Union[wire.AssignmentAccepted, wire.AssignmentRefused]


@dataclass(frozen=True)
class PrepareSpan:
    assignment: wire.Assignment


@dataclass(frozen=True)
class Compute:
    circuit_id: bytes
    seq: int
    act: Activation
    trace: tuple[int, ...]


@dataclass(frozen=True)
class Send:
    """Open (or reuse) a hop/result stream to `peer_id` and write `data` as one frame."""

    circuit_id: bytes
    peer_id: str
    addrs: tuple[str, ...]
    data: bytes
    final: bool


@dataclass(frozen=True)
class Computed:
    """`finish`'s result: the sealed output, the commitment for the requester, the bytes to retain."""

    send: Send
    commit: Send
    out_bytes: bytes


@dataclass(frozen=True)
class Close:
    """Forward `send` (the sealed CloseNotice for the next link), then forget the circuit."""

    send: Send


@dataclass(frozen=True)
class Drop:
    reason: str
    detail: str


@dataclass
class _Circuit:
    assignment: wire.Assignment
    receiver: LinkReceiver
    out: LinkEnd
    ready: bool = False


@dataclass
class HopMachine:
    """All circuits this peer serves. One instance per node; not thread-safe (see rule 5)."""

    identity: Identity
    max_circuits: int = 64
    max_ttl_ms: int = 3_600_000  # refuse deadlines further out: nobody may pin a slot for days
    counters: HopCounters = field(default_factory=HopCounters)
    retention: RetentionBuffer = field(default_factory=RetentionBuffer)
    _circuits: dict[bytes, _Circuit] = field(default_factory=dict)

    # ---- setup ----
    def on_assign(self, data: bytes, *, now_ms: int) -> Union[Reply, PrepareSpan]:
        try:
            request = wire.decode(data, expect=[wire.AssignRequest])
            assignment = open_assignment(self.identity, request.sealed, now_ms=now_ms)
        except WireError as exc:
            return self._refuse(b"", "malformed", str(exc))
        except RecordError as exc:
            return self._refuse(b"", exc.reason, str(exc))
        cid = assignment.circuit_id
        if assignment.deadline_ms - now_ms > self.max_ttl_ms:
            return self._refuse(cid, "malformed", f"deadline is more than {self.max_ttl_ms} ms away")
        if cid in self._circuits:
            return self._refuse(cid, "duplicate-circuit", "circuit id already in use on this hop")
        if len(self._circuits) >= self.max_circuits:
            return self._refuse(cid, "busy", f"serving {len(self._circuits)} circuits already")
        self._circuits[cid] = _Circuit(
            assignment=assignment,
            receiver=LinkReceiver(LinkEnd(assignment.in_key, cid, assignment.in_link)),
            out=LinkEnd(assignment.out_key, cid, assignment.out_link),
        )
        return PrepareSpan(assignment)

    def span_ready(self, circuit_id: bytes) -> Reply:
        circuit = self._circuits[circuit_id]
        circuit.ready = True
        self.counters.assignments_accepted += 1
        return Reply(wire.AssignmentAccepted(circuit_id=circuit_id, hop=self.identity.peer_id))

    def span_refused(self, circuit_id: bytes, reason: str, message: str) -> Reply:
        self._circuits.pop(circuit_id, None)
        return self._refuse(circuit_id, reason, message)

    def _refuse(self, cid: bytes, reason: str, message: str) -> Reply:
        self.counters.assignments_refused += 1
        reason = reason if reason in wire.REFUSAL_REASONS else "malformed"
        return Reply(wire.AssignmentRefused(circuit_id=cid, hop=self.identity.peer_id, reason=reason, message=message[:1000]))

    # ---- data ----
    def on_frame(self, data: bytes, *, now_ms: int, max_size: int = wire.MAX_ACTIVATION_FRAME) -> Union[Compute, Close, Drop]:
        self.counters.frames_in += 1
        try:
            frame = wire.decode(data, expect=[wire.ActivationFrame], max_size=max_size)
        except WireError as exc:
            return self._drop("malformed", str(exc))
        circuit = self._circuits.get(frame.circuit_id)
        if circuit is None or not circuit.ready or circuit.assignment.deadline_ms <= now_ms:
            return self._drop("unknown_circuit", f"no live circuit {frame.circuit_id.hex()}")
        if frame.link != circuit.assignment.in_link:
            return self._drop("wrong_link", f"frame for link {frame.link}, we read link {circuit.assignment.in_link}")
        try:
            plaintext = circuit.receiver.open(frame.seq, frame.nonce, frame.box)
        except FrameReplayError as exc:
            return self._drop("replayed", str(exc))
        except FrameAuthError as exc:
            return self._drop("tampered", str(exc))
        try:
            payload = wire.decode(plaintext, expect=[wire.FramePayload, wire.CloseNotice], max_size=max_size)
        except WireError as exc:  # authentic but malformed: the upstream peer is at fault
            return self._drop("malformed", f"payload: {exc}")
        if isinstance(payload, wire.CloseNotice):
            return Close(self._seal(frame.circuit_id, frame.seq, payload))
        return Compute(frame.circuit_id, frame.seq, payload.act, payload.trace)

    def note_oversized(self) -> None:
        """The adapter refused a frame whose announced length exceeded the limit."""
        self.counters.frames_in += 1
        self.counters.oversized += 1

    def compute_done(self, circuit_id: bytes, seq: int, output: Activation, trace: tuple[int, ...]) -> Send:
        """Seal the span output for the next link. Pure: safe to call from a worker thread."""
        return self._seal(circuit_id, seq, wire.FramePayload(act=output, trace=trace))

    def finish(self, c: Compute, output: Activation, compute_us: int) -> Computed:
        """Rule 6: the sealed output plus its commitment. Pure: safe in a worker thread."""
        circuit = self._circuits.get(c.circuit_id)
        if circuit is None:
            raise WireError(f"circuit {c.circuit_id.hex()} expired during compute")
        a = circuit.assignment
        out_bytes = activation_bytes(output)
        commit = make_commit(report_key(a.in_key, a.out_key), circuit_id=c.circuit_id, link=a.in_link, seq=c.seq,
                             in_hash=activation_digest(c.act), out_hash=digest(out_bytes), compute_us=compute_us)
        send = self._seal(c.circuit_id, c.seq, wire.FramePayload(act=output, trace=c.trace + (compute_us,)))
        report = Send(c.circuit_id, a.requester, a.next_hop.addrs if a.next_hop.final else (), wire.encode(commit), True)
        return Computed(send, report, out_bytes)

    def on_audit(self, data: bytes, *, now_ms: int) -> Union[bytes, Drop]:
        """Rule 7: the encoded AuditReply, or Drop."""
        try:
            req = wire.decode(data, expect=[wire.AuditRequest])
        except WireError as exc:
            return self._drop("audit_refused", f"audit request: {exc}")
        circuit = self._circuits.get(req.circuit_id)
        if circuit is None or circuit.assignment.deadline_ms <= now_ms or req.link != circuit.assignment.in_link:
            return self._drop("audit_refused", f"audit for unknown circuit/link {req.circuit_id.hex()[:8]}/{req.link}")
        a = circuit.assignment
        key = report_key(a.in_key, a.out_key)
        if not audit.request_authentic(key, req):
            return self._drop("audit_refused", "audit request with a bad mac")
        self.counters.audits_answered += 1
        return wire.encode(audit.seal_reply(key, req, self.retention.get(req.circuit_id, req.seq)))

    def retain(self, circuit_id: bytes, seq: int, out_bytes: bytes) -> None:
        if circuit_id in self._circuits:
            self.retention.put(circuit_id, seq, out_bytes)

    def _seal(self, circuit_id: bytes, seq: int, payload: Union[wire.FramePayload, wire.CloseNotice]) -> Send:
        circuit = self._circuits.get(circuit_id)
        if circuit is None:
            raise WireError(f"circuit {circuit_id.hex()} expired during compute")
        a = circuit.assignment
        nonce, box = seal_frame(circuit.out, seq, wire.encode(payload))
        cls = wire.ResultFrame if a.next_hop.final else wire.ActivationFrame
        data = wire.encode(cls(circuit_id=circuit_id, link=a.out_link, seq=seq, nonce=nonce, box=box))
        return Send(circuit_id, a.next_hop.peer_id, a.next_hop.addrs, data, a.next_hop.final)

    def compute_failed(self, circuit_id: bytes, seq: int, reason: str, message: str) -> Union[Send, Drop]:
        """Tell the requester directly; error notices carry no activation data."""
        self.counters.compute_failed += 1
        circuit = self._circuits.get(circuit_id)
        if circuit is None:
            return Drop("unknown_circuit", "circuit expired before its error could be reported")
        a = circuit.assignment
        err = wire.ErrorFrame(circuit_id=circuit_id, seq=seq, hop=self.identity.peer_id, reason=reason, message=message[:1000])
        return Send(circuit_id, a.requester, a.next_hop.addrs if a.next_hop.final else (), wire.encode(err), True)

    @property
    def live_circuits(self) -> int:
        """Circuits assigned and not yet closed, forgotten or expired."""
        return len(self._circuits)

    def forget(self, circuit_id: bytes) -> None:
        self.retention.drop(circuit_id)
        if self._circuits.pop(circuit_id, None) is not None:
            self.counters.closed_circuits += 1

    def expire(self, now_ms: int) -> list[bytes]:
        gone = [cid for cid, c in self._circuits.items() if c.assignment.deadline_ms <= now_ms]
        for cid in gone:
            del self._circuits[cid]
            self.retention.drop(cid)
        self.counters.expired_circuits += len(gone)
        return gone

    def assignment(self, circuit_id: bytes) -> wire.Assignment | None:
        circuit = self._circuits.get(circuit_id)
        return circuit.assignment if circuit else None

    @property
    def live_circuits(self) -> int:
        return len(self._circuits)

    def _drop(self, counter: str, detail: str) -> Drop:
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        return Drop(counter, detail)
