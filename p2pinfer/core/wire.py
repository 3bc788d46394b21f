"""Circuit wire messages: frozen dataclasses, one strict codec, a dispatch table of decoders.

Every message is a canonical CBOR map `{"t": <type>, ...fields}`; protocol/circuit.cddl is the
normative schema and tests check these encoders against it with pycddl.

Decoding rules (all violations raise `WireError` naming the problem):
- the frame size is checked against the caller's limit before any parsing;
- `t` must be a known type AND one the caller expects on that protocol;
- the key set must be exactly the message's fields (unknown or missing keys are rejected);
- each field is checked by its own small validator (type, length, range);
- cross-field rules live in each dataclass's `__post_init__`, so a message that exists is valid.

Adding a message: a frozen dataclass with `TYPE` and `wire` metadata on each field, then
`_register(cls)`. No if/elif chain anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable

from p2pinfer.core.codec import Activation, activation_from_cbor, activation_to_cbor, decode_strict, encode_canonical
from p2pinfer.errors import WireError

CIRCUIT_ID_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 24
MAX_CONTROL_FRAME = 64 * 1024  # assignments, replies, error notices, weight requests
MAX_ACTIVATION_FRAME = 64 * 1024 * 1024  # default limit for activation/result frames
MAX_WEIGHT_FRAME = 512 * 1024 * 1024
MAX_HOPS = 64
MAX_SEQ = (1 << 63) - 1
MAX_TEXT = 256
MAX_MESSAGE_TEXT = 1024

REFUSAL_REASONS = frozenset({
    "busy", "out-of-memory", "unknown-layer-kind", "unknown-model", "bad-signature", "expired",
    "not-for-me", "malformed", "missing-weights", "duplicate-circuit", "internal",
})
ERROR_REASONS = frozenset({"compute-failed", "next-hop-unreachable", "bad-input", "expired", "internal"})

Validator = Callable[[Any, str], Any]


# ---- field validators: (value, field name) -> normalised value, or WireError ----

def _bytes(size: int | None = None, max_len: int | None = None) -> Validator:
    def check(v: Any, name: str) -> bytes:
        if not isinstance(v, bytes):
            raise WireError(f"{name}: expected a byte string, got {type(v).__name__}")
        if size is not None and len(v) != size:
            raise WireError(f"{name}: expected {size} bytes, got {len(v)}")
        if max_len is not None and len(v) > max_len:
            raise WireError(f"{name}: {len(v)} bytes exceeds {max_len}")
        return v
    return check


def _text(max_len: int = MAX_TEXT, allowed: frozenset[str] | None = None) -> Validator:
    def check(v: Any, name: str) -> str:
        if not isinstance(v, str) or not v or len(v) > max_len:
            raise WireError(f"{name}: expected a non-empty text string of <= {max_len} chars")
        if allowed is not None and v not in allowed:
            raise WireError(f"{name}: {v!r} is not one of {sorted(allowed)}")
        return v
    return check


def _uint(max_value: int = MAX_SEQ) -> Validator:
    def check(v: Any, name: str) -> int:
        if type(v) is not int or not 0 <= v <= max_value:
            raise WireError(f"{name}: expected an integer in [0, {max_value}], got {v!r}")
        return v
    return check


def _bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise WireError(f"{name}: expected a boolean")
    return v


def _list(item: Validator, max_items: int) -> Validator:
    def check(v: Any, name: str) -> tuple:
        if not isinstance(v, (list, tuple)) or len(v) > max_items:
            raise WireError(f"{name}: expected an array of <= {max_items} items")
        return tuple(item(x, f"{name}[{i}]") for i, x in enumerate(v))
    return check


def _activation(v: Any, name: str) -> Activation:
    return activation_from_cbor(v)


def _nested(cls: type) -> Validator:
    def check(v: Any, name: str) -> Any:
        return _from_map(cls, v, name)
    return check


def _f(validator: Validator, to_wire: Callable[[Any], Any] | None = None) -> Any:
    return field(metadata={"wire": validator, "to_wire": to_wire})


def _text_opt(max_len: int = MAX_MESSAGE_TEXT) -> Validator:
    def check(v: Any, name: str) -> str:
        if not isinstance(v, str) or len(v) > max_len:
            raise WireError(f"{name}: expected a text string of <= {max_len} chars")
        return v
    return check


# ---- generic map <-> dataclass ----

def _to_map(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(msg, "TYPE", None):
        out["t"] = msg.TYPE
    for f in fields(msg):
        value = getattr(msg, f.name)
        conv = f.metadata.get("to_wire")
        if conv is not None:
            value = conv(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _from_map(cls: type, obj: Any, where: str) -> Any:
    if not isinstance(obj, dict):
        raise WireError(f"{where}: expected a map")
    expected = {f.name for f in fields(cls)} | ({"t"} if getattr(cls, "TYPE", None) else set())
    keys = set(obj)
    if keys - expected:
        raise WireError(f"{where}: unknown fields {sorted(map(str, keys - expected))}")
    if expected - keys:
        raise WireError(f"{where}: missing fields {sorted(expected - keys)}")
    values = {f.name: f.metadata["wire"](obj[f.name], f"{where}.{f.name}") for f in fields(cls)}
    try:
        return cls(**values)
    except ValueError as exc:
        raise WireError(f"{where}: {exc}") from None


# ---- messages ----

@dataclass(frozen=True)
class NextHop:
    """Where a hop sends its output: another hop, or (final=True) the requester itself."""

    peer_id: str = _f(_text())
    addrs: tuple[str, ...] = _f(_list(_text(), 16))
    final: bool = _f(_bool)


@dataclass(frozen=True)
class Assignment:
    """What the requester asks one hop to do; signed by the requester, sealed to the hop.

    The hop reads link `in_link` with `in_key` and writes link `in_link + 1` with `out_key`.
    `deadline_ms` is Unix time in milliseconds after which the hop forgets the circuit.
    """

    TYPE: ClassVar[str] = "assignment"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    hop: str = _f(_text())
    requester: str = _f(_text())
    model_id: str = _f(_text())
    start: int = _f(_uint(1 << 20))
    stop: int = _f(_uint(1 << 20))
    weight_hashes: tuple[str, ...] = _f(_list(_text(), 4096))
    in_link: int = _f(_uint(MAX_HOPS))
    in_key: bytes = _f(_bytes(KEY_BYTES))
    out_key: bytes = _f(_bytes(KEY_BYTES))
    next_hop: NextHop = _f(_nested(NextHop), to_wire=_to_map)
    deadline_ms: int = _f(_uint())

    def __post_init__(self) -> None:
        if not self.start < self.stop:
            raise ValueError(f"span [{self.start}, {self.stop}) is empty or reversed")
        if self.in_key == self.out_key:
            raise ValueError("input and output link keys must differ")
        if self.next_hop.final and self.next_hop.peer_id != self.requester:
            raise ValueError("a final hop must send its output to the requester")

    @property
    def out_link(self) -> int:
        return self.in_link + 1


@dataclass(frozen=True)
class SignedAssignment:
    """`body` is the canonical encoding of an Assignment; `sig` is the requester's signature
    over it in domain "assignment/v1". This whole message is what gets sealed to the hop."""

    TYPE: ClassVar[str] = "signed-assignment"
    body: bytes = _f(_bytes(max_len=MAX_CONTROL_FRAME))
    sig: bytes = _f(_bytes(max_len=128))


@dataclass(frozen=True)
class AssignRequest:
    """Sent on the circuit protocol: a SignedAssignment sealed (SealedBox) to the hop's X25519 key."""

    TYPE: ClassVar[str] = "assign"
    sealed: bytes = _f(_bytes(max_len=MAX_CONTROL_FRAME - 64))


