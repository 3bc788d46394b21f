"""`p2pinfer plan` end to end in-process: JSON contract, table, plot, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pinfer.cli import main
from p2pinfer.cli.plan_cmd import plan_command
from p2pinfer.core.plan_inputs import profile_from_json, snapshot_from_json

PEERS = {
    "requester": {"up_mbps": 100, "down_mbps": 300, "latency_ms": 10},
    "peers": [
        {"id": "gpu-box", "gflops": 8000, "mem_bytes": 8e7, "up_mbps": 500, "down_mbps": 500, "latency_ms": 5},
        {"id": "laptop", "gflops": 200, "mem_bytes": 200_000_000, "up_mbps": 100, "down_mbps": 200, "latency_ms": 10,
         "holds": ["toy"]},
        {"id": "pi", "gflops": 10, "mem_bytes": 50_000_000, "up_mbps": 20, "down_mbps": 50, "latency_ms": 30,
         "reputation": 0.9},
        {"id": "shady", "gflops": 9000, "mem_bytes": 4_000_000_000, "up_mbps": 900, "down_mbps": 900,
         "latency_ms": 1, "reputation": 0.1},
    ],
}
PROFILE = {"name": "toy", "model_id": "toy-id", "input_bytes": 1024, "layers": [
    {"kind": "block", "flops": 7_000_000_000, "param_bytes": 28_000_000, "out_bytes": 524288,
     "flops_by_class": {"linear": 5_600_000_000}, "weights_hash": f"h{i}"} for i in range(8)]}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    peers, profile = tmp_path / "peers.json", tmp_path / "profile.json"
    peers.write_text(json.dumps(PEERS))
    profile.write_text(json.dumps(PROFILE))
    return peers, profile


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_json_contract(files, capsys, objective: str) -> None:
    peers, profile = files
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--objective", objective, "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["objective"] == objective
    for key in ("predicted_latency_s", "bottleneck_s", "throughput_rps"):
        assert isinstance(doc[key], float) and doc[key] > 0
    layers = [h["layers"] for h in doc["hops"]]
    assert layers[0][0] == 0 and layers[-1][1] == 8
    assert all(a[1] == b[0] for a, b in zip(layers, layers[1:]))
    assert all({"peer", "compute_s", "transfer_in_s"} <= set(h) for h in doc["hops"])
    assert "shady" not in {h["peer"] for h in doc["hops"]} and doc["excluded_peers"] == ["shady"]
    assert doc["optimal"] is True
    assert set(doc["baselines"]) == {"single-peer", "even-split", "memory-proportional", "greedy-fastest"}
    assert doc == plan_command(profile_from_json(PROFILE), snapshot_from_json(PEERS), objective)


def test_table_and_plot(files, capsys, tmp_path: Path) -> None:
    peers, profile = files
    png = tmp_path / "plan.png"
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "laptop" in out and "proven optimal" in out and "best baseline" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_frame_costs_in_the_peers_file_are_priced(files, capsys) -> None:
    peers, profile = files
    data = json.loads(json.dumps(PEERS))
    for p in data["peers"]:
        p.update(frame_ms=5.0, frame_ms_per_mib=20.0)
    peers.write_text(json.dumps(data))
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert all(h["frame_s"] >= 0.005 for h in hops)


def test_a_cpu_quota_in_the_peers_file_shortens_predicted_latency(files, capsys) -> None:
    peers, profile = files
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    data = json.loads(json.dumps(PEERS))
    for p in data["peers"]:
        p.update(cpu_quota_ms=2.0, cpu_period_ms=10.0)
    peers.write_text(json.dumps(data))
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--json"]) == 0
    quota = json.loads(capsys.readouterr().out)
    assert all(h["lone_saving_s"] > 0 for h in quota["hops"])
    assert quota["predicted_latency_s"] < plain["predicted_latency_s"]


def test_amortize_zero_means_weights_held(files, capsys) -> None:
    peers, profile = files
    main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--json", "--amortize", "0"])
    assert all(h["weight_fetch_s"] == 0 for h in json.loads(capsys.readouterr().out)["hops"])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("requester"), "missing 'requester'"),
    (lambda d: d["peers"][1].pop("gflops"), "peers[1] is missing 'gflops'"),
    (lambda d: d["peers"][0].update(gflops=-3), "peers[0].gflops must be > 0"),
    (lambda d: d["peers"][0].update(mem_bytes="lots"), "peers[0].mem_bytes must be an integer"),
    (lambda d: d["peers"][2].update(reputation=1.5), r"peers[2].reputation must be in (0, 1]"),
    (lambda d: d["peers"][0].update(gflop=3), "peers[0] has unknown field 'gflop'"),
    (lambda d: d["peers"][1].update(id="gpu-box"), "duplicate peer id 'gpu-box'"),
    (lambda d: d.update(peers={}), "peers must be a list"),
    (lambda d: d["requester"].update(up_mbps=0), "requester.up_mbps must be > 0"),
    (lambda d: d["peers"][0].update(gflops_by_kind={"bottleneck": 0}), "peers[0].gflops_by_kind.bottleneck must be a finite number > 0"),
    (lambda d: d["peers"][0].update(gflops_by_kind={"Conv Layer": 2.0}), "peers[0].gflops_by_kind: bad layer kind name"),
    (lambda d: d["peers"][0].update(gflops_by_kind=[2.0]), "peers[0].gflops_by_kind must be a map of layer kind"),
    (lambda d: d["peers"][0].update(frame_ms=-1.0), "peers[0].frame_ms must be >= 0"),
    (lambda d: d["peers"][1].update(frame_ms_per_mib="fast"), "peers[1].frame_ms_per_mib must be a number"),
    (lambda d: d["peers"][0].update(cpu_quota_ms=5.0), "peers[0]: cpu_quota_ms and cpu_period_ms must come together"),
    (lambda d: d["peers"][0].update(cpu_quota_ms=30.0, cpu_period_ms=25.0), "0 < cpu_quota_ms < cpu_period_ms"),
])
def test_bad_peers_file_is_one_line_error(files, capsys, mutate, message: str) -> None:
    peers, profile = files
    data = json.loads(json.dumps(PEERS))
    mutate(data)
    peers.write_text(json.dumps(data))
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and message in err and str(peers) in err


def test_unreadable_and_invalid_json(files, capsys, tmp_path: Path) -> None:
    peers, profile = files
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(tmp_path / "nope.json")]) == 2
    assert "cannot read peers file" in capsys.readouterr().err
    peers.write_text("{not json")
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_infeasible_snapshot_names_cause(files, capsys) -> None:
    peers, profile = files
    data = json.loads(json.dumps(PEERS))
    for p in data["peers"]:
        p["mem_bytes"] = 1_000_000
    peers.write_text(json.dumps(data))
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers)]) == 2
    assert "layer 0 needs 28.0 MB but the largest peer offers 1.0 MB" in capsys.readouterr().err


def test_missing_sources_and_bootstrap_are_clear(files, capsys) -> None:
    peers, profile = files
    assert main(["plan", "--profile-file", str(profile)]) == 2
    assert "--peers-file" in capsys.readouterr().err
    assert main(["plan", "--peers-file", str(peers)]) == 2
    assert "give MODEL" in capsys.readouterr().err
    assert main(["plan", "--profile-file", str(profile), "--bootstrap", "/ip4/127.0.0.1/tcp/1"]) == 2
    assert "--bootstrap" in capsys.readouterr().err
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--amortize", "-1"]) == 2
    assert "--amortize" in capsys.readouterr().err


def test_zoo_model_is_resolved_through_the_models_package(files, capsys, tmp_path: Path) -> None:
    peers, _ = files
    assert main(["plan", "mlp", "--peers-file", str(peers), "--data-dir", str(tmp_path / "store"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hops"][0]["layers"][0] == 0 and doc["hops"][-1]["layers"][1] > 0
    assert main(["plan", "no-such-model", "--peers-file", str(peers), "--data-dir", str(tmp_path / "store")]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_chains_adds_a_replicated_plan(files, capsys) -> None:
    """--chains: disjoint chains next to the single chain; the single-chain keys keep their meaning."""
    peers, profile = files
    args = ["plan", "--profile-file", str(profile), "--peers-file", str(peers), "--objective", "throughput"]
    assert main([*args, "--json", "--chains", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    single = plan_command(profile_from_json(PROFILE), snapshot_from_json(PEERS), "throughput")
    assert {k: v for k, v in doc.items() if k != "replicated"} == single
    rep = doc["replicated"]
    used = [h["peer"] for chain in rep["chains"] for h in chain["hops"]]
    assert len(used) == len(set(used)) and "shady" not in used  # disjoint chains, never an excluded peer
    assert rep["throughput_rps"] >= single["throughput_rps"] * (1 - 1e-9)
    assert rep["throughput_rps"] <= rep["upper_bound_rps"] * (1 + 1e-9)
    assert abs(sum(c["rate_rps"] for c in rep["chains"]) - rep["throughput_rps"]) <= 1e-6 * rep["throughput_rps"]
    assert main([*args, "--chains", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)["replicated"]
    assert len(one["chains"]) == 1
    assert main([*args, "--chains", "0"]) == 0
    assert "disjoint chain(s) served at once" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--chains", "-1"], "--chains must be >= 0"),
    (["--chains", "2", "--objective", "latency"], "--chains needs --objective throughput"),
])
def test_bad_chains_is_one_line_error(files, capsys, extra: list[str], message: str) -> None:
    peers, profile = files
    assert main(["plan", "--profile-file", str(profile), "--peers-file", str(peers), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
