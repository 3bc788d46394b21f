"""Audits: after a result arrived, fetch a hop's retained input and output and check them.

Rules (the requester does the I/O and the re-computation; docs/reputation.md §5, §9):

1. Request. `AuditRequest{circuit, link, seq, mac}`, mac = BLAKE2b-256 keyed with the hop's
   report key (core/commitments.py): only the requester (and the hop) can produce it, so no
   other peer can make a hop reveal its outputs. The hop answers only for a live circuit whose
   in_link is `link`, with a valid mac.
2. Reply. The retained canonical output bytes, AEAD-sealed under the report key (direction
   BACKWARD, link, seq in the associated data), so only the requester reads them.
3. Evidence. Retained bytes count only if their digest equals the hop's commitment for that
   seq (`evidence_matches`): a hop cannot change its story after the fact.
4. Plan. Auditing hop k of seq s needs its input and its output. The input is the requester's
   own input when k = 0, else hop k-1's retained output; the output is the decrypted result
   when k is the last hop, else hop k's retained output (`evidence_needed`). The requester then
   re-runs span k on the input and settles (core/verification.py) with its own execution
   trusted. Evidence that is missing or does not match its commitment blames its holder.
"""

from __future__ import annotations

import hashlib
import hmac

from p2pinfer.core import wire
from p2pinfer.core.commitments import digest
from p2pinfer.crypto.link import BACKWARD, LinkEnd, open_frame, seal_frame
from p2pinfer.errors import WireError

INPUT = "input"  # the requester's own input: no fetch
RESULT = "result"  # the decrypted result: no fetch


def request_mac(key: bytes, circuit_id: bytes, link: int, seq: int) -> bytes:
    h = hashlib.blake2b(key=key, digest_size=32, person=b"p2pinfer-audit")
    h.update(circuit_id + link.to_bytes(2, "big") + seq.to_bytes(8, "big"))
    return h.digest()


def make_request(key: bytes, circuit_id: bytes, link: int, seq: int) -> wire.AuditRequest:
    return wire.AuditRequest(circuit_id=circuit_id, link=link, seq=seq, mac=request_mac(key, circuit_id, link, seq))


def request_authentic(key: bytes, req: wire.AuditRequest) -> bool:
    return hmac.compare_digest(request_mac(key, req.circuit_id, req.link, req.seq), req.mac)


def seal_reply(key: bytes, req: wire.AuditRequest, data: bytes | None) -> wire.AuditReply:
    if data is None:
        return wire.AuditReply(circuit_id=req.circuit_id, link=req.link, seq=req.seq, held=False, nonce=bytes(24), box=b"")
    nonce, box = seal_frame(LinkEnd(key, req.circuit_id, req.link, BACKWARD), req.seq, data)
    return wire.AuditReply(circuit_id=req.circuit_id, link=req.link, seq=req.seq, held=True, nonce=nonce, box=box)


def open_reply(key: bytes, req: wire.AuditRequest, reply: wire.AuditReply) -> bytes | None:
    """The retained bytes, None if not held; WireError (FrameAuthError) if forged or mismatched."""
    if (reply.circuit_id, reply.link, reply.seq) != (req.circuit_id, req.link, req.seq):
        raise WireError("audit reply answers another circuit, link or seq")
    if not reply.held:
        return None
    return open_frame(LinkEnd(key, req.circuit_id, req.link, BACKWARD), req.seq, reply.nonce, reply.box)


def evidence_matches(data: bytes, commit: wire.HopCommit) -> bool:
    """Rule 3: retained output bytes agree with what the hop committed to."""
    return hmac.compare_digest(digest(data), commit.out_hash)


def evidence_needed(hop: int, hops: int) -> tuple[int | str, int | str]:
    """Rule 4: (where the input comes from, where the output comes from) for auditing `hop`."""
    if not 0 <= hop < hops:
        raise ValueError(f"hop {hop} is not in a circuit of {hops} hops")
    return (INPUT if hop == 0 else hop - 1), (RESULT if hop == hops - 1 else hop)
