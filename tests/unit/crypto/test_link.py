"""Per-link AEAD: frames bound to circuit, link, direction and seq; replay window."""

from __future__ import annotations

import os

import pytest

from p2pinfer.crypto.link import (BACKWARD, FrameAuthError, FrameReplayError, LinkEnd, LinkReceiver, LinkSender,
                                  ReplayWindow, new_link_key, open_frame, seal_frame)

CID = os.urandom(16)


def _end(**over):
    kw = dict(key=KEY, circuit_id=CID, link=1)
    kw.update(over)
    return LinkEnd(**kw)


KEY = new_link_key()


def test_round_trip():
    nonce, box = seal_frame(_end(), 5, b"hello")
    assert open_frame(_end(), 5, nonce, box) == b"hello"


@pytest.mark.parametrize("other", [
    dict(circuit_id=os.urandom(16)), dict(link=2), dict(direction=BACKWARD), dict(key=new_link_key())])
def test_frame_fails_anywhere_else(other):
    nonce, box = seal_frame(_end(), 5, b"hello")
    with pytest.raises(FrameAuthError):
        open_frame(_end(**other), 5, nonce, box)


def test_frame_fails_under_another_seq_or_with_a_flipped_bit():
    nonce, box = seal_frame(_end(), 5, b"hello")
    with pytest.raises(FrameAuthError):
        open_frame(_end(), 6, nonce, box)
    tampered = bytes([box[0] ^ 1]) + box[1:]
    with pytest.raises(FrameAuthError):
        open_frame(_end(), 5, nonce, tampered)
    with pytest.raises(FrameAuthError):
        open_frame(_end(), 5, nonce, box[:8])


def test_receiver_rejects_replays_and_forgeries_do_not_poison_the_window():
    sender, receiver = LinkSender(_end()), LinkReceiver(_end())
    frames = [sender.seal(b"m%d" % i) for i in range(3)]
    seq, nonce, box = frames[1]
    # a forged frame claiming seq 1 fails authentication and must not mark seq 1 as seen
    with pytest.raises(FrameAuthError):
        receiver.open(seq, nonce, b"\0" * len(box))
    assert receiver.open(seq, nonce, box) == b"m1"
    with pytest.raises(FrameReplayError):
        receiver.open(seq, nonce, box)
    assert receiver.open(*frames[0]) == b"m0"  # out of order but inside the window
    assert receiver.open(*frames[2]) == b"m2"


def test_window_rejects_too_old_and_accepts_big_jumps():
    w = ReplayWindow(size=8)
    w.accept(0)
    w.accept(100)
    with pytest.raises(FrameReplayError, match="older"):
        w.check(50)
    w.accept(95)
    with pytest.raises(FrameReplayError, match="already"):
        w.check(95)
    w.check(96)


def test_link_end_validates():
    with pytest.raises(ValueError):
        LinkEnd(key=b"short", circuit_id=CID, link=0)
    with pytest.raises(ValueError):
        LinkEnd(key=KEY, circuit_id=CID, link=1 << 16)
