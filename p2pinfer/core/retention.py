"""The hop's retention buffer: its last outputs per circuit, for audits and resumption.

Rules: a hop keeps, per circuit, the canonical bytes of the last `max_items` outputs it
computed (by seq), and at most `max_bytes` of them (oldest evicted first; an output larger than
`max_bytes` alone is not kept). Everything of a circuit is dropped when the circuit closes or
expires (the adapter calls `drop`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class RetentionBuffer:
    max_items: int = 64
    max_bytes: int = 16 * 1024 * 1024
    _held: dict[bytes, "OrderedDict[int, bytes]"] = field(default_factory=dict)
    _size: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_items < 0 or self.max_bytes < 0:
            raise ValueError("retention: max_items and max_bytes must be >= 0")

    def put(self, circuit_id: bytes, seq: int, data: bytes) -> bool:
        """Keep `data` as the output for `seq`; False when it cannot be kept at all."""
        if self.max_items == 0 or len(data) > self.max_bytes:
            return False
        held = self._held.setdefault(circuit_id, OrderedDict())
        old = held.pop(seq, None)
        size = self._size.get(circuit_id, 0) - (len(old) if old is not None else 0)
        held[seq] = data
        size += len(data)
        while len(held) > self.max_items or size > self.max_bytes:
            _seq, gone = held.popitem(last=False)
            size -= len(gone)
        self._size[circuit_id] = size
        return True

    def get(self, circuit_id: bytes, seq: int) -> bytes | None:
        held = self._held.get(circuit_id)
        return held.get(seq) if held is not None else None

    def seqs(self, circuit_id: bytes) -> tuple[int, ...]:
        return tuple(self._held.get(circuit_id, ()))

    def drop(self, circuit_id: bytes) -> None:
        self._held.pop(circuit_id, None)
        self._size.pop(circuit_id, None)

    def held_bytes(self, circuit_id: bytes | None = None) -> int:
        if circuit_id is not None:
            return self._size.get(circuit_id, 0)
        return sum(self._size.values())
