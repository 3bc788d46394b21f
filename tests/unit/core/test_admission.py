"""Admission queue: contributors first, FIFO ties, aging bound, overflow, work conservation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.core.admission import AdmissionPolicy, AdmissionQueue, priority_of


def drain(q: AdmissionQueue) -> list:
    out = []
    while (item := q.pop()) is not None:
        out.append(item)
    return out


def test_contributors_are_served_before_free_riders_and_ties_are_fifo():
    q: AdmissionQueue[str] = AdmissionQueue()
    q.push("free1", requester="f", credit_gflop=0.0, now=0.0)
    q.push("leech", requester="l", credit_gflop=-50.0, now=0.0)
    q.push("big", requester="b", credit_gflop=1000.0, now=0.0)
    q.push("free2", requester="g", credit_gflop=0.0, now=0.0)
    q.push("small", requester="s", credit_gflop=3.0, now=0.0)
    assert [r for r, _ in q.waiting()] == ["b", "s", "f", "g", "l"]
    assert drain(q) == ["big", "small", "free1", "free2", "leech"]
    assert len(q) == 0 and q.pop() is None


def test_a_free_rider_is_served_when_nobody_better_waits():
    q: AdmissionQueue[str] = AdmissionQueue()
    q.push("leech", requester="l", credit_gflop=-1e6, now=0.0)
    assert q.pop() == "leech"


def test_aging_bounds_the_wait_of_a_free_rider():
    policy = AdmissionPolicy(aging_s=10.0)
    q: AdmissionQueue[str] = AdmissionQueue(policy)
    q.push("free", requester="f", credit_gflop=0.0, now=0.0)
    bound = priority_of(1023.0) * policy.aging_s  # log2(1024) = 10 units -> 100 s
    q.push("early", requester="c", credit_gflop=1023.0, now=bound - 1)
    q.push("late", requester="c", credit_gflop=1023.0, now=bound + 1)
    assert drain(q) == ["early", "free", "late"]


def test_overflow_drops_the_lowest_priority_item():
    q: AdmissionQueue[str] = AdmissionQueue(AdmissionPolicy(max_queued=2))
    assert q.push("a", requester="a", credit_gflop=10.0, now=0.0) is None
    assert q.push("b", requester="b", credit_gflop=-10.0, now=0.0) is None
    assert q.push("c", requester="c", credit_gflop=5.0, now=0.0) == "b"
    assert q.push("d", requester="d", credit_gflop=-100.0, now=0.0) == "d"  # the newcomer itself
    assert len(q) == 2 and drain(q) == ["a", "c"]


def test_remove_withdraws_a_waiting_item_and_the_heap_stays_bounded():
    q: AdmissionQueue[object] = AdmissionQueue(AdmissionPolicy(max_queued=4))
    items = [object() for _ in range(500)]
    for i, item in enumerate(items):
        q.push(item, requester="r", credit_gflop=float(i % 7), now=float(i))
    assert len(q) == 4 and len(q._heap) <= 2 * 4 + 17
    first = q.waiting()[0][1]
    assert q.remove(first) and not q.remove(first) and len(q) == 3
    assert first not in drain(q)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e12, 1e12), st.floats(-1e12, 1e12))
def test_priority_is_monotone_in_credit(a, b):
    if a < b:
        assert priority_of(a) <= priority_of(b)
    assert priority_of(0.0) == 0.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        priority_of(float("inf"))
    with pytest.raises(ValueError):
        AdmissionPolicy(max_queued=0)
    with pytest.raises(ValueError):
        AdmissionQueue().push("x", requester="r", credit_gflop=0.0, now=float("nan"))
