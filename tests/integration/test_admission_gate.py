"""AdmissionGate rules under trio, without a network: overflow drops the worst-ranked waiter,
a waiter that gives up while queued is withdrawn, a waiter cancelled right after it was handed a
slot gives it back, and a broken ledger ranks a requester as a stranger instead of stopping the hop."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.core.admission import AdmissionPolicy
from p2pinfer.errors import LedgerError
from p2pinfer.net.admission_gate import AdmissionDropped, AdmissionGate

from tests.conftest import async_wait_until

CREDIT = {"rich": 50.0, "zero": 0.0, "debtor": -50.0}


async def _hold(gate: AdmissionGate, who: str, done: list[str], release: trio.Event) -> None:
    async with gate.slot(who):
        done.append(who)
        await release.wait()


async def test_full_queue_drops_the_worst_ranked_waiter() -> None:
    gate = AdmissionGate(1, credit_of=CREDIT.__getitem__, policy=AdmissionPolicy(max_queued=2))
    done: list[str] = []
    dropped: list[str] = []
    release = trio.Event()

    async def wait(who: str) -> None:
        try:
            await _hold(gate, who, done, release)
        except AdmissionDropped:
            dropped.append(who)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, gate, "zero", done, release)
        await async_wait_until(lambda: done == ["zero"], timeout=5)
        for n, who in enumerate(["debtor", "zero", "rich"], 1):
            nursery.start_soon(wait, who)
            await async_wait_until(lambda: gate.waiting + len(dropped) == n, timeout=5)
        assert dropped == ["debtor"] and gate.counters.dropped == 1
        release.set()
    assert done == ["zero", "rich", "zero"]


async def test_a_waiter_that_gives_up_is_withdrawn() -> None:
    gate = AdmissionGate(1, credit_of=lambda who: 0.0)
    done: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, gate, "first", done, release)
        await async_wait_until(lambda: done == ["first"], timeout=5)
        nursery.start_soon(_hold, gate, "last", done, release)
        await async_wait_until(lambda: gate.waiting == 1, timeout=5)
        with trio.move_on_after(0.2):  # gives up while queued
            async with gate.slot("quitter"):
                done.append("quitter")
        assert gate.waiting == 1
        release.set()
    assert done == ["first", "last"] and gate.waiting == 0


async def test_a_waiter_cancelled_right_after_the_hand_off_gives_its_slot_back() -> None:
    gate = AdmissionGate(1, credit_of=lambda who: 0.0)
    done: list[str] = []
    release = trio.Event()
    waiter_scope = trio.CancelScope()

    async def holder() -> None:
        async with gate.slot("holder"):
            done.append("holder")
            await release.wait()
        waiter_scope.cancel()  # the slot was just handed to the waiter, which has not resumed yet

    async def waiter() -> None:
        with waiter_scope:
            async with gate.slot("waiter"):
                done.append("waiter")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await async_wait_until(lambda: done == ["holder"], timeout=5)
        nursery.start_soon(waiter)
        await async_wait_until(lambda: gate.waiting == 1, timeout=5)
        release.set()
    assert done == ["holder", "waiter"] and gate.waiting == 0  # it had the slot; cancelled after its body
    before = gate.counters.immediate
    with trio.fail_after(1):
        async with gate.slot("next"):  # the slot came back: taken at once
            pass
    assert gate.counters.immediate == before + 1


async def test_unreadable_ledger_ranks_as_stranger() -> None:
    def broken(who: str) -> float:
        raise LedgerError("ledger: disk I/O error")

    gate = AdmissionGate(1, credit_of=broken)
    done: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, gate, "a", done, release)
        await async_wait_until(lambda: done == ["a"], timeout=5)
        nursery.start_soon(_hold, gate, "b", done, release)
        await async_wait_until(lambda: gate.waiting == 1, timeout=5)
        release.set()
    assert done == ["a", "b"]


def test_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="slots must be >= 1"):
        AdmissionGate(0)
