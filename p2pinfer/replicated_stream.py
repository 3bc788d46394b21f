"""The requester's replicated stream: many inputs over several disjoint chains at once.

`Requester.infer_stream` comes here when the objective is throughput and
`RequesterConfig.replicas.max_chains` allows more than one chain: discover, plan with
`core.replicas.plan_replicated` (same snapshot, reputation and exclusion as the single-chain
planner), and if that plan has several chains stream with `net.replicated_run.run_replicated`
(pull-based dispatch, a failed chain's inputs re-dispatched to the others). A plan of one chain,
or a run in which every chain failed, returns None: the caller's single-chain path (re-planning,
failover, probes) runs as before, for the whole batch, without the hops the run found dead
(`forget_peers`).

With resilient hooks (p2pinfer.fault.LedgerHooks): results are spot-checked before they are
accepted (p2pinfer/replicated_audit.py: the single-chain engine's audits, per chain; a convicted
hop's chain is dropped and its results recomputed on the others), each completed hop is recorded
through `hooks.hops_ok` (the measured speed that feeds the planner) and every chain's hops get
their receipts. Not done here: the single-chain engine's re-planning after failures (a failed
chain's inputs go to the surviving chains instead) and its probes of a failed chain's hops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import trio

from p2pinfer.core.plan import Plan
from p2pinfer.errors import CircuitError, NetworkError
from p2pinfer.core.replicas import ReplicatedPlan, plan_replicated_or_single
from p2pinfer.hooks import Attempt
from p2pinfer.hop_work import hop_record
from p2pinfer.models import profiling
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.replicated_run import ChainStats, ReplicatedRun, run_replicated
from p2pinfer.replicated_audit import ChainAudits
from p2pinfer.results import HopReport, StreamResult, output_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicatedStreamResult(StreamResult):
    """A StreamResult whose inputs went over several chains: `plan`/`hops` are the fastest
    chain's (the existing keys keep their meaning); `replicated` is the whole plan and `chains`
    what each chain did."""

    replicated: ReplicatedPlan | None = None
    chains: tuple[ChainStats, ...] = ()
    chain_of: tuple[int, ...] = ()
    requester_cpu_s: float = 0.0

    def to_json_dict(self) -> dict[str, Any]:
        doc = super().to_json_dict()
        if self.replicated is not None:
            doc["replicated"] = {**self.replicated.to_json_dict(), "chains": [
                {**c.to_json_dict(), "rate_rps": r, "inputs": s.inputs, "error": s.error,
                 "redispatched": s.redispatched, "setup_ms": round(s.setup_ms, 3),
                 "hops_measured": [HopReport.of(h).to_json_dict() for h in s.hops]}
                for c, r, s in zip(self.replicated.chains, self.replicated.rates_rps, self.chains)],
                "chain_of": list(self.chain_of), "requester_cpu_s": round(self.requester_cpu_s, 3)}
        return doc


def plan_for(requester: Any, manifest: Manifest, snapshot: Any) -> ReplicatedPlan:
    """The requester's replicated plan (its planner options and replica options)."""
    return plan_replicated_or_single(profiling.profile(manifest, requester.store), snapshot,
                                     options=requester.config.planner, replicas=requester.config.replicas)


async def stream_replicated(requester: Any, manifest: Manifest, batch: Sequence[Mapping[str, Any]],
                            on_result: Callable[[int], None] | None) -> ReplicatedStreamResult | None:
    """Stream `batch` over the replicated plan; None when the plan has a single chain."""
    snapshot, addrs = await requester.snapshot()
    rplan = plan_for(requester, manifest, snapshot)
    if len(rplan.chains) < 2:
        return None
    log.info("replicated stream of %d input(s) over %d chains (predicted %.2f inputs/s, bound %.2f)",
             len(batch), len(rplan.chains), rplan.throughput_rps, rplan.upper_bound_rps)
    resilient = getattr(requester.hooks, "resilient", False)
    audit = ChainAudits(requester, requester.hooks, manifest, batch) if resilient else None
    try:
        run = await run_replicated(requester.client, plan=rplan, manifest=manifest, inputs=batch, peer_addrs=addrs,
                                   timeout_s=chain_deadlines(requester, rplan),
                                   on_result=(lambda n, _c: on_result(n)) if on_result else None, audit=audit)
    except (CircuitError, NetworkError) as exc:  # every chain failed: the single-chain path takes over
        log.warning("replicated stream failed (%s); falling back to one chain with failover", exc)
        forget_peers(requester, getattr(exc, "peer_ids", ()))
        return None
    if resilient:
        await trio.to_thread.run_sync(credit_hops, requester, manifest, run)
        with trio.move_on_after(10):
            await issue_receipts(requester, manifest, rplan, run, addrs)
    first = rplan.chains[0]
    result = ReplicatedStreamResult(
        manifest.name, manifest.model_id, tuple(dict(o) for o in run.outputs), run.latency_ms, run.setup_ms,
        run.wall_s, first, tuple(HopReport.of(h) for h in run.chains[0].hops), 1,
        replicated=rplan, chains=run.chains, chain_of=run.chain_of, requester_cpu_s=run.requester_cpu_s)
    await requester.hooks.on_success(Attempt(1, manifest.model_id, first, snapshot, frozenset()), result)
    return result


