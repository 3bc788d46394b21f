"""Node configuration: one frozen object tree, loaded from TOML in one place.

`load_node_config(path)` is the only reader. Every key is known and typed; an unknown key, a
missing required key or a bad value raises ConfigError naming the file, the dotted key and what
was expected. CLI flags are merged with `with_overrides` (never read from the environment).
The reference of every key, with units and defaults, is docs/operations.md.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from multiaddr import Multiaddr

from p2pinfer.core.records import MAX_RECORD_TTL_S
from p2pinfer.errors import ConfigError

DEFAULT_LINK = (100.0, 100.0, 5.0)  # up Mbit/s, down Mbit/s, latency ms when nothing is known
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class NodeSection:
    """[node]: who the node is and how it joins the swarm."""

    name: str = "node"
    device_class: str = "generic"
    swarm: str = "default"
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    data_dir: Path | None = None
    record_ttl_s: float = 300.0
    republish_s: float = 120.0


@dataclass(frozen=True)
class ResourcesSection:
    """[resources]: what the node offers; optional overrides replace measured numbers."""

    mem_bytes: int = 2 * 2**30
    compute_threads: int = 1
    max_concurrent_circuits: int = 4
    up_mbps: float | None = None
    down_mbps: float | None = None
    latency_ms: float | None = None
    gflops: float | None = None


@dataclass(frozen=True)
class EmulationSection:
    """[emulation]: the node slows and shapes itself to behave like its device class."""

    compute_slowdown: float = 1.0
    up_mbps: float | None = None
    down_mbps: float | None = None
    latency_ms: float | None = None

    @property
    def active(self) -> bool:
        return self.compute_slowdown > 1 or any(
            v is not None for v in (self.up_mbps, self.down_mbps, self.latency_ms))


@dataclass(frozen=True)
class AdversarySection:
    """[adversary]: deliberate misbehaviour for fault/reputation tests (off by default)."""

    crash_after_hops: int | None = None
    stall_after_hops: int | None = None
    stall_seconds: float = 30.0
    corrupt_probability: float = 0.0
    overclaim_factor: float = 1.0

    @property
    def active(self) -> bool:
        return (self.crash_after_hops is not None or self.stall_after_hops is not None
                or self.corrupt_probability > 0 or self.overclaim_factor != 1.0)


@dataclass(frozen=True)
class NodeConfig:
    """A whole node config; `source` is the file it came from (None if built in code)."""

    node: NodeSection = NodeSection()
    resources: ResourcesSection = ResourcesSection()
    emulation: EmulationSection = EmulationSection()
    adversary: AdversarySection = AdversarySection()
    source: Path | None = None


@dataclass(frozen=True)
class AdvertisedResources:
    """The numbers a node puts in its capability record (planner units)."""

    gflops: float
    gflops_by_class: Mapping[str, float]
    mem_bytes: int
    up_mbps: float
    down_mbps: float
    latency_ms: float
    gflops_by_kind: Mapping[str, float] = field(default_factory=dict)


# ---- reading ---------------------------------------------------------------------------------


class _Table:
    """Typed, consuming reads from one TOML table; `finish` rejects keys nobody read."""

    def __init__(self, origin: str, section: str, table: Any) -> None:
        self.origin, self.section = origin, section
        if not isinstance(table, dict):
            self.fail(section, "a table", table)
        self.items = dict(table)

    def fail(self, key: str, expected: str, value: Any) -> None:
        dotted = key if key == self.section else f"{self.section}.{key}"
        raise ConfigError(f"{self.origin}: {dotted}: expected {expected}, got {value!r:.80}")

    def get(self, key: str, default: Any, expected: str, ok: Callable[[Any], bool]) -> Any:
        if key not in self.items:
            return default
        value = self.items.pop(key)
        try:
            good = ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.fail(key, expected, value)
        return value

    def number(self, key: str, default: Any, *, low: float, high: float = math.inf,
               low_open: bool = False, integer: bool = False) -> Any:
        kind = "an integer" if integer else "a number"
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        types = (int,) if integer else (int, float)

        def ok(v: Any) -> bool:
            return (type(v) in types and math.isfinite(v) and v <= high
                    and (v > low if low_open else v >= low))

        value = self.get(key, default, f"{kind} {bound}", ok)
        return value if value is None or integer else float(value)

    def name(self, key: str, default: str) -> str:
        return self.get(key, default, "a name of 1-64 letters, digits, '.', '_' or '-'",
                        lambda v: isinstance(v, str) and _NAME_RE.fullmatch(v) is not None)

    def boolean(self, key: str, default: bool) -> bool:
        return self.get(key, default, "true or false", lambda v: isinstance(v, bool))

    def multiaddrs(self, key: str, default: tuple[str, ...], *, with_peer: bool) -> tuple[str, ...]:
        what = "a list of multiaddrs" + (" ending in /p2p/<peer id>" if with_peer else "")
        value = self.get(key, default, what, lambda v: isinstance(v, (list, tuple)))
        for addr in value:
            if not _is_multiaddr(addr, with_peer=with_peer):
                self.fail(key, what, addr)
        return tuple(value)

    def size(self, key: str, default: int) -> int:
        if key not in self.items:
            return default
        value = self.items.pop(key)
        size = parse_size(value)
        if size is None:
            self.fail(key, 'a byte count: an integer >= 0 or a string like "512 MiB" or "2 GB"', value)
        return size  # type: ignore[return-value]

    def finish(self, known: Any) -> None:
        """Reject any key no reader consumed, listing the keys this section does have."""
        for key in self.items:
            names = ", ".join(f.name for f in fields(known))
            raise ConfigError(f"{self.origin}: {self.section}.{key}: unknown key; "
                              f"[{self.section}] expects only: {names} (see docs/operations.md)")


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a "2 GiB"-style string; None if it is neither."""
    if type(value) is int:
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE_RE.fullmatch(value)
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])


