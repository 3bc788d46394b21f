"""Suffix planning (core/suffix.py): the sub-profile, absolute spans, exclusions, infeasibility."""

from __future__ import annotations

import pytest

from p2pinfer.core.plan import PlannerOptions
from p2pinfer.core.planner import plan
from p2pinfer.core.profile import LayerProfile, ModelProfile
from p2pinfer.core.snapshot import PeerSpec, RequesterSpec, SwarmSnapshot
from p2pinfer.core.suffix import plan_suffix, shift_plan, suffix_profile
from p2pinfer.errors import PlanError

G = 10**9
REQ = RequesterSpec(up_mbps=1000.0, down_mbps=1000.0, latency_ms=1.0)
NO_FETCH = PlannerOptions(amortize_requests=None)


def chain(n: int, param: int = 100) -> ModelProfile:
    layers = tuple(LayerProfile(i, "linear", (i + 1) * G, param, 1000 * (i + 1)) for i in range(n))
    return ModelProfile("toy", "toy-id", 500, layers)


def snap(*ids: str, mem: int = 10**9) -> SwarmSnapshot:
    return SwarmSnapshot(REQ, tuple(PeerSpec(p, 10.0 + i, mem, up_mbps=1000.0, down_mbps=1000.0, latency_ms=1.0)
                                    for i, p in enumerate(ids)))


def test_suffix_profile_reindexes_and_takes_the_boundary_activation_as_input() -> None:
    sub = suffix_profile(chain(6), 2)
    assert sub.num_layers == 4 and [l.index for l in sub.layers] == [0, 1, 2, 3]
    assert sub.input_bytes == 2000  # out_bytes of layer 1
    assert [l.flops for l in sub.layers] == [3 * G, 4 * G, 5 * G, 6 * G]


@pytest.mark.parametrize("start", [0, 6, -1])
def test_suffix_must_start_inside_the_chain(start: int) -> None:
    with pytest.raises(PlanError, match="suffix of toy"):
        suffix_profile(chain(6), start)


def test_plan_suffix_covers_start_to_end_without_the_excluded_peers() -> None:
    profile = chain(6, param=400)
    s = snap("a", "b", "c", "d", "e", mem=800)  # 2 layers per peer at most
    p = plan_suffix(profile, s, 2, exclude=frozenset({"e", "d"}), options=NO_FETCH)
    assert p.hops[0].start == 2 and p.hops[-1].stop == 6
    assert all(a.stop == b.start for a, b in zip(p.hops, p.hops[1:]))
    assert not {"d", "e"} & {h.peer_id for h in p.hops}
    # equal to planning the sub-profile directly and shifting it
    direct = shift_plan(plan(suffix_profile(profile, 2), snap("a", "b", "c", mem=800), options=NO_FETCH), 2)
    assert [(h.peer_id, h.start, h.stop) for h in p.hops] == [(h.peer_id, h.start, h.stop) for h in direct.hops]


def test_plan_suffix_without_enough_peers_is_a_plan_error() -> None:
    with pytest.raises(PlanError):
        plan_suffix(chain(6, param=400), snap("a", "b", mem=800), 1, options=NO_FETCH)
    with pytest.raises(PlanError, match="no peers left"):
        plan_suffix(chain(6), snap("a"), 1, exclude=frozenset({"a"}))
