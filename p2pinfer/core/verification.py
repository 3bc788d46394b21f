"""Spot-check verification: which hops to re-run, when two outputs agree, who was wrong.

Pure (numpy only); the requester does the I/O. Rules (docs/reputation.md has the guarantee):

1. Selection. Hop `hop_index` of circuit `circuit_id` run by a peer that has completed
   `hops_since_admission` hops since it was (re-)admitted is checked iff
       u = BLAKE2b-64(secret, circuit_id || hop_index) / 2**64  <  p,
   p = probation_fraction while hops_since_admission < probation_hops, else fraction.
   `secret` is the requester's and never leaves it, so a hop cannot predict which of its
   outputs are checked; the same (secret, circuit, hop) always gives the same answer (tests).
2. Agreement. Two outputs a, b agree iff same shape, same non-finite positions, and for every
   finite element |a - b| <= atol + rtol * (max(|a|, |b|) + scale), scale = rms of a and b
   together. The scale term absorbs cancellation near zero, which is where honest rounding
   differences are largest relative to the element. Defaults rtol = 1e-3, atol = 1e-6: the
   largest honest fp32 difference measured on MiniLM (six layers, torch 1 vs 2 threads vs numpy
   OpenBLAS vs a float64 reference) is 6e-6 of the same scale, 170x below rtol.
3. Settlement. Executions of the same span on the same input are collected one by one. A
   majority is a set M of executions that pairwise agree with |M| > n/2 and |M| >= 2. With a
   majority, the verdict accepts the primary's output if it is in M (else M's first member) and
   penalises every execution that agrees with *no* member of M. Without one, another execution
   on a fresh peer is requested, up to max_executions; then the check is inconclusive and no one
   is penalised. A trusted execution (the requester's own) is the majority on its own.
   Guarantee: if honest outputs pairwise agree (rule 2) and honest executors are a majority of
   a check, no honest peer is ever penalised and the accepted output agrees with an honest one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class VerificationPolicy:
    """How often to check and how strictly to compare (rules 1-3)."""

    fraction: float = 0.10
    probation_hops: int = 20
    probation_fraction: float = 1.0
    rtol: float = 1e-3
    atol: float = 1e-6
    max_executions: int = 5

    def __post_init__(self) -> None:
        if not (0 <= self.fraction <= 1 and 0 <= self.probation_fraction <= 1):
            raise ValueError("VerificationPolicy: fractions must be in [0, 1]")
        if self.probation_hops < 0:
            raise ValueError("VerificationPolicy.probation_hops must be >= 0")
        if not (self.rtol >= 0 and self.atol >= 0 and math.isfinite(self.rtol + self.atol)):
            raise ValueError("VerificationPolicy: rtol and atol must be finite and >= 0")
        if self.max_executions < 3:
            raise ValueError("VerificationPolicy.max_executions must be >= 3 (primary, check, tie-break)")

    @classmethod
    def off(cls) -> VerificationPolicy:
        """No spot checks at all (also no probation checks)."""
        return cls(fraction=0.0, probation_hops=0)

    def check_probability(self, hops_since_admission: int) -> float:
        if hops_since_admission < self.probation_hops:
            return self.probation_fraction
        return self.fraction


def _uniform(secret: bytes, circuit_id: bytes, hop_index: int) -> float:
    h = hashlib.blake2b(digest_size=8, key=secret[:64])
    h.update(len(circuit_id).to_bytes(2, "big") + circuit_id + hop_index.to_bytes(4, "big"))
    return int.from_bytes(h.digest(), "big") / 2.0**64


def should_check(
    policy: VerificationPolicy,
    *,
    secret: bytes,
    circuit_id: bytes,
    hop_index: int,
    hops_since_admission: int,
) -> bool:
    """Rule 1: is this hop spot-checked?"""
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("spot-check secret must be >= 16 random bytes")
    if not isinstance(circuit_id, bytes) or not 0 < len(circuit_id) <= 64:
        raise ValueError("circuit_id must be 1..64 bytes")
    if not 0 <= hop_index < 2**32 or hops_since_admission < 0:
        raise ValueError("hop_index must be in [0, 2**32) and hops_since_admission >= 0")
    p = policy.check_probability(hops_since_admission)
    return p > 0 and _uniform(secret, circuit_id, hop_index) < p


def mismatch(a: np.ndarray, b: np.ndarray, policy: VerificationPolicy = VerificationPolicy()) -> float:
    """Largest |a - b| / (atol + rtol * (max(|a|,|b|) + scale)); <= 1 means agreement.

    inf for a shape mismatch or different non-finite positions/values.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    fa, fb = np.isfinite(a64), np.isfinite(b64)
    if not np.array_equal(fa, fb) or not np.array_equal(a64[~fa], b64[~fb], equal_nan=True):
        return math.inf
    a64, b64 = a64[fa], b64[fb]
    if a64.size == 0:
        return 0.0
    scale = math.sqrt((float(np.mean(a64 * a64)) + float(np.mean(b64 * b64))) / 2)
    bound = policy.atol + policy.rtol * (np.maximum(np.abs(a64), np.abs(b64)) + scale)
    diff = np.abs(a64 - b64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    return float(np.max(ratio))


def outputs_agree(a: np.ndarray, b: np.ndarray, policy: VerificationPolicy = VerificationPolicy()) -> bool:
    """Rule 2."""
    return mismatch(a, b, policy) <= 1.0


@dataclass(frozen=True, eq=False)
class Execution:
    """One run of the checked span: who ran it and what came out. Index 0 is the primary."""

    executor: str
    output: np.ndarray
    trusted: bool = False  # the requester's own execution


@dataclass(frozen=True)
class NeedAnother:
    """Run the span once more on a peer not in `exclude` (and feed the result to `settle`)."""

    exclude: frozenset[str]


@dataclass(frozen=True)
class Verdict:
    """Settled: use `accepted`'s output; record a verification failure for each of `penalised`."""

    accepted: str
    agreed: tuple[str, ...]
    penalised: tuple[str, ...]


@dataclass(frozen=True)
class Inconclusive:
    """No majority after max_executions: penalise no one; treat the hop as failed and re-plan."""

    executors: tuple[str, ...]


Decision = NeedAnother | Verdict | Inconclusive


def _majority(execs: Sequence[Execution], agree: list[list[bool]]) -> tuple[int, ...] | None:
    n = len(execs)
    trusted = [i for i, e in enumerate(execs) if e.trusted]
    if trusted:
        return (trusted[0],)
    for size in range(n, n // 2, -1):
        if size < 2:
            break
        for group in combinations(range(n), size):
            if all(agree[i][j] for i, j in combinations(group, 2)):
                return group
    return None


def settle(executions: Sequence[Execution], policy: VerificationPolicy = VerificationPolicy()) -> Decision:
    """Rule 3: decide from the executions so far (primary first)."""
    if not executions:
        raise ValueError("settle needs at least the primary execution")
    if len({e.executor for e in executions}) != len(executions):
        raise ValueError("each execution of a check must come from a different executor")
    n = len(executions)
    agree = [[outputs_agree(a.output, b.output, policy) for b in executions] for a in executions]
    group = _majority(executions, agree) if n >= 2 or executions[0].trusted else None
    if group is None:
        if n < policy.max_executions:
            return NeedAnother(exclude=frozenset(e.executor for e in executions))
        return Inconclusive(executors=tuple(e.executor for e in executions))
    accepted = 0 if 0 in group else group[0]
    penalised = tuple(
        executions[i].executor
        for i in range(n)
        if i not in group and not any(agree[i][j] for j in group)
    )
    agreed = tuple(executions[i].executor for i in range(n) if any(agree[i][j] for j in group))
    return Verdict(accepted=executions[accepted].executor, agreed=agreed, penalised=penalised)