def _is_multiaddr(addr: Any, *, with_peer: bool) -> bool:
    if not isinstance(addr, str) or not addr.startswith("/"):
        return False
    try:
        parsed = Multiaddr(addr)
    except (ValueError, TypeError, KeyError):
        return False
    return not with_peer or "p2p" in [p.name for p in parsed.protocols()]


def _node(t: _Table, base: Path) -> NodeSection:
    d = NodeSection()
    data_dir = t.get("data_dir", None, "a directory path string", lambda v: isinstance(v, str) and v != "")
    section = NodeSection(
        name=t.name("name", d.name),
        device_class=t.name("device_class", d.device_class),
        swarm=t.name("swarm", d.swarm),
        listen=t.multiaddrs("listen", d.listen, with_peer=False),
        bootstrap=t.multiaddrs("bootstrap", d.bootstrap, with_peer=True),
        mdns=t.boolean("mdns", d.mdns),
        data_dir=None if data_dir is None else (base / Path(data_dir).expanduser()),
        record_ttl_s=t.number("record_ttl_s", d.record_ttl_s, low=1, high=MAX_RECORD_TTL_S),
        republish_s=t.number("republish_s", d.republish_s, low=0, low_open=True),
    )
    if section.republish_s >= section.record_ttl_s:
        t.fail("republish_s", f"a number < record_ttl_s ({section.record_ttl_s:g}) so records "
               "are renewed before they expire", section.republish_s)
    if not section.listen:
        t.fail("listen", "at least one multiaddr", [])
    return section


def _resources(t: _Table) -> ResourcesSection:
    d = ResourcesSection()
    return ResourcesSection(
        mem_bytes=t.size("mem_bytes", d.mem_bytes),
        compute_threads=t.number("compute_threads", d.compute_threads, low=1, high=1024, integer=True),
        max_concurrent_circuits=t.number("max_concurrent_circuits", d.max_concurrent_circuits,
                                         low=1, high=10_000, integer=True),
        up_mbps=t.number("up_mbps", None, low=0, low_open=True),
        down_mbps=t.number("down_mbps", None, low=0, low_open=True),
        latency_ms=t.number("latency_ms", None, low=0),
        gflops=t.number("gflops", None, low=0, low_open=True),
    )


def _emulation(t: _Table) -> EmulationSection:
    return EmulationSection(
        compute_slowdown=t.number("compute_slowdown", 1.0, low=1, high=10_000),
        up_mbps=t.number("up_mbps", None, low=0, low_open=True),
        down_mbps=t.number("down_mbps", None, low=0, low_open=True),
        latency_ms=t.number("latency_ms", None, low=0, high=60_000),
    )


def _adversary(t: _Table) -> AdversarySection:
    d = AdversarySection()
    return AdversarySection(
        crash_after_hops=t.number("crash_after_hops", None, low=0, integer=True),
        stall_after_hops=t.number("stall_after_hops", None, low=0, integer=True),
        stall_seconds=t.number("stall_seconds", d.stall_seconds, low=0, high=3600),
        corrupt_probability=t.number("corrupt_probability", d.corrupt_probability, low=0, high=1),
        overclaim_factor=t.number("overclaim_factor", d.overclaim_factor, low=1, high=1000),
    )


