"""Audits after the fact over a route (failover.py rule 5): one circuit, or a resumed input's
prefix on the failed circuit followed by its suffix circuit (p2pinfer/resume.py).

A route is a sequence of legs; each leg is a circuit, the seq the input had on it, and the hops
of that circuit the input went through. Its hops, in order, computed the input. Auditing hop k
(core/audit.py rule 4 over the whole route):

- its input is the requester's own input for k = 0, else hop k-1's output;
- its output is the decrypted result for the last hop, else its retained output, fetched from
  the hop over its leg's circuit (MAC'd request, reply sealed under its report key) and
  accepted only if its digest equals the commitment the hop sent for that seq before anyone
  asked (retained bytes that contradict it: the hop is convicted);
- the requester re-runs span k itself on that input (trusted) and settles (core/verification.py).

A hop that cannot show its evidence (unreachable, silent, evicted) is a HopFailedError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from p2pinfer.core.audit import evidence_matches
from p2pinfer.core.circuit import HopSpec, Result
from p2pinfer.core.codec import Activation, activation_from_cbor, decode_strict
from p2pinfer.core.verification import Execution, Verdict, settle
from p2pinfer.errors import HopFailedError, NetworkError, VerificationError, WireError

REQUESTER = "requester"  # the trusted executor's name in a settlement


@dataclass(frozen=True)
class Leg:
    circuit: Any  # net.circuit_client.Circuit
    seq: int
    specs: tuple[HopSpec, ...]  # the hops of `circuit` (from its first) this input went through


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


def route_specs(route: Sequence[Leg]) -> list[HopSpec]:
    return [spec for leg in route for spec in leg.specs]


async def audit(run: Any, route: Sequence[Leg], r: Result, idx: int, checked: Sequence[int]) -> None:
    """Audit hops `checked` (indexes into the route) of input `idx`, whose result is `r`;
    raises VerificationError (the hop is convicted) or HopFailedError (no evidence)."""
    specs = route_specs(route)
    for k in checked:
        given = run.batch[idx] if k == 0 else await output_of(run, route, r, idx, k - 1)
        got = await output_of(run, route, r, idx, k)
        await verify(run, specs[k], given, got, idx)
    run.audits += len(checked)


def _locate(route: Sequence[Leg], k: int) -> tuple[Leg, int]:
    for leg in route:
        if k < len(leg.specs):
            return leg, k
        k -= len(leg.specs)
    raise IndexError("hop index beyond the route")


async def output_of(run: Any, route: Sequence[Leg], r: Result, idx: int, k: int) -> Activation:
    """Hop k's verified output for this input (module docstring)."""
    if k == len(route_specs(route)) - 1:
        return r.act
    leg, j = _locate(route, k)
    peer = leg.specs[j].peer_id
    try:
        data = await leg.circuit.retained(j, leg.seq, timeout=run.hooks.options.audit_timeout_s)
    except (NetworkError, WireError) as exc:
        raise HopFailedError((peer,), "failure", f"hop {peer} failed an audit of input {idx}: {exc}") from None
    if data is None:
        raise HopFailedError((peer,), "failure", f"hop {peer} no longer holds its output for input {idx}")
    commit = leg.circuit.machine.committed(j, leg.seq)
    try:
        if commit is None or not evidence_matches(data, commit):
            raise WireError("retained output does not match its commitment")
        return activation_from_cbor(decode_strict(data, max_size=run.rq.client.config.max_frame))
    except WireError as exc:
        detail = f"hop {peer} showed an audit of {run.manifest.name} input {idx} a different output: {exc}"
        await run._convict(peer, detail)
        raise VerificationError(peer, detail) from None


async def verify(run: Any, spec: HopSpec, given: Activation, got: Activation, idx: int) -> None:
    """Settle one audited hop against the requester's own (trusted) execution of its span."""
    want = await run.run_local(spec.start, spec.stop, given)
    decision = settle([Execution(spec.peer_id, flat(got, want)), Execution(REQUESTER, flat(want), trusted=True)],
                      run.hooks.options.policy)
    assert isinstance(decision, Verdict)  # a trusted execution always settles
    if spec.peer_id in decision.penalised:
        detail = f"layers [{spec.start},{spec.stop}) of {run.manifest.name}, input {idx}"
        recalled = await run._convict(spec.peer_id, detail)
        raise VerificationError(spec.peer_id, f"hop {spec.peer_id} returned a wrong output for {detail} "
                                f"(excluded; {recalled} earlier result(s) through it recomputed)")
