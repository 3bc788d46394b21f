"""Who is served first when a node is overloaded: contributors before free riders.

Pure and trio-free; the hop service owns one `AdmissionQueue` and calls it from its task.

Rules:
1. Priority of a requester = its credit with this node (core/receipts.py: GFLOP it computed for
   us minus GFLOP we computed for it), compressed as sign(c) * log2(1 + |c|) so that a huge
   contributor cannot starve everyone for hours, but more contribution always ranks higher.
2. Work-conserving: the node runs queued work whenever it has a free slot, so free riders are
   served whenever the node is not busy with better-ranked work (idle node = everyone served).
3. Anti-starvation aging: a waiting item gains one priority unit per `aging_s` seconds, i.e.
   effective(now) = priority + (now - enqueued_at) / aging_s. The node pops the highest
   effective priority; ties go to the earlier arrival (FIFO). Because every item ages at the
   same rate, the order is the static key priority - enqueued_at / aging_s (heap, O(log n)).
   Bound: an item with priority p enqueued at t is served before any item enqueued after
   t + (p_max - p) * aging_s, where p_max is the largest priority present.
4. Overflow: the queue holds at most `max_queued` items; pushing into a full queue drops the item
   with the lowest effective priority (latest arrival among equals), which may be the new one;
   the hop service refuses the dropped item ("busy").
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


def priority_of(credit_gflop: float) -> float:
    """Rule 1: sign(c) * log2(1 + |c|)."""
    if not math.isfinite(credit_gflop):
        raise ValueError(f"credit must be finite, got {credit_gflop!r}")
    return math.copysign(math.log2(1.0 + abs(credit_gflop)), credit_gflop)


@dataclass(frozen=True)
class AdmissionPolicy:
    max_queued: int = 64
    aging_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_queued < 1 or not self.aging_s > 0:
            raise ValueError("AdmissionPolicy: need max_queued >= 1 and aging_s > 0")


@dataclass(order=True)
class _Entry(Generic[T]):
    key: float  # -(priority - enqueued_at / aging_s): smaller pops first
    seq: int
    requester: str = field(compare=False)
    item: T = field(compare=False)
    live: bool = field(default=True, compare=False)


class AdmissionQueue(Generic[T]):
    """Priority queue of waiting work keyed by requester credit, FIFO ties, aging (rules 1-4)."""

    def __init__(self, policy: AdmissionPolicy = AdmissionPolicy()) -> None:
        self._policy = policy
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def _key(self, credit_gflop: float, now: float) -> float:
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        return -(priority_of(credit_gflop) - now / self._policy.aging_s)

    def push(self, item: T, *, requester: str, credit_gflop: float, now: float) -> T | None:
        """Queue `item`; returns the item dropped by rule 4 (maybe `item` itself) or None."""
        entry = _Entry(self._key(credit_gflop, now), next(self._seq), requester, item)
        heapq.heappush(self._heap, entry)
        self._live += 1
        if self._live <= self._policy.max_queued:
            return None
        worst = max((e for e in self._heap if e.live), key=lambda e: (e.key, e.seq))
        worst.live = False
        self._live -= 1
        if len(self._heap) > 2 * self._live + 16:  # drop dead entries so the heap stays bounded
            self._heap = [e for e in self._heap if e.live]
            heapq.heapify(self._heap)
        return worst.item

    def pop(self) -> T | None:
        """The item to serve now (rule 3), or None when nothing waits."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            if entry.live:
                self._live -= 1
                return entry.item
        return None

    def remove(self, item: T) -> bool:
        """Withdraw a waiting item (its requester gave up); True if it was waiting."""
        for entry in self._heap:
            if entry.live and entry.item is item:
                entry.live = False
                self._live -= 1
                return True
        return False

    def waiting(self) -> list[tuple[str, T]]:
        """(requester, item) in the order they would be served."""
        return [(e.requester, e.item) for e in sorted(self._heap) if e.live]
