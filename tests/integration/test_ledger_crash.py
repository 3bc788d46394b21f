"""kill -9 during ledger writes: every acknowledged event survives, the file stays intact.

A child OS process writes ledger events in a tight loop and prints each event's sequence number
only after its transaction committed. The parent SIGKILLs it mid-writes (three times, restarting
on the same file), then reopens the ledger and checks: every acknowledged event is present,
`PRAGMA integrity_check` is ok, and every peer's counters equal its logged events (no
half-applied transaction).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from p2pinfer.ledger import Ledger
from tests.conftest import wait_until

CHILD = r"""
import sys
from p2pinfer.ledger import Ledger
from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.crypto.identity import Identity

me, other = Identity.from_seed(b"m" * 32), Identity.from_seed(b"o" * 32)
ledger = Ledger(sys.argv[1], synchronous=sys.argv[3])
n = int(sys.argv[2])
while True:
    peer = "peer%d" % (n % 5)
    if n % 3 == 0:
        ledger.record_failure(peer, "refused", now=float(n), detail="seq%d" % n)
    elif n % 3 == 1:
        ledger.record_hop_ok(peer, now=float(n), flops=10**9, measured_s=0.01, advertised_gflops=100.0)
    else:
        r = Receipt.make(circuit_id=n.to_bytes(16, "big"), hop_peer_id=other.peer_id, requester_peer_id=me.peer_id,
                         model_id="m", start=0, stop=1, flops=10**9, measured_s=0.01, issued_at=float(n))
        ledger.record_receipt_spent(sign_receipt(r, me).blob, self_peer_id=me.peer_id, now=float(n))
    print(n, flush=True)
    n += 1
"""


def _run_and_kill(path: Path, start: int, acks_wanted: int, synchronous: str) -> list[int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(start), synchronous],
                            stdout=subprocess.PIPE, env=env, text=True)
    acked: list[int] = []

    def reader() -> None:
        for line in proc.stdout:
            if line.endswith("\n"):
                acked.append(int(line))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= acks_wanted or proc.poll() is not None, timeout=30, what="child commits")
        assert proc.poll() is None, "child ledger writer died on its own"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        thread.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return acked


def _check(path: Path, acked: list[int]) -> None:
    with Ledger(path) as ledger:
        assert ledger.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    refused = {int(d[len('{"reason": "seq'):-2]) for (d,) in conn.execute("SELECT detail FROM events WHERE kind='refused'")}
    ok_at = {int(at) for (at,) in conn.execute("SELECT at FROM events WHERE kind='hop_ok'")}
    receipts = {int.from_bytes(c, "big") for (c,) in conn.execute("SELECT circuit_id FROM receipts")}
    for n in acked:
        present = {0: refused, 1: ok_at, 2: receipts}[n % 3]
        assert n in present, f"acknowledged event {n} was lost"
    for peer, hops_ok, refusals, spent in conn.execute("SELECT peer_id, hops_ok, refusals, spent_flops FROM peers"):
        logged = dict(conn.execute("SELECT kind, count(*) FROM events WHERE peer_id=? GROUP BY kind", (peer,)).fetchall())
        assert hops_ok == logged.get("hop_ok", 0) and refusals == logged.get("refused", 0)
        assert spent == 10**9 * logged.get("receipt_spent", 0)
    conn.close()


def test_sigkill_mid_writes_loses_no_acknowledged_event(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    acked: list[int] = []
    start = 0
    for sync in ("NORMAL", "NORMAL", "FULL"):
        round_acked = _run_and_kill(path, start, 150, sync)
        assert len(round_acked) >= 150
        acked += round_acked
        _check(path, acked)
        start = round_acked[-1] + 1000  # fresh sequence numbers for the next round
