"""Domain-separated Ed25519 signatures.

Every signature p2pinfer makes covers `b"p2pinfer:" + domain + b"\\x00" + payload`, so a signature
made for one kind of object (a capability record) can never be replayed as another (a circuit
assignment or a receipt), and never collides with libp2p's own "libp2p-record:" signatures made
with the same key. Domains are short ASCII tags with a version suffix; the NUL byte ends the tag,
so no domain is a prefix-confusable extension of another.
"""

from __future__ import annotations

import re

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

RECORD_DOMAIN = "record/v1"
ASSIGNMENT_DOMAIN = "assignment/v1"
RECEIPT_DOMAIN = "receipt/v1"

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32

_PREFIX = b"p2pinfer:"
_DOMAIN_RE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")


def signed_message(domain: str, payload: bytes) -> bytes:
    """The exact bytes that are signed for `payload` under `domain`."""
    if not isinstance(domain, str) or not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"invalid signature domain {domain!r}: want [a-z0-9._/-], 1..64 chars")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    return _PREFIX + domain.encode("ascii") + b"\x00" + bytes(payload)


def sign_with(key: SigningKey, domain: str, payload: bytes) -> bytes:
    """Detached 64-byte Ed25519 signature of `payload` under `domain`."""
    return key.sign(signed_message(domain, payload)).signature


def verify_with_key(public_key: bytes, domain: str, payload: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid signature of `payload` under `domain` by `public_key`.

    Never raises for bad input (wrong lengths, invalid points): those are simply not valid.
    libsodium rejects non-canonical signatures (S >= L), so a valid signature is unique per key
    and message; records rely on that to have exactly one valid byte encoding.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(signed_message(domain, payload), signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True
