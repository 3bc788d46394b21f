"""What a distributed inference returns: outputs, the plan, and per-hop predicted vs measured.

`InferenceResult.to_json_dict()` is exactly the `p2pinfer run --json` document (contracted keys
first); `StreamResult` is the same for a pipelined stream (`run --input-file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from p2pinfer.core.plan import Plan
from p2pinfer.models.io import output_to_json
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.circuit_client import CircuitRun, HopTiming


@dataclass(frozen=True)
class HopReport:
    """One hop of a finished run: who computed which layers, predicted vs measured compute."""

    peer_id: str
    start: int
    stop: int
    predicted_ms: float
    measured_ms: float
    predicted_transfer_in_ms: float

    @classmethod
    def of(cls, t: HopTiming) -> "HopReport":
        return cls(t.peer_id, t.start, t.stop, t.predicted_compute_ms, t.measured_compute_ms, t.predicted_transfer_in_ms)

    def to_json_dict(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "layers": [self.start, self.stop], "predicted_ms": round(self.predicted_ms, 3),
                "measured_ms": round(self.measured_ms, 3), "predicted_transfer_in_ms": round(self.predicted_transfer_in_ms, 3)}


@dataclass(frozen=True)
class InferenceResult:
    """One input's distributed inference. `output`: the model's named output arrays."""

    model: str
    model_id: str
    output: Mapping[str, np.ndarray]
    latency_ms: float  # input sent -> result decrypted, at the requester (setup excluded)
    setup_ms: float  # assignments sent -> every hop accepted (includes weight fetches)
    plan: Plan
    hops: tuple[HopReport, ...]
    attempts: int = 1

    def to_json_dict(self) -> dict[str, Any]:
        """The `p2pinfer run --json` contract (extra keys after the contracted ones)."""
        return {"model": self.model, "output": output_json(self.output), "latency_ms": round(self.latency_ms, 3),
                "plan": self.plan.to_json_dict(), "hops": [h.to_json_dict() for h in self.hops],
                "model_id": self.model_id, "setup_ms": round(self.setup_ms, 3), "attempts": self.attempts}


@dataclass(frozen=True)
class StreamResult:
    """Many inputs pipelined through one circuit; `outputs` in input order."""

    model: str
    model_id: str
    outputs: tuple[Mapping[str, np.ndarray], ...]
    latency_ms: tuple[float, ...]
    setup_ms: float
    wall_s: float  # setup + every input + teardown
    plan: Plan
    hops: tuple[HopReport, ...]
    attempts: int = 1

    @property
    def throughput_rps(self) -> float:
        """Inputs per second over the streaming part (wall time minus setup)."""
        busy = self.wall_s - self.setup_ms / 1000
        return len(self.outputs) / busy if busy > 0 else float("inf")

    def to_json_dict(self) -> dict[str, Any]:
        return {"model": self.model, "outputs": [output_json(o) for o in self.outputs],
                "count": len(self.outputs), "throughput_rps": round(self.throughput_rps, 3),
                "latency_ms": [round(v, 3) for v in self.latency_ms], "wall_s": round(self.wall_s, 3),
                "setup_ms": round(self.setup_ms, 3), "plan": self.plan.to_json_dict(),
                "hops": [h.to_json_dict() for h in self.hops], "model_id": self.model_id, "attempts": self.attempts}


def output_json(output: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{"shape", "dtype", "data"} of the single output tensor (as `run --local` prints it)."""
    return output_to_json({k: torch.from_numpy(np.array(v)) for k, v in output.items()})


def hop_reports(plan: Plan, traces: Sequence[Sequence[int]]) -> tuple[HopReport, ...]:
    """Predicted vs measured (median over inputs of the compute each hop put in the trace)."""
    def median_ms(i: int) -> float:
        values = sorted(t[i] for t in traces if len(t) > i)
        return values[len(values) // 2] / 1000 if values else float("nan")

    return tuple(HopReport(h.peer_id, h.start, h.stop, h.compute_s * 1000, median_ms(i), h.transfer_in_s * 1000)
                 for i, h in enumerate(plan.hops))


def stream_result(manifest: Manifest, plan: Plan, run: CircuitRun, attempts: int) -> StreamResult:
    return StreamResult(manifest.name, manifest.model_id, tuple(dict(o) for o in run.outputs), run.latency_ms,
                        run.setup_ms, run.wall_s, plan, tuple(HopReport.of(h) for h in run.hops), attempts)
