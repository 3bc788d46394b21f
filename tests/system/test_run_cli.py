"""`p2pinfer run` as real OS processes: the embedded swarm (no network flags) prints the JSON
contract; three `p2pinfer node start` processes serve a 3-hop circuit to `run --bootstrap` with
the same output as --local, after one of them was sent garbage on its hop protocol (it logs and
drops it, and keeps serving)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from multiaddr import Multiaddr

from p2pinfer.models import profiling, zoo
from p2pinfer.models.local_run import run_local
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_io import close_stream, open_stream
from p2pinfer.net.framing import write_frame
from p2pinfer.net.hop_protocol import HOP_PROTOCOL
from p2pinfer.net.host import make_host

from tests.conftest import wait_until
from tests.system.cli_nodes import NodeProcesses, cli

pytestmark = pytest.mark.system
TEXT = "peer-to-peer inference on small devices"
CONTRACT = {"model", "output", "latency_ms", "plan", "hops"}


@pytest.fixture
def nodes() -> Iterator[NodeProcesses]:
    procs = NodeProcesses()
    try:
        yield procs
    finally:
        procs.close()


def _run(*args: str, timeout: float = 120) -> tuple[dict, str]:
    done = subprocess.run(cli("run", *args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def _check_contract(doc: dict, model: str) -> None:
    assert CONTRACT <= set(doc) and doc["model"] == model
    assert set(doc["output"]) == {"shape", "dtype", "data"} and doc["latency_ms"] > 0
    assert [h["layers"] for h in doc["plan"]["hops"]] == [h["layers"] for h in doc["hops"]]
    for hop in doc["hops"]:
        assert set(hop) >= {"peer_id", "layers", "predicted_ms", "measured_ms"} and hop["measured_ms"] > 0


def test_run_with_no_network_flags_uses_the_embedded_swarm(tmp_path: Path) -> None:
    started = time.monotonic()
    doc, err = _run("minilm", "--input", TEXT, "--json", "--data-dir", str(tmp_path))  # cold: empty store
    elapsed = time.monotonic() - started
    assert "embedded local swarm" in err and "Failed to open" not in err
    _check_contract(doc, "minilm")
    assert elapsed < 60, f"cold start took {elapsed:.1f}s"
    local = run_local("minilm", TEXT, store=ModelStore(tmp_path)).output["embedding"].numpy().reshape(-1)
    assert np.max(np.abs(np.asarray(doc["output"]["data"], np.float32) - local)) <= 1e-5


def _node_config(path: Path, name: str, mem_bytes: int) -> Path:
    path.write_text("\n".join([
        "[node]", f'name = "{name}"', 'listen = ["/ip4/127.0.0.1/tcp/0"]', "record_ttl_s = 30", "republish_s = 10",
        "[resources]", f"mem_bytes = {mem_bytes}", "gflops = 5.0",
        "[emulation]", "up_mbps = 100.0", "latency_ms = 1.0"]) + "\n")
    return path


async def _send_garbage(addr: str) -> None:
    """Framed junk, an oversized length prefix, and raw bytes, on three hop streams."""
    peer_id = addr.rsplit("/p2p/", 1)[1]
    host = make_host(create_new_key_pair())
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        for payload in (b"\xa1\x00garbage-not-a-frame" * 8, None, b"\xff" * 64):
            stream = await open_stream(host, peer_id, HOP_PROTOCOL, timeout=10, addrs=[addr])
            try:
                if payload is None:
                    await stream.write(b"\xff\xff\xff\xff\x0f")  # varint length of ~4 GiB
                elif payload.startswith(b"\xa1"):
                    await write_frame(stream, payload, max_size=1 << 20, timeout=10)
                else:
                    await stream.write(payload)
            finally:
                await close_stream(stream)


def test_three_node_processes_serve_run_bootstrap_like_local(tmp_path: Path, nodes: NodeProcesses) -> None:
    store = ModelStore(tmp_path / "requester")
    manifest = zoo.get_manifest("mlp", store=store)
    sizes = [layer.param_bytes for layer in profiling.profile(manifest, store).layers]
    mem = sizes[-2] + sizes[-1]  # [0] | [1] | [2, 3]: exactly 3 hops fit, over 3 peers
    assert len(sizes) == 4 and sizes[0] + sizes[1] > mem
    a = nodes.start(_node_config(tmp_path / "a.toml", "a", mem), tmp_path / "a").wait_ready()
    b = nodes.start(_node_config(tmp_path / "b.toml", "b", mem), tmp_path / "b", bootstrap=[a.addr])
    c = nodes.start(_node_config(tmp_path / "c.toml", "c", mem), tmp_path / "c", bootstrap=[a.addr])
    b.wait_ready(), c.wait_ready()

    trio.run(_send_garbage, a.addr)
    wait_until(lambda: any("dropp" in line for line in a.lines), timeout=15, what="node a to log the dropped garbage")
    assert a.proc.poll() is None

    x = tmp_path / "x.npy"
    np.save(x, np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64))
    doc = wait_until(lambda: _run_when_all_known(x, a.addr, store.root), timeout=60, interval=0.5,
                     what="a 3-hop run across the node processes")
    _check_contract(doc, "mlp")
    assert len(doc["hops"]) == 3 and {h["peer_id"] for h in doc["hops"]} == {a.peer_id, b.peer_id, c.peer_id}
    plan_doc = _plan_live(a.addr, store.root)  # `p2pinfer plan --bootstrap` sees the same live swarm
    assert [h["layers"] for h in plan_doc["hops"]] == [h["layers"] for h in doc["hops"]]
    local = run_local("mlp", str(x), store=store).output
    want = next(iter(local.values())).numpy().reshape(-1)
    assert np.max(np.abs(np.asarray(doc["output"]["data"], np.float32) - want)) <= 1e-5


def _plan_live(bootstrap: str, data_dir: Path) -> dict:
    done = subprocess.run(cli("plan", "mlp", "--bootstrap", bootstrap, "--json", "--data-dir", str(data_dir)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _run_when_all_known(x: Path, bootstrap: str, data_dir: Path) -> dict | None:
    """The run's JSON once discovery sees all three nodes (b and c may still be propagating)."""
    done = subprocess.run(cli("run", "mlp", "--input", str(x), "--bootstrap", bootstrap, "--json",
                              "--data-dir", str(data_dir)), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        partial = ("model needs more peers", "no chain", "of memory but all")  # the planner's words for "too few known"
        assert any(words in done.stderr for words in partial), done.stderr[-3000:]
        return None
    return json.loads(done.stdout)
