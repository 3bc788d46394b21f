"""The application's choice of py-libp2p log level, applied whenever libp2p gets imported.

py-libp2p configures its own `libp2p` logger when it is imported (level WARNING, no propagation,
handlers cleared), which would undo a level set before that import. The CLI imports libp2p lazily
(only for commands that need the network), so it records its choice here and `p2pinfer.net`,
which imports libp2p first, re-applies it.
"""

from __future__ import annotations

import logging

_libp2p_level: int | None = None


def set_libp2p_level(level: int) -> None:
    """Use `level` for py-libp2p's loggers, now and after libp2p is (re)configured on import."""
    global _libp2p_level
    _libp2p_level = level
    apply_libp2p_level()


def apply_libp2p_level() -> None:
    if _libp2p_level is not None:
        logging.getLogger("libp2p").setLevel(_libp2p_level)
