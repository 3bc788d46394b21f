"""The hook object through which fault handling and reputation steer the requester.

`Requester.infer` / `infer_stream` run a bounded loop of attempts (discover -> plan -> circuit);
after each one they call these hooks. The defaults trust every peer equally and never retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pinfer.core.plan import Plan
from p2pinfer.core.snapshot import SwarmSnapshot
from p2pinfer.errors import CircuitError, NetworkError
from p2pinfer.results import InferenceResult, StreamResult


@dataclass(frozen=True)
class Attempt:
    """One pass through plan -> circuit: what was planned, over which view of the swarm."""

    number: int
    model_id: str
    plan: Plan
    snapshot: SwarmSnapshot
    excluded: frozenset[str]


@dataclass(frozen=True)
class Retry:
    """A hook's decision to try again: plan again without the peers in `exclude`."""

    exclude: frozenset[str] = frozenset()


class RequesterHooks:
    """Where reputation and fault handling plug into `Requester.infer` / `infer_stream`.

    - `reputation(peer_id)` -> (0, 1]: scales the planner's expected cost of a peer (and excludes
      it below PlannerOptions.exclusion_threshold).
    - `on_success(attempt, result)`: after a result arrived (spot-checks, receipts, ledger).
    - `on_failure(attempt, error)` -> Retry | None: after a refused/failed/timed-out attempt;
      a Retry re-plans without `Retry.exclude` (up to RequesterConfig.max_attempts), None raises.
    - `adjust_snapshot(snapshot)`: the planner's view after discovery (drop excluded peers,
      apply measured speed); `attach(requester)`: called once by the Requester.
    - `resilient`: True makes the Requester run the failover / spot-check engine
      (p2pinfer/failover.py) with these hooks (p2pinfer.fault.LedgerHooks does).
    The defaults trust everyone and never retry.
    """

    resilient: bool = False

    def attach(self, requester: object) -> None:
        return None

    def adjust_snapshot(self, snapshot: SwarmSnapshot) -> SwarmSnapshot:
        return snapshot

    def reputation(self, peer_id: str) -> float:
        return 1.0

    async def on_success(self, attempt: Attempt, result: InferenceResult | StreamResult) -> None:
        return None

    async def on_failure(self, attempt: Attempt, error: CircuitError | NetworkError) -> Retry | None:
        return None
