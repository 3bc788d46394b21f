"""py-libp2p adapters: host, DHT, discovery, framing, circuits, weights and receipts protocols.

Importing this package imports libp2p (which sets up its own logging) and then re-applies the
application's chosen libp2p log level (see p2pinfer/logs.py).
"""

import libp2p  # noqa: F401  (its import configures the `libp2p` logger; we override it next)

from p2pinfer.logs import apply_libp2p_level

apply_libp2p_level()
