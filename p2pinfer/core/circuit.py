"""The requester's side of a circuit as a sans-IO state machine.

States: SETUP -> READY -> CLOSED, or FAILED from SETUP/READY. Rules:

1. Construction draws a fresh circuit id and one random key per link: link 0 is requester -> h1,
   link i is h_i -> h_{i+1}, link k is h_k -> requester. Hop i gets keys i and i+1 only, so it
   can read its own input and nothing else; only the requester holds link k's key and so alone
   reads the result. `assign_requests()` gives the sealed AssignRequest bytes per hop.
2. `on_reply(peer, bytes)`: an AssignmentAccepted from the hop it names, for this circuit, marks
   that hop; when all have accepted the circuit is READY. A refusal or an undecodable reply
   FAILS the circuit with `HopRefusedError` / `CircuitError` naming the hop and reason.
3. Inputs may be sent only when READY; each gets the next seq on link 0.
4. `on_result(peer, bytes)`: a ResultFrame must come from the last hop, on link k, authenticate
   under link k's key and not be a replay; then it yields `Result(seq, act, trace)`. Bad frames
   raise `WireError` (counted in `rejected`) and do NOT fail the circuit: they may be forgeries.
5. `on_error(peer, bytes)`: an ErrorFrame from one of this circuit's hops FAILS the circuit.
6. The clock is passed in as `now_ms`; past the deadline `check_deadline` FAILS the circuit.
7. `close_frame()` seals a CloseNotice as the last frame on link 0 (CLOSED): each hop forwards
   it and frees the circuit, and the last hop's copy comes back as a result that `on_result`
   reports as `Closed`, so the requester knows the whole chain has been torn down.
8. `abort_frame()` seals the same CloseNotice after a failure (READY or FAILED), so the hops up
   to the broken one free the circuit now; nobody waits for it to come back (CLOSED).
   `pending_hops()` names the hops that have not accepted (blamed for a setup timeout).
9. Commitments (core/commitments.py): `input_frame` records the digest of each input;
   `on_commit(peer, HopCommit)` keeps a commitment only if it comes from the hop reading that
   link, for a seq we sent, and its MAC verifies under that hop's report key (else WireError,
   counted in `rejected`). A Result carries the digest of its activation; `chain(seq, digest)`
   checks the seq's chain and `forget_seq` frees its records (at most `max_pending` seqs are
   kept; the oldest go first).
10. Audits (core/audit.py): `audit_request(link, seq)` builds the MAC'd request for the hop
   reading `link`; `open_audit` authenticates its reply and returns the retained bytes (None
   when the hop no longer holds them); `committed(link, seq)` is the commitment to check them by.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Sequence, Union

from p2pinfer.core import audit, wire
from p2pinfer.core.codec import Activation
from p2pinfer.core.commitments import ChainCheck, activation_digest, check_chain, commit_authentic, report_key
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.link import LinkEnd, LinkReceiver, LinkSender, new_link_key
from p2pinfer.crypto.sealing import seal_assignment
from p2pinfer.errors import CircuitError, HopRefusedError, NetworkError, P2PInferError, WireError


class State(enum.Enum):
    SETUP = "setup"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class HopSpec:
    """One planned hop as the requester needs it: who, where, which layers, which weights."""

    peer_id: str
    addrs: tuple[str, ...]
    start: int
    stop: int
    weight_hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Closed:
    """The CloseNotice came back: every hop has forwarded everything and forgotten the circuit."""

    seq: int


@dataclass(frozen=True)
class Result:
    seq: int
    act: Activation
    trace: tuple[int, ...]  # compute microseconds per hop, in hop order
    digest: bytes = b""  # activation_digest(act): the end of the commitment chain


class CircuitMachine:
    """One circuit from the requester's side. Not thread-safe; owned by one task."""

    def __init__(self, requester: Identity, *, model_id: str, hops: Sequence[HopSpec],
                 requester_addrs: Sequence[str], now_ms: int, ttl_ms: int, circuit_id: bytes | None = None) -> None:
        if not hops:
            raise CircuitError("a circuit needs at least one hop")
        if len({h.peer_id for h in hops}) != len(hops):
            raise CircuitError("each peer may serve at most one span of a circuit")
        for prev, nxt in zip(hops, hops[1:]):
            if prev.stop != nxt.start:
                raise CircuitError(f"hop spans must be contiguous: [{prev.start},{prev.stop}) then [{nxt.start},{nxt.stop})")
        self.requester = requester
        self.model_id = model_id
        self.hops = tuple(hops)
        self.requester_addrs = tuple(requester_addrs)
        self.circuit_id = circuit_id or os.urandom(wire.CIRCUIT_ID_BYTES)
        self.deadline_ms = now_ms + ttl_ms
        self._keys = [new_link_key() for _ in range(len(hops) + 1)]
        self._sender = LinkSender(LinkEnd(self._keys[0], self.circuit_id, 0))
        self._receiver = LinkReceiver(LinkEnd(self._keys[-1], self.circuit_id, len(hops)))
        self._accepted: set[str] = set()
        self._report_keys = [report_key(self._keys[i], self._keys[i + 1]) for i in range(len(hops))]
        self.input_hashes: dict[int, bytes] = {}
        self.commits: dict[int, dict[int, wire.HopCommit]] = {}
        self.max_pending = 4096
        self.state = State.SETUP
        self.error: P2PInferError | None = None
        self.rejected = 0

    # ---- setup ----
    def _assignment(self, i: int) -> wire.Assignment:
        hop = self.hops[i]
        final = i == len(self.hops) - 1
        nxt = (wire.NextHop(self.requester.peer_id, self.requester_addrs, True) if final
               else wire.NextHop(self.hops[i + 1].peer_id, self.hops[i + 1].addrs, False))
        return wire.Assignment(
            circuit_id=self.circuit_id, hop=hop.peer_id, requester=self.requester.peer_id,
            model_id=self.model_id, start=hop.start, stop=hop.stop, weight_hashes=hop.weight_hashes,
            in_link=i, in_key=self._keys[i], out_key=self._keys[i + 1], next_hop=nxt,
            deadline_ms=self.deadline_ms)

    def assign_requests(self) -> list[tuple[HopSpec, bytes]]:
        """(hop, encoded AssignRequest) for every hop, to be sent on the circuit protocol."""
        return [(hop, wire.encode(wire.AssignRequest(sealed=seal_assignment(self.requester, self._assignment(i)))))
                for i, hop in enumerate(self.hops)]

    def on_reply(self, peer_id: str, data: bytes) -> State:
        if self.state is not State.SETUP:
            return self.state
        try:
            reply = wire.decode(data, expect=[wire.AssignmentAccepted, wire.AssignmentRefused])
        except WireError as exc:
            return self._fail(CircuitError(f"hop {peer_id} sent an unreadable reply: {exc}"))
        if isinstance(reply, wire.AssignmentRefused):
            return self._fail(HopRefusedError(peer_id, reply.reason, f"hop {peer_id} refused its assignment: {reply.reason}: {reply.message}"))
        if reply.hop != peer_id or reply.circuit_id != self.circuit_id:
            return self._fail(CircuitError(f"hop {peer_id} accepted a different circuit or hop id"))
        self._accepted.add(peer_id)
        if self._accepted >= {h.peer_id for h in self.hops}:
            self.state = State.READY
        return self.state

    def fail(self, error: P2PInferError) -> State:
        """The adapter reports a transport failure (unreachable hop, timeout)."""
        return self._fail(error)

    def _fail(self, error: P2PInferError) -> State:
        if self.state in (State.SETUP, State.READY):
            self.state, self.error = State.FAILED, error
        return self.state

    # ---- data ----
    @property
    def next_seq(self) -> int:
        """The seq the next `input_frame` will carry."""
        return self._sender.next_seq

    def reserve_inputs(self, digests: Sequence[bytes]) -> tuple[int, bytes]:
        """Reserve the next len(digests) link-0 seqs for inputs another hop writes (a handoff, see
        core/handoff.py), recording the digests it committed to so the commitment chain starts from
        them. Returns (first seq, link-0 key); later frames of ours take the seqs after them."""
        if self.state is not State.READY:
            raise CircuitError(f"cannot reserve inputs: circuit is {self.state.value}")
        first = self._sender.next_seq
        self._sender.next_seq += len(digests)
        for i, digest in enumerate(digests):
            self.input_hashes[first + i] = digest
        return first, self._keys[0]

    def input_frame(self, act: Activation) -> tuple[int, bytes]:
        """(seq, encoded ActivationFrame) for link 0."""
        if self.state is not State.READY:
            raise CircuitError(f"cannot send input: circuit is {self.state.value}")
        plaintext = wire.encode(wire.FramePayload(act=act, trace=()))
        seq, nonce, box = self._sender.seal(plaintext)
        self.input_hashes[seq] = activation_digest(act)
        while len(self.input_hashes) > self.max_pending:
            self.forget_seq(next(iter(self.input_hashes)))
        return seq, wire.encode(wire.ActivationFrame(circuit_id=self.circuit_id, link=0, seq=seq, nonce=nonce, box=box))

    def on_result(self, peer_id: str, data: bytes, *, max_size: int = wire.MAX_ACTIVATION_FRAME) -> Union[Result, Closed]:
        try:
            frame = wire.decode(data, expect=[wire.ResultFrame], max_size=max_size)
        except WireError:
            self.rejected += 1
            raise
        return self.on_result_frame(peer_id, frame, max_size=max_size)

    def on_result_frame(self, peer_id: str, frame: wire.ResultFrame, *, max_size: int = wire.MAX_ACTIVATION_FRAME) -> Union[Result, Closed]:
        """As `on_result`, for a frame the adapter already decoded (to route it by circuit id)."""
        try:
            if peer_id != self.hops[-1].peer_id:
                raise WireError(f"result from {peer_id}, which is not the last hop")
            if frame.circuit_id != self.circuit_id or frame.link != len(self.hops):
                raise WireError("result frame for another circuit or link")
            plaintext = self._receiver.open(frame.seq, frame.nonce, frame.box)
            payload = wire.decode(plaintext, expect=[wire.FramePayload, wire.CloseNotice], max_size=max_size)
        except WireError:
            self.rejected += 1
            raise
        if isinstance(payload, wire.CloseNotice):
            return Closed(frame.seq)
        return Result(frame.seq, payload.act, payload.trace, activation_digest(payload.act))

    # ---- commitments (rule 9) ----
    def on_commit(self, peer_id: str, c: wire.HopCommit) -> None:
        if (c.circuit_id != self.circuit_id or c.link >= len(self.hops) or self.hops[c.link].peer_id != peer_id
                or c.seq not in self.input_hashes or not commit_authentic(self._report_keys[c.link], c)):
            self.rejected += 1
            raise WireError(f"commitment from {peer_id} for link {c.link} seq {c.seq} does not belong to this circuit")
        self.commits.setdefault(c.seq, {})[c.link] = c

    def commits_complete(self, seq: int) -> bool:
        return len(self.commits.get(seq, {})) == len(self.hops)

    def chain(self, seq: int, result_digest: bytes) -> ChainCheck:
        return check_chain(self.input_hashes.get(seq, b""), self.commits.get(seq, {}), result_digest, len(self.hops))

    def committed(self, link: int, seq: int) -> wire.HopCommit | None:
        return self.commits.get(seq, {}).get(link)

    def audit_request(self, link: int, seq: int) -> wire.AuditRequest:
        if not 0 <= link < len(self.hops):
            raise CircuitError(f"no hop reads link {link} of this circuit")
        return audit.make_request(self._report_keys[link], self.circuit_id, link, seq)

    def open_audit(self, req: wire.AuditRequest, data: bytes, *, max_size: int = wire.MAX_ACTIVATION_FRAME) -> bytes | None:
        reply = wire.decode(data, expect=[wire.AuditReply], max_size=max_size)
        return audit.open_reply(self._report_keys[req.link], req, reply)

    def forget_seq(self, seq: int) -> None:
        self.input_hashes.pop(seq, None)
        self.commits.pop(seq, None)

    def on_error(self, peer_id: str, data: bytes) -> State:
        try:
            err = wire.decode(data, expect=[wire.ErrorFrame])
        except WireError:
            self.rejected += 1
            raise
        return self.on_error_frame(peer_id, err)

    def on_error_frame(self, peer_id: str, err: wire.ErrorFrame) -> State:
        if err.hop != peer_id or peer_id not in {h.peer_id for h in self.hops} or err.circuit_id != self.circuit_id:
            self.rejected += 1
            raise WireError(f"error notice from {peer_id} does not belong to this circuit")
        return self._fail(CircuitError(f"hop {peer_id} failed on input {err.seq}: {err.reason}: {err.message}"))

    def check_deadline(self, now_ms: int) -> State:
        if now_ms >= self.deadline_ms:
            self._fail(NetworkError(f"circuit {self.circuit_id.hex()[:8]} passed its deadline"))
        return self.state

    def close_frame(self) -> bytes | None:
        """The sealed CloseNotice for link 0 if the circuit is READY (then CLOSED), else None."""
        if self.state is not State.READY:
            self.close()
            return None
        seq, nonce, box = self._sender.seal(wire.encode(wire.CloseNotice()))
        self.state = State.CLOSED
        return wire.encode(wire.ActivationFrame(circuit_id=self.circuit_id, link=0, seq=seq, nonce=nonce, box=box))

    def pending_hops(self) -> tuple[str, ...]:
        """Hops that have not accepted yet (during SETUP: the ones to blame for a setup timeout)."""
        return tuple(h.peer_id for h in self.hops if h.peer_id not in self._accepted)

    def abort_frame(self) -> bytes | None:
        """A sealed CloseNotice for link 0 after a failure (or instead of a clean close): the hops
        up to the broken one free the circuit. None if it was already closed. State -> CLOSED."""
        if self.state is State.CLOSED or self.state is State.SETUP:
            self.close()
            return None
        seq, nonce, box = self._sender.seal(wire.encode(wire.CloseNotice()))
        self.state = State.CLOSED
        return wire.encode(wire.ActivationFrame(circuit_id=self.circuit_id, link=0, seq=seq, nonce=nonce, box=box))

    def close(self) -> None:
        if self.state in (State.SETUP, State.READY):
            self.state = State.CLOSED
