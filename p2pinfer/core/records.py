"""Signed capability records: what a peer advertises, and the one place they are verified.

Wire format (protocol/SPEC.md "Capability records", schema protocol/capability.cddl): one CBOR
map holding every field of `CapabilityRecord` under its own name, plus `key` (the signer's 32-byte
Ed25519 public key) and `sig` (64-byte Ed25519 signature). The signature covers
`b"p2pinfer:record/v1\\x00" + canonical_cbor(map without "sig")`.

The whole blob must be *canonical* CBOR (RFC 7049 §3.9 as cbor2 writes it: shortest integer and
float forms, map keys sorted length-first, definite lengths, no tags, no duplicate keys). With
Ed25519's unique signatures this gives every valid record exactly one byte encoding, so nobody
can relay a valid record in a second spelling (caches and DHT select may compare bytes).
Optional fields, each absent rather than empty or zero (which would be a second spelling of the
same record): `gflops_by_kind` when the peer has no per-kind speeds; `frame_ms` and
`frame_ms_per_mib` (together) when it has not measured its frame handling; `cpu_quota_ms` and
`cpu_period_ms` (together) when its compute is not under a CPU quota of less than a core.

Checks run in this order and each failure raises RecordError(reason, message):
oversized -> malformed-cbor (undecodable or non-canonical) -> unknown-version -> bad-schema ->
key-mismatch (key is not the one inside peer_id) -> bad-signature -> expired / expiry-too-far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import cbor2

from p2pinfer.core.profile import COMPUTE_CLASSES, check_kind_speeds
from p2pinfer.crypto.identity import Identity, public_key_from_peer_id
from p2pinfer.crypto.signing import RECORD_DOMAIN, verify_with_key
from p2pinfer.core.snapshot import PeerSpec
from p2pinfer.errors import RecordError

RECORD_VERSION = 1
RECORD_KEY_PREFIX = "/p2pinfer/record/"
MAX_RECORD_BYTES = 64 * 1024  # the DHT stores and relays these; a generous record is ~2 KiB
MAX_RECORD_TTL_S = 24 * 3600.0  # expires_at further than this in the future is refused
MAX_ADDRS, MAX_ADDR_CHARS = 16, 256
MAX_MODELS, MAX_WEIGHTS, MAX_ID_CHARS = 64, 512, 128
MAX_SWARM_CHARS = 64
MAX_UINT64 = 2**64 - 1

_FLOAT_FIELDS = ("expires_at", "gflops", "up_mbps", "down_mbps", "latency_ms", "load")
_INT_FIELDS = ("version", "seq", "mem_bytes")
_STR_FIELDS = ("peer_id", "swarm")
_TUPLE_FIELDS = ("addrs", "models", "weights")
WIRE_FIELDS = frozenset(
    _FLOAT_FIELDS + _INT_FIELDS + _STR_FIELDS + _TUPLE_FIELDS + ("gflops_by_class", "key", "sig")
)
FRAME_FIELDS = ("frame_ms", "frame_ms_per_mib")
QUOTA_FIELDS = ("cpu_quota_ms", "cpu_period_ms")
OPTIONAL_WIRE_FIELDS = frozenset(("gflops_by_kind", *FRAME_FIELDS, *QUOTA_FIELDS))
MAX_FRAME_MS = 60_000.0  # a peer that needs a minute per frame cannot serve anyone
MAX_PERIOD_MS = 1000.0  # the longest CFS bandwidth period Linux allows


def _bad(message: str) -> RecordError:
    return RecordError("bad-schema", message)


@dataclass(frozen=True, kw_only=True)
class CapabilityRecord:
    """What one peer claims it can do, as of `seq`, until `expires_at` (unix seconds).

    Units follow the planner's cost model: GFLOP/s, bytes, Mbit/s, ms. `addrs` are full
    multiaddrs ending in /p2p/<peer_id>; `models` are model ids held, `weights` the content
    hashes of layer weights held; `load` is the busy fraction of compute in [0, 1];
    `frame_ms` / `frame_ms_per_mib` its cost of handling one input as a hop, fixed and per MiB of
    activation read or sent, in ms of its wall time (both 0: not measured); `cpu_quota_ms` per
    `cpu_period_ms` the CPU quota its compute thread runs under when that is less than a core (a
    cgroup CFS quota: after idling it runs that much at full core speed; both 0: no quota).
    Construction validates every value (RecordError "bad-schema"), so an invalid record can be
    neither built nor signed.
    """

    version: int = RECORD_VERSION
    peer_id: str
    seq: int
    expires_at: float
    addrs: tuple[str, ...]
    gflops: float
    gflops_by_class: Mapping[str, float] = field(default_factory=dict)
    mem_bytes: int
    up_mbps: float
    down_mbps: float
    latency_ms: float
    models: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    load: float = 0.0
    swarm: str = "default"
    gflops_by_kind: Mapping[str, float] = field(default_factory=dict)
    frame_ms: float = 0.0
    frame_ms_per_mib: float = 0.0
    cpu_quota_ms: float = 0.0
    cpu_period_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            _check_uint(name, getattr(self, name))
        for name in _FLOAT_FIELDS + FRAME_FIELDS + QUOTA_FIELDS:
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        if self.version != RECORD_VERSION:
            raise RecordError("unknown-version", f"record version {self.version} is not supported")
        _check_str("peer_id", self.peer_id, MAX_ID_CHARS)
        _check_str("swarm", self.swarm, MAX_SWARM_CHARS)
        for name, limit in (("addrs", MAX_ADDRS), ("models", MAX_MODELS), ("weights", MAX_WEIGHTS)):
            object.__setattr__(self, name, _as_str_tuple(name, getattr(self, name), limit))
        object.__setattr__(self, "gflops_by_class", _as_class_map(self.gflops_by_class))
        try:
            object.__setattr__(self, "gflops_by_kind", MappingProxyType(check_kind_speeds(self.gflops_by_kind)))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        self._check_ranges()

    def __hash__(self) -> int:  # the class map is a mappingproxy; these fields suffice
        return hash((self.peer_id, self.seq, self.expires_at))

    def _check_ranges(self) -> None:
        if not self.expires_at > 0:
            raise _bad("expires_at must be a positive unix time")
        for name in ("gflops", "up_mbps", "down_mbps"):
            if not getattr(self, name) > 0:
                raise _bad(f"{name} must be > 0")
        if not self.latency_ms >= 0:
            raise _bad("latency_ms must be >= 0")
        if not 0 <= self.load <= 1:
            raise _bad("load must be in [0, 1]")
        frame = (self.frame_ms, self.frame_ms_per_mib)
        if frame != (0.0, 0.0) and not all(0 < v <= MAX_FRAME_MS for v in frame):
            raise _bad(f"frame_ms and frame_ms_per_mib must both be in (0, {MAX_FRAME_MS:.0f}] (or both absent)")
        quota, period = self.cpu_quota_ms, self.cpu_period_ms
        if (quota, period) != (0.0, 0.0) and not 0 < quota < period <= MAX_PERIOD_MS:
            raise _bad(f"cpu_quota_ms and cpu_period_ms must satisfy 0 < cpu_quota_ms < cpu_period_ms <= "
                       f"{MAX_PERIOD_MS:.0f} (or both be absent)")
        suffix = f"/p2p/{self.peer_id}"
        for addr in self.addrs:
            if not addr.startswith("/") or not addr.endswith(suffix) or addr == suffix:
                raise _bad(f"addr {addr!r:.80} must be a multiaddr ending in {suffix}")


def _check_uint(name: str, value: Any) -> None:
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise _bad(f"{name} must be an unsigned 64-bit integer, got {value!r:.40}")


def _as_float(name: str, value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _bad(f"{name} must be a finite number, got {value!r:.40}")
    return float(value)


def _check_str(name: str, value: Any, limit: int) -> None:
    """Strings are measured in UTF-8 bytes, as the CDDL `.size` control does."""
    try:
        size = len(value.encode("utf-8")) if isinstance(value, str) else -1
    except UnicodeEncodeError:
        size = -1
    if not 0 < size <= limit:
        raise _bad(f"{name} must be a UTF-8 string of 1..{limit} bytes, got {value!r:.40}")


def _as_str_tuple(name: str, value: Any, limit: int) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _bad(f"{name} must be a list of strings")
    if len(value) > limit:
        raise _bad(f"{name} has {len(value)} entries, at most {limit} allowed")
    item_limit = MAX_ADDR_CHARS if name == "addrs" else MAX_ID_CHARS
    for item in value:
        _check_str(f"{name} entry", item, item_limit)
    return tuple(value)


def _as_class_map(value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise _bad("gflops_by_class must be a map of compute class to GFLOP/s")
    out = {}
    for cls, speed in value.items():
        if cls not in COMPUTE_CLASSES:
            raise _bad(f"gflops_by_class: unknown class {cls!r:.40}, want one of {COMPUTE_CLASSES}")
        out[cls] = _as_float(f"gflops_by_class.{cls}", speed)
        if not out[cls] > 0:
            raise _bad(f"gflops_by_class.{cls} must be > 0")
    return MappingProxyType(out)


# ---- canonical CBOR ---------------------------------------------------------------------------


def _reject_tag(decoder: Any, tag: Any = None) -> Any:
    raise cbor2.CBORDecodeError("CBOR tags are not allowed")


_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_NO_SEMANTIC_TAGS = {tag: _reject_tag for tag in _BUILTIN_TAGS + (1004, 43000, 55799)}


def canonical_dumps(obj: Any) -> bytes:
    """Canonical CBOR (the only encoding p2pinfer signs or accepts for signed objects)."""
    return cbor2.dumps(obj, canonical=True)


def strict_loads(blob: bytes, *, max_depth: int = 8) -> Any:
    """Decode untrusted CBOR that must be canonical; RecordError("malformed-cbor") otherwise.

    No tags (so no datetimes, bignums, regexes, shared values), no indefinite lengths, no
    duplicate or non-string keys, bounded nesting, no trailing bytes, shortest forms only.
    """
    try:
        obj = cbor2.loads(
            blob,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            tag_hook=_reject_tag,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
        canonical = canonical_dumps(obj)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RecordError("malformed-cbor", f"undecodable CBOR: {exc}") from exc
    if canonical != blob:
        raise RecordError("malformed-cbor", "CBOR is not in canonical form (or has trailing bytes)")
    return obj


# ---- encode / decode ------------------------------------------------------------------------


def record_key(peer_id: str) -> str:
    """The DHT key a peer's record is stored under."""
    return RECORD_KEY_PREFIX + peer_id


