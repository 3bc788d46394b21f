"""A p2pinfer swarm of real node processes on a running Testbed.

Each node gets a TOML config written from its device class (`DeviceClass.node_config_fields()`:
memory, up/down Mbit/s and latency, which the node advertises; the kernel enforces the
bandwidth, the node's own shaper adds the latency, since netem does not exist here). Compute is
NOT configured: every node measures it itself at start, inside its cgroup (models/calibrate:
FLOPs / wall time), and `advertised()` reads it back from `p2pinfer peers --json` so callers can
check it against the quota. `compute_threads = 1` and the testbed's thread env keep torch to one
thread on sub-core quotas.

Model weights are pre-placed: each node's data dir gets the requester's manifests and symlinks
to its weight blobs (a deployed swarm holds its models; fetching vgg16's 550 MB over 20 Mbit/s
links would take minutes per run and is not what the streamed benchmarks measure). Plans are
therefore priced with `amortize_requests=None` (all weights in place).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from benchmarks.testbed import Testbed, TestbedError

PORT = 4001
READY = r"p2pinfer node: ready"
PEER_ID = r"p2pinfer node: peer_id (\w+)"


def node_config(tb: Testbed, name: str, overrides: dict[str, Any] | None = None) -> str:
    """The TOML config of node `name`: what its device class really gets, nothing faked
    (`overrides` replaces [resources] keys, e.g. a smaller mem_bytes to force a split in tests)."""
    fields = {**tb.device(name).node_config_fields(), **(overrides or {})}
    lines = ["[node]", f'name = "{name}"', f'device_class = "{tb.device(name).name}"', "", "[resources]",
             "compute_threads = 1"]
    lines += [f"{k} = {v!r}" for k, v in sorted(fields.items())]
    if fields.get("latency_ms"):
        lines += ["", "[emulation]", f"latency_ms = {fields['latency_ms']!r}  # netem does not exist: the node's shaper adds it"]
    return "\n".join(lines) + "\n"


def fair_share(tb: Testbed) -> int:
    """Give the testbed's parent cgroup the CPU weight of one process per member.

    cgroup v1 weighs the run's parent group (`p2pt-<rid>/`) as ONE task against every busy
    process of the host: with 4 busy processes outside, 8 nodes together got about a fifth of
    the machine and advertised ~0.6 of their quota (measured). The quotas still cap every
    member; this only stops a loaded host from giving a member less than its quota as long as
    the host has that much CPU. Returns the shares written."""
    members = (*tb.nodes, "requester")
    shares = 1024 * len(members)
    (tb.cgroup(members[0]).parent / "cpu.shares").write_text(str(shares))
    return shares


def seed_store(src_root: Path, dest_root: Path, model_ids: Iterable[str], manifests: dict[str, Any]) -> int:
    """Give a node's store the models' manifests and symlinks to their weight blobs; returns blobs linked."""
    linked = 0
    for model_id in model_ids:
        (dest_root / "manifests").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / "manifests" / model_id, dest_root / "manifests" / model_id)
        for blob in manifests[model_id]:
            target = dest_root / "blobs" / blob[:2] / blob
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(src_root / "blobs" / blob[:2] / blob)
                linked += 1
    return linked


@dataclass
class NodeProc:
    name: str
    proc: subprocess.Popen[bytes]
    peer_id: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class TestbedSwarm:
    """`p2pinfer node start` in every node namespace of `tb`; the first node bootstraps the rest."""

    __test__ = False  # not a pytest test class despite the name

    tb: Testbed
    store_root: Path
    model_ids: tuple[str, ...] = ()
    blobs: dict[str, Any] = field(default_factory=dict)  # model id -> blob hashes to pre-place
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    bootstrap: str = ""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # node name -> [resources] keys
    _log_start: dict[str, int] = field(default_factory=dict)  # stderr offset of each node's current process

    def start(self, *, timeout: float = 180.0) -> "TestbedSwarm":
        """Start every node; return once each printed `ready` and the bootstrap lists them all."""
        fair_share(self.tb)
        # the bootstrap node is the one with the largest CPU quota: under quotas, start-up
        # (imports, calibration) is CPU-bound, and the others wait for it before they start
        first = max(self.tb.nodes, key=lambda n: self.tb.device(n).cpu or 0.0)
        rest = [n for n in self.tb.nodes if n != first]
        self._spawn(first, ())
        self._wait_ready(first, timeout)
        self.bootstrap = self.addr(first)
        for name in rest:  # all at once: each start-up is bound by its own quota
            self._spawn(name, ("--bootstrap", self.bootstrap))
        for name in rest:
            self._wait_ready(name, timeout)
        self.wait_listed(len(self.nodes), timeout=timeout)
        return self

    def _spawn(self, name: str, extra: tuple[str, ...]) -> None:
        data = self.tb.data_dir(name)
        seed_store(self.store_root, data, self.model_ids, self.blobs)
        config = data / "node.toml"
        config.write_text(node_config(self.tb, name, self.overrides.get(name)))
        argv = [sys.executable, "-m", "p2pinfer", "node", "start", "--config", str(config),
                "--listen", self.tb.multiaddr(name, PORT), "--data-dir", str(data), *extra]
        err = self.tb.log_paths(name)[1]
        self._log_start[name] = err.stat().st_size if err.exists() else 0
        self.nodes[name] = NodeProc(name, self.tb.spawn(name, argv, env=self.tb.thread_env(name)))

    def _wait_ready(self, name: str, timeout: float) -> None:
        node, start = self.nodes[name], self._log_start[name]
        node.peer_id = self.tb.wait_for_log(name, PEER_ID, timeout=timeout, start=start, proc=node.proc).group(1)
        self.tb.wait_for_log(name, READY, timeout=timeout, start=start, proc=node.proc)

    def advertised(self, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The verified records the swarm serves (`p2pinfer peers --json` in the requester's namespace)."""
        done = self.tb.requester_exec([sys.executable, "-m", "p2pinfer", "peers", "--bootstrap", self.bootstrap,
                                       "--json", "--no-dht", "--timeout", "10"], timeout=timeout, check=True)
        return json.loads(done.stdout)

    def wait_listed(self, count: int, *, timeout: float) -> list[dict[str, Any]]:
        """Poll `peers --json` until `count` nodes are listed (deadline `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.advertised()
            if len(records) >= count:
                return records
            if time.monotonic() > deadline:
                raise TestbedError(f"only {len(records)} of {count} nodes listed after {timeout}s")
            time.sleep(0.5)

    def addr(self, name: str) -> str:
        """A node's full multiaddr (…/p2p/<peer id>)."""
        return f"{self.tb.multiaddr(name, PORT)}/p2p/{self.nodes[name].peer_id}"

    def name_of(self, peer_id: str) -> str:
        return next(n for n, p in self.nodes.items() if p.peer_id == peer_id)

    def pids(self) -> dict[str, int]:
        return {p.peer_id: p.pid for p in self.nodes.values()}
