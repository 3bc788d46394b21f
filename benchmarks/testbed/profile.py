"""Device classes and clusters of the testbed, read from TOML.

A *class file* holds `[classes.NAME]` tables (one device class each). A *cluster file* may
`include` class files (paths relative to itself), define more classes inline, and lists the
nodes (`[[nodes]]`: `class`, optional `name` or `count`) and the `[requester]`'s class.
Every unknown key or bad value raises `TestbedConfigError` naming the file, the key and the
expected type, because a typo in a benchmark profile silently changes what is measured.

What the kernel enforces: `cpu` (cgroup v1 cfs quota) and `up_mbps`/`down_mbps` (tbf).
What it cannot (no netem here): `latency_ms`, which the node's own shaper must add, and
`mem_mb`, which is only advertised. Both travel to the node config via `node_config_fields()`.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TestbedConfigError, TestbedError

REQUESTER = "requester"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
DEFAULT_SUBNET = "10.231.0.0/24"
DEFAULT_PERIOD_US = 20_000
DEFAULT_QUEUE_MS = 20.0
DEFAULT_MIN_SLICE_US = 5_000
MAX_PERIOD_US = 1_000_000  # the kernel's largest cfs period
# What a tbf cap leaves for TCP payload: tbf counts whole Ethernet frames (1514 bytes at a 1500
# MTU) and each carries at most 1448 payload bytes (1500 - IPv4 20 - TCP 20 - timestamps 12).
# Measured through a 20 Mbit/s cap: 19.02-19.48 Mbit/s of goodput (docs/testbed.md).
TCP_GOODPUT = 1448 / 1514

_CLASS_KEYS = {"description": str, "cpu": float, "up_mbps": float, "down_mbps": float,
               "latency_ms": float, "mem_mb": int}
_CLUSTER_KEYS = {"name": str, "description": str, "include": list, "subnet": str,
                 "cpu_period_us": int, "min_slice_us": int, "queue_ms": float, "classes": dict,
                 "requester": dict, "nodes": list}


@dataclass(frozen=True)
class DeviceClass:
    """One kind of device: the caps enforced on it and the link facts its node must advertise."""

    name: str
    cpu: float | None  # cores; None = no quota
    up_mbps: float | None  # None = unshaped
    down_mbps: float | None
    latency_ms: float = 0.0
    mem_mb: int | None = None
    description: str = ""

    def node_config_fields(self) -> dict[str, float | int]:
        """The values a node config should carry so the node advertises what it really gets: on
        a capped link, the payload rate TCP gets through the cap (`TCP_GOODPUT` of it), since
        the cost model moves activation bytes at the advertised rate."""
        out: dict[str, float | int] = {"latency_ms": self.latency_ms}
        if self.up_mbps is not None:
            out["up_mbps"] = goodput_mbps(self.up_mbps)
        if self.down_mbps is not None:
            out["down_mbps"] = goodput_mbps(self.down_mbps)
        if self.mem_mb is not None:
            out["mem_bytes"] = self.mem_mb * 1024 * 1024
        return out


def goodput_mbps(cap_mbps: float) -> float:
    """The TCP payload Mbit/s a tbf cap of `cap_mbps` delivers (3 decimals)."""
    return round(cap_mbps * TCP_GOODPUT, 3)


@dataclass(frozen=True)
class Member:
    """A node or the requester: its name, device class and address in the testbed subnet."""

    name: str
    device: DeviceClass
    ip: str


@dataclass(frozen=True)
class Cluster:
    """Everything needed to bring a testbed up; built only by `load_cluster`."""

    name: str
    source: Path
    subnet: ipaddress.IPv4Network
    cpu_period_us: int
    min_slice_us: int
    queue_ms: float
    requester: Member
    nodes: tuple[Member, ...]

    @property
    def members(self) -> tuple[Member, ...]:
        return (self.requester, *self.nodes)

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise TestbedError(f"no member named {name!r} in cluster {self.name!r} (have: {', '.join(m.name for m in self.members)})")

    def period_us(self, device: DeviceClass) -> int:
        """The cfs period for a class: cpu_period_us, stretched so each slice is >= min_slice_us.

        Measured here: a 0.1-core group in 2 ms slices got 77.6 GFLOP per CPU-second against
        90.6 uncapped (cache refill after every throttle); 5 ms slices 84.8, 10 ms 88.3.
        """
        if device.cpu is None:
            return self.cpu_period_us
        return max(self.cpu_period_us, math.ceil(self.min_slice_us / device.cpu))

    def quota_us(self, device: DeviceClass) -> int | None:
        """The cfs quota for a class, or None when it runs unlimited."""
        return None if device.cpu is None else round(device.cpu * self.period_us(device))

    def node_cpu_total(self) -> float:
        return sum(m.device.cpu or 0.0 for m in self.nodes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise TestbedConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise TestbedConfigError(f"{path}: not valid TOML: {e}") from e


def _check_keys(path: Path, where: str, table: dict[str, Any], schema: dict[str, type]) -> None:
    for key, value in table.items():
        if key not in schema:
            raise TestbedConfigError(f"{path}: unknown key {where}{key!r} (allowed: {', '.join(sorted(schema))})")
        want = schema[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if want is float else (
            isinstance(value, want) and not isinstance(value, bool))
        if not ok:
            raise TestbedConfigError(f"{path}: key {where}{key!r} must be {want.__name__}, got {type(value).__name__} {value!r}")


def _positive(path: Path, where: str, key: str, value: Any, *, zero_ok: bool = False) -> Any:
    if value is None:
        return None
    if value < 0 or (value == 0 and not zero_ok):
        raise TestbedConfigError(f"{path}: key {where}{key!r} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")
    return value


MAX_MBPS = 100_000.0


def _rate(path: Path, where: str, key: str, value: Any) -> float | None:
    """A link cap in Mbit/s: omitted = unshaped, else in (0, MAX_MBPS]."""
    value = _positive(path, where, key, value)
    if value is not None and value > MAX_MBPS:
        raise TestbedConfigError(f"{path}: key {where}{key!r} must be <= {MAX_MBPS:g} Mbit/s, got {value!r}")
    return None if value is None else float(value)


def _parse_class(path: Path, name: str, table: Any) -> DeviceClass:
    where = f"classes.{name}."
    if not isinstance(table, dict):
        raise TestbedConfigError(f"{path}: classes.{name} must be a table, got {type(table).__name__}")
    if not NAME_RE.match(name):
        raise TestbedConfigError(f"{path}: class name {name!r} must match {NAME_RE.pattern}")
    _check_keys(path, where, table, _CLASS_KEYS)
    if "cpu" not in table:
        raise TestbedConfigError(f"{path}: missing key {where}'cpu' (float, cores of CPU quota)")
    g = table.get
    return DeviceClass(
        name=name, cpu=float(_positive(path, where, "cpu", g("cpu"))),
        up_mbps=_rate(path, where, "up_mbps", g("up_mbps")),
        down_mbps=_rate(path, where, "down_mbps", g("down_mbps")),
        latency_ms=float(_positive(path, where, "latency_ms", g("latency_ms", 0.0), zero_ok=True)),
        mem_mb=_positive(path, where, "mem_mb", g("mem_mb")), description=g("description", ""))


def load_classes(path: str | Path, _seen: frozenset[Path] = frozenset()) -> dict[str, DeviceClass]:
    """Read a class file (or the classes of a cluster file, with its includes)."""
    path = Path(path).resolve()
    if path in _seen:
        raise TestbedConfigError(f"{path}: include cycle")
    data = _read_toml(path)
    _check_keys(path, "", data, _CLUSTER_KEYS)
    classes: dict[str, DeviceClass] = {}
    for inc in data.get("include", []):
        if not isinstance(inc, str):
            raise TestbedConfigError(f"{path}: key 'include' must be a list of str, got item {inc!r}")
        classes.update(load_classes(path.parent / inc, _seen | {path}))
    for name, table in data.get("classes", {}).items():
        classes[name] = _parse_class(path, name, table)
    return classes


def _expand_nodes(path: Path, data: dict[str, Any], classes: dict[str, DeviceClass]) -> list[tuple[str, DeviceClass]]:
    out: list[tuple[str, DeviceClass]] = []
    counters: dict[str, int] = {}
    for i, entry in enumerate(data.get("nodes", [])):
        where = f"nodes[{i}]."
        if not isinstance(entry, dict):
            raise TestbedConfigError(f"{path}: nodes[{i}] must be a table")
        _check_keys(path, where, entry, {"class": str, "name": str, "count": int})
        device = _lookup(path, where, entry.get("class"), classes)
        count = _positive(path, where, "count", entry.get("count", 1))
        if "name" in entry and count != 1:
            raise TestbedConfigError(f"{path}: {where}'name' cannot be combined with count > 1")
        for _ in range(count):
            counters[device.name] = counters.get(device.name, 0) + 1
            out.append((entry.get("name", f"{device.name}-{counters[device.name]}"), device))
    if not out:
        raise TestbedConfigError(f"{path}: no [[nodes]] defined")
    names = [n for n, _ in out]
    for n in names:
        if not NAME_RE.match(n) or n == REQUESTER:
            raise TestbedConfigError(f"{path}: node name {n!r} must match {NAME_RE.pattern} and not be {REQUESTER!r}")
        if names.count(n) > 1:
            raise TestbedConfigError(f"{path}: node name {n!r} used twice")
    return out


def _lookup(path: Path, where: str, name: Any, classes: dict[str, DeviceClass]) -> DeviceClass:
    if not isinstance(name, str):
        raise TestbedConfigError(f"{path}: missing key {where}'class' (str, a device class name)")
    if name not in classes:
        raise TestbedConfigError(f"{path}: {where}'class' = {name!r} is not a known class (have: {', '.join(sorted(classes)) or 'none'})")
    return classes[name]


def _subnet(path: Path, text: str, size: int) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as e:
        raise TestbedConfigError(f"{path}: key 'subnet' must be an IPv4 network like {DEFAULT_SUBNET}: {e}") from e
    if not net.is_private:
        raise TestbedConfigError(f"{path}: key 'subnet' = {text!r} is not a private range")
    if net.num_addresses < size + 12:
        raise TestbedConfigError(f"{path}: subnet {text} is too small for {size} members")
    return net


def load_cluster(path: str | Path) -> Cluster:
    """Parse and validate a cluster file; addresses: requester .2, nodes .11, .12, ..."""
    path = Path(path).resolve()
    data = _read_toml(path)
    classes = load_classes(path)
    nodes = _expand_nodes(path, data, classes)
    req = data.get("requester")
    if not isinstance(req, dict):
        raise TestbedConfigError(f"{path}: missing table [requester] with key 'class'")
    _check_keys(path, "requester.", req, {"class": str})
    req_class = _lookup(path, "requester.", req.get("class"), classes)
    net = _subnet(path, data.get("subnet", DEFAULT_SUBNET), len(nodes) + 1)
    period = data.get("cpu_period_us", DEFAULT_PERIOD_US)
    if not 1_000 <= period <= MAX_PERIOD_US:
        raise TestbedConfigError(f"{path}: key 'cpu_period_us' must be in 1000..{MAX_PERIOD_US}, got {period}")
    min_slice = data.get("min_slice_us", DEFAULT_MIN_SLICE_US)
    if not 1_000 <= min_slice <= period:
        raise TestbedConfigError(f"{path}: key 'min_slice_us' must be in 1000..cpu_period_us ({period}), got {min_slice}")
    for _, dev in [*nodes, (REQUESTER, req_class)]:
        if dev.cpu is not None and min_slice / dev.cpu > MAX_PERIOD_US:
            raise TestbedConfigError(f"{path}: class {dev.name!r}: cpu {dev.cpu} is too small: {min_slice} us slices would need a cfs period over {MAX_PERIOD_US} us")
    hosts = list(net.hosts())
    return Cluster(
        name=data.get("name", path.stem), source=path, subnet=net, cpu_period_us=period,
        min_slice_us=min_slice,
        queue_ms=float(_positive(path, "", "queue_ms", data.get("queue_ms", DEFAULT_QUEUE_MS))),
        requester=Member(REQUESTER, req_class, str(hosts[1])),
        nodes=tuple(Member(n, d, str(hosts[10 + i])) for i, (n, d) in enumerate(nodes)))
