"""The durable ledger on real sqlite files: persistence, atomicity, snapshots, credits, errors."""

from __future__ import annotations

import math
import random
import sqlite3

import numpy as np
import pytest

from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.core.reputation import EXCLUDED_REPUTATION, EventKind, ReputationParams
from p2pinfer.core.snapshot import PeerSpec
from p2pinfer.core.speed import effective_gflops, hop_deadline_s
from p2pinfer.core.verification import Execution, Verdict, VerificationPolicy, settle, should_check
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import LedgerError, RecordError
from p2pinfer.ledger import SCHEMA_VERSION, Ledger, ledger_path

GFLOP = 10**9
ME = Identity.from_seed(b"m" * 32)
PEER = Identity.from_seed(b"p" * 32)


@pytest.fixture
def path(tmp_path):
    return ledger_path(tmp_path / "data")


def spec(peer_id: str, gflops: float = 100.0) -> PeerSpec:
    return PeerSpec(peer_id=peer_id, gflops=gflops, mem_bytes=10**9, up_mbps=100.0, down_mbps=100.0, latency_ms=5.0)


def test_events_persist_across_reopen_and_are_logged(path):
    with Ledger(path) as led:
        led.record_hop_ok("a", now=10.0, flops=GFLOP, measured_s=0.01, advertised_gflops=100.0)
        led.record_failure("a", EventKind.FAILURE, now=11.0, detail="compute-failed")
        led.record_failure("b", "refused", now=12.0, detail="busy")
    with Ledger(path) as led:
        a = led.peer("a", 12.0)
        assert (a.state.hops_ok, a.state.failures, a.advertised_gflops) == (1, 1, 100.0)
        assert led.peer("b", 12.0).state.refusals == 1
        kinds = [(e["peer_id"], e["kind"]) for e in led.events()]
        assert kinds == [("b", "refused"), ("a", "failure"), ("a", "hop_ok")]
        assert '"reason": "compute-failed"' in led.events("a")[0]["detail"]
        assert led.totals()["hops_ok"] == 1 and led.totals()["events"] == 3
        assert led.integrity_check() == "ok"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_exclusion_backoff_and_readmission_through_the_ledger(path):
    with Ledger(path) as led:
        assert led.reputation_of("x", 0.0) == pytest.approx(0.8)  # a stranger gets r0
        for i in range(4):
            view = led.record_failure("x", EventKind.TIMEOUT, now=float(i))
        assert view.excluded and led.excluded(3.5) == frozenset({"x"}) and led.is_excluded("x", 3.5)
        assert led.reputation_of("x", 3.5) == EXCLUDED_REPUTATION
        until = view.state.excluded_until
        assert not led.is_excluded("x", until) and led.excluded(until) == frozenset()
        assert led.hops_since_admission("x", until) == 0
        assert led.reputation_of("x", until) == pytest.approx(ReputationParams().readmit_reputation, rel=1e-3)
        again = led.record_failure("x", EventKind.TIMEOUT, now=until + 1)
        assert again.excluded and again.state.strikes == 2
        assert [e["kind"] for e in led.events("x", limit=3)] == ["excluded", "timeout", "readmitted"]


def test_verification_failure_excludes_at_once(path):
    with Ledger(path) as led:
        for i in range(50):
            led.record_hop_ok("cheat", now=float(i), flops=GFLOP, measured_s=0.01, advertised_gflops=100.0)
        view = led.record_verification_failure("cheat", now=50.0, detail="circuit 01ab hop 2")
        assert view.excluded and view.state.verification_failures == 1
        assert "cheat" in led.excluded(51.0)


