"""Offline planner inputs: a peers file (SwarmSnapshot) and a profile file (ModelProfile) as JSON.

Peers file (the `p2pinfer plan --peers-file` contract; optional fields marked ?):
    {"requester": {"up_mbps", "down_mbps", "latency_ms"},
     "peers": [{"id", "gflops", "mem_bytes", "up_mbps", "down_mbps", "latency_ms",
                "reputation"?, "load"?, "gflops_by_class"?, "gflops_by_kind"?, "holds"?,
                "frame_ms"?, "frame_ms_per_mib"?, "cpu_quota_ms"?, "cpu_period_ms"?}]}
`holds` lists layer weight hashes, or a model name / id meaning all of that model's layers.

Profile file: {"name", "model_id", "input_bytes", "layers": [{"index"?, "kind", "flops",
"param_bytes", "out_bytes", "flops_by_class"?, "weights_hash"?}]} (the models store's format).

Every problem is a ConfigError whose one-line message names the file, the field and the fault.
Pure: callers read and json-decode the file (cli/plan_cmd.py) and pass the decoded value.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .profile import COMPUTE_CLASSES, LayerProfile, ModelProfile, check_kind_speeds
from .snapshot import PeerSpec, RequesterSpec, SwarmSnapshot

_LINK = ("up_mbps", "down_mbps", "latency_ms")
_PEER_REQUIRED = ("id", "gflops", "mem_bytes", *_LINK)
_PEER_OPTIONAL = ("reputation", "load", "gflops_by_class", "gflops_by_kind", "holds", "addrs", "frame_ms",
                  "frame_ms_per_mib", "cpu_quota_ms", "cpu_period_ms")
_LAYER_REQUIRED = ("kind", "flops", "param_bytes", "out_bytes")
_LAYER_OPTIONAL = ("index", "flops_by_class", "weights_hash")


def _num(obj: Mapping[str, Any], key: str, where: str, *, integer: bool = False, positive: bool = False) -> Any:
    v = obj.get(key)
    if integer and isinstance(v, float) and v.is_integer():
        v = int(v)  # 8e9 is fine for a byte count
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}.{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise ConfigError(f"{where}.{key} must be {'> 0' if positive else '>= 0'}, got {v!r}")
    return v


def _fields(obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where} must be a JSON object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ConfigError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise ConfigError(f"{where} has unknown field {', '.join(repr(k) for k in unknown)}")
    return obj


def _class_map(obj: Mapping[str, Any], key: str, where: str, *, integer: bool) -> dict[str, Any]:
    m = obj.get(key, {})
    if not isinstance(m, dict) or set(m) - set(COMPUTE_CLASSES):
        raise ConfigError(f"{where}.{key} must map compute classes ({', '.join(COMPUTE_CLASSES)}) to numbers")
    return {c: _num(m, c, f"{where}.{key}", integer=integer, positive=not integer) for c in m}


def _kind_map(obj: Mapping[str, Any], where: str) -> dict[str, float]:
    try:
        return check_kind_speeds(obj.get("gflops_by_kind", {}), f"{where}.gflops_by_kind")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = obj.get(key, [])
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ConfigError(f"{where}.{key} must be a list of strings")
    return tuple(v)


def _peer(obj: Any, where: str) -> PeerSpec:
    d = _fields(obj, where, _PEER_REQUIRED, _PEER_OPTIONAL)
    if not isinstance(d["id"], str) or not d["id"]:
        raise ConfigError(f"{where}.id must be a non-empty string")
    rep = _num(d, "reputation", where) if "reputation" in d else 1.0
    if not 0 < rep <= 1:
        raise ConfigError(f"{where}.reputation must be in (0, 1], got {rep!r}")
    load = _num(d, "load", where) if "load" in d else 0.0
    if not load < 1:
        raise ConfigError(f"{where}.load must be in [0, 1), got {load!r}")
    quota = tuple(float(_num(d, k, where)) if k in d else 0.0 for k in ("cpu_quota_ms", "cpu_period_ms"))
    if quota != (0.0, 0.0) and not 0 < quota[0] < quota[1]:
        raise ConfigError(f"{where}: cpu_quota_ms and cpu_period_ms must come together with "
                          f"0 < cpu_quota_ms < cpu_period_ms, got {quota[0]!r} and {quota[1]!r}")
    return PeerSpec(
        d["id"], float(_num(d, "gflops", where, positive=True)), _num(d, "mem_bytes", where, integer=True),
        float(_num(d, "up_mbps", where, positive=True)), float(_num(d, "down_mbps", where, positive=True)),
        float(_num(d, "latency_ms", where)), _class_map(d, "gflops_by_class", where, integer=False),
        reputation=float(rep), load=float(load), holds=frozenset(_strings(d, "holds", where)),
        addrs=_strings(d, "addrs", where), gflops_by_kind=_kind_map(d, where),
        frame_ms=float(_num(d, "frame_ms", where)) if "frame_ms" in d else 0.0,
        frame_ms_per_mib=float(_num(d, "frame_ms_per_mib", where)) if "frame_ms_per_mib" in d else 0.0,
        cpu_quota_ms=quota[0], cpu_period_ms=quota[1])


def snapshot_from_json(data: Any, where: str = "peers file") -> SwarmSnapshot:
    """A SwarmSnapshot from the peers-file JSON value; ConfigError naming the first fault."""
    d = _fields(data, where, ("requester", "peers"), ())
    r = _fields(d["requester"], f"{where}: requester", _LINK, ())
    req = RequesterSpec(float(_num(r, "up_mbps", f"{where}: requester", positive=True)),
                        float(_num(r, "down_mbps", f"{where}: requester", positive=True)),
                        float(_num(r, "latency_ms", f"{where}: requester")))
    if not isinstance(d["peers"], list):
        raise ConfigError(f"{where}: peers must be a list")
    peers = [_peer(p, f"{where}: peers[{i}]") for i, p in enumerate(d["peers"])]
    seen: set[str] = set()
    for p in peers:
        if p.peer_id in seen:
            raise ConfigError(f"{where}: duplicate peer id {p.peer_id!r}")
        seen.add(p.peer_id)
    return SwarmSnapshot(req, tuple(peers))


def _layer(obj: Any, index: int, where: str) -> LayerProfile:
    d = _fields(obj, where, _LAYER_REQUIRED, _LAYER_OPTIONAL)
    if d.get("index", index) != index:
        raise ConfigError(f"{where}.index must be {index} (layers in order), got {d['index']!r}")
    if not isinstance(d["kind"], str) or not isinstance(d.get("weights_hash", ""), str):
        raise ConfigError(f"{where}: kind and weights_hash must be strings")
    return LayerProfile(index, d["kind"], _num(d, "flops", where, integer=True), _num(d, "param_bytes", where, integer=True),
                        _num(d, "out_bytes", where, integer=True), _class_map(d, "flops_by_class", where, integer=True),
                        d.get("weights_hash", ""))


def profile_from_json(data: Any, where: str = "profile file") -> ModelProfile:
    """A ModelProfile from its JSON value (extra top-level keys such as "version" are ignored)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object")
    d = _fields({k: data[k] for k in ("name", "model_id", "input_bytes", "layers") if k in data}, where,
                ("name", "model_id", "input_bytes", "layers"), ())
    if not isinstance(d["layers"], list) or not d["layers"]:
        raise ConfigError(f"{where}: layers must be a non-empty list")
    if not isinstance(d["name"], str) or not isinstance(d["model_id"], str):
        raise ConfigError(f"{where}: name and model_id must be strings")
    layers = tuple(_layer(x, i, f"{where}: layers[{i}]") for i, x in enumerate(d["layers"]))
    return ModelProfile(d["name"], d["model_id"], _num(d, "input_bytes", where, integer=True), layers)