def _wire_body(record: CapabilityRecord, public_key: bytes) -> dict[str, Any]:
    body: dict[str, Any] = {name: getattr(record, name) for name in _FLOAT_FIELDS + _INT_FIELDS}
    body.update({name: getattr(record, name) for name in _STR_FIELDS})
    body.update({name: list(getattr(record, name)) for name in _TUPLE_FIELDS})
    body["gflops_by_class"] = dict(record.gflops_by_class)
    if record.gflops_by_kind:
        body["gflops_by_kind"] = dict(record.gflops_by_kind)
    if record.frame_ms:
        body.update({name: getattr(record, name) for name in FRAME_FIELDS})
    if record.cpu_period_ms:
        body.update({name: getattr(record, name) for name in QUOTA_FIELDS})
    body["key"] = public_key
    return body


def encode_signed(record: CapabilityRecord, identity: Identity) -> bytes:
    """Sign `record` with the identity of the peer it describes; canonical CBOR bytes."""
    if identity.peer_id != record.peer_id:
        raise RecordError("key-mismatch", "a record can only be signed by the peer it describes")
    body = _wire_body(record, identity.public_key)
    body["sig"] = identity.sign(RECORD_DOMAIN, canonical_dumps(body))
    blob = canonical_dumps(body)
    if len(blob) > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"record is {len(blob)} bytes, limit {MAX_RECORD_BYTES}")
    return blob


