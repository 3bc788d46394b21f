"""Sign-then-seal of circuit assignments.

The requester signs the canonical Assignment bytes in domain "assignment/v1" with its Ed25519
identity, wraps body + signature in a SignedAssignment and seals that with a SealedBox to the
hop's X25519 key (derived from the Ed25519 key inside the hop's peer id). Only that hop can read
the link keys; anyone can check who issued it, and nobody can alter it unnoticed.

`open_assignment` does the hop's checks in order and says which failed, as a `RecordError` whose
`reason` is a refusal reason the hop sends back: "malformed", "bad-signature", "not-for-me",
"expired". Nothing in the assignment is trusted before the signature verifies.
"""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from p2pinfer.core import wire
from p2pinfer.crypto.identity import Identity, verify, x25519_public_key_of
from p2pinfer.crypto.signing import ASSIGNMENT_DOMAIN
from p2pinfer.errors import RecordError, WireError


def seal_assignment(requester: Identity, assignment: wire.Assignment) -> bytes:
    """Sign `assignment` as `requester` and seal it to `assignment.hop`."""
    if assignment.requester != requester.peer_id:
        raise ValueError("the assignment must name the signing requester")
    body = wire.encode(assignment)
    signed = wire.SignedAssignment(body=body, sig=requester.sign(ASSIGNMENT_DOMAIN, body))
    return SealedBox(x25519_public_key_of(assignment.hop)).encrypt(wire.encode(signed))


def open_assignment(hop: Identity, sealed: bytes, *, now_ms: int) -> wire.Assignment:
    """Unseal, decode, verify the requester's signature, check recipient and deadline."""
    try:
        inner = SealedBox(hop.x25519_private_key()).decrypt(sealed)
    except (CryptoError, ValueError, TypeError):
        raise RecordError("not-for-me", "assignment is not sealed to this peer's key") from None
    try:
        signed = wire.decode(inner, expect=[wire.SignedAssignment])
        assignment = wire.decode(signed.body, expect=[wire.Assignment])
    except WireError as exc:
        raise RecordError("malformed", f"assignment: {exc}") from None
    if not verify(assignment.requester, ASSIGNMENT_DOMAIN, signed.body, signed.sig):
        raise RecordError("bad-signature", f"assignment signature does not verify for requester {assignment.requester}")
    if assignment.hop != hop.peer_id:
        raise RecordError("not-for-me", f"assignment names hop {assignment.hop}, this is {hop.peer_id}")
    if assignment.deadline_ms <= now_ms:
        raise RecordError("expired", f"assignment deadline passed {now_ms - assignment.deadline_ms} ms ago")
    return assignment
