"""The requester: discover -> plan -> circuit -> result, as a library.

    async with Requester(["/ip4/127.0.0.1/tcp/4001/p2p/12D3..."], store=store_for(None)) as requester:
        result = await requester.infer("minilm", "peer-to-peer inference on small devices")
        print(result.output["embedding"].shape, result.latency_ms, result.plan.hops)

    p2pinfer.client.infer("minilm", "some text")          # blocking; embedded local swarm

The requester's half of the data path reads top to bottom in `Requester.infer`: snapshot =
discover (verified capability records from the swarm); plan = planner.plan(profile, snapshot);
circuit = setup (one sealed, signed assignment per hop); send (the input, encrypted for the first
link); await result (from the last hop, decrypted with the last link key). A `RequesterHooks`
object sees every attempt's outcome and decides whether to try again without some peers: the
default trusts every peer equally and never retries; fault handling and reputation replace it.

The requester also serves the model's manifest and weights to the hops (WeightService on its own
host): a hop that lacks its span's weights fetches them from us by content hash.
Every network await has a deadline (discovery timeout, ClientConfig's setup/io/result timeouts).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import numpy as np
import torch
import trio
from multiaddr import Multiaddr

from p2pinfer.config import DEFAULT_LINK
from p2pinfer.core import planner
from p2pinfer.core.plan import OBJECTIVES, Plan, PlannerOptions, pipeline_window
from p2pinfer.core.records import CapabilityRecord, to_peer_spec
from p2pinfer.core.replicas import ReplicaOptions
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.crypto.identity import Identity
from p2pinfer.emulation import UplinkShaper
from p2pinfer.errgroups import unwrapped
from p2pinfer.service import ServiceContext
from p2pinfer.errors import CircuitError, ConfigError, InputError, NetworkError, PlanError
from p2pinfer.models import profiling, zoo
from p2pinfer.models.executor import check_inputs
from p2pinfer.models.io import load_input
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.store import ModelStore, store_for
from p2pinfer.hooks import Attempt, RequesterHooks, Retry
from p2pinfer.net.circuit_client import CircuitClient, ClientConfig, hop_specs, run_plan
from p2pinfer.net.host import make_host, parse_multiaddr, stop_auto_connector
from p2pinfer.net.hop_protocol import to_numpy
from p2pinfer.net.lookup import discover
from p2pinfer.net.weights_protocol import WeightService
from p2pinfer.results import HopReport, InferenceResult, StreamResult, hop_reports, output_json, stream_result

log = logging.getLogger(__name__)

__all__ = ["Attempt", "HopReport", "InferenceResult", "Input", "Requester", "RequesterConfig", "RequesterHooks",
           "Retry", "StreamResult", "connect", "infer", "live_snapshot", "output_json", "snapshot_of"]

Input = str | Mapping[str, Any] | np.ndarray  # a --input value (text, image/.npy path), named arrays, or the one input array
RETRYABLE = (CircuitError, NetworkError)  # HopRefusedError is a CircuitError


@dataclass(frozen=True)
class RequesterConfig:
    """Knobs of a requester. `link` is our own access link as the planner prices it;
    `emulate_link` also shapes our uplink to it (the embedded swarm). `max_attempts` bounds the
    plan -> circuit loop; whether a failed attempt is retried is the hooks' decision."""

    link: RequesterSpec = RequesterSpec(*DEFAULT_LINK)
    emulate_link: bool = False
    listen: tuple[str, ...] | None = None  # None: loopback for a loopback swarm, else all interfaces
    swarm: str = "default"
    discovery_timeout_s: float = 10.0
    use_dht: bool = True
    snapshot_max_age_s: float = 5.0
    planner: PlannerOptions = PlannerOptions()
    circuit: ClientConfig = ClientConfig()
    # None: each stream's plan decides (core.plan.pipeline_window). Not yet the default: the
    # failover engine's per-input deadlines do not count the queueing of a larger window, and
    # honest peers then timed out (test_fault_cli, 3 of 10 runs with the plan's window, 0 of 10 with 8)
    max_in_flight: int | None = 8
    max_attempts: int = 3
    # throughput streams over several disjoint chains (core/replicas.py); max_chains=1: one chain
    replicas: ReplicaOptions = ReplicaOptions(max_chains=1)
    drain_timeout_s: float = 5.0  # on exit, how long background work (receipts) may still run

    def stream_window(self, plan: Plan) -> int:
        """Inputs a stream over `plan` keeps in flight: `max_in_flight` if set, else what the
        plan needs to keep every stage busy (core.plan.pipeline_window)."""
        return self.max_in_flight or pipeline_window(plan)

    def __post_init__(self) -> None:
        if not (self.discovery_timeout_s > 0 and self.snapshot_max_age_s >= 0 and self.drain_timeout_s >= 0):
            raise ConfigError("requester: discovery_timeout_s must be > 0, snapshot_max_age_s and drain_timeout_s >= 0")
        if (self.max_in_flight is not None and self.max_in_flight < 1) or self.max_attempts < 1:
            raise ConfigError("requester: max_in_flight and max_attempts must be >= 1")
        for addr in self.listen or ():
            parse_multiaddr(addr, what="requester listen multiaddr")