def decode_verified(
    blob: bytes, *, now: float, max_bytes: int = MAX_RECORD_BYTES
) -> CapabilityRecord:
    """Decode and fully verify a record blob from anyone; never returns an unverified record."""
    if not isinstance(blob, (bytes, bytearray)):
        raise RecordError("malformed-cbor", f"record must be bytes, got {type(blob).__name__}")
    if len(blob) > max_bytes:
        raise RecordError("oversized", f"record is {len(blob)} bytes, limit {max_bytes}")
    raw = strict_loads(bytes(blob))
    record, key, sig = _from_wire(raw)
    try:
        expected_key = public_key_from_peer_id(record.peer_id)
    except RecordError as exc:
        raise RecordError("key-mismatch", f"record signer: {exc}") from exc
    if key != expected_key:
        raise RecordError("key-mismatch", f"signing key is not the key of peer {record.peer_id}")
    unsigned = {k: v for k, v in raw.items() if k != "sig"}
    if not verify_with_key(key, RECORD_DOMAIN, canonical_dumps(unsigned), sig):
        raise RecordError("bad-signature", f"record of {record.peer_id}: signature does not verify")
    check_fresh(record, now=now)
    return record


def check_fresh(record: CapabilityRecord, *, now: float) -> None:
    """Raise "expired" once expires_at has passed, "expiry-too-far" beyond MAX_RECORD_TTL_S."""
    if record.expires_at <= now:
        raise RecordError("expired", f"record of {record.peer_id} expired {now - record.expires_at:.1f}s ago")
    if record.expires_at > now + MAX_RECORD_TTL_S:
        raise RecordError(
            "expiry-too-far",
            f"record of {record.peer_id} expires in {record.expires_at - now:.0f}s, "
            f"more than the {MAX_RECORD_TTL_S:.0f}s allowed",
        )


