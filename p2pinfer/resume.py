"""Resuming a failed circuit from a surviving upstream hop (failover.py rule 3).

When an attempt fails mid-stream, its circuit is not torn down at once (`Broken`): the hops
upstream of the failure still hold their outputs (core/retention.py). Once the failed peers are
known, `start_resumption` claims the in-flight inputs the first hop committed to (`resumable`;
the others are sent from the input by the next attempt at once) and runs `resume` for them in
the background, next to the following attempt, which leaves claimed inputs alone:

1. f = the first hop of the broken circuit among the failed peers: a hop whose connection
   dropped (known at once), else those the probes blamed. None, or f = 0: nothing upstream to
   resume from (every input restarts from the input). Routing around a peer is not blame.
2. For u = f-1 down to 0 (the surviving hop closest to the failure first: the most work kept),
   the inputs still without a result whose commitments chain from the requester's input
   through hop u (core/handoff.prefix_digest) are handed off from hop u = U:
   a suffix circuit for layers [stop_u, L) is planned over the peers not excluded, not U
   (core/suffix.plan_suffix) and opened; its first link-0 seqs are reserved with U's committed
   output digests (core/handoff.adopt); U gets a handoff signed by us and sealed to it
   (net/reroute_protocol.py) and writes its retained outputs to the suffix's first hop. Seqs U
   no longer holds (`missing`) are tried at the next u.
3. Each suffix result: its commitment chain must start from U's committed digest (a break there
   names U and the suffix's first hop: a FAILURE each; at the end, the last hop is convicted);
   audits over the whole route (prefix hops as selected when the input was sent, suffix hops
   selected afresh; p2pinfer/audits.py); accepted with the prefix hops' compute time from their
   commitments and the suffix hops' from the trace, each credited to its own circuit's receipt.
4. Bounded: at most f suffix circuits, each bounded by its setup, handoff and result deadlines.
   A step that fails ends (its inputs go on to the next u); a verification failure ends the
   resume. Whatever is left is restarted from the input by the next attempt. Finally the
   broken circuit is aborted and its receipts issued (prefix work of resumed inputs included).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import trio

from p2pinfer.audits import Leg, audit
from p2pinfer.core import handoff as ho
from p2pinfer.core import wire
from p2pinfer.core.circuit import HopSpec, Result
from p2pinfer.core.plan import Plan
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.suffix import plan_suffix
from p2pinfer.errors import CircuitError, NetworkError, PlanError, VerificationError, WireError
from p2pinfer.hop_work import HopWork, SplitWork
from p2pinfer.net.circuit_client import hop_specs
from p2pinfer.net.reroute_protocol import request_handoff

log = logging.getLogger(__name__)

STEP_ERRORS = (CircuitError, NetworkError, PlanError, WireError)


@dataclass
class Broken:
    """A failed attempt's circuit, kept open while its inputs are resumed."""

    circuit: Any  # net.circuit_client.Circuit
    specs: list[HopSpec]
    outstanding: dict[int, tuple[int, float, tuple[int, ...]]]  # seq -> (input, sent at, audited hops)
    work: HopWork  # of the broken circuit


def first_failed(specs: list[HopSpec], failed: frozenset[str]) -> int | None:
    return next((i for i, s in enumerate(specs) if s.peer_id in failed), None)


async def start_resumption(run: Any, nursery: trio.Nursery, broken: Broken, failed: frozenset[str],
                           exclude: frozenset[str]) -> None:
    """Resume `broken`'s in-flight inputs from upstream of the first hop in `failed` in a task of
    `nursery`, next to the following attempts (which leave `run.resuming` alone meanwhile); or
    close it now when resumption is off or nothing upstream of the failure can be resumed."""
    idxs = resumable(broken, run.results) if first_failed(broken.specs, failed) else set()
    if not (run.hooks.options.resume and idxs):
        return await run._close(broken.circuit, True, broken.specs, broken.work)
    run.resuming |= idxs

    async def task() -> None:
        try:
            n = await resume(run, broken, failed, exclude, idxs)
            log.info("resumed %d of %d in-flight input(s) from upstream hops", n, len(idxs))
        except Exception:  # task boundary: a failed resumption only means restarting from the input
            log.exception("resumption failed; its inputs restart from the input")
        finally:
            run.resuming -= idxs
            run._settled.set()
            run._settled = trio.Event()

    nursery.start_soon(task)


def resumable(b: Broken, results: Mapping[int, Any]) -> set[int]:
    """The inputs without a result that can be resumed at all: the first hop committed to
    them, chained from our input. (The others are sent from the input by the next attempt.)"""
    m = b.circuit.machine
    return {idx for seq, (idx, _t, _c) in b.outstanding.items()
            if idx not in results and ho.prefix_digest(m.input_hashes.get(seq), [m.committed(0, seq)]) is not None}


async def resume(run: Any, broken: Broken, failed: frozenset[str], exclude: frozenset[str], inputs: set[int]) -> int:
    """Rules 1-4 for `inputs` (claimed by the caller: nobody else sends them meanwhile); returns
    how many got their result this way. Never raises a step's failure (those inputs restart
    from the input); always closes the broken circuit."""
    try:
        return await _resume(run, broken, failed, exclude, inputs)
    finally:
        await run._close(broken.circuit, True, broken.specs, broken.work)


