"""Stream inputs over several disjoint chains at once (a core.replicas.ReplicatedPlan).

One circuit per chain, opened concurrently. Dispatch is pull-based: a chain takes the next input
from one shared queue whenever it has fewer than its window in flight, so a fast chain takes more
inputs than a slow one whatever the predictions said. Outputs come back in input order.

A chain that fails (refused or unreachable at setup; mid-stream an error frame, a lost stream or
no result within the result timeout) is aborted, and its inputs in flight go back to the front of
the queue for the surviving chains: the run completes as long as one chain survives, and raises
ChainsFailedError (a CircuitError) naming every chain's failure when none does, with the hops
known dead or at fault (so a fallback does not plan onto them again). Every await has a
deadline (setup and io timeouts of ClientConfig, `timeout_s` per result while inputs are in
flight).
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence

import trio
from libp2p.peer.id import ID

from p2pinfer.core.circuit import Result
from p2pinfer.core.codec import Activation
from p2pinfer.core.plan import Plan, pipeline_window
from p2pinfer.core.replicas import ReplicatedPlan
from p2pinfer.errgroups import first_of_kind, unwrapped
from p2pinfer.errors import (ChainsFailedError, CircuitError, HopFailedError, HopRefusedError, NetworkError,
                              P2PInferError, VerificationError)
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.circuit_client import Circuit, CircuitClient, HopTiming, hop_specs

log = logging.getLogger(__name__)

Audit = Callable[[int, Circuit, Result, int], Awaitable[None]]  # (chain, circuit, result, input index)


@dataclass(frozen=True)
class ChainStats:
    """One chain of a replicated run: its hops (predicted vs measured compute), how many inputs
    it computed, and why it stopped early (None: it served to the end)."""

    index: int
    hops: tuple[HopTiming, ...]
    predicted_rps: float
    inputs: int
    setup_ms: float
    error: str | None
    redispatched: int  # its inputs in flight re-sent to other chains after it failed
    circuit_id: bytes = b""
    hop_seconds: tuple[float, ...] = ()  # per hop, summed measured compute of its accepted results


@dataclass(frozen=True)
class ReplicatedRun:
    outputs: tuple[Activation, ...]  # in input order
    latency_ms: tuple[float, ...]  # per input: sent (on the chain that answered) -> result
    chain_of: tuple[int, ...]  # per input: the chain that computed it
    chains: tuple[ChainStats, ...]
    setup_ms: float  # every circuit opened (concurrently)
    wall_s: float  # setup + all inputs + teardown
    done_at_s: tuple[float, ...]  # arrival of each result (arrival order), seconds after streaming began
    done_by: tuple[int, ...]  # the chain of each of those results (arrival order)
    last_dispatch_s: float  # when the queue ran dry (after it, chains go idle one by one)
    requester_cpu_s: float  # this process's CPU time while streaming (encode, seal, send, receive)


class _Queue:
    """Inputs not yet dispatched (re-dispatched ones first) and the results so far."""

    def __init__(self, count: int) -> None:
        self.todo = collections.deque(range(count))
        self.count = count
        self.results: dict[int, tuple[Result, float, int]] = {}  # index -> (result, latency s, chain)
        self.done_at: list[float] = []
        self.done_by: list[int] = []
        self.changed = trio.Event()
        self.listeners: list[Callable[[], None]] = []  # chains waiting for news
        self.failed = False
        self.chains: list[_Chain] = []  # the live chains (tail-aware dispatch)
        self.t0 = time.perf_counter()
        self.last_dispatch = 0.0

    @property
    def complete(self) -> bool:
        return len(self.results) == self.count or self.failed

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        for listener in self.listeners:
            listener()

    async def take(self, chain: "_Chain | None" = None) -> int | None:
        """The next input index for a chain with room (once taking it pays, see `worth`); None
        when nothing is left to send."""
        while not self.todo or (chain is not None and not self.worth(chain)):
            if self.complete:
                return None
            await self.changed.wait()
        idx = self.todo.popleft()
        if not self.todo:
            self.last_dispatch = time.perf_counter() - self.t0
        return idx

    def worth(self, chain: "_Chain") -> bool:
        """Tail-aware pull: `chain` takes an input if it would finish it first of all live chains,
        or if the queue holds more than the others can finish before it would (each chain's
        rate: measured once it has delivered 2 results, else predicted). Otherwise a slow chain
        would hold the stream's last inputs long after the others ran dry."""
        now = time.perf_counter()
        live = [c for c in self.chains if c.error is None]
        done_at = {id(c): (len(c.inflight) + 1) / c.rate(now) for c in live}
        mine = done_at.get(id(chain), math.inf)
        if mine <= min(done_at.values(), default=math.inf) * (1 + 1e-9):
            return True
        others = sum(max(0.0, c.rate(now) * mine - len(c.inflight)) for c in live if c is not chain)
        return len(self.todo) > others

    def give_back(self, indices: Sequence[int]) -> None:
        self.todo.extendleft(sorted((i for i in indices if i not in self.results), reverse=True))
        self.poke()

    def recall(self, chain: int) -> list[int]:
        """Forget every result `chain` delivered and queue those inputs again."""
        gone = [i for i, (_r, _lat, c) in self.results.items() if c == chain]
        for i in gone:
            del self.results[i]
        self.give_back(gone)
        return gone

    def deliver(self, idx: int, result: Result, latency_s: float, chain: int) -> bool:
        if idx in self.results:
            return False
        self.results[idx] = (result, latency_s, chain)
        self.done_at.append(time.perf_counter() - self.t0)
        self.done_by.append(chain)
        self.poke()
        return True


