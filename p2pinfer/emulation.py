"""Device-class emulation a node applies to itself: slower compute and a shaped uplink.

One machine can only look like a heterogeneous swarm if each node slows itself down the way its
config's `[emulation]` section says. Two small pieces do that, and both `p2pinfer node start`
and the embedded swarm (p2pinfer/swarm.py) use them:

- `SlowedExecutor` wraps a span executor (`SpanExecutor.run`): after the real compute it keeps
  the worker thread busy for `(compute_slowdown - 1) x` the measured compute time, so a node
  with slowdown 4 answers in 4x the real compute time. This runs in the hop's worker thread
  (never on the trio loop), and the hop measures the whole call, so the per-hop "measured ms"
  reflects the emulated device, just as the advertised GFLOP/s are divided by the slowdown.
- `UplinkShaper` is the hop's / client's `send_delay(nbytes) -> seconds` hook: each outgoing
  frame waits its serialisation time `8 * nbytes / (up_mbps * 1e6)` behind the frames already
  queued on the link (a busy-until clock, so a pipelined stream is bandwidth-limited, not just
  delayed) plus the one-way `latency_ms`. Downlink shaping is not emulated: the sender's uplink
  is the binding limit of every configured local link pair.
- `receive_delay_for` is the hop's `receive_delay_s`: each frame it receives waits the node's
  own `latency_ms` before compute (the receiving end of the access link; frames in flight
  overlap it). The cost model charges a transfer X -> Y both ends' latency, lat_X + lat_Y; with
  only the sender's shaper the testbed's multi-hop chains ran ~5 ms per hop under their
  predicted latency. The requester's own receiving end is not emulated (its latency once per
  request).

Kernel-level shaping (namespaces + tbf, cgroup quotas) is the testbed's business
(benchmarks/testbed); this module is the in-process, no-root stand-in.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, TypeVar

from p2pinfer.config import EmulationSection

T = TypeVar("T")


class SlowedExecutor:
    """`executor_fn` made `slowdown` times slower by waiting in the calling (worker) thread."""

    def __init__(self, executor_fn: Callable[..., T], slowdown: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not slowdown >= 1.0:
            raise ValueError(f"compute slowdown must be >= 1, got {slowdown!r}")
        self.executor_fn, self.slowdown = executor_fn, float(slowdown)
        self._sleep, self._clock = sleep, clock

    def __call__(self, *args: object, **kwargs: object) -> T:
        start = self._clock()
        out = self.executor_fn(*args, **kwargs)
        extra = (self.slowdown - 1.0) * (self._clock() - start)
        if extra > 0:
            self._sleep(extra)
        return out


class UplinkShaper:
    """A `send_delay` hook: seconds to hold a frame of `nbytes` on an `up_mbps` link with
    `latency_ms` one-way latency, queued behind earlier frames (thread-safe)."""

    def __init__(self, up_mbps: float | None, latency_ms: float | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if up_mbps is not None and not up_mbps > 0:
            raise ValueError(f"up_mbps must be > 0, got {up_mbps!r}")
        if latency_ms is not None and not latency_ms >= 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")
        self.up_mbps, self.latency_s = up_mbps, (latency_ms or 0.0) / 1000.0
        self._clock = clock
        self._free_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> float:
        now = self._clock()
        if self.up_mbps is None:
            return self.latency_s
        with self._lock:
            start = max(now, self._free_at)
            self._free_at = start + 8.0 * nbytes / (self.up_mbps * 1e6)
            return self._free_at - now + self.latency_s


def slowed(executor_fn: Callable[..., T], emulation: EmulationSection) -> Callable[..., T]:
    """The executor a node with `[emulation]` runs: wrapped only when it is slowed at all."""
    if emulation.compute_slowdown > 1.0:
        return SlowedExecutor(executor_fn, emulation.compute_slowdown)
    return executor_fn


def send_delay_for(emulation: EmulationSection) -> Callable[[int], float] | None:
    """The uplink hook for `[emulation]`, or None when the link is not shaped."""
    if emulation.up_mbps is None and emulation.latency_ms is None:
        return None
    return UplinkShaper(emulation.up_mbps, emulation.latency_ms)


def receive_delay_for(emulation: EmulationSection) -> float:
    """Seconds a hop holds each received frame: the `[emulation]` latency of its own link (0: none)."""
    return (emulation.latency_ms or 0.0) / 1000.0


def describe(emulation: EmulationSection) -> Mapping[str, object]:
    """What a node emulates, for logs and the CLI."""
    return {"compute_slowdown": emulation.compute_slowdown, "up_mbps": emulation.up_mbps,
            "latency_ms": emulation.latency_ms}
