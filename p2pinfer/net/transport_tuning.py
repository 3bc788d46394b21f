"""Large yamux DATA frames for activation-sized writes: one explicit, version-checked patch.

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

The patch changes one module constant, only on the py-libp2p version it was measured with and
only while the constant still holds the stock value; anything else is left alone with a warning
(re-measure, then add the version to `SUPPORTED_VERSIONS`). `net.host.make_host` applies it.
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


def tune_yamux(*, version: str | None = None) -> bool:
    """Raise yamux's DATA frame size to YAMUX_MAX_FRAME; True if the tuning is in effect.

    Idempotent. `version` overrides the installed version (tests).
    """
    current = getattr(_yamux, "MAX_MESSAGE_SIZE", None)
    if current == YAMUX_MAX_FRAME:
        return True
    version = version or installed_libp2p_version()
    if version not in SUPPORTED_VERSIONS or current != STOCK_MAX_FRAME:
        log.warning("not tuning yamux frame size: measured with libp2p %s (stock frame %d), found %s (frame %r)",
                    sorted(SUPPORTED_VERSIONS), STOCK_MAX_FRAME, version, current)
        return False
    _yamux.MAX_MESSAGE_SIZE = YAMUX_MAX_FRAME
    return True