@dataclass
class _Chain:
    index: int
    plan: Plan
    window: int
    circuit: Circuit | None = None
    setup_ms: float = 0.0
    error: str | None = None
    served: int = 0
    redispatched: int = 0
    inflight: dict[int, tuple[int, float]] = field(default_factory=dict)  # seq -> (input index, sent at)
    traces: list[tuple[int, ...]] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)  # a send happened, or the queue changed
    started: float | None = None  # first send
    at_fault: tuple[str, ...] = ()  # hops its failure named (see `_at_fault`)

    def poke(self) -> None:
        self.wake.set()

    def rate(self, now: float) -> float:
        """Inputs per second: measured over its stream so far once it delivered 2, else predicted."""
        if self.started is not None and self.served >= 2 and now > self.started:
            return self.served / (now - self.started)
        return self.plan.throughput_rps


async def _open(client: CircuitClient, chain: _Chain, manifest: Manifest, peer_addrs: Mapping[str, Sequence[str]]) -> None:
    started = time.perf_counter()
    try:
        chain.circuit = await client.open_circuit(model_id=manifest.model_id,
                                                  hops=hop_specs(chain.plan, manifest, peer_addrs))
    except P2PInferError as exc:  # this chain is out; the others go on
        chain.error = f"setup: {exc}"
        chain.at_fault = _at_fault(exc)
        log.info("chain %d (%s) failed to set up: %s", chain.index, _names(chain.plan), exc)
    chain.setup_ms = (time.perf_counter() - started) * 1000


def _names(plan: Plan) -> str:
    return " -> ".join(f"{h.peer_id[-6:]}[{h.start}:{h.stop})" for h in plan.hops)


