"""Reputation-driven requester hooks: the ledger decides whom to plan with and records every outcome.

`LedgerHooks` plugs the durable ledger (p2pinfer/ledger.py; rules in core/reputation.py,
core/speed.py, core/verification.py) into the `Requester`:

- the planner's view: excluded peers are dropped, every other peer is planned with
  `Ledger.adjust_peer_spec` (measured speed capped at the advertisement, reputation);
- every outcome is recorded: completed hops (flops, measured seconds), failures, timeouts,
  refusals, and verification failures (which exclude at once);
- which hops to spot-check (`should_check`, the requester's secret never leaves it);
- per-hop deadlines (`core.speed.hop_deadline_s` of the predicted time, which already uses the
  measured speed);
- receipts: one signed receipt per (circuit, hop) for the work it completed, stored as *spent*
  and sent to the hop when `p2pinfer.net.receipts_protocol` is available.

Measured hop times are the compute microseconds each hop writes into the frame trace: they are
reported by the hops themselves and so advisory. They are clamped by what the requester can
observe (a hop's time cannot exceed the wall time of the request that carried it), which stops
a hop from inflating its time, but a hop can under-report (claim to be faster). That only
matters for speed estimation and receipts' measured time, never for correctness or exclusion
(docs/reputation.md §9).

`Requester.infer` / `infer_stream` see `resilient = True` and run the failover / spot-check
engine (p2pinfer/failover.py) with these hooks.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import trio

from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.core.speed import hop_deadline_s
from p2pinfer.core.verification import VerificationPolicy, should_check
from p2pinfer.errors import ConfigError, P2PInferError
from p2pinfer.hooks import RequesterHooks
from p2pinfer.hop_work import HopRecord
from p2pinfer.ledger import Ledger, ledger_path
from p2pinfer.net.receipts_protocol import send_receipt

log = logging.getLogger(__name__)

DEFAULT_SPOT_CHECK = VerificationPolicy().fraction  # 0.10, docs/reputation.md §5


@dataclass(frozen=True)
class FaultOptions:
    """Knobs of the fault handling. `policy`: spot-check fraction and probation;
    `deadline_slack`/`deadline_grace_s`: per-hop deadline = slack * predicted + grace;
    `probe_setup_s`: extra time a failure probe gets for its one-hop circuit setup;
    `send_receipts`: give each hop its signed receipt over the network; `resume`: after a
    mid-stream failure, resume in-flight inputs from a surviving upstream hop instead of
    restarting them from the input (docs/reputation.md §9)."""

    policy: VerificationPolicy = VerificationPolicy()
    deadline_slack: float = 4.0
    deadline_grace_s: float = 2.0
    probe_setup_s: float = 5.0
    receipt_timeout_s: float = 2.0
    send_receipts: bool = True
    commit_timeout_s: float = 2.0  # how long a result waits for its hops' commitments
    audit_timeout_s: float = 10.0  # one audit fetch of a retained output
    resume: bool = True  # resume in-flight inputs from an upstream hop's retained output (p2pinfer/resume.py)

    def __post_init__(self) -> None:
        if not (self.deadline_slack >= 1 and self.deadline_grace_s >= 0):
            raise ConfigError("fault handling: deadline_slack must be >= 1 and deadline_grace_s >= 0")
        if not (self.probe_setup_s > 0 and self.receipt_timeout_s > 0 and self.commit_timeout_s > 0 and self.audit_timeout_s > 0):
            raise ConfigError("fault handling: probe_setup_s, receipt_timeout_s, commit_timeout_s and audit_timeout_s must be > 0")

    @classmethod
    def with_spot_check(cls, fraction: float, **kw: Any) -> "FaultOptions":
        """Options with spot-check `fraction` (probation as documented) — the CLI's --spot-check."""
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"--spot-check must be a fraction in [0, 1], got {fraction}")
        return cls(policy=replace(VerificationPolicy(), fraction=fraction), **kw)


