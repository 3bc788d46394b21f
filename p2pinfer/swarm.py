"""The embedded local swarm: every node config in a directory as an in-process Node on loopback.

`p2pinfer run MODEL` with no --bootstrap starts one of these from node_configs/local/. Each
member is a real `p2pinfer.node.Node` (py-libp2p host on 127.0.0.1, DHT server, signed records,
record exchange) with a `HopNodeService`, exactly what `p2pinfer node start` runs; the first
node is the bootstrap of the others. Heterogeneity is emulated by each node itself
(p2pinfer/emulation.py): its executor waits `compute_slowdown - 1` times its real compute, its
uplink is shaped to `[emulation] up_mbps` / `latency_ms`, and it advertises the correspondingly
slower GFLOP/s, its configured memory and its emulated link (config.resolve_resources).

Shared on purpose (same machine, same process):
- ONE on-disk ModelStore for every node and the requester. The store is content-addressed and
  every blob is re-hashed on read, so sharing it changes no trust decision; it only means the
  hops find their span's weights already on disk instead of fetching them over loopback, and
  vgg16's ~550 MB of weights are generated once, not six times.
- ONE SpanExecutor (built-layer cache), so a layer two nodes both serve is built once.
- ONE compute calibration (measured once, cached in `calibration_dir`), from which each node's
  advertised speed is derived by its own slowdown, as `node start` does with its own cache.
- torch's intra-op thread count, which is process-wide: 1 while the swarm runs (restored after;
  SwarmOptions.torch_threads),
  as each local node's `compute_threads` says and as its compute calibration measured. Several
  nodes computing at once then each use one core instead of fighting over all of them (with
  2 OpenMP threads per forward on a busy 2-core machine, MiniLM took 5x longer than with 1).
Nodes do not publish into the DHT (the record exchange alone converges in-process, and five
DHT publishers on two cores cost seconds); identities are fresh per swarm.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import trio

from p2pinfer.adversary import exit_process, wrap_for_config
from p2pinfer.config import EmulationSection, NodeConfig, load_node_config, local_swarm_config_paths
from p2pinfer.crypto.identity import Identity
from p2pinfer.emulation import receive_delay_for, send_delay_for, slowed
from p2pinfer.errgroups import unwrapped
from p2pinfer.service import ServiceContext
from p2pinfer.errors import NetworkError
from p2pinfer.ledger import Ledger, ledger_path
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore
from p2pinfer.net.advertise import Capability
from p2pinfer.net.hop_protocol import HopConfig, HopNodeService
from p2pinfer.net.settings import settings_from_config
from p2pinfer.node import Node, measure_capability

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwarmOptions:
    """How the embedded swarm runs. `emulate=False` runs every node at full speed (tests that
    only check results); `hop` sets deadlines and limits (memory and circuit slots come from
    each node's config unless `hop.mem_bytes` is set). `hop_by_name` gives single nodes their
    own hop limits, e.g. a node that advertises more memory than its hop accepts (tests of
    refusals and fault handling)."""

    emulate: bool = True
    hop: HopConfig = HopConfig(io_timeout_s=10.0, setup_timeout_s=60.0, compute_timeout_s=60.0)
    hop_by_name: Mapping[str, HopConfig] = field(default_factory=dict)  # per node name, replaces `hop`
    pull_interval_s: float = 2.0
    start_timeout_s: float = 60.0
    torch_threads: int | None = 1  # process-wide; see the module docstring


@dataclass
class Member:
    """One running node of the swarm and the config it came from."""

    name: str
    config: NodeConfig
    node: Node
    hop: HopNodeService
    ledger: Ledger
    killed: bool = False
    stopped: trio.Event = field(default_factory=trio.Event)  # set once its node has shut down

    @property
    def peer_id(self) -> str:
        return self.node.peer_id

    @property
    def data_dir(self) -> Path:
        """Where this member's ledger lives (`p2pinfer ledger --data-dir` shows it)."""
        return self.ledger.path.parent


def hop_service_for(config: NodeConfig, executor: SpanExecutor, store: ModelStore, *,
                    base: HopConfig = HopConfig(), emulate: bool = True,
                    on_crash: Callable[[], None] | None = None, ledger: Ledger | None = None) -> HopNodeService:
    """The hop a node with `config` serves: its memory and circuit limits, its emulation, its
    `[adversary]` misbehaviour (`on_crash` is how it dies; default: the process exits), and with
    its `ledger`: receipts credited, waiting work ordered by credit.
    (`p2pinfer node start` builds its hop the same way.)"""
    hop_config = replace(base, mem_bytes=base.mem_bytes if base.mem_bytes is not None else config.resources.mem_bytes,
                         max_circuits=config.resources.max_concurrent_circuits,
                         compute_threads=config.resources.compute_threads)
    run = slowed(executor.run, config.emulation) if emulate else executor.run
    run = wrap_for_config(run, config, on_crash=on_crash or exit_process)
    delay = send_delay_for(config.emulation) if emulate else None
    return HopNodeService(run, store, config=hop_config, send_delay=delay,
                          receive_delay_s=receive_delay_for(config.emulation) if emulate else 0.0,
                          prepare_fn=executor.prepare, ledger=ledger)


@dataclass
class LocalSwarm(ServiceContext):
    """In-process swarm of `configs`. Use `async with LocalSwarm(...) as swarm` or
    `await nursery.start(swarm.run)`; `swarm.bootstrap_addrs` is what a requester dials."""

    configs: Sequence[NodeConfig]
    store: ModelStore
    calibration_dir: Path | None = None
    options: SwarmOptions = SwarmOptions()
    data_dir: Path | None = None  # members' ledgers: DIR/<name>/ledger.sqlite3 (None: a temp dir per run)
    members: list[Member] = field(default_factory=list)

    @classmethod
    def from_dir(cls, directory: Path | str | None, *, store: ModelStore, **kw: Any) -> "LocalSwarm":
        """Every *.toml in `directory` (default node_configs/local/), loaded and validated."""
        return cls([load_node_config(p) for p in local_swarm_config_paths(Path(directory) if directory else None)],
                   store=store, **kw)

    @property
    def bootstrap_addrs(self) -> list[str]:
        return self.members[0].node.listen_addrs[:1] if self.members else []

    def _capabilities(self) -> list[Capability]:
        """Runs in a worker thread: one real calibration (cached), then each node's emulated view."""
        directory = self.calibration_dir or self.store.root
        plain = EmulationSection()
        return [measure_capability(c if self.options.emulate else replace(c, emulation=plain), directory)
                for c in self.configs]

    def _member(self, config: NodeConfig, capability: Capability, executor: SpanExecutor,
                bootstrap: Sequence[str], ledger: Ledger) -> Member:
        settings = settings_from_config(config, bootstrap=tuple(bootstrap), dht_publish=False,
                                        pull_interval_s=self.options.pull_interval_s)
        base = self.options.hop_by_name.get(config.node.name, self.options.hop)
        hop = hop_service_for(config, executor, self.store, base=base, emulate=self.options.emulate,
                              on_crash=self._crash_from_thread(config.node.name), ledger=ledger)
        node = Node(settings, capability=capability, identity=Identity.generate(), services=[hop])
        return Member(config.node.name, config, node, hop, ledger)

    def _open_ledgers(self, stack: ExitStack) -> None:
        """One durable ledger per member, DIR/<name>/ledger.sqlite3 (worker thread: sqlite I/O)."""
        root = Path(self.data_dir) if self.data_dir is not None else \
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2pinfer-swarm-")))
        names = [c.node.name for c in self.configs]
        dirs = [root / (n if names.count(n) == 1 else f"{n}-{i}") for i, n in enumerate(names)]
        self._ledgers = [stack.enter_context(Ledger(ledger_path(d))) for d in dirs]

    def member(self, name: str) -> Member:
        """The running member called `name` (its config's [node] name)."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"no swarm member named {name!r} (members: {', '.join(m.name for m in self.members)})")

    def kill(self, name: str) -> Member:
        """Stop member `name` at once, as if its process died: its node's scope is cancelled, so
        its host closes its listener and connections and its streams reset. Call from the trio
        thread; the other members keep serving. `await member.stopped.wait()` waits for the
        shutdown to finish."""
        member = self.member(name)
        if not member.killed:
            log.warning("local swarm: killing member %s (%s)", name, member.peer_id)
            member.killed = True
            member.node.stop()
        return member

    @staticmethod
    async def _run_member(member: Member, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await member.node.run(task_status=task_status)
        finally:
            member.stopped.set()

    def _crash_from_thread(self, name: str) -> Callable[[], None]:
        """`on_crash` of an adversarial member: kill it from the hop's worker thread, and wait
        until the trio loop has done it (so the node is gone before the crash is raised)."""
        def crash() -> None:
            trio.from_thread.run_sync(self.kill, name, trio_token=self._token)
        return crash

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start every node (the first one first, as bootstrap), wait until the bootstrap node
        knows every other member, report started, then serve until cancelled."""
        if not self.configs:
            raise NetworkError("the local swarm has no node configs")
        self._token = trio.lowlevel.current_trio_token()
        capabilities = await trio.to_thread.run_sync(self._capabilities)
        threads_before = torch.get_num_threads()
        executor = SpanExecutor(self.store, threads=self.options.torch_threads)
        with ExitStack() as stack:  # members' ledgers (and the temp data dir) closed on exit
            await trio.to_thread.run_sync(self._open_ledgers, stack)
            try:
                await self._serve(capabilities, executor, task_status)
            finally:
                torch.set_num_threads(threads_before)  # process-wide: give the caller its setting back

    async def _serve(self, capabilities: list[Capability], executor: SpanExecutor, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            first = self._member(self.configs[0], capabilities[0], executor, (), self._ledgers[0])
            await nursery.start(self._run_member, first)
            self.members = [first]
            seeds = first.node.listen_addrs[:1]
            rest = [self._member(c, cap, executor, seeds, led)
                    for c, cap, led in zip(self.configs[1:], capabilities[1:], self._ledgers[1:])]
            async with trio.open_nursery() as starter:
                for member in rest:
                    starter.start_soon(nursery.start, self._run_member, member)
            self.members += rest
            await self._converge(first.node)
            log.info("local swarm ready: %s", ", ".join(f"{m.name}={m.peer_id}" for m in self.members))
            task_status.started(self)
            await trio.sleep_forever()

    async def _converge(self, bootstrap: Node) -> None:
        want = {m.peer_id for m in self.members[1:]}
        with trio.move_on_after(self.options.start_timeout_s):
            while not want <= {r.peer_id for r in bootstrap.peers()}:
                await bootstrap.discovery.wait_changed()
            return
        raise NetworkError(f"local swarm: the bootstrap node did not learn every member within "
                           f"{self.options.start_timeout_s:g}s")