class _Feeder:
    """Feeds one chain from the queue until the stream is complete (a sender and a receiver
    task); on failure hands its inputs in flight back to the queue and aborts its circuit."""

    def __init__(self, chain: _Chain, queue: _Queue, inputs: Sequence[Activation], timeout_s: float | None,
                 on_result: Callable[[int, int], None] | None, audit: Audit | None) -> None:
        assert chain.circuit is not None
        self.chain, self.circuit, self.queue, self.inputs = chain, chain.circuit, queue, inputs
        self.timeout_s, self.on_result, self.audit = timeout_s, on_result, audit
        self.slots = trio.Semaphore(chain.window)

    async def sender(self) -> None:
        chain = self.chain
        while True:
            await self.slots.acquire()
            idx = await self.queue.take(chain)
            if idx is None:
                return
            chain.inflight[self.circuit.machine.next_seq] = (idx, time.perf_counter())
            if chain.started is None:
                chain.started = time.perf_counter()
            await self.circuit.send(self.inputs[idx])
            self.queue.poke()  # our in-flight count changed: other chains' choices may too (wakes our receiver)

    async def receiver(self) -> None:
        chain, circuit = self.chain, self.circuit
        while not self.queue.complete:
            if not chain.inflight:  # nothing to wait for: until a send, or the stream's end
                await chain.wake.wait()
                chain.wake = trio.Event()
                continue
            r = await circuit.receive(timeout=self.timeout_s)
            entry = chain.inflight.get(r.seq)
            if entry is None:
                continue
            if self.audit is not None:  # spot checks: a failure fails this chain (this input included)
                await self.audit(chain.index, circuit, r, entry[0])
            del chain.inflight[r.seq]
            self.slots.release()
            circuit.machine.forget_seq(r.seq)
            chain.traces.append(tuple(r.trace))
            if self.queue.deliver(entry[0], r, time.perf_counter() - entry[1], chain.index):
                chain.served += 1
                if self.on_result is not None:
                    self.on_result(len(self.queue.results), chain.index)

    async def run(self) -> None:
        self.queue.listeners.append(self.chain.poke)
        try:
            try:
                with unwrapped():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.sender)
                        nursery.start_soon(_watch, self.circuit, self.chain)
                        await self.receiver()
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # e.g. the watcher and the sender saw a dead hop at once
                first = first_of_kind(group, P2PInferError)
                if first is None:
                    raise
                raise first from None
        except P2PInferError as exc:  # task boundary of one chain: the others go on
            self._failed(exc)
            with trio.CancelScope(shield=True):
                await self.circuit.abort()
            return
        finally:
            self.queue.listeners.remove(self.chain.poke)
        with trio.CancelScope(shield=True):
            await self.circuit.aclose()

    def _failed(self, exc: P2PInferError) -> None:
        chain, queue = self.chain, self.queue
        chain.error = str(exc)
        chain.at_fault = _at_fault(exc)
        if isinstance(exc, VerificationError):  # a proven-wrong hop: nothing it touched is kept
            recalled = queue.recall(chain.index)
            log.info("chain %d: %d earlier result(s) recalled for recomputation", chain.index, len(recalled))
            chain.served -= len(recalled)
        chain.redispatched = len(chain.inflight)
        log.info("chain %d (%s) failed mid-stream: %s; re-dispatching %d input(s)", chain.index, _names(chain.plan),
                 exc, len(chain.inflight))
        queue.give_back([idx for idx, _t in chain.inflight.values()])
        chain.inflight.clear()


async def _watch(circuit: Circuit, chain: _Chain, interval_s: float = 0.2) -> None:
    """Fail the chain as soon as a hop we were connected to drops every connection (a dead
    peer) instead of waiting for the result timeout."""
    network = circuit.client.host.get_network()
    ids = {h.peer_id: ID.from_base58(h.peer_id) for h in chain.plan.hops}
    watched = {p for p, i in ids.items() if network.get_connections(i)}
    while True:
        await trio.sleep(interval_s)
        lost = sorted(p for p in watched if not network.get_connections(ids[p]))
        if lost:
            raise NetworkError(f"lost the connection to hop(s) {', '.join(lost)} mid-stream")


def _at_fault(exc: P2PInferError) -> tuple[str, ...]:
    """The hops a chain's failure names, as the single-chain engine blames them without a probe
    (failover.py): a hop that failed, was unreachable or missed its deadline, one that refused
    (unless only busy), one proven wrong. An unnamed failure (a reset stream) names nobody."""
    if isinstance(exc, HopFailedError):
        return exc.peer_ids
    if isinstance(exc, HopRefusedError) and exc.reason != "busy":
        return (exc.peer_id,)
    if isinstance(exc, VerificationError):
        return (exc.peer_id,)
    return ()


def _dead_hops(client: CircuitClient, chains: Sequence[_Chain]) -> tuple[str, ...]:
    """After every chain failed: the hops named at fault, and the hops of opened circuits we no
    longer hold any connection to (dead: a chain that failed on a reset stream names nobody)."""
    network = client.host.get_network()
    named = {p for c in chains for p in c.at_fault}
    gone = {h.peer_id for c in chains if c.circuit is not None for h in c.plan.hops
            if not network.get_connections(ID.from_base58(h.peer_id))}
    return tuple(sorted(named | gone))


