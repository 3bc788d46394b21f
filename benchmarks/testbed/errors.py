"""Errors of the testbed, inside the project's one error tree.

`TestbedUnavailable` is not a bug: it says this machine cannot enforce heterogeneity (not root,
a tool or the cgroup v1 cpu controller missing) and what remains instead, so callers can fall back.
"""

from __future__ import annotations

from p2pinfer.errors import ConfigError, P2PInferError

FALLBACK = (
    "fallback: the in-process emulation of node_configs/local/ (compute slowdown and "
    "bandwidth/latency shaping applied by each node itself) is what remains; the benchmarks "
    "use that path"
)


class TestbedError(P2PInferError):
    """Bringing the testbed up or down failed; the message names the command and its output."""

    __test__ = False  # not a pytest test class despite the name


class TestbedConfigError(ConfigError):
    """A profile or cluster file is unreadable or has an unknown key or a bad value."""

    __test__ = False


class TestbedUnavailable(TestbedError):
    """This machine cannot run the real testbed; `reasons` says precisely why."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("testbed unavailable: " + "; ".join(self.reasons) + ". " + FALLBACK)
