"""Bridge, namespaces, veth pairs and tbf caps of one testbed run.

Topology: one Linux bridge with no host address (so the host and the outside world cannot
reach the testbed, and the testbed cannot route anywhere); per member a namespace whose only
link is `eth0`, the inside end of a veth pair whose outside end is a bridge port. A member's
egress cap is a tbf on its `eth0` (inside), its ingress cap a tbf on the outside end, whose
egress is exactly the traffic into the namespace. netem is absent in this kernel, so latency is
not added here (see profile.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import TestbedError
from .profile import Cluster, Member
from .resources import bridge_name, host_if, netns_name


def sh(argv: list[str], *, timeout: float = 15.0) -> str:
    """Run one ip/tc command; on failure raise TestbedError with the command and its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"`{' '.join(argv)}` did not finish within {timeout}s") from e
    if done.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _disable_ipv6(ifname: str) -> None:
    """Keep the host from getting link-local addresses on testbed ports."""
    knob = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if knob.exists():
        knob.write_text("1")


GSO_MAX = 16 * 1024  # senders' largest GSO packet: the unit tbf drops when its queue is full
QUEUE_FLOOR = 96 * 1024  # room for several GSO packets even on slow links


def tbf_args(mbps: float, queue_ms: float) -> list[str]:
    """tbf parameters for a cap: a bucket of 4 ms of traffic (>= 32 KiB) and a queue of
    queue_ms at the cap but never under QUEUE_FLOOR. Measured here: with a 20 ms (50 KB)
    queue at 20 Mbit/s, whole 64 KiB GSO bursts were dropped at once and TCP stalled on
    retransmission timeouts (17.1 instead of 19.3 Mbit/s in 2 of 12 runs)."""
    rate_bps = mbps * 1e6 / 8
    burst = max(32 * 1024, int(rate_bps * 0.004))
    limit = max(int(rate_bps * queue_ms / 1000), QUEUE_FLOOR) + burst
    return ["tbf", "rate", f"{mbps * 1000:.0f}kbit", "burst", str(burst), "limit", str(limit)]


def create_bridge(ip: str, rid: str) -> str:
    br = bridge_name(rid)
    sh([ip, "link", "add", "name", br, "type", "bridge", "stp_state", "0"])
    _disable_ipv6(br)
    sh([ip, "link", "set", br, "up"])
    return br


def add_member(ip: str, tc: str, rid: str, index: int, member: Member, cluster: Cluster) -> None:
    """Namespace + veth + address + both tbf caps for one member."""
    ns, outside = netns_name(rid, member.name), host_if(rid, index)
    sh([ip, "netns", "add", ns])
    sh([ip, "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _disable_ipv6(outside)
    sh([ip, "-n", ns, "addr", "add", f"{member.ip}/{cluster.subnet.prefixlen}", "dev", "eth0"])
    sh([ip, "-n", ns, "link", "set", "lo", "up"])
    sh([ip, "-n", ns, "link", "set", "eth0", "gso_max_size", str(GSO_MAX), "up"])
    sh([ip, "link", "set", outside, "master", bridge_name(rid)])
    sh([ip, "link", "set", outside, "up"])
    dev = member.device
    if dev.up_mbps is not None:
        sh([tc, "-n", ns, "qdisc", "replace", "dev", "eth0", "root", *tbf_args(dev.up_mbps, cluster.queue_ms)])
    if dev.down_mbps is not None:
        sh([tc, "qdisc", "replace", "dev", outside, "root", *tbf_args(dev.down_mbps, cluster.queue_ms)])


def qdiscs(ip: str, tc: str, rid: str, index: int, member: Member) -> tuple[str, str]:
    """The qdisc lines actually installed (inside eth0, outside veth), for reports and tests."""
    inside = sh([tc, "-n", netns_name(rid, member.name), "qdisc", "show", "dev", "eth0"]).strip()
    outside = sh([tc, "qdisc", "show", "dev", host_if(rid, index)]).strip()
    return inside, outside
