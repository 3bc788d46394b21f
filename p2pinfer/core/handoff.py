"""Handoffs: a surviving upstream hop sends its retained outputs into a new suffix circuit.

When hop f of circuit C dies, stalls or refuses mid-stream, the requester R plans a suffix
circuit C' over layers [b, L) without it (core/suffix.py), b = the stop of an upstream hop U
of C that still holds its outputs. R then tells U, in a `Handoff` signed by R (domain
"handoff/v1") and sealed to U (crypto/handoff_sealing.py): "for circuit C, send your retained
outputs of seqs S to C's first hop N, sealed as link 0 of C' under key K, with seqs
to_seq, to_seq+1, ...". The activations thus resume at layer b instead of layer 0.

Rules U applies before acting (`check`; pure, the clock is passed in as `now_ms`):

1. The handoff unsealed with U's key and its signature verifies for the requester it names
   (crypto/handoff_sealing.py; "bad-signature", "not-for-me", "malformed").
2. It names U (`hop`), its deadline is in the future ("expired") and at most `max_ttl_ms` away.
3. U serves a live circuit `circuit_id`, reads link `link` of it ("unknown-circuit",
   "wrong-link"), and C's assignment was signed by the SAME requester ("wrong-requester"): only
   the peer that owns C's data may redirect it. So a hop never sends an activation anywhere
   the circuit's requester did not sign for, and K, sealed to U alone, reaches only U.
4. `frames` seals each retained output that U still holds as an ActivationFrame of C' on link 0
   (payload trace empty) and lists the seqs it no longer holds (`missing`); nothing else of C
   changes (U keeps serving C, its retention is not consumed). The reply says which were sent.

R holds K and C's commitments: it reserves the seqs of C' for the handed-off inputs with U's
committed output digests, so C's first hop's commitment must match what U committed to in C
(a substituted activation breaks the chain at C' boundary 0: suspects U and N).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from p2pinfer.core import wire
from p2pinfer.core.codec import activation_from_cbor, decode_strict
from p2pinfer.core.retention import RetentionBuffer
from p2pinfer.core.wire import (CIRCUIT_ID_BYTES, KEY_BYTES, MAX_CONTROL_FRAME, MAX_HOPS, NextHop, _bool, _bytes, _f,
                                _list, _nested, _text, _text_opt, _to_map, _uint)
from p2pinfer.crypto.link import LinkEnd, seal_frame

MAX_HANDOFF_SEQS = 1024
HANDOFF_REASONS = frozenset({"bad-signature", "not-for-me", "expired", "malformed", "unknown-circuit",
                             "wrong-link", "wrong-requester", "next-hop-unreachable", "internal"})


@dataclass(frozen=True)
class Handoff:
    """What R asks U to do (signed by R, sealed to U). Seq `seqs[i]` of C goes as seq
    `to_seq + i` on link 0 of `to_circuit`, sealed under `to_key`, to `next_hop`."""

    TYPE: ClassVar[str] = "handoff"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    hop: str = _f(_text())
    requester: str = _f(_text())
    link: int = _f(_uint(MAX_HOPS))
    seqs: tuple[int, ...] = _f(_list(_uint(), MAX_HANDOFF_SEQS))
    to_circuit: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    to_seq: int = _f(_uint(wire.MAX_SEQ - MAX_HANDOFF_SEQS))
    to_key: bytes = _f(_bytes(KEY_BYTES))
    next_hop: NextHop = _f(_nested(NextHop), to_wire=_to_map)
    deadline_ms: int = _f(_uint())

    def __post_init__(self) -> None:
        if not self.seqs or len(set(self.seqs)) != len(self.seqs):
            raise ValueError("seqs must be non-empty and distinct")
        if self.to_circuit == self.circuit_id:
            raise ValueError("a handoff moves outputs into another circuit")
        if self.next_hop.final or self.next_hop.peer_id == self.hop:
            raise ValueError("the next hop must be another hop (final = false, not the holder itself)")


@dataclass(frozen=True)
class SignedHandoff:
    """`body` = canonical Handoff; `sig` = R's Ed25519 signature over it, domain "handoff/v1"."""

    TYPE: ClassVar[str] = "signed-handoff"
    body: bytes = _f(_bytes(max_len=MAX_CONTROL_FRAME))
    sig: bytes = _f(_bytes(max_len=128))


@dataclass(frozen=True)
class HandoffRequest:
    """R -> U on /p2pinfer/handoff/1.0.0: a SignedHandoff sealed (SealedBox) to U's X25519 key."""

    TYPE: ClassVar[str] = "handoff-req"
    sealed: bytes = _f(_bytes(max_len=MAX_CONTROL_FRAME - 64))