def test_overclaimer_is_planned_at_its_measured_speed_after_three_hops(path):
    with Ledger(path) as led:
        for i in range(3):  # advertises 100 GFLOP/s, runs at 10
            assert led.adjust_peer_spec(spec("liar"), float(i)).gflops == 100.0
            led.record_hop_ok("liar", now=float(i), flops=2 * GFLOP, measured_s=0.2, advertised_gflops=100.0)
        adjusted = led.adjust_peer_spec(spec("liar"), 3.0)
        assert adjusted.gflops == pytest.approx(10.0) and led.measured_gflops("liar") == pytest.approx(10.0)
        for i in range(3):
            led.record_hop_ok("honest", now=float(i), flops=2 * GFLOP, measured_s=0.02, advertised_gflops=100.0)
        assert adjusted.reputation < led.adjust_peer_spec(spec("honest"), 3.0).reputation
        assert led.peer("liar", 3.0).state.slow_hops == 1  # flagged from the third hop on
        assert dict(adjusted.gflops_by_class) == {}  # no per-class breakdown was reported
        assert led.adjust_peer_spec(spec("stranger"), 3.0).gflops == 100.0


def test_thousand_honest_hops_with_realistic_jitter_exclude_no_one(path):
    """Zero false exclusions: 5 honest peers, 200 hops each, lognormal jitter, 1% 5x stalls,
    deadlines from hop_deadline_s, 10% spot checks on fp32-vs-fp64 honest outputs."""
    rng = random.Random(7)
    nrng = np.random.default_rng(7)
    policy, secret = VerificationPolicy(), b"k" * 32
    peers = {f"honest{i}": 20.0 * (i + 1) for i in range(5)}
    truth = nrng.standard_normal(256)
    now = 1000.0
    with Ledger(path) as led:
        for n in range(1000):
            peer = f"honest{n % 5}"
            true_speed, flops = peers[peer], rng.randrange(1, 20) * GFLOP
            now += rng.expovariate(5.0)
            jitter = math.exp(rng.gauss(0, 0.3)) * (5.0 if rng.random() < 0.01 else 1.0)
            measured = flops / (true_speed * 1e9) * jitter
            predicted = flops / (led.adjust_peer_spec(spec(peer, true_speed), now).gflops * 1e9)
            assert measured < hop_deadline_s(predicted, slack=8.0)  # honest: within deadline
            if should_check(policy, secret=secret, circuit_id=n.to_bytes(16, "big"), hop_index=0,
                            hops_since_admission=led.hops_since_admission(peer, now)):
                honest = (truth.astype(np.float32) * (1 + nrng.uniform(-1e-6, 1e-6, 256))).astype(np.float32)
                decision = settle([Execution(peer, honest), Execution("checker", truth)], policy)
                assert isinstance(decision, Verdict) and decision.penalised == ()
            view = led.record_hop_ok(peer, now=now, flops=flops, measured_s=measured, advertised_gflops=true_speed)
            assert not view.excluded
        assert led.excluded(now) == frozenset()
        assert not [e for e in led.events(limit=2000) if e["kind"] == "excluded"]
        assert all(v.reputation > 0.9 for v in led.peers(now))


def test_receipts_give_bilateral_credit_once(path):
    def make(cid: int, hop: Identity, requester: Identity, flops: int):
        return sign_receipt(Receipt.make(circuit_id=bytes([cid]) * 16, hop_peer_id=hop.peer_id,
                                         requester_peer_id=requester.peer_id, model_id="m", start=0, stop=3,
                                         flops=flops, measured_s=0.5, issued_at=1.0), requester)

    earned, spent = make(1, ME, PEER, 5 * GFLOP), make(2, PEER, ME, 8 * GFLOP)
    with Ledger(path) as led:
        led.record_receipt_earned(earned.blob, self_peer_id=ME.peer_id, now=1.0)
        led.record_receipt_earned(earned.blob, self_peer_id=ME.peer_id, now=1.5)  # replay: counted once
        led.record_receipt_spent(spent.blob, self_peer_id=ME.peer_id, now=2.0)
        assert led.credit_of(PEER.peer_id) == pytest.approx(8.0 - 5.0)
        assert led.credit_of("stranger") == 0.0
        view = led.peer(PEER.peer_id, 2.0)
        assert (view.earned_gflop, view.spent_gflop) == (5.0, 8.0)
        assert led.totals()["receipts"] == 2
        with pytest.raises(RecordError):  # made out to PEER, not to me
            led.record_receipt_earned(spent.blob, self_peer_id=ME.peer_id, now=3.0)
        with pytest.raises(LedgerError):  # I did not sign this one
            led.record_receipt_spent(earned.blob, self_peer_id=ME.peer_id, now=3.0)
        tampered = bytearray(earned.blob)
        tampered[-1] ^= 1
        with pytest.raises(RecordError):
            led.record_receipt_earned(bytes(tampered), self_peer_id=ME.peer_id, now=3.0)
        assert led.totals()["receipts"] == 2 and led.credit_of(PEER.peer_id) == pytest.approx(3.0)