def _from_wire(raw: Any) -> tuple[CapabilityRecord, bytes, bytes]:
    """Exact-type schema check of a decoded map, then build the record (which checks values)."""
    if not isinstance(raw, dict):
        raise _bad(f"record must be a CBOR map, got {type(raw).__name__}")
    version = raw.get("version")
    if type(version) is int and version != RECORD_VERSION:
        raise RecordError("unknown-version", f"record version {version} is not supported")
    if not WIRE_FIELDS <= set(raw) <= WIRE_FIELDS | OPTIONAL_WIRE_FIELDS:
        missing, extra = sorted(WIRE_FIELDS - set(raw)), sorted(map(str, set(raw) - WIRE_FIELDS - OPTIONAL_WIRE_FIELDS))
        raise _bad(f"record fields: missing {missing}, unexpected {extra}")
    for name in _FLOAT_FIELDS:
        if type(raw[name]) is not float:
            raise _bad(f"{name} must be a CBOR float")
    classes = raw["gflops_by_class"]
    if not isinstance(classes, dict) or any(type(v) is not float for v in classes.values()):
        raise _bad("gflops_by_class must map class names to CBOR floats")
    if "gflops_by_kind" in raw:
        kinds = raw["gflops_by_kind"]
        if not isinstance(kinds, dict) or not kinds or any(type(v) is not float for v in kinds.values()):
            raise _bad("gflops_by_kind, when present, must be a non-empty map of layer kinds to CBOR floats")
    present = [name for name in FRAME_FIELDS if name in raw]
    if present and (len(present) != len(FRAME_FIELDS) or any(type(raw[n]) is not float for n in present)):
        raise _bad("frame_ms and frame_ms_per_mib, when present, must both be CBOR floats")
    present = [name for name in QUOTA_FIELDS if name in raw]
    if present and (len(present) != len(QUOTA_FIELDS) or any(type(raw[n]) is not float for n in present)):
        raise _bad("cpu_quota_ms and cpu_period_ms, when present, must both be CBOR floats")
    key, sig = raw["key"], raw["sig"]
    if type(key) is not bytes or len(key) != 32 or type(sig) is not bytes or len(sig) != 64:
        raise _bad("key must be 32 bytes and sig 64 bytes")
    fields = {k: v for k, v in raw.items() if k not in ("key", "sig")}
    return CapabilityRecord(**fields), key, sig


# ---- helpers for publishers and consumers -----------------------------------------------------


def next_seq(previous: int | None, *, now: float) -> int:
    """A seq newer than `previous`: wall-clock milliseconds, so a restarted node (which forgot
    its last seq) still publishes a newer record than the one the DHT holds."""
    candidate = int(now * 1000)
    return candidate if previous is None or candidate > previous else previous + 1


def to_peer_spec(record: CapabilityRecord, *, reputation: float = 1.0) -> PeerSpec:
    """The planner's view of a verified record (`load` is capped just below 1 as PeerSpec asks)."""
    return PeerSpec(
        peer_id=record.peer_id,
        gflops=record.gflops,
        mem_bytes=record.mem_bytes,
        up_mbps=record.up_mbps,
        down_mbps=record.down_mbps,
        latency_ms=record.latency_ms,
        gflops_by_class=dict(record.gflops_by_class),
        gflops_by_kind=dict(record.gflops_by_kind),
        frame_ms=record.frame_ms,
        frame_ms_per_mib=record.frame_ms_per_mib,
        cpu_quota_ms=record.cpu_quota_ms,
        cpu_period_ms=record.cpu_period_ms,
        reputation=reputation,
        load=min(record.load, 0.99),
        holds=frozenset(record.weights),
        addrs=record.addrs,
    )


def to_json_dict(record: CapabilityRecord) -> dict[str, Any]:
    """One element of `p2pinfer peers --json`; only ever built from a verified record."""
    return {
        "peer_id": record.peer_id,
        "addrs": list(record.addrs),
        "gflops": record.gflops,
        "gflops_by_class": dict(record.gflops_by_class),
        "gflops_by_kind": dict(record.gflops_by_kind),
        "frame_ms": record.frame_ms,
        "frame_ms_per_mib": record.frame_ms_per_mib,
        "cpu_quota_ms": record.cpu_quota_ms,
        "cpu_period_ms": record.cpu_period_ms,
        "mem_bytes": record.mem_bytes,
        "up_mbps": record.up_mbps,
        "down_mbps": record.down_mbps,
        "latency_ms": record.latency_ms,
        "models": list(record.models),
        "weights": list(record.weights),
        "load": record.load,
        "swarm": record.swarm,
        "seq": record.seq,
        "expires": record.expires_at,
        "verified": True,
    }
