"""`p2pinfer run ... --swarm DIR` reproduces the fault scenarios from node configs alone: a swarm
directory holding a crashing peer and a corrupting peer still answers every input correctly,
and the requester's ledger in --data-dir (read back by `p2pinfer ledger --json`) shows who failed
and who was excluded. Bad --spot-check / --max-attempts values are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2pinfer.cli import main
from p2pinfer.models.store import ModelStore

from tests.integration.fault_swarm import MLP_MEM, reference


def _node(directory: Path, name: str, gflops: float, adversary: str = "") -> None:
    (directory / f"{name}.toml").write_text("\n".join([
        "[node]", f'name = "{name}"', 'listen = ["/ip4/127.0.0.1/tcp/0"]',
        "[resources]", f"mem_bytes = {MLP_MEM}", f"gflops = {gflops}", "max_concurrent_circuits = 16",
        "[emulation]", "up_mbps = 1000.0", "latency_ms = 0.5", adversary]) + "\n")


def test_run_swarm_dir_with_a_crasher_and_a_corrupter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    swarm = tmp_path / "swarm"
    swarm.mkdir()
    _node(swarm, "crasher", 300.0, "[adversary]\ncrash_after_hops = 3")
    _node(swarm, "corrupter", 400.0, "[adversary]\ncorrupt_probability = 0.3")
    for i in range(5):
        _node(swarm, f"honest{i}", 10.0 + i)
    store = ModelStore(tmp_path / "data")
    xs = np.random.default_rng(7).standard_normal((40, 64)).astype(np.float32)
    np.save(tmp_path / "batch.npy", xs)
    assert main(["run", "mlp", "--input-file", str(tmp_path / "batch.npy"), "--swarm", str(swarm),
                 "--data-dir", str(store.root), "--spot-check", "0.1", "--max-attempts", "5", "--objective", "latency",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = np.stack([np.asarray(o["data"], np.float32).reshape(10) for o in doc["outputs"]])
    assert doc["count"] == 40 and float(np.max(np.abs(got - reference(store, list(xs[:, None, :]))))) <= 1e-5
    assert main(["ledger", "--json", "--data-dir", str(store.root)]) == 0
    ledger = json.loads(capsys.readouterr().out)
    rows = ledger["peers"] if isinstance(ledger, dict) else ledger
    # audits catch the corrupter on its first audited hop, possibly before the requester recorded
    # any completed hop of it (then its row has no advertised speed): find it by its verdict
    caught = [r for r in rows if r["verification_failures"]]
    assert len(caught) == 1 and caught[0]["verification_failures"] == 1 and caught[0]["excluded"]
    honest = [r for r in rows if r["advertised_gflops"] is not None and r["advertised_gflops"] < 100]
    final = {h["peer"] for h in doc["plan"]["hops"]}
    assert final <= {r["peer_id"] for r in honest} and doc["attempts"] >= 2  # neither adversary in the last plan
    assert all(r["hops_ok"] <= 3 for r in rows if r["advertised_gflops"] == 300.0)  # the crasher died after 3
    assert honest and not any(r["excluded"] or r["verification_failures"] for r in honest)


@pytest.mark.parametrize("flag, value, message", [("--spot-check", "1.5", "--spot-check must be a fraction"),
                                                   ("--max-attempts", "0", "--max-attempts must be >= 1")])
def test_bad_fault_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
                                             value: str, message: str) -> None:
    code = main(["run", "mlp", "--input", "x.npy", "--data-dir", str(tmp_path), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("p2pinfer: error: ") and message in err[-1]
