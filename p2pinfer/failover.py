"""The requester's fault-tolerant run: failover, per-hop deadlines and spot checks for a batch.

`ResilientRun(requester, hooks, manifest, batch, objective).run()` returns every input's
output in input order, or raises `NoRouteError`. Rules (docs/reputation.md §8-9):

1. Attempts. Each attempt discovers, drops excluded peers, plans (measured speed, reputation)
   and opens one circuit; at most `RequesterConfig.max_attempts` attempts. An attempt that
   fails blames the hops at fault (below), which the next plan leaves out. No plan, no peers
   left or no attempts left: `NoRouteError` naming the last failure.
2. Deadlines. While inputs are outstanding on a circuit, the next result must arrive within
   the circuit deadline: the sum over hops of `hop_deadline_s(compute_s + transfer_in_s)`
   (predicted with the measured speed) plus the transfer out. Setup has its own deadline.
3. No input is lost. Results are kept by input index. A circuit that fails mid-stream stays
   open until the failed hop is known (one whose connection dropped: at once; else the probes'
   verdict); its in-flight inputs then resume from a surviving upstream hop's retained outputs
   in a suffix circuit without the failed peer (p2pinfer/resume.py), next to the following
   attempt, which sends every other input without a result from the input (as it does what
   resumption could not finish). A failed circuit is forgotten: its late frames are dropped.
4. Blame. A refusal names its hop (REFUSED); a setup failure or setup timeout names its hops
   (FAILURE / TIMEOUT). A mid-stream failure (error frame, missed deadline) names no one we can
   trust (a hop may blame its neighbour), so every hop of the circuit is probed: a one-hop
   circuit fed the input of its span (computed locally: the requester holds the weights) with
   that hop's own deadline. A dead hop fails its probe (FAILURE), a staller misses it
   (TIMEOUT), a wrong output is a verification failure; hops that pass are not blamed.
5. Spot checks are audits after the fact (p2pinfer/audits.py). Every input runs on the
   attempt's one circuit. Hop i of input x is audited iff `hooks.should_check` (probation:
   always); the hop cannot know: the choice is made by the requester's secret and acted on only
   after the result arrived. The audit fetches hop i's input (hop i-1's retained output, or the
   requester's input) and output (hop i's retained output, or the result), each checked against
   its commitment (core/audit.py), re-runs the span locally (trusted) and settles
   (core/verification.py). Resumed inputs are audited the same way over their whole route.
   The result is accepted only when its audits pass. A proven-wrong hop (wrong output, or
   retained bytes that contradict its commitment) is excluded at once, the attempt is
   abandoned, and every result of this run that passed through that hop unaudited is
   discarded and recomputed without it: no output of a detected peer reaches the caller.
   A hop that cannot show its evidence is blamed a FAILURE and left out of the next plan.
6. Commitments. Every result of the main circuit is accepted only after its hops'
   commitments (core/commitments.py) were awaited (bounded by `commit_timeout_s`) and checked:
   a broken chain blames as `_check_chain` says; a missing commitment is counted and logged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import trio
from libp2p.peer.id import ID

from p2pinfer.audits import Leg, audit, flat, structure  # noqa: F401 (flat: probe.py and tests import it from here)
from p2pinfer.core.circuit import HopSpec, Result
from p2pinfer.core.codec import Activation
from p2pinfer.core.plan import Plan
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.errgroups import unwrapped
from p2pinfer.errors import CircuitError, HopFailedError, HopRefusedError, NetworkError, NoRouteError, PlanError, VerificationError
from p2pinfer.models import profiling
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.circuit_client import hop_specs
from p2pinfer.net.hop_protocol import to_numpy, to_torch
from p2pinfer.hop_work import HopWork, hop_record, issue_receipts, span_flops
from p2pinfer.resume import Broken, start_resumption

log = logging.getLogger(__name__)

RETRYABLE = (CircuitError, NetworkError)


@dataclass(frozen=True)
class RunOutcome:
    outputs: tuple[Activation, ...]
    latency_ms: tuple[float, ...]
    traces: tuple[tuple[int, ...], ...]  # compute traces of the inputs the last plan computed
    plan: Plan  # the plan of the last attempt
    snapshot: SwarmSnapshot
    setup_ms: float
    attempts: int
    wall_s: float
    excluded: frozenset[str]
    resumed: int = 0  # inputs resumed from an upstream hop's retained output (p2pinfer/resume.py)


class ResilientRun:
    """One batch through the swarm with failover and spot checks (module docstring)."""

    def __init__(self, requester: Any, hooks: Any, manifest: Manifest, batch: Sequence[Activation], objective: str,
                 *, on_result: Callable[[int], None] | None = None) -> None:
        self.rq, self.hooks, self.manifest, self.batch, self.objective = requester, hooks, manifest, batch, objective
        self.on_result = on_result
        self.profile = profiling.profile(manifest, requester.store)
        self.results: dict[int, tuple[Activation, float, tuple[int, ...]]] = {}
        self.via: dict[int, frozenset[str]] = {}  # peers a result passed through unchecked
        self.nonce = os.urandom(16)
        self.local = SpanExecutor(requester.store)
        self._local_lock = trio.CapacityLimiter(1)
        self.setup_ms = 0.0
        self.audits = 0  # hops audited in this run
        self.audit_failure: Exception | None = None  # the running attempt's first failed audit
        self.convicted: set[str] = set()  # peers recorded as proven wrong in this run
        self.plan: Plan | None = None  # the running attempt's
        self.plan_of: dict[int, Plan | None] = {}  # which attempt's plan computed each result
        self.missing_commits = 0  # commitments that did not arrive within commit_timeout_s
        self.broken: Broken | None = None  # the last failed circuit, kept open for resumption
        self.resuming: set[int] = set()  # inputs a resumption is working on (not re-sent meanwhile)
        self.resumed = 0
        self._settled = trio.Event()  # set (and replaced) whenever a resumption ends
        self.watched: dict[str, ID] = {}  # hops of the running attempt we are connected to

    # ---- attempts ----

    async def run(self) -> RunOutcome:
        t0 = time.perf_counter()
        try:
            with unwrapped():  # a NoRouteError raised next to running resumptions: not a group
                async with trio.open_nursery() as resumes:
                    attempts, last, plan, snapshot, excluded = await self._attempts(resumes)
        finally:
            if self.broken is not None:  # cancelled between the failure and its resumption
                await self._close(self.broken.circuit, True, self.broken.specs, self.broken.work)
        if len(self.results) < len(self.batch) or plan is None or snapshot is None:
            raise NoRouteError(f"{self.manifest.name}: {len(self.batch) - len(self.results)} input(s) without a result "
                               f"after {attempts} attempt(s); last failure: {last}")
        order = range(len(self.batch))
        return RunOutcome(tuple(self.results[i][0] for i in order), tuple(self.results[i][1] for i in order),
                          tuple(self.results[i][2] for i in order if self.plan_of[i] is plan), plan, snapshot,
                          self.setup_ms, attempts, time.perf_counter() - t0, excluded, self.resumed)

    async def _attempts(self, resumes: trio.Nursery) -> tuple[int, Exception | None, Plan | None, Any, frozenset[str]]:
        """Rule 1: attempts until every input has a result (resumptions run in `resumes`)."""
        excluded: frozenset[str] = frozenset()
        last: Exception | None = None
        plan = snapshot = None
        attempts = 0
        while len(self.results) < len(self.batch):
            if not self._todo() or attempts == self.rq.config.max_attempts:
                if not self.resuming:
                    break
                await self._settled.wait()  # bounded: every resumption step has deadlines
                continue
            attempts += 1
            self.watched = {}
            snapshot, plan, addrs = await self._plan(excluded, last, attempts)
            try:
                with unwrapped():
                    await self._attempt(plan, addrs, attempts)
            except RETRYABLE as exc:
                last = exc
                for peer in self.convicted:  # no result through a proven-wrong peer survives
                    self._recall(peer)
                async with trio.open_nursery() as probing:  # the probes, and a dropped hop meanwhile
                    probing.start_soon(self._resume_if_lost, resumes, excluded)
                    blamed = await self._blame(plan, addrs, exc)
                    probing.cancel_scope.cancel()
                excluded |= blamed
                log.info("attempt %d failed (%s); excluding %s", attempts, exc, sorted(blamed) or "nobody")
                await self._resume_after(resumes, blamed, excluded)
        return attempts, last, plan, snapshot, excluded

    def _todo(self) -> list[int]:
        return [i for i in range(len(self.batch)) if i not in self.results and i not in self.resuming]

    async def _resume_after(self, nursery: trio.Nursery, failed: frozenset[str], excluded: frozenset[str]) -> None:
        """Rule 3 (p2pinfer/resume.py): resume the failed circuit's in-flight inputs, or close it."""
        broken, self.broken = self.broken, None
        if broken is not None:
            await start_resumption(self, nursery, broken, failed, excluded)

    async def _plan(self, excluded: frozenset[str], last: Exception | None,
                    number: int) -> tuple[SwarmSnapshot, Plan, dict[str, tuple[str, ...]]]:
        try:
            snapshot, addrs = await self.rq.snapshot(exclude=excluded)
            if not snapshot.peers:
                raise NetworkError("every discovered peer is excluded by the ledger")
            return snapshot, self.rq.plan(self.manifest, snapshot, self.objective), addrs
        except (NetworkError, PlanError) as exc:
            after = f" (attempt {number}; last failure: {last})" if last else ""
            raise NoRouteError(f"no route remains for {self.manifest.name}: {exc}{after}") from exc

    def _deadline_s(self, hops: Sequence[Any], transfer_out_s: float) -> float:
        return sum(self.hooks.deadline_s(h.compute_s + h.transfer_in_s) for h in hops) + transfer_out_s

    async def _attempt(self, plan: Plan, addrs: Mapping[str, tuple[str, ...]], number: int) -> None:
        """Every input without a result through one circuit for `plan` (some audited, rule 5)."""
        specs = hop_specs(plan, self.manifest, addrs)
        self.plan = plan
        deadline = self._deadline_s(plan.hops, plan.transfer_out_s)
        started = time.perf_counter()
        circuit = await self.rq.client.open_circuit(model_id=self.manifest.model_id, hops=specs)
        self.setup_ms = (time.perf_counter() - started) * 1000
        work = HopWork(len(specs))
        outstanding: dict[int, tuple[int, float, tuple[int, ...]]] = {}  # seq -> (input, sent at, audited hops)
        failed, keep = True, False
        try:
            with unwrapped():
                await self._pump(circuit, specs, self._todo(), deadline, work, number, outstanding)
            failed = False
        except RETRYABLE as exc:  # kept open for resumption (rule 3) unless a hop was proven wrong
            keep = bool(outstanding) and not isinstance(exc, (VerificationError, HopRefusedError))
            if keep:
                self.broken = Broken(circuit, specs, outstanding, work)
            raise
        finally:
            if not keep:
                await self._close(circuit, failed, specs, work)

    async def _close(self, circuit: Any, failed: bool, specs: Sequence[HopSpec], work: HopWork) -> None:
        with trio.CancelScope(shield=True):
            await (circuit.abort() if failed else circuit.aclose())
            with trio.move_on_after(10):
                await issue_receipts(self.hooks, self.manifest.model_id, circuit.circuit_id, specs, work)

    async def _pump(self, circuit: Any, specs: list[HopSpec], todo: list[int], deadline: float, work: HopWork,
                    number: int, outstanding: dict[int, tuple[int, float, tuple[int, ...]]]) -> None:
        window = trio.Semaphore(self.rq.config.stream_window(self.plan))
        state = {"sent_all": False, "wake": trio.Event()}

        async def sender() -> None:
            for idx in todo:
                await window.acquire()
                key = self.nonce + number.to_bytes(2, "big") + idx.to_bytes(4, "big")
                checked = tuple(i for i, h in enumerate(specs) if self.hooks.should_check(key, i, h.peer_id))
                outstanding[circuit.machine.next_seq] = (idx, time.perf_counter(), checked)
                try:
                    await circuit.send(self.batch[idx])
                except CircuitError:
                    if circuit.machine.error is None:
                        raise
                    return  # the circuit failed: the collector raises its error (one error, not a group)
                state["wake"].set()
            state["sent_all"] = True
            state["wake"].set()

        async with trio.open_nursery() as watching:
            watching.start_soon(self._watch, specs)
            self.audit_failure = None
            async with trio.open_nursery() as nursery:  # the sender, audits, results
                nursery.start_soon(sender)
                await self._collect(circuit, specs, outstanding, state, window, deadline, work, nursery)
            if self.audit_failure is not None:
                raise self.audit_failure
            watching.cancel_scope.cancel()

    async def _collect(self, circuit: Any, specs: list[HopSpec], outstanding: dict[int, tuple[int, float, tuple[int, ...]]],
                       state: dict[str, Any], window: trio.Semaphore, deadline: float, work: HopWork,
                       nursery: trio.Nursery) -> None:
        """Receive until every input sent has its result (deadline per result); audited results
        are accepted by their audit task."""
        while True:
            if not outstanding:
                if state["sent_all"]:
                    break
                await state["wake"].wait()
                state["wake"] = trio.Event()
                continue
            r = await circuit.receive(timeout=deadline)
            if r.seq not in outstanding:
                continue
            idx, sent, checked = outstanding.pop(r.seq)
            await self._check_chain(circuit, r, specs, idx)
            if checked:
                nursery.start_soon(self._audited, circuit, r, idx, sent, specs, checked, work, window, nursery)
                continue
            circuit.machine.forget_seq(r.seq)
            await self._accept(idx, r, sent, specs, work)
            window.release()

    async def _check_chain(self, circuit: Any, r: Result, specs: Sequence[HopSpec], idx: int) -> None:
        """Rule 6: the hops' commitments for this result must form an unbroken chain. A break at
        either end has one possible liar (excluded as a verification failure); inside, one of
        two neighbours lied (both get a failure, the attempt is abandoned and probed)."""
        check = await circuit.chain(r, timeout=self.hooks.options.commit_timeout_s)
        if check.missing:
            self.missing_commits += len(check.missing)
            log.info("input %d: no commitment from hop(s) %s", idx, [specs[i].peer_id for i in check.missing])
        for suspects in check.suspects(len(specs)):
            peers = sorted(specs[i].peer_id for i in suspects)
            detail = f"commitment chain of {self.manifest.name} input {idx} broken next to {', '.join(peers)}"
            if len(peers) == 1:
                await self._convict(peers[0], detail)
                raise VerificationError(peers[0], detail)
            for peer in peers:
                await trio.to_thread.run_sync(self.hooks.hop_failed, peer, EventKind.FAILURE, detail)
            raise CircuitError(detail)

    async def _convict(self, peer_id: str, detail: str) -> int:
        """Record a verification failure once per run (concurrent audits may both catch it) and
        recall every result through the peer; returns how many were recalled."""
        if peer_id not in self.convicted:
            self.convicted.add(peer_id)
            await trio.to_thread.run_sync(self.hooks.verification_failed, peer_id, detail)
        return self._recall(peer_id)

    def _recall(self, peer_id: str) -> int:
        """Discard every result that passed through `peer_id` unchecked (it is recomputed)."""
        recalled = [i for i, peers in self.via.items() if peer_id in peers and i in self.results]
        for i in recalled:
            del self.results[i], self.via[i]
        return len(recalled)

    async def _watch(self, specs: list[HopSpec], interval_s: float = 0.2) -> None:
        """Fail the attempt as soon as a hop we were connected to drops its connection (a dead
        peer), instead of waiting for the circuit deadline. Blames nobody by itself: the
        failure leads to probes (rule 4), so a benign disconnect costs an attempt, not a peer."""
        network = self.rq.host.get_network()
        ids = {s.peer_id: ID.from_base58(s.peer_id) for s in specs}
        self.watched = {p: i for p, i in ids.items() if network.get_connections(i)}
        while True:
            await trio.sleep(interval_s)
            lost = self._lost()
            if lost:
                raise NetworkError(f"lost the connection to hop(s) {', '.join(sorted(lost))} mid-circuit")

    async def _resume_if_lost(self, resumes: trio.Nursery, excluded: frozenset[str], interval_s: float = 0.05) -> None:
        """Rule 3 without waiting for the probes: once a hop of the failed attempt has dropped its
        connection (often noticed just after an upstream error frame), route around it."""
        while not (lost := self._lost()):
            await trio.sleep(interval_s)
        await self._resume_after(resumes, lost, excluded | lost)

    def _lost(self) -> frozenset[str]:
        """Hops of the running attempt we were connected to and no longer are (a dead peer's host
        closed them): resumption routes around them at once (rule 3)."""
        network = self.rq.host.get_network()
        return frozenset(p for p, i in self.watched.items() if not network.get_connections(i))

    async def _accept(self, idx: int, r: Result, sent: float, specs: Sequence[HopSpec], work: HopWork,
                      audited: Sequence[int] = ()) -> None:
        """A result: record its hops as completed and keep it by index; `via` names the hops it
        passed through unaudited (recalled if one of them is caught later)."""
        wall = time.perf_counter() - sent
        done = []
        for j, spec in enumerate(specs):
            measured = min(r.trace[j] / 1e6 if j < len(r.trace) else wall, wall)
            done.append(hop_record(self.profile, self.rq.last_specs, spec.peer_id, spec.start, spec.stop, measured))
            work.add(j, span_flops(self.profile, spec), measured)
        await trio.to_thread.run_sync(self.hooks.hops_ok, done)
        via = frozenset(s.peer_id for j, s in enumerate(specs) if j not in audited)
        if via & self.convicted:  # caught by a concurrent audit while we were recording
            return
        self.results[idx] = (r.act, wall * 1000, tuple(r.trace))
        self.plan_of[idx] = self.plan
        self.via[idx] = via
        if self.on_result is not None:
            self.on_result(len(self.results))

    # ---- audits: spot checks after the fact (rule 5) ----

    async def _audited(self, circuit: Any, r: Result, idx: int, sent: float, specs: list[HopSpec],
                       checked: tuple[int, ...], work: HopWork, window: trio.Semaphore, nursery: trio.Nursery) -> None:
        """Audit the chosen hops of this result, then accept it. The first failed audit ends the
        attempt (kept in `self.audit_failure`; concurrent audits are cancelled, not re-blamed)."""
        try:
            await audit(self, (Leg(circuit, r.seq, tuple(specs)),), r, idx, checked)
            circuit.machine.forget_seq(r.seq)
            await self._accept(idx, r, sent, specs, work, audited=checked)
        except RETRYABLE as exc:
            if self.audit_failure is None:
                self.audit_failure = exc
            nursery.cancel_scope.cancel()
        finally:
            window.release()

    async def _one_circuit(self, specs: Sequence[HopSpec], act: Activation, deadline: float) -> tuple[Result, bytes]:
        circuit = await self.rq.client.open_circuit(model_id=self.manifest.model_id, hops=list(specs))
        try:
            r = await circuit.infer(act, timeout=deadline)
        except BaseException:
            with trio.CancelScope(shield=True):
                await circuit.abort()
            raise
        with trio.CancelScope(shield=True):
            await circuit.aclose()
        return r, circuit.circuit_id

    async def run_local(self, start: int, stop: int, act: Activation) -> Activation:
        """Layers [start, stop) computed by the requester itself (it holds every weight)."""
        def compute() -> Activation:
            with torch.inference_mode():
                return to_numpy(self.local.run(self.manifest, start, stop, to_torch(act)))
        return await trio.to_thread.run_sync(compute, limiter=self._local_lock)

    # ---- blame ----

    async def _blame(self, plan: Plan, addrs: Mapping[str, tuple[str, ...]], exc: Exception) -> frozenset[str]:
        if isinstance(exc, VerificationError):
            return frozenset({exc.peer_id})  # recorded (and excluded) when it was detected
        if isinstance(exc, HopRefusedError):
            await trio.to_thread.run_sync(self.hooks.hop_failed, exc.peer_id, EventKind.REFUSED, str(exc))
            return frozenset({exc.peer_id})
        if isinstance(exc, HopFailedError) and exc.peer_ids:
            kind = EventKind.TIMEOUT if exc.kind == "timeout" else EventKind.FAILURE
            for peer in exc.peer_ids:
                await trio.to_thread.run_sync(self.hooks.hop_failed, peer, kind, str(exc))
            return frozenset(exc.peer_ids)
        from p2pinfer.probe import probe_hops  # the mid-stream case: probe every hop

        return await probe_hops(self, plan, addrs, exc)
