"""A node advertises the CPU its own background work takes as its record's load."""

from __future__ import annotations

import hashlib
import itertools
import threading

import pytest
import trio

from p2pinfer.load_monitor import LoadMonitor
from p2pinfer.node import Node
from tests.conftest import async_wait_until
from tests.integration._nodes import FAST, capability


def _burn(stop: threading.Event) -> None:
    """Background CPU work in this process that leaves the trio thread the GIL: hashlib hashes a
    large buffer with the GIL released (a pure-Python busy loop would starve the node)."""
    block = bytes(1 << 20)
    while not stop.is_set():
        hashlib.sha256(block).digest()


async def test_background_cpu_is_advertised_as_load_and_windows_with_hop_work_are_not() -> None:
    serving, events = [False], itertools.count(1)
    monitor = LoadMonitor(cores=1.0, activity=lambda: (next(events) if serving[0] else 0, 0), interval_s=0.3,
                          min_republish_s=0.0)
    stop = threading.Event()
    burner = threading.Thread(target=_burn, args=(stop,), daemon=True)
    try:
        async with trio.open_nursery() as nursery:
            node = Node(FAST, capability=capability(0), services=[monitor])
            await nursery.start(node.run)
            burner.start()
            await async_wait_until(lambda: node.record is not None and node.record.load >= 0.2, timeout=30,
                                   what="the busy process's load in the node's record")
            serving[0] = True  # hop frames arrive in every window from now: work, not background
            stop.set()
            burner.join(timeout=5)
            before, windows = list(monitor.estimate.shares), monitor.windows
            await async_wait_until(lambda: monitor.windows >= windows + 4, timeout=30, what="four served windows")
            assert monitor.estimate.shares == before
            serving[0] = False  # frames stop: the next idle windows show the quiet process
            await async_wait_until(lambda: node.record.load < 0.1, timeout=30,  # type: ignore[union-attr]
                                   what="the load to fall once the burner stopped")
            nursery.cancel_scope.cancel()
    finally:
        stop.set()


def test_a_monitor_needs_cores_and_an_interval() -> None:
    with pytest.raises(ValueError, match="cores"):
        LoadMonitor(cores=0.0, activity=lambda: (0, 0))


async def test_a_live_circuit_makes_a_window_hop_work() -> None:
    """A circuit being set up (layers built, weights hashed) is work too, before any frame."""
    live = [1]
    monitor = LoadMonitor(cores=1.0, activity=lambda: (0, live[0]), interval_s=0.05)

    class Recorder:
        def __init__(self) -> None:
            self.loads: list[float] = []

        def set_load(self, load: float) -> None:
            self.loads.append(load)

    node = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run, node)
        await async_wait_until(lambda: monitor.windows >= 4, timeout=10, what="four windows")
        assert monitor.estimate.shares == [] and node.loads == []  # no idle window, nothing to publish
        live[0] = 0
        await async_wait_until(lambda: len(monitor.estimate.shares) >= 2, timeout=10, what="idle windows once it closed")
        nursery.cancel_scope.cancel()