def test_a_failed_event_leaves_no_trace(path):
    with Ledger(path) as led:
        led.record_hop_ok("a", now=1.0, flops=GFLOP, measured_s=0.1, advertised_gflops=10.0)
        with pytest.raises(LedgerError, match="bad hop timing"):
            led.record_hop_ok("a", now=2.0, flops=GFLOP, measured_s=-1.0, advertised_gflops=10.0)
        with pytest.raises(LedgerError, match="peer id"):
            led.record_failure("", EventKind.FAILURE, now=2.0)
        with pytest.raises(LedgerError, match="record_hop_ok"):
            led.record_failure("a", EventKind.HOP_OK, now=2.0)
        assert led.peer("a", 2.0).state.hops_ok == 1 and led.totals()["events"] == 1


def test_a_second_connection_sees_committed_events(path):
    with Ledger(path) as writer, Ledger(path) as reader:
        writer.record_failure("a", EventKind.TIMEOUT, now=1.0)
        assert reader.peer("a", 1.0).state.timeouts == 1


def test_garbage_file_is_a_clear_ledger_error(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(LedgerError, match="unreadable or corrupt"):
        Ledger(path)


def test_corrupted_pages_are_detected(path):
    with Ledger(path) as led:
        for i in range(300):
            led.record_failure(f"peer{i}", EventKind.REFUSED, now=float(i), detail="x" * 200)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data) - 4096, 4096):  # scribble over every page but the header
        data[offset + 100: offset + 600] = b"\xa5" * 500
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="corrupt"):
        Ledger(path)


def test_foreign_and_newer_databases_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerError, match="not a p2pinfer ledger"):
        Ledger(foreign)
    newer = tmp_path / "newer.sqlite3"
    Ledger(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerError, match="newer"):
        Ledger(newer)
    with pytest.raises(LedgerError, match="synchronous"):
        Ledger(tmp_path / "x.sqlite3", synchronous="OFF")


def test_snapshot_keeps_per_class_speeds_consistent_with_core(path):
    with Ledger(path) as led:
        for i in range(3):
            led.record_hop_ok("c", now=float(i), flops=4 * GFLOP, measured_s=0.4, advertised_gflops=100.0,
                              flops_by_class={"conv": 4 * GFLOP}, advertised_by_class={"conv": 100.0})
        adjusted = led.adjust_peer_spec(PeerSpec(peer_id="c", gflops=100.0, mem_bytes=1, up_mbps=1.0, down_mbps=1.0,
                                                 latency_ms=0.0, gflops_by_class={"conv": 100.0}), 3.0)
        assert adjusted.gflops_by_class["conv"] == pytest.approx(10.0)
        assert effective_gflops.__module__ == "p2pinfer.core.speed"


def test_event_log_is_bounded_but_peer_rows_are_kept(path):
    with Ledger(path) as led:
        for i in range(30):
            led.record_failure(f"p{i % 3}", EventKind.REFUSED, now=float(i))
    with Ledger(path, max_events=10) as led:
        assert led.totals()["events"] == 10 and led.events(limit=1)[0]["at"] == 29.0
        assert sum(v.state.refusals for v in led.peers(30.0)) == 30