def forget_peers(requester: Any, dead: Sequence[str]) -> None:
    """Before the single-chain fallback: drop the hops the failed run found dead or at fault
    (ChainsFailedError.peer_ids) from the requester's cached records, kept fresh for its
    snapshot_max_age_s. Re-discovering is not enough: the other peers still serve the dead
    ones' records (for their TTL), and the fallback then spent one attempt of its
    `max_attempts` per dead chain, failing with peers to spare when they ran out."""
    cached = requester._records
    if not dead or cached is None:
        requester._records = None  # re-discover: the swarm has changed
        return
    log.info("the single-chain fallback plans without %s", ", ".join(dead))
    gone = set(dead)
    requester._records = (time.monotonic(), [r for r in cached[1] if r.peer_id not in gone])


def chain_deadlines(requester: Any, rplan: ReplicatedPlan) -> list[float]:
    """Per chain, how long it may go without a result while inputs are in flight: with the
    ledger's hooks the single-chain engine's deadline (its hops' `deadline_s` of their predicted
    compute + transfer in, plus the transfer out), else ClientConfig.result_timeout_s."""
    deadline = getattr(requester.hooks, "deadline_s", None)
    if deadline is None:
        return [requester.config.circuit.result_timeout_s] * len(rplan.chains)
    return [sum(deadline(h.compute_s + h.transfer_in_s) for h in c.hops) + c.transfer_out_s for c in rplan.chains]


def credit_hops(requester: Any, manifest: Manifest, run: ReplicatedRun) -> None:
    """Record every chain's completed hops with the hooks (median measured compute per input),
    as the single-chain engine does per result."""
    profile = profiling.profile(manifest, requester.store)
    done = []
    for stats in run.chains:
        for h in stats.hops:
            if stats.inputs == 0 or h.measured_compute_ms != h.measured_compute_ms:  # NaN: no trace
                continue
            record = hop_record(profile, requester.last_specs, h.peer_id, h.start, h.stop, h.measured_compute_ms / 1000)
            done += [record] * stats.inputs
    if done:
        requester.hooks.hops_ok(done)


async def issue_receipts(requester: Any, manifest: Manifest, rplan: ReplicatedPlan, run: ReplicatedRun,
                         addrs: Mapping[str, Sequence[str]]) -> None:
    """Every chain's hops get the receipts of the work they completed (as the single-chain engine)."""
    profile = profiling.profile(manifest, requester.store)
    for chain, stats in zip(rplan.chains, run.chains):
        if not stats.inputs or not stats.circuit_id:
            continue
        items = [(h.peer_id, tuple(addrs.get(h.peer_id, ())), h.start, h.stop,
                  int(sum(lay.flops for lay in profile.layers[h.start:h.stop])) * stats.inputs, seconds)
                 for h, seconds in zip(chain.hops, stats.hop_seconds)]
        try:
            await requester.hooks.issue_receipts(circuit_id=stats.circuit_id, model_id=manifest.model_id, work=items)
        except Exception:  # task boundary: receipts never fail a request
            log.exception("issuing receipts for chain %d failed", stats.index)


def describe(plan: Plan) -> str:
    return " -> ".join(f"{h.peer_id}[{h.start}:{h.stop})" for h in plan.hops)


__all__ = ["ReplicatedStreamResult", "output_json", "plan_for", "stream_replicated"]