@dataclass(frozen=True)
class AssignmentAccepted:
    TYPE: ClassVar[str] = "accepted"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    hop: str = _f(_text())


@dataclass(frozen=True)
class AssignmentRefused:
    TYPE: ClassVar[str] = "refused"
    circuit_id: bytes = _f(_bytes(max_len=CIRCUIT_ID_BYTES))  # empty if the hop could not read it
    hop: str = _f(_text())
    reason: str = _f(_text(allowed=REFUSAL_REASONS))
    message: str = _f(_text_opt())


@dataclass(frozen=True)
class ActivationFrame:
    """One sealed activation on link `link` of a circuit; `box` = AEAD(link key, payload)."""

    TYPE: ClassVar[str] = "frame"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    link: int = _f(_uint(MAX_HOPS))
    seq: int = _f(_uint())
    nonce: bytes = _f(_bytes(NONCE_BYTES))
    box: bytes = _f(_bytes())


@dataclass(frozen=True)
class ResultFrame:
    """The last hop's output, sealed with the last link key that only the requester also holds."""

    TYPE: ClassVar[str] = "result"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    link: int = _f(_uint(MAX_HOPS))
    seq: int = _f(_uint())
    nonce: bytes = _f(_bytes(NONCE_BYTES))
    box: bytes = _f(_bytes())


@dataclass(frozen=True)
class ErrorFrame:
    """A hop tells the requester (directly) that it could not process frame `seq`."""

    TYPE: ClassVar[str] = "error"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    seq: int = _f(_uint())
    hop: str = _f(_text())
    reason: str = _f(_text(allowed=ERROR_REASONS))
    message: str = _f(_text_opt())


@dataclass(frozen=True)
class FramePayload:
    """The plaintext inside a frame's box: the activation plus per-hop compute microseconds so
    far (advisory timing the requester reports as measured per-hop compute)."""

    TYPE: ClassVar[str] = "payload"
    act: Activation = _f(_activation, to_wire=activation_to_cbor)
    trace: tuple[int, ...] = _f(_list(_uint(), MAX_HOPS))


@dataclass(frozen=True)
class CloseNotice:
    """Plaintext alternative to FramePayload: the requester tears the circuit down. Sealed under
    each link key in turn, so only the circuit's own peers can close it; every hop forwards it
    after the frames before it and then forgets the circuit."""

    TYPE: ClassVar[str] = "close"


