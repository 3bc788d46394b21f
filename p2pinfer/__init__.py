"""p2pinfer: partitioned DNN inference over a peer-to-peer swarm of heterogeneous devices."""

from p2pinfer.errors import P2PInferError

__all__ = ["P2PInferError"]
__version__ = "0.1.0"