# ---- the requester --------------------------------------------------------------------------


class Requester(ServiceContext):
    """Runs inference on a swarm reachable from `bootstrap`. Use as `async with`, or start
    `run` in a nursery. `store` holds the models we run (and serve to the hops)."""

    def __init__(self, bootstrap: Sequence[str], *, store: ModelStore, config: RequesterConfig = RequesterConfig(),
                 identity: Identity | None = None, hooks: RequesterHooks | None = None) -> None:
        if not bootstrap:
            raise ConfigError("a requester needs at least one bootstrap multiaddr (…/p2p/<peer id>)")
        self.bootstrap, self.store, self.config = tuple(bootstrap), store, config
        self.identity = identity or Identity.generate()
        self.hooks = hooks or RequesterHooks()
        self.hooks.attach(self)
        self.last_specs: dict[str, PeerSpec] = {}  # as advertised, from the latest snapshot
        self.host = make_host(self.identity.libp2p_key_pair())
        shaper = UplinkShaper(config.link.up_mbps, config.link.latency_ms) if config.emulate_link else None
        self.client = CircuitClient(self.host, self.identity, config=config.circuit, send_delay=shaper)
        self._records: tuple[float, list[CapabilityRecord]] | None = None
        self.swarm: Any = None  # the embedded LocalSwarm when `connect` started one
        self._background: trio.Nursery | None = None
        self._pending = 0  # background tasks not finished yet
        self._idle = trio.Event()
        self._idle.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, serve results and weights; `task_status.started(self)` once ready."""
        async with self.host.run(listen_addrs=[Multiaddr(a) for a in self.listen_addrs()]):
            await stop_auto_connector(self.host)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.client.run)
                await nursery.start(WeightService(self.host, self.store).run)
                self._background = nursery
                task_status.started(self)
                await trio.sleep_forever()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `fn(*args)` in the background (work with its own deadlines, e.g. delivering
        receipts) so that no request waits for it; a normal `async with` exit lets it finish
        within RequesterConfig.drain_timeout_s before the requester stops."""
        if self._background is None:
            raise CircuitError("the requester is not running")
        if self._pending == 0:
            self._idle = trio.Event()
        self._pending += 1
        self._background.start_soon(self._tracked, fn, args)

    async def _tracked(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def _before_stop(self) -> None:
        """Let background work (receipts in flight) finish, bounded, before stopping."""
        with trio.move_on_after(self.config.drain_timeout_s):
            await self._idle.wait()
        if self._pending:
            log.info("stopping with %d background task(s) unfinished after %.1fs", self._pending, self.config.drain_timeout_s)

    def listen_addrs(self) -> tuple[str, ...]:
        """Where hops reach us (results, weights): as configured, else loopback when every
        bootstrap peer is on loopback, else every interface."""
        if self.config.listen:
            return self.config.listen
        local = all(a.startswith(("/ip4/127.", "/ip6/::1/")) for a in self.bootstrap)
        return ("/ip4/127.0.0.1/tcp/0",) if local else ("/ip4/0.0.0.0/tcp/0",)

    # ---- the data path ----

    async def infer(self, model: str, input: Input, *, objective: str = "latency") -> InferenceResult:
        """One input through the swarm: discover, plan, set up a circuit, send, await the result."""
        check_objective(objective)
        manifest = self.manifest(model)  # known model, all weights in our store (hops fetch from us)
        acts = self.load_input(manifest, input)  # checked against the input spec before any network
        if self.hooks.resilient:  # failover, deadlines, spot checks (p2pinfer/failover.py)
            out = await self._resilient(manifest, [acts], objective, None)
            result = InferenceResult(manifest.name, manifest.model_id, dict(out.outputs[0]), out.latency_ms[0],
                                     out.setup_ms, out.plan, hop_reports(out.plan, out.traces), out.attempts)
            await self.hooks.on_success(Attempt(out.attempts, manifest.model_id, out.plan, out.snapshot, out.excluded), result)
            return result
        excluded: frozenset[str] = frozenset()
        for number in range(1, self.config.max_attempts + 1):
            snapshot, addrs = await self.snapshot(exclude=excluded)  # discover
            plan = self.plan(manifest, snapshot, objective)  # planner.plan(...)
            attempt = Attempt(number, manifest.model_id, plan, snapshot, excluded)
            try:
                started = time.perf_counter()
                circuit = await self.client.open_circuit(  # setup: sealed assignments, all accepted
                    model_id=manifest.model_id, hops=hop_specs(plan, manifest, addrs))
                setup_ms = (time.perf_counter() - started) * 1000
                async with circuit:
                    sent = time.perf_counter()
                    answer = await circuit.infer(acts)  # send; await result
                    latency_ms = (time.perf_counter() - sent) * 1000
            except RETRYABLE as exc:
                excluded |= await self._after_failure(attempt, exc)
                continue
            result = InferenceResult(manifest.name, manifest.model_id, dict(answer.act), latency_ms,
                                     setup_ms, plan, hop_reports(plan, [answer.trace]), number)
            await self.hooks.on_success(attempt, result)
            return result
        raise AssertionError("unreachable: the last failed attempt raises")

    async def infer_stream(self, model: str, inputs: Sequence[Input], *, objective: str = "throughput",
                           on_result: Callable[[int], None] | None = None) -> StreamResult:
        """Many inputs pipelined through one circuit (at most `config.max_in_flight` unanswered;
        None: as many as the plan needs to keep every stage busy, core.plan.pipeline_window);
        `on_result(done_count)` after each result (progress bars). With objective "throughput"
        and `config.replicas.max_chains` != 1, over several disjoint chains at once when the
        replicated planner finds more than one (a `ReplicatedStreamResult`; p2pinfer/replicated_stream.py)."""
        check_objective(objective)
        manifest = self.manifest(model)
        batch = [self.load_input(manifest, x) for x in inputs]
        if not batch:
            raise InputError("no inputs to stream")
        if objective == "throughput" and self.config.replicas.max_chains != 1:  # several chains at once
            from p2pinfer.replicated_stream import stream_replicated

            with unwrapped():
                replicated = await stream_replicated(self, manifest, batch, on_result)
            if replicated is not None:
                return replicated
        if self.hooks.resilient:
            out = await self._resilient(manifest, batch, objective, on_result)
            result = StreamResult(manifest.name, manifest.model_id, tuple(dict(o) for o in out.outputs), out.latency_ms,
                                  out.setup_ms, out.wall_s, out.plan, hop_reports(out.plan, out.traces), out.attempts)
            await self.hooks.on_success(Attempt(out.attempts, manifest.model_id, out.plan, out.snapshot, out.excluded), result)
            return result
        excluded: frozenset[str] = frozenset()
        for number in range(1, self.config.max_attempts + 1):
            snapshot, addrs = await self.snapshot(exclude=excluded)
            plan = self.plan(manifest, snapshot, objective)
            attempt = Attempt(number, manifest.model_id, plan, snapshot, excluded)
            try:
                with unwrapped():
                    run = await run_plan(self.client, plan=plan, manifest=manifest, inputs=batch, peer_addrs=addrs,
                                         max_in_flight=self.config.stream_window(plan),
                                         on_result=(lambda n, _r: on_result(n)) if on_result else None)
            except RETRYABLE as exc:
                excluded |= await self._after_failure(attempt, exc)
                continue
            result = stream_result(manifest, plan, run, number)
            await self.hooks.on_success(attempt, result)
            return result
        raise AssertionError("unreachable: the last failed attempt raises")

    async def _resilient(self, manifest: Manifest, batch: Sequence[dict[str, np.ndarray]], objective: str,
                         on_result: Callable[[int], None] | None) -> Any:
        from p2pinfer.failover import ResilientRun

        return await ResilientRun(self, self.hooks, manifest, batch, objective, on_result=on_result).run()

    async def _after_failure(self, attempt: Attempt, error: CircuitError | NetworkError) -> frozenset[str]:
        """Ask the hooks; re-raise unless they want another attempt and one is left."""
        log.info("attempt %d failed: %s", attempt.number, error)
        retry = await self.hooks.on_failure(attempt, error)
        if retry is None or attempt.number >= self.config.max_attempts:
            raise error
        self._records = None  # re-discover: the swarm may have changed
        return attempt.excluded | retry.exclude

    # ---- the steps, each usable on its own ----

    def manifest(self, model: str) -> Manifest:
        """The model's manifest with every weight blob in our store (UnknownModelError otherwise)."""
        return zoo.get_manifest(model, store=self.store)

    def load_input(self, manifest: Manifest, value: Input) -> dict[str, np.ndarray]:
        """A --input value or named tensors -> checked input arrays (InputError names the problem)."""
        if isinstance(value, str):
            acts = load_input(manifest, value, store=self.store)
        elif isinstance(value, (Mapping, np.ndarray, torch.Tensor)):
            if not isinstance(value, Mapping):  # one array: the model's single input
                if len(manifest.inputs) != 1:
                    raise InputError(f"{manifest.name} takes {[s.name for s in manifest.inputs]}; pass a mapping of them")
                value = {manifest.inputs[0].name: value}
            tensors = {k: torch.from_numpy(np.array(v)) for k, v in value.items()}
            acts = check_inputs(tuple(sorted(manifest.inputs, key=lambda s: s.name)), tensors, f"input of {manifest.name}")
        else:
            raise InputError(f"input must be text/a path, an array, or a mapping of named arrays, got {type(value).__name__}")
        return to_numpy(acts)

    async def records(self) -> list[CapabilityRecord]:
        """Verified records of the swarm, re-discovered when older than snapshot_max_age_s."""
        now = time.monotonic()
        if self._records is None or now - self._records[0] > self.config.snapshot_max_age_s:
            with unwrapped():
                found = await discover(self.bootstrap, timeout=self.config.discovery_timeout_s,
                                       swarm=self.config.swarm, use_dht=self.config.use_dht)
            self._records = (now, [r for r in found if r.peer_id != self.identity.peer_id])
        return list(self._records[1])

    async def snapshot(self, *, exclude: frozenset[str] = frozenset()) -> tuple[SwarmSnapshot, dict[str, tuple[str, ...]]]:
        """The planner's view of the swarm (reputation from the hooks) and every peer's addrs."""
        records = [r for r in await self.records() if r.peer_id not in exclude]
        if not records:
            raise NetworkError(f"no usable peers found via {', '.join(self.bootstrap)}"
                               + (f" (excluded: {', '.join(sorted(exclude))})" if exclude else ""))
        snapshot = snapshot_of(records, self.config.link, self.hooks.reputation)
        self.last_specs = {p.peer_id: p for p in snapshot.peers}
        return self.hooks.adjust_snapshot(snapshot), {r.peer_id: tuple(r.addrs) for r in records}

    def plan(self, manifest: Manifest, snapshot: SwarmSnapshot, objective: str) -> Plan:
        check_objective(objective)
        return planner.plan(profiling.profile(manifest, self.store), snapshot, objective=objective,
                            options=self.config.planner)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")


def snapshot_of(records: Sequence[CapabilityRecord], link: RequesterSpec,
                reputation: Callable[[str], float] = lambda _peer: 1.0) -> SwarmSnapshot:
    """Verified capability records -> the planner's SwarmSnapshot (requester link `link`)."""
    return SwarmSnapshot(link, tuple(to_peer_spec(r, reputation=reputation(r.peer_id)) for r in records))


def live_snapshot(bootstrap: Sequence[str], *, config: RequesterConfig = RequesterConfig()) -> SwarmSnapshot:
    """Blocking: the live swarm behind `bootstrap` as a SwarmSnapshot (`p2pinfer plan --bootstrap`)."""
    async def main() -> SwarmSnapshot:
        with unwrapped():
            records = await discover(bootstrap, timeout=config.discovery_timeout_s, swarm=config.swarm,
                                     use_dht=config.use_dht)
        if not records:
            raise NetworkError(f"no verified peer records found via {', '.join(bootstrap)}")
        return snapshot_of(records, config.link)

    with unwrapped():
        return trio.run(main)


# ---- one-call entry points --------------------------------------------------------------------


@asynccontextmanager
async def connect(*, bootstrap: Sequence[str] = (), swarm_dir: Path | str | None = None,
                  store: ModelStore | None = None, config: RequesterConfig | None = None,
                  hooks: RequesterHooks | None = None,
                  swarm_options: Any = None) -> AsyncIterator[Requester]:
    """A ready Requester: on the swarm behind `bootstrap`, or (no bootstrap) on an embedded local
    swarm started in this process from `swarm_dir` (default node_configs/local/), sharing `store`."""
    store = store or store_for(None)
    if bootstrap:
        async with Requester(bootstrap, store=store, config=config or RequesterConfig(), hooks=hooks) as requester:
            yield requester
        return
    from p2pinfer.swarm import LocalSwarm, SwarmOptions

    async with LocalSwarm.from_dir(swarm_dir, store=store, options=swarm_options or SwarmOptions()) as swarm:
        local = replace(config or embedded_config(), use_dht=False)
        async with Requester(swarm.bootstrap_addrs, store=store, config=local, hooks=hooks) as requester:
            requester.swarm = swarm
            yield requester


def embedded_config() -> RequesterConfig:
    """The requester of the embedded swarm: a laptop-like link, shaped like the nodes' links."""
    return RequesterConfig(link=RequesterSpec(up_mbps=200.0, down_mbps=400.0, latency_ms=2.0), emulate_link=True,
                           use_dht=False, discovery_timeout_s=10.0)


def infer(model: str, input: Input, *, bootstrap: Sequence[str] = (), swarm_dir: Path | str | None = None,
          data_dir: Path | str | None = None, objective: str = "latency") -> InferenceResult:
    """Blocking convenience: `infer("minilm", "some text")` on the embedded local swarm, or on the
    swarm behind `bootstrap`. Starts and stops everything it needs (trio.run)."""
    async def main() -> InferenceResult:
        async with connect(bootstrap=bootstrap, swarm_dir=swarm_dir, store=store_for(data_dir)) as requester:
            return await requester.infer(model, input, objective=objective)

    with unwrapped():
        return trio.run(main)
