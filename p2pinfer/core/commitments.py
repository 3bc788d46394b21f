"""Per-frame hop commitments: what a hop says it read and wrote, and the chain check over them.

Every hop that computes frame `seq` of a circuit sends the requester (directly, on the result
protocol) a `HopCommit{circuit, link, seq, in_hash, out_hash, compute_us, mac}`:

1. Digests. `activation_digest(act)` = BLAKE2b-256 (person "p2pinfer-act") of the canonical CBOR
   of the activation alone (no trace): the hop hashes the input it decrypted and the output it
   sealed; the requester hashes the input it sent and the result it decrypted. The codec is
   canonical, so equal arrays give equal digests on every peer.
2. Authentication. `mac` = BLAKE2b-256 keyed with the hop's report key over the other fields.
   The report key of the hop reading link i is `report_key(key_i, key_{i+1})`, derived from both
   of its link keys: the requester holds every key; a single other hop holds at most one of the
   two, so no single other peer can forge or read a hop's commitments (two colluding
   neighbours of a hop can; see docs/reputation.md §9).
3. Chain. For one seq over hops 0..k-1, boundary b compares the digest on both sides of it:
   boundary 0: requester input vs hop 0's in_hash; boundary b (1..k-1): hop b-1's out_hash vs
   hop b's in_hash; boundary k: hop k-1's out_hash vs the result. `check_chain` reports missing
   commitments and broken boundaries. A break at 0 or k has one possible liar (hop 0 / hop k-1:
   the other side is the requester itself); a break inside has two (hop b-1 or hop b).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping, Sequence

from p2pinfer.core import wire
from p2pinfer.core.codec import Activation, activation_to_cbor, encode_canonical

DIGEST_BYTES = 32


def activation_bytes(act: Activation) -> bytes:
    """The canonical bytes of an activation: what hops hash and retain."""
    return encode_canonical(activation_to_cbor(act))


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES, person=b"p2pinfer-act").digest()


def activation_digest(act: Activation) -> bytes:
    return digest(activation_bytes(act))


def report_key(in_key: bytes, out_key: bytes) -> bytes:
    """The hop's report key (rule 2): only the requester and the hop hold both link keys."""
    return hashlib.blake2b(out_key, key=in_key, digest_size=32, person=b"p2pinfer-report").digest()


def _mac(key: bytes, circuit_id: bytes, link: int, seq: int, in_hash: bytes, out_hash: bytes, compute_us: int) -> bytes:
    h = hashlib.blake2b(key=key, digest_size=32, person=b"p2pinfer-commit")
    for part in (circuit_id, link.to_bytes(2, "big"), seq.to_bytes(8, "big"), in_hash, out_hash,
                 compute_us.to_bytes(8, "big")):
        h.update(len(part).to_bytes(2, "big") + part)
    return h.digest()


def make_commit(key: bytes, *, circuit_id: bytes, link: int, seq: int, in_hash: bytes, out_hash: bytes,
                compute_us: int) -> wire.HopCommit:
    mac = _mac(key, circuit_id, link, seq, in_hash, out_hash, compute_us)
    return wire.HopCommit(circuit_id=circuit_id, link=link, seq=seq, in_hash=in_hash, out_hash=out_hash,
                          compute_us=compute_us, mac=mac)


def commit_authentic(key: bytes, c: wire.HopCommit) -> bool:
    want = _mac(key, c.circuit_id, c.link, c.seq, c.in_hash, c.out_hash, c.compute_us)
    return hmac.compare_digest(want, c.mac)


@dataclass(frozen=True)
class ChainCheck:
    """Outcome of rule 3 for one seq: `missing` hop indexes, `breaks` boundary indexes."""

    missing: tuple[int, ...]
    breaks: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.breaks

    def suspects(self, hops: int) -> tuple[frozenset[int], ...]:
        """Per break, the hop indexes that may have lied (one at the ends, two inside)."""
        return tuple(frozenset({b} if b == 0 else {b - 1} if b == hops else {b - 1, b}) for b in self.breaks)


def check_chain(input_hash: bytes, commits: Mapping[int, wire.HopCommit] | Sequence[wire.HopCommit | None],
                result_hash: bytes, hops: int) -> ChainCheck:
    """Rule 3 over the (already authenticated) commitments of one seq, by hop index."""
    get = commits.get if isinstance(commits, Mapping) else (lambda i: commits[i] if i < len(commits) else None)
    got = [get(i) for i in range(hops)]
    missing = tuple(i for i, c in enumerate(got) if c is None)
    breaks = []
    for b in range(hops + 1):
        left = input_hash if b == 0 else (got[b - 1].out_hash if got[b - 1] is not None else None)
        right = result_hash if b == hops else (got[b].in_hash if got[b] is not None else None)
        if left is not None and right is not None and not hmac.compare_digest(left, right):
            breaks.append(b)
    return ChainCheck(missing, tuple(breaks))
