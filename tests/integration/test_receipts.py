"""Receipts on the wire (/p2pinfer/receipt/1.0.0): after a real run through an in-process swarm
the requester gives each hop its signed receipt; the hop's own durable ledger then shows the
work as earned from that requester (and `p2pinfer ledger --data-dir` shows it). Forged, other
node's, malformed and oversized receipts credit nothing and are counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cbor2
import numpy as np
import pytest
import trio

from p2pinfer.cli import main
from p2pinfer.client import Requester
from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import NetworkError, WireError
from p2pinfer.fault import LedgerHooks
from p2pinfer.models import profiling, zoo
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_io import close_stream, open_stream
from p2pinfer.net.framing import write_frame
from p2pinfer.net.receipts_protocol import RECEIPT_PROTOCOL, send_receipt
from p2pinfer.swarm import LocalSwarm

from tests.conftest import async_wait_until
from tests.integration.run_swarm import FULL_SPEED, TEST_REQUESTER, memories_for_hops, node_config

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
GFLOP = 10**9


def receipt_for(requester: Identity, hop_peer_id: str, start: int, stop: int, *, flops: int = 3 * GFLOP,
                circuit: bytes | None = None) -> bytes:
    r = Receipt.make(circuit_id=circuit or os.urandom(16), hop_peer_id=hop_peer_id, requester_peer_id=requester.peer_id,
                     model_id="m" * 64, start=start, stop=stop, flops=flops, measured_s=0.01, issued_at=1.7e9)
    return sign_receipt(r, requester).blob


def forged(blob: bytes) -> bytes:
    """The same receipt with one bit of its signature flipped (still canonical CBOR)."""
    body = cbor2.loads(blob)
    body["sig"] = bytes([body["sig"][0] ^ 1]) + body["sig"][1:]
    return cbor2.dumps(body, canonical=True)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    zoo.get_manifest("mlp", store=store)
    return store


async def test_receipts_credit_the_hops_ledgers_after_a_run(tmp_path: Path, store: ModelStore,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    mems = memories_for_hops(profiling.profile(zoo.get_manifest("mlp", store=store), store))
    configs = [node_config(f"n{i}", mem_bytes=m) for i, m in enumerate(mems)]
    async with LocalSwarm(configs, store=store, options=FULL_SPEED, data_dir=tmp_path / "nodes") as swarm:
        async with Requester(swarm.bootstrap_addrs, store=store, config=TEST_REQUESTER) as requester:
            result = await requester.infer("mlp", X)
            assert len(result.hops) >= 2
            by_id = {m.peer_id: m for m in swarm.members}
            for hop in result.hops:
                member = by_id[hop.peer_id]
                blob = receipt_for(requester.identity, hop.peer_id, hop.start, hop.stop)
                with trio.fail_after(10):
                    assert await send_receipt(requester.host, hop.peer_id, member.node.listen_addrs, blob, timeout=5)
                    assert await send_receipt(requester.host, hop.peer_id, member.node.listen_addrs, blob, timeout=5)
            me = requester.identity.peer_id
            for hop in result.hops:
                member = by_id[hop.peer_id]
                assert member.hop.receipts is not None and member.hop.receipts.counters.accepted == 2
                view = member.ledger.peer(me, now=1.7e9)
                assert view is not None and view.earned_gflop == pytest.approx(3.0)  # counted once
                assert member.ledger.credit_of(me) == pytest.approx(-3.0)  # a consumer of this node
            served = by_id[result.hops[0].peer_id]
        # the ledger is durable: after the swarm stopped, the CLI reads it from the member's data dir
        assert served.data_dir == tmp_path / "nodes" / served.name
        assert main(["ledger", "--data-dir", str(served.data_dir), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        (row,) = [p for p in doc["peers"] if p["peer_id"] == me]
        assert row["credit_gflop"] == pytest.approx(-3.0)


async def test_a_requester_delivers_its_receipts_before_it_stops(tmp_path: Path, store: ModelStore) -> None:
    """Receipts go out in the background; a normal exit lets them arrive (a one-shot CLI run
    would otherwise stop before its hops were credited)."""
    mems = memories_for_hops(profiling.profile(zoo.get_manifest("mlp", store=store), store))
    configs = [node_config(f"n{i}", mem_bytes=m) for i, m in enumerate(mems)]
    async with LocalSwarm(configs, store=store, options=FULL_SPEED, data_dir=tmp_path / "nodes") as swarm:
        hooks = LedgerHooks.open(tmp_path / "requester")
        try:
            async with Requester(swarm.bootstrap_addrs, store=store, config=TEST_REQUESTER, hooks=hooks) as requester:
                result = await requester.infer("mlp", X)
                me = requester.identity.peer_id
            by_id = {m.peer_id: m for m in swarm.members}
            for hop in result.hops:  # the requester has stopped; each hop already holds its receipt
                member = by_id[hop.peer_id]
                assert member.hop.receipts.counters.accepted >= 1
                view = member.ledger.peer(me, now=1.7e9)
                assert view is not None and view.earned_gflop > 0
        finally:
            hooks.close()


async def test_bad_receipts_are_rejected_and_counted(tmp_path: Path, store: ModelStore) -> None:
    configs = [node_config("a"), node_config("b")]
    async with LocalSwarm(configs, store=store, options=FULL_SPEED) as swarm:
        async with Requester(swarm.bootstrap_addrs, store=store, config=TEST_REQUESTER) as requester:
            a, b = swarm.member("a"), swarm.member("b")
            send = lambda blob: send_receipt(requester.host, a.peer_id, a.node.listen_addrs, blob, timeout=5)  # noqa: E731
            me = requester.identity
            valid = receipt_for(me, a.peer_id, 0, 2)
            with trio.fail_after(20):
                assert not await send(forged(valid))                          # bad signature
                assert not await send(receipt_for(me, b.peer_id, 0, 2))       # made out to another node
                assert not await send(b"\xffnot cbor")                        # not a receipt
                stranger = Identity.generate()                                # signed by someone who
                other = receipt_for(stranger, a.peer_id, 0, 2)               # is not the sender: still
                assert await send(other)                                      # valid (the signature counts)
                with pytest.raises(WireError):
                    await send(b"x" * 2000)                                   # too big to send at all
                await _send_raw(requester.host, a, b"\x00" * 4096)            # over the frame limit
            counters = a.hop.receipts.counters
            assert counters.accepted == 1 and counters.rejected == 3
            assert dict(counters.reasons) == {"bad-signature": 1, "wrong-hop": 1, "malformed-cbor": 1}
            await async_wait_until(lambda: counters.unreadable >= 1, timeout=10, what="the oversized frame counted")
            assert a.ledger.peer(me.peer_id, now=1.7e9) is None               # nothing credited from us
            assert a.ledger.credit_of(stranger.peer_id) == pytest.approx(-3.0)
            assert b.ledger.peer(me.peer_id, now=1.7e9) is None
            # a node that is gone: a clear NetworkError, bounded
            swarm.kill("b")
            with trio.fail_after(15), pytest.raises(NetworkError):
                while True:
                    await send_receipt(requester.host, b.peer_id, b.node.listen_addrs, receipt_for(me, b.peer_id, 0, 1), timeout=3)
                    await trio.sleep(0.05)


async def _send_raw(host: object, member: object, payload: bytes) -> None:
    stream = await open_stream(host, member.peer_id, RECEIPT_PROTOCOL, timeout=5, addrs=member.node.listen_addrs)
    try:
        await write_frame(stream, payload, max_size=len(payload) + 16, timeout=5)
    except NetworkError:
        pass  # the hop may reset the stream as soon as it sees the length
    finally:
        await close_stream(stream)