async def _resume(run: Any, b: Broken, failed: frozenset[str], exclude: frozenset[str], inputs: set[int]) -> int:
    f = first_failed(b.specs, failed)
    before = run.resumed
    machine = b.circuit.machine
    for u in range(f - 1 if f else -1, -1, -1):
        # inputs still without a result (a step that failed half-way may have accepted some)
        pending = sorted(seq for seq, (idx, _t, _c) in b.outstanding.items() if idx in inputs and idx not in run.results)
        if not pending:
            break
        ready = {}
        for seq in pending:
            d = ho.prefix_digest(machine.input_hashes.get(seq), [machine.committed(j, seq) for j in range(u + 1)])
            if d is not None:
                ready[seq] = d
        if not ready:
            continue
        try:
            await _from_hop(run, b, u, ready, exclude | failed)
        except VerificationError as exc:
            log.info("resume stopped: %s", exc)
            break
        except STEP_ERRORS as exc:
            log.info("resume from hop %d (%s) failed: %s", u, b.specs[u].peer_id, exc)
    return run.resumed - before


async def _from_hop(run: Any, b: Broken, u: int, ready: Mapping[int, bytes], exclude: frozenset[str]) -> set[int]:
    """Rule 2-3 for holder u: the seqs of the broken circuit whose results were accepted."""
    holder = b.specs[u]
    snapshot, addrs = await run.rq.snapshot(exclude=exclude)
    plan = plan_suffix(run.profile, snapshot, holder.stop, exclude=exclude | {holder.peer_id}, objective="latency",
                       options=run.rq.config.planner)
    specs = hop_specs(plan, run.manifest, addrs)
    circuit = await run.rq.client.open_circuit(model_id=run.manifest.model_id, hops=specs)
    work, failed = HopWork(len(specs)), True
    try:
        seqs = tuple(ready)
        first, key = ho.adopt(circuit.machine, [ready[s] for s in seqs])
        config = run.rq.client.config
        h = ho.Handoff(circuit_id=b.circuit.circuit_id, hop=holder.peer_id, requester=run.rq.identity.peer_id, link=u,
                       seqs=seqs, to_circuit=circuit.circuit_id, to_seq=first, to_key=key,
                       next_hop=wire.NextHop(specs[0].peer_id, specs[0].addrs, False),
                       deadline_ms=int(time.time() * 1000 + config.setup_timeout_s * 1000))
        reply = await request_handoff(run.rq.host, run.rq.identity, h, holder.addrs, timeout=config.io_timeout_s)
        if not reply.ok:
            raise CircuitError(f"hop {holder.peer_id} refused the handoff: {reply.reason}: {reply.message}")
        log.info("resuming %d input(s) from hop %d (%s) over %s (%d no longer held)", len(reply.sent), u,
                 holder.peer_id, [s.peer_id for s in specs], len(reply.missing))
        new = {first + seqs.index(s): s for s in reply.sent}
        done = await _collect(run, b, u, circuit, plan, specs, new, work)
        failed = False
        return done
    finally:
        await run._close(circuit, failed, specs, work)


async def _collect(run: Any, b: Broken, u: int, circuit: Any, plan: Plan, specs: list[HopSpec], new: dict[int, int],
                   work: Any) -> set[int]:
    """Receive the suffix's results (deadline per result), check, audit, accept (rule 3)."""
    deadline = run._deadline_s(plan.hops, plan.transfer_out_s)
    prefix = b.specs[:u + 1]
    done: set[int] = set()
    while len(done) < len(new):
        r = await circuit.receive(timeout=deadline)
        old = new.get(r.seq)
        if old is None or old in done:
            continue
        idx, sent, checked = b.outstanding[old]
        await _check_suffix_chain(run, circuit, r, b.specs[u], specs, idx)
        key = run.nonce + b"resume" + idx.to_bytes(4, "big") + circuit.circuit_id
        audited = tuple(k for k in checked if k <= u) + tuple(
            u + 1 + m for m, s in enumerate(specs) if run.hooks.should_check(key, u + 1 + m, s.peer_id))
        if audited:
            await audit(run, (Leg(b.circuit, old, tuple(prefix)), Leg(circuit, r.seq, tuple(specs))), r, idx, audited)
        circuit.machine.forget_seq(r.seq)
        prefix_us = tuple(b.circuit.machine.committed(j, old).compute_us for j in range(u + 1))
        await run._accept(idx, replace(r, trace=prefix_us + tuple(r.trace)), sent, prefix + specs,
                          SplitWork(b.work, u + 1, work), audited=audited)
        run.plan_of[idx] = None  # not the last plan's traces
        run.resumed += 1
        done.add(old)
    return done


async def _check_suffix_chain(run: Any, circuit: Any, r: Result, holder: HopSpec, specs: list[HopSpec], idx: int) -> None:
    """Rule 3: the suffix's chain starts at the holder's committed digest (reserved as its input)."""
    check = await circuit.chain(r, timeout=run.hooks.options.commit_timeout_s)
    if check.missing:
        run.missing_commits += len(check.missing)
    for brk in check.breaks:
        detail = f"commitment chain of resumed {run.manifest.name} input {idx} broken at suffix boundary {brk}"
        if brk == len(specs):  # the last hop's output vs the result it sent us: one liar
            await run._convict(specs[-1].peer_id, detail)
            raise VerificationError(specs[-1].peer_id, detail)
        pair = (holder, specs[0]) if brk == 0 else (specs[brk - 1], specs[brk])
        for spec in pair:
            await trio.to_thread.run_sync(run.hooks.hop_failed, spec.peer_id, EventKind.FAILURE, detail)
        raise CircuitError(detail)
