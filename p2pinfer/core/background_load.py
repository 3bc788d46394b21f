"""The share of a node's compute its own background work takes: the `load` it advertises.

A node's compute speed is calibrated in CPU seconds (models/calibrate.py), so it says nothing of
the CPU the node spends on other things: record exchange, DHT upkeep, serving peers' lookups.
On a small quota that share is not small (0.01 core is 5% of a 0.2-core board), and every
hop's compute waits for it. The cost model already derates a peer's compute by its advertised
`load` (core/costs.py), so a node measures that share over windows in which it served no
frames and advertises it. Pure: the node's monitor (p2pinfer/load_monitor.py) feeds it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

MAX_LOAD = 0.95  # a record's load must stay below 1; a node this busy is as good as gone


@dataclass
class LoadEstimate:
    """Median CPU share of the last `window` idle windows, once `min_windows` were seen.

    `observe(cpu_s, wall_s, cores, served)` takes one window: the process's CPU seconds, the
    wall seconds it lasted, the cores the node may use, and whether it did hop work in it (such
    windows measure the work, not the background, and are skipped). A median, not a mean: the
    background comes in bursts (a DHT put costs a 0.2-core board seconds of its quota) that one
    window must not carry into the record."""

    window: int = 6
    min_windows: int = 3
    shares: list[float] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        if len(self.shares) < self.min_windows:
            return None
        return statistics.median(self.shares)

    def observe(self, cpu_s: float, wall_s: float, cores: float, *, served: bool) -> float | None:
        """The estimate after this window (None until `min_windows` idle windows were seen)."""
        if not served and wall_s > 0 and cores > 0:
            self.shares = [*self.shares, min(max(cpu_s / wall_s / cores, 0.0), MAX_LOAD)][-self.window:]
        return self.value


def worth_republishing(advertised: float, estimate: float, *, min_step: float = 0.01, min_ratio: float = 0.2) -> bool:
    """Republish only on a change that moves plans: at least `min_step` absolute and `min_ratio`
    relative (every republish is a signed record pushed to peers and put into the DHT)."""
    change = abs(estimate - advertised)
    return change >= min_step and change >= min_ratio * max(advertised, estimate)
