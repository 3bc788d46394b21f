"""Large yamux DATA frames and batched credit release: two explicit, version-checked patches.

Why: py-libp2p 0.8.1's yamux cuts every stream write into DATA frames of at most 64 KiB
(`libp2p.stream_muxer.yamux.yamux.MAX_MESSAGE_SIZE`, go-yamux's default). In py-libp2p each such
frame costs a lot of Python: 12 + 65524 bytes is one byte more than a Noise message carries
(65519), so every frame becomes TWO Noise messages and two socket writes; the reader side wakes
once per frame, copies it through three buffers and sends a WINDOW_UPDATE back. A 1 MiB
activation was 17 frames and 13 ms of transfer on loopback (80 MB/s, measured here); with frames
of up to `YAMUX_MAX_FRAME` it is 1-2 frames and about 5 ms (see docs/benchmarks.md, per-hop).

Why it is safe on the wire: the yamux spec bounds a DATA frame only by the receiver's window, and
py-libp2p never sends more than the window the peer granted (`send_window`); go-yamux and
py-libp2p accept any frame within the window (py-libp2p drops connections announcing more than
16 MiB, which the window never allows). Noise still chunks the bytes into <= 65535-byte messages.
The cost: a large frame holds the connection's write lock while it is written (about 10 ms for
2 MiB here), so another stream's frame on the SAME connection may wait that long.

Second, credit release: py-libp2p 0.8.1 by default answers almost every stream read with a
WINDOW_UPDATE frame (its `PY_YAMUX_RELEASE_ON_READ` knob, on by default), so reading one
activation frame (3 one-byte reads of the varint length, then the body) sent 4-5 updates, each a
Noise message the sender must decrypt and parse: 0.7 ms of a 1 MiB hop (measured). Switched off,
credit is released as go-yamux does it: once at least half the receive window has been consumed
(py-libp2p's own hysteresis path), which cannot stall a reader: a reader that drained its buffer
while the sender has no window left has consumed the whole window, so the next read releases it.

Both patches replace one module attribute each, only on the py-libp2p version they were measured
with and only while the attribute still holds the stock value; anything else is left alone with a
warning (re-measure, then add the version to `SUPPORTED_VERSIONS`). `net.host.make_host` applies
them, so they hold for the whole process (every host in it).
"""

from __future__ import annotations

import importlib.metadata
import logging

import libp2p.stream_muxer.yamux.yamux as _yamux

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({"0.8.1"})
STOCK_MAX_FRAME = 64 * 1024
YAMUX_MAX_FRAME = 2 * 1024 * 1024  # > a 1 MiB activation frame; 16 MiB ones go as 8 frames


def installed_libp2p_version() -> str:
    return importlib.metadata.version("libp2p")


def _never_release_on_read() -> bool:
    """Replaces yamux._yamux_release_on_read: credit is released by hysteresis only (go-yamux)."""
    return False


_STOCK_RELEASE_ON_READ = getattr(_yamux, "_yamux_release_on_read", None)


def tune_yamux(*, version: str | None = None) -> bool:
    """Large DATA frames and batched window updates; True if the tuning is in effect.

    Idempotent. `version` overrides the installed version (tests).
    """
    frame, release = getattr(_yamux, "MAX_MESSAGE_SIZE", None), getattr(_yamux, "_yamux_release_on_read", None)
    if frame == YAMUX_MAX_FRAME and release is _never_release_on_read:
        return True
    version = version or installed_libp2p_version()
    stock_release = release is not None and release is _STOCK_RELEASE_ON_READ \
        and getattr(release, "__module__", "") == _yamux.__name__
    if version not in SUPPORTED_VERSIONS or frame != STOCK_MAX_FRAME or not stock_release:
        log.warning("not tuning yamux: measured with libp2p %s (stock frame %d, stock release-on-read), "
                    "found %s (frame %r, release-on-read %r)", sorted(SUPPORTED_VERSIONS), STOCK_MAX_FRAME,
                    version, frame, release)
        return False
    _yamux.MAX_MESSAGE_SIZE = YAMUX_MAX_FRAME
    _yamux._yamux_release_on_read = _never_release_on_read
    return True
