"""A node advertises the CPU its own background work takes as its record's load."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import trio

from p2pinfer.load_monitor import LoadMonitor
from p2pinfer.node import Node
from tests.conftest import async_wait_until
from tests.integration._nodes import FAST, capability


def _burn(stop: threading.Event) -> None:
    """Background CPU work in this process: a busy loop that yields the GIL every millisecond."""
    while not stop.is_set():
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        time.sleep(0)


async def test_background_cpu_is_advertised_as_load_and_windows_with_hop_work_are_not() -> None:
    serving, frames = [False], itertools.count(1)
    monitor = LoadMonitor(cores=1.0, frames_served=lambda: next(frames) if serving[0] else 0, interval_s=0.3,
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
            before, windows = monitor.estimate.value, monitor.windows
            await async_wait_until(lambda: monitor.windows >= windows + 4, timeout=30, what="four served windows")
            assert monitor.estimate.value == before
            serving[0] = False  # frames stop: the next idle windows show the quiet process
            await async_wait_until(lambda: node.record.load < 0.1, timeout=30,  # type: ignore[union-attr]
                                   what="the load to fall once the burner stopped")
            nursery.cancel_scope.cancel()
    finally:
        stop.set()


def test_a_monitor_needs_cores_and_an_interval() -> None:
    with pytest.raises(ValueError, match="cores"):
        LoadMonitor(cores=0.0, frames_served=lambda: 0)
