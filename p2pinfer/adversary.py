"""Deliberately misbehaving span executors, driven by a node config's `[adversary]` section.

Fault handling and reputation can only be shown to work against peers that really misbehave.
`AdversarialExecutor` wraps a span executor (`SpanExecutor.run`, or the emulation's slowed one)
and, counting every call as one hop (one frame computed), does what the section asks:

- `crash_after_hops = N`: hops 1..N are served; on hop N+1 it calls `on_crash()` (a CLI node
  flushes its logs and exits the process at once, as a power cut would; a member of the
  embedded swarm is stopped, so its host closes) and raises `AdversaryCrash`. Every later call
  raises too (a crash is not undone).
- `stall_after_hops = N`: every hop after the N-th computes, then holds the worker thread for
  `stall_seconds` before returning (a peer that stops answering but keeps its connections).
- `corrupt_probability = q`: each hop is corrupted with probability q, decided by
  `(seed, hop number)` alone, so a run is reproducible. A corrupted hop adds Gaussian noise of
  `NOISE_FRACTION` x the tensor's std to every floating-point output tensor; integer tensors
  (token ids, attention masks) pass untouched, so the next hop still accepts the frame.
- `overclaim_factor` is not the executor's business: config.resolve_resources already
  multiplies the advertised compute; the node then computes at its real speed.

This is test machinery a user opts into per node; an honest config never activates it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import zlib
from typing import Callable, Mapping

import numpy as np
import torch

from p2pinfer.config import AdversarySection, NodeConfig

log = logging.getLogger(__name__)

NOISE_FRACTION = 0.1  # noise std relative to each output tensor's std

Tensors = Mapping[str, torch.Tensor]
ExecutorFn = Callable[..., Tensors]


class AdversaryCrash(RuntimeError):
    """Raised by a crashed adversarial executor (never a P2PInferError: a dead node reports nothing)."""


def seed_for(name: str) -> int:
    """A stable per-node seed from its name (same config, same misbehaviour, every run)."""
    return zlib.crc32(name.encode("utf-8"))


def corrupt_decision(seed: int, hop: int, probability: float) -> bool:
    """Whether hop number `hop` (1-based) is corrupted: a pure function of (seed, hop)."""
    if probability <= 0.0:
        return False
    return bool(np.random.default_rng([seed & 0xFFFFFFFF, hop]).random() < probability)


def perturb(tensors: Tensors, *, seed: int, hop: int, fraction: float = NOISE_FRACTION) -> dict[str, torch.Tensor]:
    """Every floating-point tensor plus noise of `fraction` x its std; other tensors unchanged."""
    gen = torch.Generator().manual_seed((seed & 0xFFFFFFFF) * 1_000_003 + hop)
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not torch.is_floating_point(t):
            out[name] = t
            continue
        ref = t.detach().to(torch.float32)
        scale = float(ref.std()) if ref.numel() > 1 else 0.0
        if not scale > 0.0:  # constant (or single) tensor: fall back to its magnitude
            scale = float(ref.abs().mean()) or 1.0
        noise = torch.randn(tuple(t.shape), generator=gen, dtype=torch.float32) * (fraction * scale)
        out[name] = (ref + noise).to(t.dtype)
    return out


class AdversarialExecutor:
    """`inner` with the misbehaviour of `adversary` (see the module docstring). Thread-safe:
    the hop calls it from worker threads, several at once when it has several compute slots."""

    def __init__(self, inner: ExecutorFn, adversary: AdversarySection, *, seed: int,
                 on_crash: Callable[[], None], sleep: Callable[[float], None] = time.sleep) -> None:
        if adversary.crash_after_hops is not None and adversary.crash_after_hops < 0:
            raise ValueError(f"crash_after_hops must be >= 0, got {adversary.crash_after_hops!r}")
        if not 0.0 <= adversary.corrupt_probability <= 1.0:
            raise ValueError(f"corrupt_probability must be in [0, 1], got {adversary.corrupt_probability!r}")
        self.inner, self.adversary, self.seed = inner, adversary, seed
        self._on_crash, self._sleep = on_crash, sleep
        self._lock = threading.Lock()
        self.hops = 0          # calls so far (hop numbers are 1-based)
        self.corrupted = 0     # hops whose output was perturbed
        self.stalled = 0       # hops that were held for stall_seconds
        self.crashed = False

    def __call__(self, manifest: object, start: int, stop: int, tensors: Tensors) -> Tensors:
        hop, crash_now = self._next_hop()
        if crash_now:
            log.error("adversary: crashing on hop %d (crash_after_hops=%s)", hop, self.adversary.crash_after_hops)
            self._on_crash()
        if self.crashed:
            raise AdversaryCrash(f"adversarial node crashed after {self.adversary.crash_after_hops} hops")
        out = self.inner(manifest, start, stop, tensors)
        if corrupt_decision(self.seed, hop, self.adversary.corrupt_probability):
            out = perturb(out if isinstance(out, Mapping) else {"x": out}, seed=self.seed, hop=hop)
            with self._lock:
                self.corrupted += 1
            log.info("adversary: corrupted hop %d", hop)
        after = self.adversary.stall_after_hops
        if after is not None and hop > after:
            with self._lock:
                self.stalled += 1
            log.info("adversary: stalling hop %d for %gs", hop, self.adversary.stall_seconds)
            self._sleep(self.adversary.stall_seconds)
        return out

    def _next_hop(self) -> tuple[int, bool]:
        """Count this call; True the first time the crash threshold is passed."""
        with self._lock:
            self.hops += 1
            limit = self.adversary.crash_after_hops
            crash_now = not self.crashed and limit is not None and self.hops > limit
            if crash_now:
                self.crashed = True
            return self.hops, crash_now


def executor_active(adversary: AdversarySection) -> bool:
    """True when the section changes what the executor does (overclaiming alone does not)."""
    return (adversary.crash_after_hops is not None or adversary.stall_after_hops is not None
            or adversary.corrupt_probability > 0)


def wrap_for_config(executor_fn: ExecutorFn, config: NodeConfig, *, on_crash: Callable[[], None],
                    seed: int | None = None) -> ExecutorFn:
    """The executor a node with `config` runs: `executor_fn` itself unless `[adversary]` makes
    it crash, stall or corrupt. `seed` defaults to a stable hash of the node's name."""
    if not executor_active(config.adversary):
        return executor_fn
    log.warning("node %s runs ADVERSARIAL: %s", config.node.name, config.adversary)
    return AdversarialExecutor(executor_fn, config.adversary, seed=seed_for(config.node.name) if seed is None else seed,
                               on_crash=on_crash)


def exit_process() -> None:
    """`on_crash` of a CLI node: flush the logs, then die at once (no cleanup, like kill -9)."""
    import os

    for handler in logging.getLogger().handlers:
        with contextlib.suppress(OSError, ValueError):  # a closed stream must not keep it alive
            handler.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(1)