@dataclass(frozen=True)
class HandoffReply:
    """U -> R after writing the frames: `ok` with the seqs `sent` and `missing` (evicted), or
    not ok with a `reason` (empty circuit_id when the request could not be opened)."""

    TYPE: ClassVar[str] = "handoff-reply"
    circuit_id: bytes = _f(_bytes(max_len=CIRCUIT_ID_BYTES))
    hop: str = _f(_text())
    ok: bool = _f(_bool)
    reason: str = _f(_text_opt(wire.MAX_TEXT))
    message: str = _f(_text_opt())
    sent: tuple[int, ...] = _f(_list(_uint(), MAX_HANDOFF_SEQS))
    missing: tuple[int, ...] = _f(_list(_uint(), MAX_HANDOFF_SEQS))

    def __post_init__(self) -> None:
        if self.ok == bool(self.reason) or (self.reason and self.reason not in HANDOFF_REASONS):
            raise ValueError("an ok reply has no reason; a refusal has one of the handoff reasons")


wire._register(Handoff, SignedHandoff, HandoffRequest, HandoffReply)


def check(h: Handoff, assignment: wire.Assignment | None, *, me: str, now_ms: int, max_ttl_ms: int) -> tuple[str, str] | None:
    """Rules 2-3: None if U may act on `h`, else (reason, message). `assignment` is U's for
    `h.circuit_id` (None if it serves no live circuit of that id)."""
    if h.hop != me:
        return "not-for-me", f"handoff names hop {h.hop}"
    if h.deadline_ms <= now_ms:
        return "expired", f"handoff deadline passed {now_ms - h.deadline_ms} ms ago"
    if h.deadline_ms - now_ms > max_ttl_ms:
        return "malformed", f"handoff deadline is more than {max_ttl_ms} ms away"
    if assignment is None or assignment.deadline_ms <= now_ms:
        return "unknown-circuit", f"no live circuit {h.circuit_id.hex()[:8]} on this hop"
    if assignment.requester != h.requester:
        return "wrong-requester", "only the circuit's own requester may move its activations"
    if assignment.in_link != h.link:
        return "wrong-link", f"this hop reads link {assignment.in_link} of that circuit, not {h.link}"
    return None


@dataclass(frozen=True)
class HandoffFrames:
    """Rule 4: (seq of C', encoded ActivationFrame) per held seq, and the seqs not held."""

    frames: tuple[tuple[int, int, bytes], ...]  # (seq in C, seq in C', frame bytes)
    missing: tuple[int, ...]


def held(h: Handoff, retention: RetentionBuffer) -> dict[int, bytes | None]:
    """The retained bytes (or None) of every seq `h` asks for (read on the owner's thread)."""
    return {seq: retention.get(h.circuit_id, seq) for seq in h.seqs}


def frames(h: Handoff, held: Mapping[int, bytes | None], *, max_size: int = wire.MAX_ACTIVATION_FRAME) -> HandoffFrames:
    """Seal every retained output `h` asks for (`held`, from `held()`) as link 0 of
    `h.to_circuit`. Pure but for the random nonces: safe in a worker thread."""
    end = LinkEnd(h.to_key, h.to_circuit, 0)
    out, missing = [], []
    for i, seq in enumerate(h.seqs):
        data = held.get(seq)
        if data is None:
            missing.append(seq)
            continue
        act = activation_from_cbor(decode_strict(data, max_size=max_size))  # our own canonical bytes
        new_seq = h.to_seq + i
        nonce, box = seal_frame(end, new_seq, wire.encode(wire.FramePayload(act=act, trace=())))
        frame = wire.ActivationFrame(circuit_id=h.to_circuit, link=0, seq=new_seq, nonce=nonce, box=box)
        out.append((seq, new_seq, wire.encode(frame)))
    return HandoffFrames(tuple(out), tuple(missing))


def reply(h: Handoff | None, me: str, *, sent: Sequence[int] = (), missing: Sequence[int] = (),
          refusal: tuple[str, str] | None = None) -> HandoffReply:
    cid = h.circuit_id if h is not None else b""
    if refusal is None:
        return HandoffReply(circuit_id=cid, hop=me, ok=True, reason="", message="", sent=tuple(sent), missing=tuple(missing))
    reason = refusal[0] if refusal[0] in HANDOFF_REASONS else "malformed"
    return HandoffReply(circuit_id=cid, hop=me, ok=False, reason=reason, message=refusal[1][:1000], sent=tuple(sent),
                        missing=tuple(missing))


def adopt(suffix: Any, digests: Sequence[bytes]) -> tuple[int, bytes]:
    """Requester side: reserve link-0 seqs of the suffix circuit's machine (a READY
    core.circuit.CircuitMachine) for the inputs the holder writes, starting the suffix's
    commitment chain from the digests the holder committed to. Returns (first seq, link-0 key)."""
    return suffix.reserve_inputs(digests)


def prefix_digest(input_hash: bytes | None, commits: Sequence[wire.HopCommit | None]) -> bytes | None:
    """The activation a holder may hand off for one seq, as the requester can trust it: the
    last hop's committed output digest, if every hop of the prefix committed and the
    commitments chain from the requester's own input digest (else None: restart from input)."""
    left = input_hash
    for c in commits:
        if c is None or left is None or not hmac.compare_digest(left, c.in_hash):
            return None
        left = c.out_hash
    return left if commits else None
