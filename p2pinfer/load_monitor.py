"""A node service that measures the CPU the node's own background work takes and advertises it
as the record's `load` (core/background_load.py says why).

    node.add_service(LoadMonitor(cores=usable_cores(threads), activity=hop.hop_activity))

Only for a node that has its process to itself (`p2pinfer node start`): the process's CPU time
is the node's. In-process swarms share one process and do not run it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import trio

from p2pinfer.core.background_load import LoadEstimate, worth_republishing

log = logging.getLogger(__name__)


class LoadMonitor:
    """Every `interval_s`, one window of process CPU time. `activity()` gives (hop work events so
    far, circuits live now): a window in which the events moved or a circuit was live at either
    end held hop work and is skipped. A changed estimate is republished at most every
    `min_republish_s` (the first at once)."""

    def __init__(self, *, cores: float, activity: Callable[[], tuple[int, int]], interval_s: float = 5.0,
                 min_republish_s: float = 30.0, cpu_clock: Callable[[], float] = time.process_time) -> None:
        if cores <= 0 or interval_s <= 0:
            raise ValueError(f"LoadMonitor needs cores > 0 and interval_s > 0, got {cores}, {interval_s}")
        self.cores, self.activity, self.interval_s = cores, activity, interval_s
        self.min_republish_s, self.cpu_clock = min_republish_s, cpu_clock
        self.estimate = LoadEstimate()
        self.advertised = 0.0
        self.windows = 0  # windows measured so far

    async def run(self, node: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_publish = -float("inf")
        cpu, wall, (events, live) = self.cpu_clock(), trio.current_time(), self.activity()
        while True:
            await trio.sleep(self.interval_s)
            cpu2, wall2, (events2, live2) = self.cpu_clock(), trio.current_time(), self.activity()
            served = events2 != events or live > 0 or live2 > 0
            value = self.estimate.observe(cpu2 - cpu, wall2 - wall, self.cores, served=served)
            cpu, wall, events, live = cpu2, wall2, events2, live2
            self.windows += 1
            if value is None or not worth_republishing(self.advertised, value):
                continue
            if wall2 - last_publish >= self.min_republish_s:
                log.info("background load %.3f of %.2f cores; republishing", value, self.cores)
                node.set_load(value)
                self.advertised, last_publish = value, wall2
