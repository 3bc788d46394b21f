"""The hop's compute slots, handed out by requester credit when work has to wait.

A hop has `compute_threads` slots. While a slot is free and nobody waits, work starts at once
(an idle node serves everyone, free riders included). When every slot is busy, each new frame
waits in a `core.admission.AdmissionQueue` keyed by its requester's credit with this node
(from the node's ledger: contributors first, strangers next, net consumers last, with aging so
nobody starves); a freed slot goes straight to the best-ranked waiter. A full queue drops its
worst-ranked waiter, whose frame the hop reports as failed ("busy").

Trio-only state (one task at a time touches it); the ledger read runs in a worker thread.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import trio

from p2pinfer.core.admission import AdmissionPolicy, AdmissionQueue
from p2pinfer.errors import LedgerError, P2PInferError

log = logging.getLogger(__name__)


class AdmissionDropped(P2PInferError):
    """The hop's wait queue was full and this work ranked lowest: it is not computed."""


@dataclass
class _Waiter:
    requester: str
    event: trio.Event = field(default_factory=trio.Event)
    granted: bool = False
    dropped: bool = False


@dataclass
class GateCounters:
    immediate: int = 0   # started at once (a slot was free)
    queued: int = 0      # had to wait for a slot
    dropped: int = 0     # refused because the queue was full


class AdmissionGate:
    """`slots` compute slots; `credit_of(requester) -> GFLOP` ranks waiting work (None: FIFO)."""

    def __init__(self, slots: int, *, credit_of: Callable[[str], float] | None = None,
                 policy: AdmissionPolicy = AdmissionPolicy(), clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError("admission: slots must be >= 1")
        self._free = slots
        self._credit_of = credit_of
        self._queue: AdmissionQueue[_Waiter] = AdmissionQueue(policy)
        self._clock = clock
        self.counters = GateCounters()
        self.served: list[str] = []  # requesters in the order they got a slot (last 256)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @asynccontextmanager
    async def slot(self, requester: str) -> AsyncIterator[None]:
        """Hold one compute slot for the body; waits by credit when none is free."""
        await self._acquire(requester)
        try:
            yield
        finally:
            self._release()

    def _take(self, requester: str) -> bool:
        if self._free > 0 and not len(self._queue):
            self._free -= 1
            self._note(requester)
            return True
        return False

    async def _acquire(self, requester: str) -> None:
        if self._take(requester):
            self.counters.immediate += 1
            return
        credit = await self._credit(requester)
        if self._take(requester):  # a slot freed while we read the ledger
            self.counters.immediate += 1
            return
        waiter = _Waiter(requester)
        self.counters.queued += 1
        dropped = self._queue.push(waiter, requester=requester, credit_gflop=credit, now=self._clock())
        if dropped is not None:
            dropped.dropped = True
            dropped.event.set()
            self.counters.dropped += 1
        try:
            await waiter.event.wait()
        except BaseException:  # cancelled while waiting: give back a slot handed to us, or leave
            if waiter.granted:
                self._release()
            else:
                self._queue.remove(waiter)
            raise
        if waiter.dropped:
            raise AdmissionDropped(f"hop overloaded: {self.waiting} frames wait and this requester ranks lowest")

    def _release(self) -> None:
        nxt = self._queue.pop()
        if nxt is None:
            self._free += 1
            return
        nxt.granted = True
        self._note(nxt.requester)
        nxt.event.set()

    def _note(self, requester: str) -> None:
        self.served.append(requester)
        del self.served[:-256]

    async def _credit(self, requester: str) -> float:
        if self._credit_of is None:
            return 0.0
        try:
            return float(await trio.to_thread.run_sync(self._credit_of, requester))
        except LedgerError as exc:  # an unreadable ledger must not stop serving: rank as a stranger
            log.error("admission: credit of %s unknown (%s); ranking as a stranger", requester, exc)
            return 0.0
