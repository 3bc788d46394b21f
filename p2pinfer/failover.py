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
3. No input is lost. Results are kept by input index; when a circuit fails, every input without
   a result (in flight or not yet sent) is sent again on the next circuit, from the input (hops
   retain their outputs, but resuming from them is not implemented: docs/reputation.md §9). A late duplicate
   cannot arrive: a failed circuit is forgotten, so its frames are dropped.
4. Blame. A refusal names its hop (REFUSED); a setup failure or setup timeout names its hops
   (FAILURE / TIMEOUT). A mid-stream failure (error frame, missed deadline) names no one we can
   trust (a hop may blame its neighbour), so every hop of the circuit is probed: a one-hop
   circuit fed the input of its span (computed locally: the requester holds the weights) with
   that hop's own deadline. A dead hop fails its probe (FAILURE), a staller misses it
   (TIMEOUT), a wrong output is a verification failure; hops that pass are not blamed.
5. Spot checks are audits after the fact. Every input runs on the attempt's one circuit. Hop
   i of input x is audited iff `hooks.should_check` (probation: always); the hop cannot know:
   the choice is made by the requester's secret and acted on only after the result arrived.
   The audit fetches hop i's input (hop i-1's retained output, or the requester's input) and
   output (hop i's retained output, or the result), each checked against its commitment
   (core/audit.py), re-runs the span locally (trusted) and settles (core/verification.py).
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

import numpy as np
import torch
import trio
from libp2p.peer.id import ID

from p2pinfer.core.audit import INPUT, RESULT, evidence_needed, evidence_matches
from p2pinfer.core.circuit import HopSpec, Result
from p2pinfer.core.codec import Activation, activation_from_cbor, decode_strict
from p2pinfer.core.plan import Plan
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.core.verification import Execution, Verdict, settle
from p2pinfer.errgroups import unwrapped
from p2pinfer.errors import (CircuitError, HopFailedError, HopRefusedError, NetworkError, NoRouteError, PlanError,
                             VerificationError, WireError)
from p2pinfer.models import profiling
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.circuit_client import hop_specs
from p2pinfer.net.hop_protocol import to_numpy, to_torch

log = logging.getLogger(__name__)

REQUESTER = "requester"  # the trusted executor's name in a settlement
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


def structure(act: Activation) -> tuple:
    """(name, shape, dtype kind) of every array: two outputs are comparable only if equal."""
    items = sorted(act.items()) if isinstance(act, Mapping) else [("x", act)]
    return tuple((name, np.asarray(a).shape, np.asarray(a).dtype.kind) for name, a in items)


def flat(act: Activation, like: Activation | None = None) -> np.ndarray:
    """The arrays' values as one float64 vector (names sorted), to compare with verification's
    tolerance. With `like`: a structure different from `like`'s gives a vector that agrees with
    nothing (shape headers are NOT mixed into the values: they would inflate the tolerance)."""
    if like is not None and structure(act) != structure(like):
        return np.full(1, np.nan)
    items = sorted(act.items()) if isinstance(act, Mapping) else [("x", act)]
    parts = [np.asarray(a).astype(np.float64, copy=False).ravel() for _name, a in items]
    return np.concatenate(parts) if parts else np.zeros(0)


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

    # ---- attempts ----

    async def run(self) -> RunOutcome:
        t0 = time.perf_counter()
        excluded: frozenset[str] = frozenset()
        last: Exception | None = None
        plan = snapshot = None
        attempts = 0
        for attempts in range(1, self.rq.config.max_attempts + 1):
            snapshot, plan, addrs = await self._plan(excluded, last, attempts)
            try:
                with unwrapped():
                    await self._attempt(plan, addrs, attempts)
            except RETRYABLE as exc:
                last = exc
                for peer in self.convicted:  # no result through a proven-wrong peer survives
                    self._recall(peer)
                blamed = await self._blame(plan, addrs, exc)
                excluded |= blamed
                log.info("attempt %d failed (%s); excluding %s", attempts, exc, sorted(blamed) or "nobody")
                continue
            if len(self.results) == len(self.batch):
                break
        if len(self.results) < len(self.batch) or plan is None or snapshot is None:
            raise NoRouteError(f"{self.manifest.name}: {len(self.batch) - len(self.results)} input(s) without a result "
                               f"after {attempts} attempt(s); last failure: {last}")
        order = range(len(self.batch))
        return RunOutcome(tuple(self.results[i][0] for i in order), tuple(self.results[i][1] for i in order),
                          tuple(self.results[i][2] for i in order if self.plan_of[i] is plan), plan, snapshot,
                          self.setup_ms, attempts,
                          time.perf_counter() - t0, excluded)

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
        todo = [i for i in range(len(self.batch)) if i not in self.results]
        work = _Work(len(specs))
        failed = True
        try:
            await self._pump(circuit, plan, specs, todo, deadline, work, number)
            failed = False
        finally:
            with trio.CancelScope(shield=True):
                await (circuit.abort() if failed else circuit.aclose())
                with trio.move_on_after(10):
                    await self._receipts(circuit.circuit_id, specs, work)

    async def _pump(self, circuit: Any, plan: Plan, specs: list[HopSpec], todo: list[int], deadline: float,
                    work: "_Work", number: int) -> None:
        window = trio.Semaphore(self.rq.config.max_in_flight)
        outstanding: dict[int, tuple[int, float, tuple[int, ...]]] = {}  # seq -> (input, sent at, audited hops)
        state = {"sent_all": False, "wake": trio.Event()}

        async def sender() -> None:
            for idx in todo:
                await window.acquire()
                key = self.nonce + number.to_bytes(2, "big") + idx.to_bytes(4, "big")
                checked = tuple(i for i, h in enumerate(specs) if self.hooks.should_check(key, i, h.peer_id))
                outstanding[circuit.machine.next_seq] = (idx, time.perf_counter(), checked)
                await circuit.send(self.batch[idx])
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
                       state: dict[str, Any], window: trio.Semaphore, deadline: float, work: "_Work",
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
        watched = {p for p, i in ids.items() if network.get_connections(i)}
        while True:
            await trio.sleep(interval_s)
            lost = sorted(p for p in watched if not network.get_connections(ids[p]))
            if lost:
                raise NetworkError(f"lost the connection to hop(s) {', '.join(lost)} mid-circuit")

    async def _accept(self, idx: int, r: Result, sent: float, specs: Sequence[HopSpec], work: "_Work",
                      audited: Sequence[int] = ()) -> None:
        """A result: record its hops as completed and keep it by index; `via` names the hops it
        passed through unaudited (recalled if one of them is caught later)."""
        wall = time.perf_counter() - sent
        done = []
        for j, spec in enumerate(specs):
            measured = min(r.trace[j] / 1e6 if j < len(r.trace) else wall, wall)
            done.append(self._hop_record(spec, measured))
            work.add(j, self._span_flops(spec), measured)
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
                       checked: tuple[int, ...], work: "_Work", window: trio.Semaphore, nursery: trio.Nursery) -> None:
        """Audit the chosen hops of this result, then accept it. The first failed audit ends the
        attempt (kept in `self.audit_failure`; concurrent audits are cancelled, not re-blamed)."""
        try:
            key = self.nonce + idx.to_bytes(4, "big")
            for k in checked:
                given = await self._evidence(circuit, r, idx, specs, k, as_input=True)
                got = await self._evidence(circuit, r, idx, specs, k, as_input=False)
                await self._verify(specs[k], given, got, idx, key)
            self.audits += len(checked)
            circuit.machine.forget_seq(r.seq)
            await self._accept(idx, r, sent, specs, work, audited=checked)
        except RETRYABLE as exc:
            if self.audit_failure is None:
                self.audit_failure = exc
            nursery.cancel_scope.cancel()
        finally:
            window.release()

    async def _evidence(self, circuit: Any, r: Result, idx: int, specs: list[HopSpec], k: int, *,
                        as_input: bool) -> Activation:
        """Hop k's verified input (as_input) or output for this result (core/audit.py rule 4)."""
        src = evidence_needed(k, len(specs))[0 if as_input else 1]
        if src == INPUT:
            return self.batch[idx]
        if src == RESULT:
            return r.act
        peer = specs[src].peer_id
        try:
            data = await circuit.retained(src, r.seq, timeout=self.hooks.options.audit_timeout_s)
        except (NetworkError, WireError) as exc:
            raise HopFailedError((peer,), "failure", f"hop {peer} failed an audit of input {idx}: {exc}") from None
        if data is None:
            raise HopFailedError((peer,), "failure", f"hop {peer} no longer holds its output for input {idx}")
        commit = circuit.machine.committed(src, r.seq)
        try:
            if commit is None or not evidence_matches(data, commit):
                raise WireError("retained output does not match its commitment")
            return activation_from_cbor(decode_strict(data, max_size=self.rq.client.config.max_frame))
        except WireError as exc:
            detail = f"hop {peer} showed an audit of {self.manifest.name} input {idx} a different output: {exc}"
            await self._convict(peer, detail)
            raise VerificationError(peer, detail) from None

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

    async def _verify(self, spec: HopSpec, given: Activation, got: Activation, idx: int, key: bytes) -> None:
        """Settle one checked hop against the requester's own (trusted) execution of its span."""
        want = await self.run_local(spec.start, spec.stop, given)
        decision = settle([Execution(spec.peer_id, flat(got, want)), Execution(REQUESTER, flat(want), trusted=True)],
                          self.hooks.options.policy)
        assert isinstance(decision, Verdict)  # a trusted execution always settles
        if spec.peer_id in decision.penalised:
            detail = f"layers [{spec.start},{spec.stop}) of {self.manifest.name}, input {idx}"
            recalled = await self._convict(spec.peer_id, detail)
            raise VerificationError(spec.peer_id, f"hop {spec.peer_id} returned a wrong output for {detail} "
                                    f"(excluded; {recalled} earlier result(s) through it recomputed)")

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

    # ---- bookkeeping ----

    def _span_flops(self, spec: HopSpec) -> int:
        return int(sum(layer.flops for layer in self.profile.layers[spec.start:spec.stop]))

    def _hop_record(self, spec: HopSpec, measured: float) -> tuple:
        peer = self.rq.last_specs.get(spec.peer_id)
        by_class: dict[str, int] = {}
        for layer in self.profile.layers[spec.start:spec.stop]:
            for cls, f in layer.flops_by_class.items():
                by_class[cls] = by_class.get(cls, 0) + int(f)
        adv = peer.gflops if peer else 1.0
        adv_by_class = dict(peer.gflops_by_class) if peer else {}
        return (spec.peer_id, self._span_flops(spec), by_class, measured, adv, adv_by_class)

    async def _receipts(self, circuit_id: bytes, specs: Sequence[HopSpec], work: "_Work") -> None:
        items = [(s.peer_id, s.addrs, s.start, s.stop, work.flops[i], work.seconds[i])
                 for i, s in enumerate(specs) if work.count[i]]
        try:
            await self.hooks.issue_receipts(circuit_id=circuit_id, model_id=self.manifest.model_id, work=items)
        except Exception:  # task boundary: receipts never fail a request
            log.exception("issuing receipts for circuit %s failed", circuit_id.hex()[:8])


class _Work:
    """Per hop of one circuit: completed inputs, flops and measured seconds (for its receipt)."""

    def __init__(self, hops: int) -> None:
        self.count, self.flops, self.seconds = [0] * hops, [0] * hops, [0.0] * hops

    def add(self, i: int, flops: int, seconds: float) -> None:
        if i < len(self.count):
            self.count[i] += 1
            self.flops[i] += flops
            self.seconds[i] += seconds
