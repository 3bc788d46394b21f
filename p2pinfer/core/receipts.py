"""Work receipts: the requester's signed statement that a hop computed a span for it.

After a hop completes, the requester signs a `Receipt` (domain "receipt/v1") and gives it to the
hop. Credits are bilateral and come only from receipts (docs/reputation.md "Credits"): node N
*earned* from peer P the FLOPs of receipts signed by P naming N as the hop, and *spent* with P
the FLOPs of receipts N signed naming P as the hop. P's credit with N is spent - earned (GFLOP):
positive means P did more work for N than N did for P. Bilateral accounting needs no trust in
third parties, so made-up identities (sybils) cannot mint credit.

Wire format (protocol/receipt.cddl, protocol/SPEC.md "Receipts"): one canonical CBOR map of the
receipt's fields plus `v` and `sig`; `sig` is the requester's Ed25519 signature of
`b"p2pinfer:receipt/v1\\x00" + canonical_cbor(map without "sig")`. The blob must itself be
canonical, so with Ed25519's unique signatures every valid receipt has one byte encoding and
its SHA-256 (`SignedReceipt.digest`) identifies it. Checks run in this order and raise
RecordError(reason, msg): oversized / malformed-cbor -> unknown-version -> bad-schema ->
bad-signature -> wrong-hop (when the verifier says who the hop must be).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from p2pinfer.core.codec import decode_strict, encode_canonical
from p2pinfer.crypto.identity import Identity, verify
from p2pinfer.crypto.signing import RECEIPT_DOMAIN, SIGNATURE_BYTES
from p2pinfer.errors import RecordError, WireError

RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 1024
MAX_ID_CHARS = 128
MAX_CIRCUIT_ID_BYTES = 64
MAX_UINT64 = 2**64 - 1
MAX_FLOPS = 2**63 - 1  # fits a signed 64-bit integer (sqlite, most languages)
_FIELDS = ("circuit_id", "hop_peer_id", "requester_peer_id", "model_id", "start", "stop",
           "flops", "measured_us", "issued_at_ms")


def _bad(message: str) -> RecordError:
    return RecordError("bad-schema", f"receipt: {message}")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise _bad(f"{name} must be a string of 1..{MAX_ID_CHARS} characters")


def _check_uint(name: str, value: Any) -> None:
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise _bad(f"{name} must be an unsigned 64-bit integer, got {value!r:.40}")


@dataclass(frozen=True)
class Receipt:
    """Hop `hop_peer_id` computed layers [start, stop) of `model_id` for `requester_peer_id`.

    Times are integers so the canonical encoding is exact: `measured_us` is the compute time the
    requester measured (microseconds), `issued_at_ms` unix milliseconds.
    """

    circuit_id: bytes
    hop_peer_id: str
    requester_peer_id: str
    model_id: str
    start: int
    stop: int
    flops: int
    measured_us: int
    issued_at_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.circuit_id, bytes) or not 0 < len(self.circuit_id) <= MAX_CIRCUIT_ID_BYTES:
            raise _bad(f"circuit_id must be 1..{MAX_CIRCUIT_ID_BYTES} bytes")
        for name in ("hop_peer_id", "requester_peer_id", "model_id"):
            _check_text(name, getattr(self, name))
        for name in ("start", "stop", "flops", "measured_us", "issued_at_ms"):
            _check_uint(name, getattr(self, name))
        if self.flops > MAX_FLOPS:
            raise _bad(f"flops must be <= 2**63 - 1, got {self.flops}")
        if not self.start < self.stop:
            raise _bad(f"span [{self.start}, {self.stop}) is empty")
        if self.hop_peer_id == self.requester_peer_id:
            raise _bad("a peer cannot issue a receipt to itself")

    @classmethod
    def make(cls, *, circuit_id: bytes, hop_peer_id: str, requester_peer_id: str, model_id: str,
             start: int, stop: int, flops: int, measured_s: float, issued_at: float) -> Receipt:
        """Build from seconds (rounded to the wire's integer units)."""
        if not (math.isfinite(measured_s) and measured_s >= 0 and math.isfinite(issued_at) and issued_at >= 0):
            raise _bad("measured_s and issued_at must be finite and >= 0")
        return cls(circuit_id, hop_peer_id, requester_peer_id, model_id, start, stop, flops,
                   round(measured_s * 1e6), round(issued_at * 1e3))

    @property
    def measured_s(self) -> float:
        return self.measured_us / 1e6

    @property
    def issued_at(self) -> float:
        return self.issued_at_ms / 1e3

    @property
    def gflop(self) -> float:
        return self.flops / 1e9

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        body["v"] = RECEIPT_VERSION
        return body


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt with the requester's signature and its exact wire bytes."""

    receipt: Receipt
    signature: bytes
    blob: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the blob: a unique id of this receipt (canonical + unique signatures)."""
        return hashlib.sha256(self.blob).digest()


def sign_receipt(receipt: Receipt, identity: Identity) -> SignedReceipt:
    """The requester signs; only the requester named in the receipt may."""
    if identity.peer_id != receipt.requester_peer_id:
        raise RecordError("key-mismatch", "a receipt can only be signed by its requester")
    body = receipt._body()
    signature = identity.sign(RECEIPT_DOMAIN, encode_canonical(body))
    body["sig"] = signature
    return SignedReceipt(receipt, signature, encode_canonical(body))


def _parse(blob: bytes, max_bytes: int) -> dict[str, Any]:
    try:
        raw = decode_strict(blob, max_size=max_bytes, what="receipt")
    except WireError as exc:
        reason = "oversized" if isinstance(blob, (bytes, bytearray)) and len(blob) > max_bytes else "malformed-cbor"
        raise RecordError(reason, str(exc)) from None
    if not isinstance(raw, dict) or encode_canonical(raw) != bytes(blob):
        raise RecordError("malformed-cbor", "receipt: not a canonical CBOR map")
    if raw.get("v") != RECEIPT_VERSION:
        raise RecordError("unknown-version", f"receipt: version {raw.get('v')!r:.20} is not {RECEIPT_VERSION}")
    keys = set(raw)
    expected = set(_FIELDS) | {"v", "sig"}
    if keys != expected:
        raise _bad(f"unexpected keys {sorted(map(str, keys - expected))} / missing {sorted(expected - keys)}")
    return raw


def decode_verified(blob: bytes, *, hop_peer_id: str | None = None,
                    max_bytes: int = MAX_RECEIPT_BYTES) -> SignedReceipt:
    """Decode and verify a receipt from anyone; never returns an unverified receipt.

    `hop_peer_id`: when given (a hop checking receipts made out to it), a receipt naming another
    hop is refused with reason "wrong-hop".
    """
    raw = _parse(blob, max_bytes)
    sig = raw.pop("sig")
    raw.pop("v")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise _bad(f"sig must be {SIGNATURE_BYTES} bytes")
    receipt = Receipt(**raw)
    if not verify(receipt.requester_peer_id, RECEIPT_DOMAIN, encode_canonical(receipt._body()), sig):
        raise RecordError("bad-signature", "receipt: signature does not verify against the requester's peer id")
    if hop_peer_id is not None and receipt.hop_peer_id != hop_peer_id:
        raise RecordError("wrong-hop", f"receipt: made out to {receipt.hop_peer_id}, not to {hop_peer_id}")
    return SignedReceipt(receipt, sig, bytes(blob))