class LedgerHooks(RequesterHooks):
    """Requester hooks backed by a `Ledger` (open with `LedgerHooks.open(data_dir)`)."""

    resilient = True

    def __init__(self, ledger: Ledger, *, options: FaultOptions = FaultOptions(), secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger, self.options, self.clock = ledger, options, clock
        self.secret = secret or os.urandom(32)  # selects spot checks; never leaves this process
        self.requester: Any = None  # set by attach(): identity and host for receipts

    @classmethod
    def open(cls, data_dir: Path | str, **kw: Any) -> "LedgerHooks":
        return cls(Ledger(ledger_path(data_dir)), **kw)

    def close(self) -> None:
        self.ledger.close()

    def attach(self, requester: Any) -> None:
        self.requester = requester

    # ---- the planner's view ----

    def reputation(self, peer_id: str) -> float:
        return self.ledger.reputation_of(peer_id, self.clock())

    def adjust_snapshot(self, snapshot: SwarmSnapshot) -> SwarmSnapshot:
        """Drop excluded peers; plan the rest with measured speed and reputation."""
        now = self.clock()
        excluded = self.ledger.excluded(now)
        return SwarmSnapshot(snapshot.requester, tuple(self.ledger.adjust_peer_spec(p, now)
                                                       for p in snapshot.peers if p.peer_id not in excluded))

    def excluded(self) -> frozenset[str]:
        return self.ledger.excluded(self.clock())

    def deadline_s(self, predicted_s: float) -> float:
        return hop_deadline_s(predicted_s, slack=self.options.deadline_slack, grace_s=self.options.deadline_grace_s)

    def should_check(self, key: bytes, hop_index: int, peer_id: str) -> bool:
        """Is hop `hop_index` of execution `key` spot-checked (probation: every hop)?"""
        since = self.ledger.hops_since_admission(peer_id, self.clock())
        return should_check(self.options.policy, secret=self.secret, circuit_id=key, hop_index=hop_index,
                            hops_since_admission=since)

    # ---- outcomes (sync: call through trio.to_thread.run_sync) ----

    def hops_ok(self, hops: list[HopRecord]) -> None:
        """Record completed hops (hop_work.HopRecord: what ran where, how long, what was predicted)."""
        now = self.clock()
        for h in hops:
            self.ledger.record_hop_ok(h.peer_id, now=now, flops=h.flops, measured_s=max(h.measured_s, 1e-6),
                                      advertised_gflops=h.advertised_gflops, flops_by_class=h.flops_by_class,
                                      advertised_by_class=h.advertised_by_class, predicted_s=h.predicted_s)

    def hop_failed(self, peer_id: str, kind: EventKind, detail: str) -> None:
        log.info("ledger: %s %s: %s", kind.value, peer_id, detail)
        self.ledger.record_failure(peer_id, kind, now=self.clock(), detail=detail[:500])

    def verification_failed(self, peer_id: str, detail: str) -> None:
        log.warning("ledger: verification failure of %s: %s", peer_id, detail)
        self.ledger.record_verification_failure(peer_id, now=self.clock(), detail=detail[:500])

    # ---- receipts ----

    async def issue_receipts(self, *, circuit_id: bytes, model_id: str,
                             work: list[tuple[str, tuple[str, ...], int, int, int, float]]) -> None:
        """Sign, store and send one receipt per hop: (peer, addrs, start, stop, flops, seconds).
        Delivered in the requester's background (it lets them finish when it stops)."""
        if self.requester is None or not work:
            return
        identity = self.requester.identity
        blobs = []
        now = self.clock()
        for peer_id, addrs, start, stop, flops, seconds in work:
            signed = sign_receipt(Receipt.make(circuit_id=circuit_id, hop_peer_id=peer_id,
                                               requester_peer_id=identity.peer_id, model_id=model_id, start=start,
                                               stop=stop, flops=flops, measured_s=seconds, issued_at=now), identity)
            await trio.to_thread.run_sync(lambda s=signed: self.ledger.record_receipt_spent(
                s.blob, self_peer_id=identity.peer_id, now=now))
            blobs.append((peer_id, addrs, signed.blob))
        if not self.options.send_receipts:
            return
        self.requester.spawn(self.send_receipts, blobs)  # never make a request wait for its receipts

    async def send_receipts(self, blobs: list[tuple[str, tuple[str, ...], bytes]]) -> int:
        """Deliver signed receipts concurrently, each bounded; returns how many arrived."""
        delivered = 0

        async def one(peer_id: str, addrs: tuple[str, ...], blob: bytes) -> None:
            nonlocal delivered
            try:
                if await send_receipt(self.requester.host, peer_id, addrs, blob,
                                      timeout=self.options.receipt_timeout_s):
                    delivered += 1
            except P2PInferError as exc:
                log.info("receipt to %s not delivered: %s", peer_id, exc)

        with trio.move_on_after(self.options.receipt_timeout_s * 2):
            async with trio.open_nursery() as nursery:
                for item in blobs:
                    nursery.start_soon(one, *item)
        return delivered
