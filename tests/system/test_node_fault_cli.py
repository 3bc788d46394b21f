"""A real `p2pinfer node start` process with `[adversary] crash_after_hops = 1`: it serves one
hop, takes a receipt for it into its ledger, and on the next hop its process exits at once
(exit code 1, its last log line flushed). Its ledger survives the crash: `p2pinfer ledger
--data-dir` still shows the requester's debt afterwards."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import trio

from p2pinfer.cli import main
from p2pinfer.client import Requester
from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.errors import CircuitError, NetworkError
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore
from p2pinfer.net.receipts_protocol import send_receipt

from tests.integration.run_swarm import TEST_REQUESTER
from tests.system.cli_nodes import NodeProcesses, write_config

pytestmark = pytest.mark.system

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
REQUESTER = replace(TEST_REQUESTER, max_attempts=1, circuit=replace(TEST_REQUESTER.circuit, result_timeout_s=3.0))


@pytest.fixture
def nodes() -> Iterator[NodeProcesses]:
    procs = NodeProcesses()
    try:
        yield procs
    finally:
        procs.close()


async def test_crashing_cli_node_exits_and_keeps_its_ledger(tmp_path: Path, nodes: NodeProcesses,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "crasher.toml", name="crasher")
    config.write_text(config.read_text() + "\n[adversary]\ncrash_after_hops = 1\n")
    data_dir = tmp_path / "node"
    node = nodes.start(config, data_dir)
    await trio.to_thread.run_sync(node.wait_ready)
    assert node.said("ledger") == [str(data_dir / "ledger.sqlite3")]
    store = ModelStore(tmp_path / "store")
    zoo.get_manifest("mlp", store=store)
    async with Requester([node.addr], store=store, config=REQUESTER) as requester:
        with trio.fail_after(60):
            result = await requester.infer("mlp", X)
            (hop,) = result.hops
            receipt = Receipt.make(circuit_id=os.urandom(16), hop_peer_id=node.peer_id,
                                   requester_peer_id=requester.identity.peer_id, model_id=result.model_id,
                                   start=hop.start, stop=hop.stop, flops=2 * 10**9, measured_s=0.01, issued_at=1.7e9)
            blob = sign_receipt(receipt, requester.identity).blob
            assert await send_receipt(requester.host, node.peer_id, [node.addr], blob, timeout=5)
            with pytest.raises((NetworkError, CircuitError)):
                await requester.infer("mlp", X)
    code = await trio.to_thread.run_sync(lambda: node.proc.wait(timeout=20))
    node.kill()  # joins the stderr reader
    assert code == 1
    assert any("adversary: crashing on hop 2" in line for line in node.lines)  # flushed before dying
    assert not node.said("stopped")  # no orderly shutdown
    assert main(["ledger", "--data-dir", str(data_dir), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["peers"]
    assert row["peer_id"] == requester.identity.peer_id and row["credit_gflop"] == pytest.approx(-2.0)