@dataclass(frozen=True)
class WeightRequest:
    """Ask a peer for content by hash: a weight/tokenizer blob, or a model manifest by model id."""

    TYPE: ClassVar[str] = "weight-req"
    kind: str = _f(_text(allowed=frozenset({"blob", "manifest"})))
    hash: str = _f(_text())


@dataclass(frozen=True)
class WeightBlob:
    """The content; the receiver hashes it and discards it unless it matches the request."""

    TYPE: ClassVar[str] = "weight-blob"
    hash: str = _f(_text())
    data: bytes = _f(_bytes())


@dataclass(frozen=True)
class WeightMissing:
    TYPE: ClassVar[str] = "weight-missing"
    hash: str = _f(_text())


MAX_RECEIPT_BLOB = 1024  # = core.receipts.MAX_RECEIPT_BYTES (a signed receipt, SPEC §6.1)


@dataclass(frozen=True)
class ReceiptDelivery:
    """Requester -> hop on /p2pinfer/receipt/1.0.0: a signed receipt for a completed hop. The hop
    verifies the blob itself (core.receipts.decode_verified) before crediting anything."""

    TYPE: ClassVar[str] = "receipt"
    receipt: bytes = _f(_bytes(max_len=MAX_RECEIPT_BLOB))


@dataclass(frozen=True)
class ReceiptAck:
    """Hop -> requester: whether the receipt was credited; `reason` names a rejection
    (a RecordError reason such as "bad-signature" or "wrong-hop"; empty when accepted)."""

    TYPE: ClassVar[str] = "receipt-ack"
    accepted: bool = _f(_bool)
    reason: str = _f(_text_opt(MAX_TEXT))


DIGEST_BYTES = 32


@dataclass(frozen=True)
class HopCommit:
    """Hop -> requester on /p2pinfer/result/1.0.0, one per frame the hop computed: digests of
    the input it read and the output it wrote (core/commitments.py), MAC'd with its report key."""

    TYPE: ClassVar[str] = "commit"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    link: int = _f(_uint(MAX_HOPS))  # the hop's in_link: hop index in the circuit
    seq: int = _f(_uint())
    in_hash: bytes = _f(_bytes(DIGEST_BYTES))
    out_hash: bytes = _f(_bytes(DIGEST_BYTES))
    compute_us: int = _f(_uint())
    mac: bytes = _f(_bytes(DIGEST_BYTES))


@dataclass(frozen=True)
class AuditRequest:
    """Requester -> hop on /p2pinfer/audit/1.0.0: "send me your retained output for `seq`".
    `mac` = core.audit.request_mac(report key, ...): only the circuit's requester can ask."""

    TYPE: ClassVar[str] = "audit-req"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    link: int = _f(_uint(MAX_HOPS))
    seq: int = _f(_uint())
    mac: bytes = _f(_bytes(DIGEST_BYTES))


@dataclass(frozen=True)
class AuditReply:
    """Hop -> requester: the retained output's canonical bytes sealed under the hop's report key
    (`held` False and an empty box when it holds none for that seq)."""

    TYPE: ClassVar[str] = "audit-reply"
    circuit_id: bytes = _f(_bytes(CIRCUIT_ID_BYTES))
    link: int = _f(_uint(MAX_HOPS))
    seq: int = _f(_uint())
    held: bool = _f(_bool)
    nonce: bytes = _f(_bytes(NONCE_BYTES))
    box: bytes = _f(_bytes())

    def __post_init__(self) -> None:
        if not self.held and self.box:
            raise ValueError("an audit reply that holds nothing carries an empty box")


Message = Any  # any of the registered dataclasses above
DECODERS: dict[str, type] = {}


def _register(*classes: type) -> None:
    for cls in classes:
        DECODERS[cls.TYPE] = cls


_register(Assignment, SignedAssignment, AssignRequest, AssignmentAccepted, AssignmentRefused,
          ActivationFrame, ResultFrame, ErrorFrame, FramePayload, CloseNotice, WeightRequest, WeightBlob, WeightMissing,
          ReceiptDelivery, ReceiptAck, HopCommit, AuditRequest, AuditReply)


def encode(msg: Message) -> bytes:
    """Canonical CBOR of a registered message."""
    if DECODERS.get(getattr(msg, "TYPE", None)) is not type(msg):
        raise WireError(f"cannot encode {type(msg).__name__}: not a registered wire message")
    return encode_canonical(_to_map(msg))


def decode(data: bytes, *, expect: Iterable[type], max_size: int = MAX_CONTROL_FRAME) -> Message:
    """Decode one message whose type must be among `expect` (what this protocol carries)."""
    allowed = {cls.TYPE: cls for cls in expect}
    obj = decode_strict(data, max_size=max_size)
    if not isinstance(obj, dict):
        raise WireError(f"message: expected a CBOR map, got {type(obj).__name__}")
    kind = obj.get("t")
    if not isinstance(kind, str) or kind not in DECODERS:
        raise WireError(f"message: unknown type {kind!r}")
    if kind not in allowed:
        raise WireError(f"message: type {kind!r} not expected here (expected {sorted(allowed)})")
    return _from_map(allowed[kind], obj, kind)

