"""`p2pinfer node start` and `p2pinfer peers` as real OS processes on loopback.

(The two error-path checks at the end call the CLI's `main` in-process: every OS process pays
~5 s of imports on this machine, and argument/config errors need no network.)"""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from p2pinfer.cli import main
from tests.conftest import wait_until
from tests.system.cli_nodes import NodeProcesses, cli, write_config

pytestmark = pytest.mark.system


@pytest.fixture
def nodes() -> Iterator[NodeProcesses]:
    procs = NodeProcesses()
    try:
        yield procs
    finally:
        procs.close()


def _peers_json(addr: str, timeout: float = 5.0) -> list[dict]:
    done = subprocess.run(cli("peers", "--bootstrap", addr, "--json", "--timeout", str(timeout)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_three_cli_nodes_are_listed_by_peers_and_stop_on_sigterm(tmp_path: Path, nodes: NodeProcesses) -> None:
    # node a runs the real compute calibration (cached in its data dir); b and c use an override
    a = nodes.start(write_config(tmp_path / "a.toml", name="a", gflops=None), tmp_path / "a").wait_ready()
    b = nodes.start(write_config(tmp_path / "b.toml", name="b"), tmp_path / "b", bootstrap=[a.addr])
    c = nodes.start(write_config(tmp_path / "c.toml", name="c"), tmp_path / "c", bootstrap=[a.addr])
    b.wait_ready(), c.wait_ready()
    for node in (a, b, c):
        assert node.addr.endswith(f"/p2p/{node.peer_id}") and node.addr.startswith("/ip4/127.0.0.1/tcp/")
    assert (tmp_path / "a" / "calibration.json").is_file()

    ids = {a.peer_id, b.peer_id, c.peer_id}
    started = time.monotonic()
    listed = wait_until(lambda: (lambda got: got if {p["peer_id"] for p in got} == ids else None)(_peers_json(a.addr)),
                        timeout=15, interval=0.2, what="peers --json to list all 3 nodes")
    assert time.monotonic() - started < 15
    for entry in listed:
        assert entry["verified"] is True
        for field in ("peer_id", "addrs", "gflops", "mem_bytes", "up_mbps", "down_mbps", "latency_ms", "models", "expires"):
            assert field in entry
        assert entry["addrs"][0].endswith("/p2p/" + entry["peer_id"])
        assert (entry["up_mbps"], entry["down_mbps"], entry["latency_ms"], entry["mem_bytes"]) == (50.0, 80.0, 3.0, 2**30)
        assert entry["expires"] > time.time()
    by_id = {e["peer_id"]: e for e in listed}
    assert by_id[b.peer_id]["gflops"] == 5.0 and by_id[a.peer_id]["gflops"] > 0

    for node in (a, b, c):
        t0 = time.monotonic()
        assert node.terminate(timeout=10) == 0
        assert time.monotonic() - t0 < 5, "SIGTERM should stop a node within a few seconds"
        assert node.said("stopped") == [""]

    # the identity persists: same key file (0600), same peer id after a restart
    assert stat.S_IMODE((tmp_path / "a" / "identity.key").stat().st_mode) == 0o600
    again = nodes.start(tmp_path / "a.toml", tmp_path / "a").wait_ready()
    assert again.peer_id == a.peer_id and again.addr.endswith(f"/p2p/{a.peer_id}")
    assert again.terminate() == 0


def test_peers_without_bootstrap_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["peers", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0 and "--bootstrap" in err


def test_node_start_with_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nlisten = ["not-a-multiaddr"]\n')
    assert main(["node", "start", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    assert "node.listen" in capsys.readouterr().err
