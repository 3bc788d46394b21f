"""Node config loading: every shipped file, every kind of bad value, CLI overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2pinfer.config import (
    DEFAULT_LINK,
    NodeConfig,
    config_from_dict,
    load_node_config,
    local_swarm_config_paths,
    parse_size,
    resolve_resources,
    with_overrides,
)
from p2pinfer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted((ROOT / "node_configs").rglob("*.toml"))
PEER = "12D3KooWDJVF5iAJgqZ9eLGusksSwkGabnDgoy8GsNeiCGUHHa51"


def test_the_repo_ships_the_device_classes() -> None:
    names = {p.stem for p in ALL_CONFIGS if p.parent.name == "node_configs"}
    assert {"raspberry-pi-4", "jetson-nano", "laptop", "workstation-gpu", "edge-gateway"} <= names
    assert 4 <= len(local_swarm_config_paths()) <= 6


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_node_config(path)
    assert config.source == path
    assert config.resources.mem_bytes > 0 and config.node.listen
    assert config.node.republish_s < config.node.record_ttl_s
    if path.parent.name == "local":
        assert config.node.listen == ("/ip4/127.0.0.1/tcp/0",)
        assert config.emulation.active and not config.adversary.active
    if path.parent.name == "adversarial":
        assert config.adversary.active


def test_local_swarm_is_heterogeneous() -> None:
    configs = [load_node_config(p) for p in local_swarm_config_paths()]
    slowdowns = {c.emulation.compute_slowdown for c in configs}
    ups = {c.emulation.up_mbps for c in configs}
    assert len(slowdowns) == len(configs) and max(slowdowns) / min(slowdowns) >= 4
    assert max(ups) / min(ups) >= 10  # type: ignore[operator]
    assert len({c.node.name for c in configs}) == len(configs)


def test_local_swarm_advertises_valid_records() -> None:
    """Config -> advertised numbers -> a signed record that passes verification and the CDDL."""
    import pycddl

    from p2pinfer.core.records import CapabilityRecord, decode_verified, encode_signed
    from p2pinfer.crypto.identity import Identity

    schema = pycddl.Schema((ROOT / "protocol" / "capability.cddl").read_text())
    speeds = []
    for path in local_swarm_config_paths():
        res = resolve_resources(load_node_config(path), measured_gflops=30.0,
                                measured_by_class={"linear": 40.0, "conv": 30.0, "attention": 20.0})
        me = Identity.generate()
        record = CapabilityRecord(peer_id=me.peer_id, seq=1, expires_at=1000.0, gflops=res.gflops,
                                  gflops_by_class=res.gflops_by_class, mem_bytes=res.mem_bytes,
                                  up_mbps=res.up_mbps, down_mbps=res.down_mbps, latency_ms=res.latency_ms,
                                  addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{me.peer_id}",))
        blob = encode_signed(record, me)
        schema.validate_cbor(blob)
        assert decode_verified(blob, now=999.0) == record
        speeds.append(res.gflops)
    assert max(speeds) / min(speeds) == 8.0  # slowdowns 1x .. 8x


def test_defaults_and_units(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('[node]\nname = "a"\ndata_dir = "state"\n[resources]\nmem_bytes = "1.5 GiB"\n')
    config = load_node_config(path)
    assert config.node.swarm == "default" and config.node.mdns is False
    assert config.node.data_dir == tmp_path.resolve() / "state"  # relative to the file
    assert config.resources.mem_bytes == 3 * 2**29
    assert config.emulation.compute_slowdown == 1.0 and not config.emulation.active
    assert load_node_config(_write(tmp_path, "")) == NodeConfig(source=tmp_path / "c.toml")


@pytest.mark.parametrize(("text", "expected"), [(0, 0), (1024, 1024), ("512 MiB", 512 * 2**20),
                                               ("2GB", 2 * 10**9), ("1kib", 1024), ("10 B", 10)])
def test_parse_size(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", [-1, 1.5, "2 GiBs", "lots", "", True, None, "-1 MiB"])
def test_parse_size_rejects(text: Any) -> None:
    assert parse_size(text) is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


# (toml text, dotted key the error must name, words of the expected type it must contain)
BAD: list[tuple[str, str, str]] = [
    ('[node]\nnmae = "x"', "node.nmae", "unknown key"),
    ('[nodes]\nname = "x"', "nodes", "unknown section"),
    ("node = 5", "node", "a table"),
    ("[node]\nname = 5", "node.name", "a name"),
    ('[node]\nname = "has space"', "node.name", "a name"),
    ('[node]\nswarm = ""', "node.swarm", "a name"),
    ('[node]\nlisten = "/ip4/127.0.0.1/tcp/0"', "node.listen", "a list of multiaddrs"),
    ('[node]\nlisten = ["/ip4/300.0.0.1/tcp/1"]', "node.listen", "a list of multiaddrs"),
    ("[node]\nlisten = []", "node.listen", "at least one multiaddr"),
    ('[node]\nbootstrap = ["/ip4/1.2.3.4/tcp/4001"]', "node.bootstrap", "/p2p/<peer id>"),
    ('[node]\nmdns = "yes"', "node.mdns", "true or false"),
    ("[node]\ndata_dir = 3", "node.data_dir", "a directory path"),
    ("[node]\nrecord_ttl_s = 0", "node.record_ttl_s", "a number >= 1"),
    ("[node]\nrecord_ttl_s = 100000", "node.record_ttl_s", "<= 86400"),
    ('[node]\nrecord_ttl_s = "300"', "node.record_ttl_s", "a number"),
    ("[node]\nrepublish_s = 0", "node.republish_s", "a number > 0"),
    ("[node]\nrecord_ttl_s = 60\nrepublish_s = 60", "node.republish_s", "< record_ttl_s"),
    ("[node]\nrecord_ttl_s = nan", "node.record_ttl_s", "a number"),
    ("[resources]\nmem_bytes = -5", "resources.mem_bytes", "a byte count"),
    ('[resources]\nmem_bytes = "4 gigs"', "resources.mem_bytes", "a byte count"),
    ("[resources]\ncompute_threads = 0", "resources.compute_threads", "an integer >= 1"),
    ("[resources]\ncompute_threads = 2.0", "resources.compute_threads", "an integer"),
    ("[resources]\ncompute_threads = true", "resources.compute_threads", "an integer"),
    ("[resources]\nmax_concurrent_circuits = 0", "resources.max_concurrent_circuits", "an integer >= 1"),
    ("[resources]\nup_mbps = 0", "resources.up_mbps", "a number > 0"),
    ("[resources]\nlatency_ms = -1", "resources.latency_ms", "a number >= 0"),
    ("[resources]\ngflops = inf", "resources.gflops", "a number > 0"),
    ("[resources]\ngpu = true", "resources.gpu", "unknown key"),
    ("[emulation]\ncompute_slowdown = 0.5", "emulation.compute_slowdown", "a number >= 1"),
    ("[emulation]\ndown_mbps = -3", "emulation.down_mbps", "a number > 0"),
    ("[emulation]\nlatency_ms = 1e9", "emulation.latency_ms", "<= 60000"),
    ("[emulation]\njitter_ms = 3", "emulation.jitter_ms", "unknown key"),
    ("[adversary]\ncrash_after_hops = -1", "adversary.crash_after_hops", "an integer >= 0"),
    ("[adversary]\nstall_after_hops = 1.5", "adversary.stall_after_hops", "an integer"),
    ("[adversary]\nstall_seconds = -2", "adversary.stall_seconds", "a number >= 0"),
    ("[adversary]\ncorrupt_probability = 1.5", "adversary.corrupt_probability", "<= 1"),
    ("[adversary]\noverclaim_factor = 0.5", "adversary.overclaim_factor", "a number >= 1"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD, ids=[b[1] + ":" + b[0][-12:] for b in BAD])
def test_bad_values_name_file_key_and_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ") and expected in message, message


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_node_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_node_config(_write(tmp_path, "[node\nname="))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="bin.toml"):
        load_node_config(tmp_path / "bin.toml")


def test_cli_overrides(tmp_path: Path) -> None:
    base = config_from_dict({"node": {"bootstrap": [f"/ip4/10.0.0.1/tcp/1/p2p/{PEER}"]}})
    other = f"/ip4/10.0.0.2/tcp/1/p2p/{PEER}"
    merged = with_overrides(base, listen=["/ip4/0.0.0.0/tcp/5000"], bootstrap=[other, other],
                            data_dir=tmp_path)
    assert merged.node.listen == ("/ip4/0.0.0.0/tcp/5000",)
    assert merged.node.bootstrap == (base.node.bootstrap[0], other)
    assert merged.node.data_dir == tmp_path
    assert with_overrides(base) == base
    with pytest.raises(ConfigError, match="command line: node.bootstrap"):
        with_overrides(base, bootstrap=["/ip4/1.2.3.4/tcp/1"])
    with pytest.raises(ConfigError, match="command line: node.listen"):
        with_overrides(base, listen=["nonsense"])


def test_resolve_resources_precedence() -> None:
    measured = {"linear": 100.0, "conv": 50.0}
    plain = resolve_resources(config_from_dict({}), measured_gflops=80.0, measured_by_class=measured)
    assert (plain.gflops, dict(plain.gflops_by_class)) == (80.0, measured)
    assert (plain.up_mbps, plain.down_mbps, plain.latency_ms) == DEFAULT_LINK
    emulated = config_from_dict({"emulation": {"compute_slowdown": 4, "up_mbps": 20, "latency_ms": 9},
                                 "resources": {"up_mbps": 30.0}})
    r = resolve_resources(emulated, measured_gflops=80.0, measured_by_class=measured,
                          measured_link=(500.0, 600.0, 1.0))
    assert r.gflops == 20.0 and r.gflops_by_class["conv"] == 12.5
    assert (r.up_mbps, r.down_mbps, r.latency_ms) == (30.0, 600.0, 9.0)
    liar = config_from_dict({"adversary": {"overclaim_factor": 10}, "resources": {"gflops": 5}})
    r = resolve_resources(liar, measured_gflops=80.0, measured_by_class=measured)
    assert r.gflops == 50.0 and dict(r.gflops_by_class) == {}


def test_local_swarm_paths_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no node configs"):
        local_swarm_config_paths(tmp_path)