_SECTIONS: dict[str, tuple[Callable[..., Any], type]] = {
    "node": (_node, NodeSection),
    "resources": (_resources, ResourcesSection),
    "emulation": (_emulation, EmulationSection),
    "adversary": (_adversary, AdversarySection),
}


def load_node_config(path: Path | str) -> NodeConfig:
    """Read and validate a node config TOML file (relative data_dir: against the file's folder)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return config_from_dict(doc, origin=str(path), base=path.parent.resolve(), source=path)


def config_from_dict(doc: Mapping[str, Any], *, origin: str = "<config>", base: Path = Path("."),
                     source: Path | None = None) -> NodeConfig:
    """Validate an already-parsed config document (`origin` names it in errors)."""
    unknown = sorted(set(doc) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{origin}: {unknown[0]}: unknown section; expected a table named "
                          f"one of {', '.join(_SECTIONS)}")
    parts: dict[str, Any] = {}
    for name, (parse, section_type) in _SECTIONS.items():
        table = _Table(origin, name, doc.get(name, {}))
        parts[name] = parse(table, base) if name == "node" else parse(table)
        table.finish(section_type)
    return NodeConfig(**parts, source=source)


def with_overrides(config: NodeConfig, *, listen: list[str] | None = None,
                   bootstrap: list[str] | None = None, data_dir: Path | str | None = None) -> NodeConfig:
    """Apply CLI flags: --listen replaces the config's listen addrs, --bootstrap adds to its
    bootstrap list (duplicates dropped), --data-dir replaces data_dir."""
    node = config.node
    doc: dict[str, Any] = {}
    if listen:
        doc["listen"] = list(listen)
    if bootstrap:
        doc["bootstrap"] = list(dict.fromkeys([*node.bootstrap, *bootstrap]))
    table = _Table("command line", "node", doc)
    node = replace(
        node,
        listen=table.multiaddrs("listen", node.listen, with_peer=False),
        bootstrap=table.multiaddrs("bootstrap", node.bootstrap, with_peer=True),
        data_dir=Path(data_dir).expanduser() if data_dir else node.data_dir,
    )
    return replace(config, node=node)


def default_data_dir(name: str) -> Path:
    """Per-node data dir under the platform's user data dir (used when none is configured)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("p2pinfer")) / name


def node_data_dir(config: NodeConfig) -> Path:
    """Where a node keeps its identity, ledger, weights and calibration: the configured
    `node.data_dir`, else a per-node-name directory under the user data dir."""
    return Path(config.node.data_dir) if config.node.data_dir else default_data_dir(config.node.name)


def resolve_resources(config: NodeConfig, *, measured_gflops: float,
                      measured_by_class: Mapping[str, float],
                      measured_link: tuple[float, float, float] | None = None,
                      measured_by_kind: Mapping[str, float] | None = None) -> AdvertisedResources:
    """What to advertise. Compute: [resources].gflops if set (then no class or kind speeds),
    else the measurement divided by [emulation].compute_slowdown (per class and kind too). Link: [resources] override, else the emulated
    shaping, else a measurement, else DEFAULT_LINK. [adversary].overclaim_factor multiplies
    the advertised compute (a lie the reputation system must catch)."""
    res, emu, adv = config.resources, config.emulation, config.adversary
    scale = adv.overclaim_factor / emu.compute_slowdown
    if res.gflops is not None:
        gflops, by_class, by_kind = res.gflops * adv.overclaim_factor, {}, {}
    else:
        gflops = measured_gflops * scale
        by_class = {cls: speed * scale for cls, speed in measured_by_class.items()}
        by_kind = {kind: speed * scale for kind, speed in (measured_by_kind or {}).items()}
    base = measured_link or DEFAULT_LINK
    link = [_first(r, e, b) for r, e, b in zip((res.up_mbps, res.down_mbps, res.latency_ms),
                                               (emu.up_mbps, emu.down_mbps, emu.latency_ms), base)]
    return AdvertisedResources(gflops=gflops, gflops_by_class=MappingProxyType(by_class),
                               mem_bytes=res.mem_bytes, up_mbps=link[0], down_mbps=link[1],
                               latency_ms=link[2], gflops_by_kind=MappingProxyType(by_kind))


def _first(*values: float | None) -> float:
    return next(float(v) for v in values if v is not None)


def local_swarm_config_paths(directory: Path | None = None) -> list[Path]:
    """The node configs of the embedded local swarm (node_configs/local/*.toml, sorted)."""
    directory = directory or Path(__file__).resolve().parents[1] / "node_configs" / "local"
    paths = sorted(Path(directory).glob("*.toml"))
    if not paths:
        raise ConfigError(f"{directory}: no node configs (*.toml) for the local swarm")
    return paths
