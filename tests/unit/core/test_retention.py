"""core/retention.py: bounded per-circuit retention of a hop's outputs."""

from __future__ import annotations

import pytest

from p2pinfer.core.retention import RetentionBuffer

A, B = b"a" * 16, b"b" * 16


def test_keeps_last_n_per_circuit_and_drops_on_close():
    r = RetentionBuffer(max_items=3, max_bytes=1000)
    for seq in range(5):
        assert r.put(A, seq, bytes([seq]) * 10)
    r.put(B, 0, b"x")
    assert r.seqs(A) == (2, 3, 4) and r.get(A, 1) is None and r.get(A, 4) == b"\x04" * 10
    assert r.held_bytes(A) == 30 and r.held_bytes() == 31
    r.drop(A)
    assert r.get(A, 4) is None and r.held_bytes() == 1 and r.get(B, 0) == b"x"


def test_byte_cap_evicts_oldest_and_refuses_oversized():
    r = RetentionBuffer(max_items=100, max_bytes=25)
    for seq in range(3):
        r.put(A, seq, b"z" * 10)
    assert r.seqs(A) == (1, 2) and r.held_bytes(A) == 20
    assert not r.put(A, 9, b"z" * 26) and r.get(A, 9) is None
    r.put(A, 2, b"y" * 5)  # replacing a seq re-counts its bytes
    assert r.held_bytes(A) == 15 and r.get(A, 2) == b"y" * 5


def test_disabled_and_bad_config():
    assert not RetentionBuffer(max_items=0).put(A, 0, b"x")
    with pytest.raises(ValueError):
        RetentionBuffer(max_items=-1)
