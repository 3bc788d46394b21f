"""The node: one trio service that joins the swarm, advertises, discovers, and hosts services.

Lifecycle (`run`, or `async with Node(...)`): start the libp2p host (TCP, Noise, yamux) on the
listen addrs -> run the Kademlia DHT in server mode with the strict p2pinfer validator -> serve
the record exchange -> sign our first record -> start registered services (e.g. the hop service)
-> pull from the bootstrap peers -> report started. In the background: publish into the DHT,
republish before expiry (and on load/holdings changes), anti-entropy pulls, mDNS finds.

Extension point for other services (the hop/circuit service plugs in here):

    class HopService:
        async def run(self, node: Node, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
            node.host.set_stream_handler(PROTOCOL, self._handle)   # before started()
            task_status.started()
            await trio.sleep_forever()

    node = Node(settings, identity=identity, data_dir=path, services=[HopService()])
    # or node.add_service(HopService()) before start; node.set_load(0.4); node.update_held(...)
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from p2pinfer.core.records import MAX_PERIOD_MS, CapabilityRecord
from p2pinfer.crypto.identity import Identity
from p2pinfer.service import ServiceContext
from p2pinfer.errors import P2PInferError
from p2pinfer.net import dht as dhtlib
from p2pinfer.net.advertise import Advertiser, Capability
from p2pinfer.net.discovery import Discovery, DiscoveryConfig
from p2pinfer.net.frame_cost import FRAME_COST_FILE, FrameCost, measure_frame_cost
from p2pinfer.net.host import full_addrs, listen_addrs_from, make_host, parse_peer_addr, stop_auto_connector
from p2pinfer.net.mdns import MdnsBridge
from p2pinfer.net.record_cache import RecordCache
from p2pinfer.net.record_validator import P2PInferValidator
from p2pinfer.config import NodeConfig, resolve_resources
from p2pinfer.models.cpu_quota import QuotaUnknown, cgroup_cpu_limit
from p2pinfer.net.settings import NodeSettings, settings_from_config

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.key"


class NodeService(Protocol):
    """Anything that runs alongside a node; set stream handlers before `task_status.started()`."""

    async def run(self, node: "Node", *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class Node(ServiceContext):
    """A swarm member. Use as `async with Node(...) as node:` or `await nursery.start(node.run)`."""

    def __init__(
        self,
        config: NodeConfig | NodeSettings,
        *,
        capability: Capability | None = None,
        identity: Identity | None = None,
        data_dir: Path | None = None,
        services: Sequence[NodeService] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`config`: a loaded NodeConfig (compute is measured at start unless `capability` is
        given) or ready NodeSettings (then `capability` is required). `identity`: defaults to
        the persistent key in `data_dir` (created 0600), or a fresh one without a data dir."""
        settings, data_dir = _resolve(config, capability, data_dir)
        if identity is None:
            identity = Identity.load_or_create(Path(data_dir) / IDENTITY_FILE) if data_dir else Identity.generate()
        self.config = config if isinstance(config, NodeConfig) else None
        self.settings = settings
        self.identity = identity
        self.data_dir = Path(data_dir) if data_dir else None
        self._clock = clock
        self._services: list[NodeService] = list(services)
        self.host: IHost = make_host(identity.libp2p_key_pair(), enable_mdns=settings.mdns)
        self.validator = P2PInferValidator(clock=clock)
        self.dht: KadDHT = dhtlib.make_dht(self.host, self.validator, server=True)
        self._capability = capability
        self.advertiser: Advertiser | None = None
        self.discovery = Discovery(
            self.host,
            config=DiscoveryConfig(pull_interval_s=settings.pull_interval_s, fanout=settings.fanout),
            own_blob=self._own_blob,
            dht=self.dht,
            swarm=settings.swarm,
            clock=clock,
        )
        self._republish_now = trio.Event()
        self._dht_due = False  # the next republish also puts into the DHT (holdings changed)
        self.dht_published = trio.Event()  # set after the first DHT publish attempt completes
        self._started = False
        self._scope = trio.CancelScope()

    # ---- what other parts read ----------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Full dialable multiaddrs, each ending in /p2p/<peer id>."""
        return full_addrs(self.host)

    @property
    def record(self) -> CapabilityRecord | None:
        """Our current signed record (None before start)."""
        current = self.advertiser.current if self.advertiser else None
        return current.record if current else None

    @property
    def cache(self) -> RecordCache:
        return self.discovery.cache

    def peers(self) -> list[CapabilityRecord]:
        """Verified, unexpired records of the other peers we know."""
        return self.discovery.records()

    def _own_blob(self) -> bytes | None:
        current = self.advertiser.current if self.advertiser else None
        return current.blob if current else None

    # ---- what other parts change ---------------------------------------------------------------

    def add_service(self, service: NodeService) -> None:
        """Run `service` alongside the node; only before the node starts."""
        if self._started:
            raise P2PInferError("services must be added before the node starts")
        self._services.append(service)

    def set_load(self, load: float) -> None:
        """Advertise a new busy fraction in [0, 1]; republished promptly with a higher seq and
        pushed to a few peers (the DHT copy follows at the next periodic republish: a put costs
        a small board seconds of CPU, and load changes often)."""
        self._require_started().set_load(load)
        self._republish_now.set()

    def update_held(self, *, models: Sequence[str] | None = None, weights: Sequence[str] | None = None) -> None:
        """Advertise the model ids / weight hashes now held; republished promptly."""
        self._require_started().set_held(models=models, weights=weights)
        self._dht_due = True  # provider keys follow the holdings
        self._republish_now.set()

    def _require_started(self) -> Advertiser:
        if self.advertiser is None:
            raise P2PInferError("the node has not started yet")
        return self.advertiser

    # ---- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `task_status.started(self)` once listening, published and bootstrapped."""
        if self._started:
            raise P2PInferError("a Node can only be started once")
        self._started = True
        listen = listen_addrs_from(self.settings.listen)
        seeds = [parse_peer_addr(a) for a in self.settings.bootstrap]
        capability = self._capability
        if capability is None:
            assert self.config is not None
            capability = await trio.to_thread.run_sync(measure_capability, self.config, self.data_dir)
        self.advertiser = Advertiser(
            self.identity, capability, ttl_s=self.settings.record_ttl_s, swarm=self.settings.swarm
        )
        with self._scope:
            await self._run_started(listen, seeds, task_status)

    def stop(self) -> None:
        """Ask a running node to shut down; `run` then returns (and `async with` exits cleanly)."""
        self._scope.cancel()

    async def _run_started(self, listen: list[Multiaddr], seeds: list[PeerInfo], task_status: Any) -> None:
        async with self.host.run(listen_addrs=listen), background_trio_service(self.dht):
            await stop_auto_connector(self.host)
            self.discovery.serve()
            self._sign()
            async with trio.open_nursery() as nursery:
                for service in self._services:
                    await nursery.start(service.run, self)
                self.discovery.seeds = seeds
                await self.discovery.crawl(seeds, timeout=self.settings.bootstrap_timeout_s, rounds=1)
                nursery.start_soon(self.discovery.run)
                nursery.start_soon(self._republish_loop)
                if self.settings.mdns:
                    nursery.start_soon(self._mdns_loop)
                logger.info("node %s listening on %s", self.peer_id, " ".join(self.listen_addrs))
                task_status.started(self)
                await trio.sleep_forever()

    # ---- advertising ----------------------------------------------------------------------------

    def _sign(self) -> None:
        signed = self._require_started().sign_next(self.listen_addrs, now=self._clock())
        self.discovery.ingest([signed.blob], via="self")

    async def _publish_dht(self) -> None:
        """Our record and provider keys into the DHT; bounded, and never fatal."""
        blob = self._own_blob()
        if blob is None or not self.settings.dht_publish:
            return
        models = self._require_started().capability.models
        keys = [dhtlib.swarm_key(self.settings.swarm)] + [dhtlib.model_key(m) for m in models]
        try:
            await dhtlib.publish(self.dht, self.peer_id, blob, keys, timeout=self.settings.dht_timeout_s)
        except Exception:  # task boundary
            logger.exception("DHT publish failed")
        self.dht_published.set()

    async def _first_dht_publish(self) -> None:
        """The first DHT publish. A node that knows no peer yet (the first of a swarm) waits for
        its first peer: a put into an empty routing table stores nothing remotely."""
        if not self.peers():
            with trio.move_on_after(self.settings.republish_s):
                await self.discovery.wait_changed()
        if self.settings.dht_publish:
            await trio.sleep(random.uniform(0, min(self.settings.dht_jitter_s, self.settings.republish_s)))
        await self._publish_dht()

    async def _republish_loop(self) -> None:
        """Re-sign and push every republish_s, or at once when load/holdings change, also while
        the first DHT publish still waits for a peer; the DHT copy follows every republish_s and
        when holdings change."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._first_dht_publish)
            while True:
                with trio.move_on_after(self.settings.republish_s) as periodic:
                    await self._republish_now.wait()
                self._republish_now = trio.Event()
                self._sign()
                await self._push_to_some_peers()
                # before the first publish is done, it carries the current record itself
                if (periodic.cancelled_caught or self._dht_due) and self.dht_published.is_set():
                    self._dht_due = False
                    await self._publish_dht()

    async def _push_to_some_peers(self) -> None:
        """Push-pull with a few peers so a change spreads without waiting for their next round."""
        known = [r.peer_id for r in self.peers()]
        batch = random.sample(known, min(self.settings.fanout, len(known)))
        await self.discovery.pull_many([self.discovery.peer_info(pid) for pid in batch])

    async def _mdns_loop(self) -> None:
        with MdnsBridge() as bridge:
            async for info in bridge.receive:
                if str(info.peer_id) == self.peer_id or str(info.peer_id) in self.cache:
                    continue
                await self.discovery.pull_many([info])


def _resolve(
    config: NodeConfig | NodeSettings, capability: Capability | None, data_dir: Path | None
) -> tuple[NodeSettings, Path | None]:
    if isinstance(config, NodeConfig):
        return settings_from_config(config), data_dir if data_dir is not None else config.node.data_dir
    if capability is None:
        raise P2PInferError("Node(settings) needs capability=; pass a NodeConfig to measure it")
    return config, data_dir


def measure_capability(config: NodeConfig, data_dir: Path | None) -> Capability:
    """What a configured node advertises: compute and frame handling measured by real
    micro-benchmarks (cached in the data dir) and the CPU quota it runs under, unless
    [resources].gflops overrides them, then emulation/adversary applied."""
    by_kind: dict[str, float] = {}
    frames, quota = None, (0.0, 0.0)
    if config.resources.gflops is not None:
        gflops, by_class = config.resources.gflops, {}
    else:
        from p2pinfer.models.calibrate import CALIBRATION_FILE, measure_compute

        cache = Path(data_dir) / CALIBRATION_FILE if data_dir else None
        calibration = measure_compute(threads=config.resources.compute_threads, cache_path=cache)
        gflops, by_class, by_kind = calibration.gflops, dict(calibration.by_class), dict(calibration.by_kind)
        frames = _frame_cost(data_dir)
        quota = _cpu_quota_ms()
    adv = resolve_resources(config, measured_gflops=gflops, measured_by_class=by_class, measured_by_kind=by_kind)
    return Capability(
        gflops=adv.gflops,
        gflops_by_class=adv.gflops_by_class,
        gflops_by_kind=adv.gflops_by_kind,
        mem_bytes=adv.mem_bytes,
        up_mbps=adv.up_mbps,
        down_mbps=adv.down_mbps,
        latency_ms=adv.latency_ms,
        frame_ms=frames.fixed_ms if frames else 0.0,
        frame_ms_per_mib=frames.ms_per_mib if frames else 0.0,
        cpu_quota_ms=quota[0],
        cpu_period_ms=quota[1],
    )


def _cpu_quota_ms() -> tuple[float, float]:
    """(quota, period) in ms of the CPU quota this process runs under when it is less than a core,
    else (0, 0): planners then price a lone request's short work at full core speed (core/costs.py)."""
    try:
        limit = cgroup_cpu_limit()
    except QuotaUnknown as exc:
        logger.warning("CPU quota not advertised: %s", exc)
        return 0.0, 0.0
    if limit is None or not 0 < limit[0] < limit[1] <= MAX_PERIOD_MS * 1000:
        return 0.0, 0.0
    return limit[0] / 1000.0, limit[1] / 1000.0


def _frame_cost(data_dir: Path | None) -> FrameCost | None:
    """The node's frame handling cost (net/frame_cost.py); None, with a warning, if it cannot be
    measured here: the record then carries none and planners price this node's frames at 0."""
    try:
        return measure_frame_cost(cache_path=Path(data_dir) / FRAME_COST_FILE if data_dir else None)
    except Exception as exc:  # start anyway: a record without the frame term is still a valid record
        logger.warning("frame cost not measured: %s", exc)
        return None
