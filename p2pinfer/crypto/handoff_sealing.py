"""Sign-then-seal of handoffs (core/handoff.py), exactly as assignments are (crypto/sealing.py).

The requester signs the canonical Handoff in domain "handoff/v1" (a signature for an
assignment, a record or a receipt can never be replayed as one) and seals body + signature to
the holder's X25519 key: the new link key inside reaches only that hop, and nobody can alter
the handoff unnoticed. `open_handoff` raises `RecordError` with a reason the hop answers with
("not-for-me", "malformed", "bad-signature"); nothing in it is trusted before the signature
verifies. The hop's checks against its own state follow (core/handoff.check).
"""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from p2pinfer.core import wire
from p2pinfer.core.handoff import Handoff, SignedHandoff
from p2pinfer.crypto.identity import Identity, verify, x25519_public_key_of
from p2pinfer.errors import RecordError, WireError

HANDOFF_DOMAIN = "handoff/v1"


def sign_handoff(requester: Identity, handoff: Handoff) -> bytes:
    """The encoded SignedHandoff (before sealing; tests and vectors use it)."""
    if handoff.requester != requester.peer_id:
        raise ValueError("the handoff must name the signing requester")
    body = wire.encode(handoff)
    return wire.encode(SignedHandoff(body=body, sig=requester.sign(HANDOFF_DOMAIN, body)))


def seal_handoff(requester: Identity, handoff: Handoff) -> bytes:
    """Sign `handoff` as `requester` and seal it to `handoff.hop`."""
    return SealedBox(x25519_public_key_of(handoff.hop)).encrypt(sign_handoff(requester, handoff))


def open_handoff(hop: Identity, sealed: bytes) -> Handoff:
    """Unseal with our key, decode strictly, verify the signature of the requester it names."""
    try:
        inner = SealedBox(hop.x25519_private_key()).decrypt(sealed)
    except (CryptoError, ValueError, TypeError):
        raise RecordError("not-for-me", "handoff is not sealed to this peer's key") from None
    try:
        signed = wire.decode(inner, expect=[SignedHandoff])
        handoff = wire.decode(signed.body, expect=[Handoff])
    except WireError as exc:
        raise RecordError("malformed", f"handoff: {exc}") from None
    if not verify(handoff.requester, HANDOFF_DOMAIN, signed.body, signed.sig):
        raise RecordError("bad-signature", f"handoff signature does not verify for requester {handoff.requester}")
    return handoff