def _stats(chain: _Chain) -> ChainStats:
    def median_ms(i: int) -> float:
        values = [t[i] for t in chain.traces if len(t) > i]
        return statistics.median(values) / 1000 if values else float("nan")

    hops = tuple(HopTiming(h.peer_id, h.start, h.stop, h.compute_s * 1000, h.transfer_in_s * 1000, median_ms(i))
                 for i, h in enumerate(chain.plan.hops))
    seconds = tuple(sum(t[i] for t in chain.traces if len(t) > i) / 1e6 for i in range(len(chain.plan.hops)))
    return ChainStats(chain.index, hops, chain.plan.throughput_rps, chain.served, chain.setup_ms, chain.error,
                      chain.redispatched, chain.circuit.circuit_id if chain.circuit else b"", seconds)


async def run_replicated(client: CircuitClient, *, plan: ReplicatedPlan, manifest: Manifest,
                         inputs: Sequence[Activation], peer_addrs: Mapping[str, Sequence[str]],
                         window: int | None = None, timeout_s: float | Sequence[float] | None = None,
                         on_result: Callable[[int, int], None] | None = None, audit: Audit | None = None) -> ReplicatedRun:
    """Stream `inputs` over every chain of `plan` (module docstring). `window`: inputs in flight
    per chain (default: `core.plan.pipeline_window` of the chain, enough to keep every stage and link busy);
    `timeout_s`: how long a chain with inputs in flight may go without a result (one value, or
    one per chain; None: ClientConfig.result_timeout_s); `on_result(done_count, chain_index)`
    after each result; `audit(chain_index, circuit, result,
    input_index)` before a result is accepted (spot checks: p2pinfer/replicated_audit.py; a
    VerificationError from it also recalls every result its chain delivered). Raises
    ChainsFailedError when no chain is left with inputs still unanswered."""
    timeouts = list(timeout_s) if isinstance(timeout_s, Sequence) else [timeout_s] * len(plan.chains)
    if not inputs or not plan.chains or (window is not None and window < 1) or len(timeouts) != len(plan.chains):
        raise CircuitError("run_replicated needs at least one input, one chain, window >= 1 and one timeout per chain")
    t0 = time.perf_counter()
    chains = [_Chain(i, p, window or pipeline_window(p)) for i, p in enumerate(plan.chains)]
    async with trio.open_nursery() as nursery:
        for chain in chains:
            nursery.start_soon(_open, client, chain, manifest, peer_addrs)
    setup_ms = (time.perf_counter() - t0) * 1000
    queue = _Queue(len(inputs))
    cpu0 = time.process_time()
    live = [c for c in chains if c.circuit is not None]
    queue.chains = live
    async with trio.open_nursery() as nursery:
        for chain in live:
            nursery.start_soon(_serve_until_last, chain, live, queue, inputs, timeouts[chain.index], on_result, audit)
    cpu_s = time.process_time() - cpu0
    if len(queue.results) < len(inputs):
        raise ChainsFailedError(_dead_hops(client, chains), f"{len(inputs) - len(queue.results)} of {len(inputs)} input(s) "
                                "without a result: every chain failed ("
                                + "; ".join(f"chain {c.index} {_names(c.plan)}: {c.error}" for c in chains) + ")")
    order = range(len(inputs))
    return ReplicatedRun(tuple(queue.results[i][0].act for i in order), tuple(queue.results[i][1] * 1000 for i in order),
                         tuple(queue.results[i][2] for i in order), tuple(_stats(c) for c in chains), setup_ms,
                         time.perf_counter() - t0, tuple(queue.done_at), tuple(queue.done_by), queue.last_dispatch,
                         cpu_s)


async def _serve_until_last(chain: _Chain, live: list[_Chain], queue: _Queue, inputs: Sequence[Activation],
                            timeout_s: float | None, on_result: Callable[[int, int], None] | None,
                            audit: Audit | None) -> None:
    """Feed `chain`, and when the last live chain fails with inputs left, end the stream (failed)."""
    await _Feeder(chain, queue, inputs, timeout_s, on_result, audit).run()
    if chain.error is not None and all(c.error is not None for c in live) and len(queue.results) < queue.count:
        queue.failed = True
        queue.poke()
