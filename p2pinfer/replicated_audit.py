"""Spot checks for replicated streams: the same audits after the fact as the single-chain engine
(p2pinfer/failover.py rules 5-6, docs/reputation.md), applied per chain.

Before a result of chain c is accepted: its hops' commitment chain is awaited (bounded) and
checked (a break at an end convicts that hop; inside, the chain fails and nobody is convicted);
then each hop i chosen by `hooks.should_check(key, i, peer)` (the requester's secret; a hop
cannot tell) is audited: its input (the requester's input for the first hop, else the previous
hop's retained output) and output (the result for the last hop, else its retained output), each
retained output checked against the commitment the hop sent before anyone asked, the span re-run
here (trusted) and settled. A proven-wrong hop is recorded (`hooks.verification_failed`) and
raises VerificationError: net/replicated_run.py then fails its chain and recomputes every result
that chain delivered on the surviving chains. A hop that cannot show its evidence is a
HopFailedError (its chain fails; recorded as a failure).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import trio

from p2pinfer.core.audit import evidence_matches
from p2pinfer.core.circuit import HopSpec, Result
from p2pinfer.core.codec import Activation, activation_from_cbor, decode_strict
from p2pinfer.core.reputation import EventKind
from p2pinfer.core.verification import Execution, Verdict, settle
from p2pinfer.errors import CircuitError, HopFailedError, NetworkError, VerificationError, WireError
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.hop_protocol import to_numpy, to_torch

REQUESTER = "requester"  # the trusted executor's name in a settlement


def flat(act: Activation, like: Activation | None = None) -> np.ndarray:
    """Every array's values as one float64 vector (names sorted); a structure unlike `like`'s
    gives a vector that agrees with nothing."""
    def items(a: Activation) -> list[tuple[str, Any]]:
        return sorted(a.items()) if isinstance(a, Mapping) else [("x", a)]

    def shape(a: Activation) -> list[tuple[str, tuple[int, ...]]]:
        return [(k, np.asarray(v).shape) for k, v in items(a)]

    if like is not None and shape(act) != shape(like):
        return np.full(1, np.nan)
    parts = [np.asarray(v).astype(np.float64, copy=False).ravel() for _k, v in items(act)]
    return np.concatenate(parts) if parts else np.zeros(0)


class ChainAudits:
    """The `audit` callback of run_replicated for one stream with resilient hooks."""

    def __init__(self, requester: Any, hooks: Any, manifest: Manifest, batch: Sequence[Activation]) -> None:
        self.rq, self.hooks, self.manifest, self.batch = requester, hooks, manifest, batch
        self.nonce = os.urandom(16)
        self.local = SpanExecutor(requester.store)
        self._local_lock = trio.CapacityLimiter(1)
        self.audited = 0  # hops audited

    async def __call__(self, chain: int, circuit: Any, r: Result, idx: int) -> None:
        specs = list(circuit.machine.hops)
        await self._check_chain(circuit, r, specs, idx)
        key = self.nonce + chain.to_bytes(2, "big") + idx.to_bytes(4, "big")
        for k, spec in enumerate(specs):
            if self.hooks.should_check(key, k, spec.peer_id):
                given = self.batch[idx] if k == 0 else await self._retained(circuit, r, specs, k - 1, idx)
                got = r.act if k == len(specs) - 1 else await self._retained(circuit, r, specs, k, idx)
                await self._verify(spec, given, got, idx)
                self.audited += 1

    async def _check_chain(self, circuit: Any, r: Result, specs: Sequence[HopSpec], idx: int) -> None:
        check = await circuit.chain(r, timeout=self.hooks.options.commit_timeout_s)
        for suspects in check.suspects(len(specs)):
            peers = sorted(specs[i].peer_id for i in suspects)
            detail = f"commitment chain of {self.manifest.name} input {idx} broken next to {', '.join(peers)}"
            if len(peers) == 1:
                await self._convict(peers[0], detail)
            for peer in peers:
                await trio.to_thread.run_sync(self.hooks.hop_failed, peer, EventKind.FAILURE, detail)
            raise CircuitError(detail)

    async def _retained(self, circuit: Any, r: Result, specs: Sequence[HopSpec], link: int, idx: int) -> Activation:
        """Hop `link`'s retained output for this result, checked against its commitment."""
        peer = specs[link].peer_id
        try:
            data = await circuit.retained(link, r.seq, timeout=self.hooks.options.audit_timeout_s)
        except (NetworkError, WireError) as exc:
            await self._failed(peer, f"hop {peer} failed an audit of input {idx}: {exc}")
        if data is None:
            await self._failed(peer, f"hop {peer} no longer holds its output for input {idx}")
        commit = circuit.machine.committed(link, r.seq)
        try:
            if commit is None or not evidence_matches(data, commit):
                raise WireError("retained output does not match its commitment")
            return activation_from_cbor(decode_strict(data, max_size=self.rq.client.config.max_frame))
        except WireError as exc:
            await self._convict(peer, f"hop {peer} showed an audit of {self.manifest.name} input {idx} a different output: {exc}")
            raise AssertionError("unreachable") from None

    async def _verify(self, spec: HopSpec, given: Activation, got: Activation, idx: int) -> None:
        want = await self._run_local(spec.start, spec.stop, given)
        decision = settle([Execution(spec.peer_id, flat(got, want)), Execution(REQUESTER, flat(want), trusted=True)],
                          self.hooks.options.policy)
        assert isinstance(decision, Verdict)  # a trusted execution always settles
        if spec.peer_id in decision.penalised:
            await self._convict(spec.peer_id, f"hop {spec.peer_id} returned a wrong output for layers "
                                f"[{spec.start},{spec.stop}) of {self.manifest.name}, input {idx}")

    async def _failed(self, peer_id: str, detail: str) -> None:
        """A hop that cannot show its evidence: recorded as a failure; its chain fails."""
        await trio.to_thread.run_sync(self.hooks.hop_failed, peer_id, EventKind.FAILURE, detail)
        raise HopFailedError((peer_id,), "failure", detail)

    async def _convict(self, peer_id: str, detail: str) -> None:
        await trio.to_thread.run_sync(self.hooks.verification_failed, peer_id, detail)
        raise VerificationError(peer_id, detail)

    async def _run_local(self, start: int, stop: int, act: Activation) -> Activation:
        def compute() -> Activation:
            with torch.inference_mode():
                return to_numpy(self.local.run(self.manifest, start, stop, to_torch(act)))
        return await trio.to_thread.run_sync(compute, limiter=self._local_lock)
