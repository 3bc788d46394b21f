"""Suffix planning: the best circuit for layers [start, L) over the peers that are left.

Resuming a failed circuit from an upstream hop U (core/handoff.py) needs a circuit for the
rest of the chain only. Rules:

1. The sub-profile of [start, L) has the same layers, re-indexed from 0, and its input is the
   activation crossing the boundary: `input_bytes = out_bytes[start - 1]` (`suffix_profile`).
2. It is planned by the one planner (core/planner.plan) over the snapshot without `exclude`
   (the failed peers and U itself: U writes the suffix's first link, so it cannot also be its
   first hop, and the planner gives each peer at most one span anyway), then shifted back to
   absolute layer indexes (`shift_plan`). The planner prices the suffix's input as sent by the
   requester; it is really sent by U (the cost model has no per-pair links beyond the star
   model, so this is the same approximation every plan makes).
3. `PlanError` (InfeasiblePlanError) when the peers left cannot cover [start, L): the caller
   falls back to restarting from the input (or fails with no route).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace

from p2pinfer.core.plan import Plan, PlannerOptions
from p2pinfer.core.planner import plan as plan_chain
from p2pinfer.core.profile import ModelProfile
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.errors import PlanError


def suffix_profile(profile: ModelProfile, start: int) -> ModelProfile:
    """Rule 1: layers [start, L) as a model of their own."""
    if not 0 < start < profile.num_layers:
        raise PlanError(f"a suffix of {profile.name} starts inside (0, {profile.num_layers}), not at {start}")
    layers = tuple(replace(layer, index=i) for i, layer in enumerate(profile.layers[start:]))
    return ModelProfile(f"{profile.name}[{start}:]", profile.model_id, profile.layers[start - 1].out_bytes, layers)


def shift_plan(plan: Plan, start: int) -> Plan:
    """A plan of a sub-profile starting at `start`, with absolute layer indexes."""
    hops = tuple(replace(h, start=h.start + start, stop=h.stop + start) for h in plan.hops)
    return replace(plan, hops=hops)


def plan_suffix(profile: ModelProfile, snapshot: SwarmSnapshot, start: int, *, exclude: frozenset[str] = frozenset(),
                objective: str = "latency", options: PlannerOptions = PlannerOptions()) -> Plan:
    """Rule 2: the best plan of layers [start, L) over the snapshot's peers not in `exclude`."""
    peers = tuple(p for p in snapshot.peers if p.peer_id not in exclude)
    if not peers:
        raise PlanError(f"no peers left to plan layers [{start}, {profile.num_layers}) of {profile.name}")
    sub = suffix_profile(profile, start)
    return shift_plan(plan_chain(sub, SwarmSnapshot(snapshot.requester, peers), objective=objective, options=options),
                      start)
