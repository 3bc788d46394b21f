"""Who broke a circuit? Probe every hop of a failed circuit on its own (failover.py rule 4).

A mid-stream failure (an error frame, a missed deadline) does not say which hop is at fault in
a way we can trust: a hop may blame its neighbour, and a stalled hop says nothing. So each hop
of the failed plan gets a one-hop circuit, concurrently, fed the exact input of its span (the
requester computes the prefix itself: it holds every weight), with that hop's own deadline
`hop_deadline_s(compute_s + transfer_in_s)` plus `probe_setup_s` for the setup:

- no reply in time                              -> TIMEOUT   (the staller)
- setup or transfer failed, or an error frame   -> FAILURE   (the dead or crashing hop)
- an output that disagrees with our own         -> verification failure (excluded at once)
- refused (other than busy)                     -> REFUSED
- a correct output, or refused as busy          -> not blamed

The blamed peers are recorded in the ledger and left out of the next plan.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import trio

from p2pinfer.core.codec import Activation
from p2pinfer.core.plan import Plan
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.verification import outputs_agree
from p2pinfer.errors import CircuitError, HopRefusedError, NetworkError
from p2pinfer.net.circuit_client import hop_specs

log = logging.getLogger(__name__)


async def probe_hops(run: Any, plan: Plan, addrs: Mapping[str, tuple[str, ...]], cause: Exception) -> frozenset[str]:
    """Probe each hop of `plan`; record and return the peers at fault (maybe none)."""
    from p2pinfer.failover import flat

    missing = [i for i in range(len(run.batch)) if i not in run.results]
    act: Activation = run.batch[missing[0] if missing else 0]
    inputs, wants = [], []
    for hop in plan.hops:  # the true input and output of every span, computed locally
        inputs.append(act)
        act = await run.run_local(hop.start, hop.stop, act)
        wants.append(act)
    specs = hop_specs(plan, run.manifest, addrs)
    verdicts: dict[str, tuple[EventKind | None, str]] = {}

    async def probe(i: int) -> None:
        spec, hop = specs[i], plan.hops[i]
        budget = run.hooks.deadline_s(hop.compute_s + hop.transfer_in_s) + run.hooks.options.probe_setup_s
        verdict: tuple[EventKind | None, str] = (EventKind.TIMEOUT, f"probe: no output within {budget:.1f}s")
        with trio.move_on_after(budget):
            try:
                r, _cid = await run._one_circuit([spec], inputs[i], budget + 1.0)
                ok = outputs_agree(flat(r.act, wants[i]), flat(wants[i]), run.hooks.options.policy)
                verdict = (None, "ok") if ok else (EventKind.VERIFICATION_FAILURE, "probe: wrong output")
            except HopRefusedError as exc:
                verdict = (None if exc.reason == "busy" else EventKind.REFUSED, f"probe: {exc}")
            except (CircuitError, NetworkError) as exc:
                verdict = (EventKind.FAILURE, f"probe: {exc}")
        verdicts[spec.peer_id] = verdict

    async with trio.open_nursery() as nursery:
        for i in range(len(specs)):
            nursery.start_soon(probe, i)
    blamed = set()
    for peer, (kind, detail) in verdicts.items():
        if kind is None:
            continue
        blamed.add(peer)
        detail = f"{detail} (after: {cause})"
        if kind is EventKind.VERIFICATION_FAILURE:
            await trio.to_thread.run_sync(run.hooks.verification_failed, peer, detail)
        else:
            await trio.to_thread.run_sync(run.hooks.hop_failed, peer, kind, detail)
    log.info("probes after %s: %s", cause, {p: (k.value if k else "ok") for p, (k, _d) in verdicts.items()})
    return frozenset(blamed)
