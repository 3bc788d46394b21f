"""The testbed as a context manager: bring a cluster up, run processes in it, tear it all down.

    with Testbed(load_cluster("benchmarks/testbed/profiles/iot4.toml")) as tb:
        p = tb.spawn("rpi4-1", ["p2pinfer", "node", "start", ...])   # in its netns + cgroup
        tb.requester_exec(["p2pinfer", "run", ...], timeout=120)

Teardown runs on normal exit, on exceptions, on SIGINT (KeyboardInterrupt) and on
SIGTERM/SIGHUP (turned into `TestbedInterrupted` while the testbed is up, main thread only).
Signals are blocked during teardown so a second Ctrl-C cannot leave half a testbed behind;
a SIGKILLed owner leaves objects that `python -m benchmarks.testbed cleanup` removes.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Mapping, Sequence

from . import cgroups, network, resources
from .errors import TestbedError
from .preflight import Environment, check_environment, check_subnet, host_routes
from .profile import REQUESTER, Cluster, DeviceClass, load_cluster

# Writes its own pid into the cgroup, then execs into the namespace: the process is capped
# from its first instruction, and all its threads and children inherit both. `ip netns exec`
# gives the process a private mount namespace with a fresh /sys and no cgroup file system, so
# the cpu hierarchy is mounted there read-only (as a container runtime does): a node can then
# read its own quota (p2pinfer/models/cpu_quota.py). If that mount fails the process runs anyway.
SPAWN_WRAPPER = ('cg="$1"; ns="$2"; shift 2; if [ -n "$cg" ]; then echo $$ > "$cg" || exit 125; fi; '
                 'exec "$P2PT_IP" netns exec "$ns" sh -c '
                 '\'mount -t cgroup -o "ro,$P2PT_CGOPTS" cgroup /sys/fs/cgroup 2>/dev/null; exec "$@"\' p2pt-ns "$@"')
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def cpu_mount_controllers(cpu_root: Path, mounts: Path = Path("/proc/self/mounts")) -> str:
    """The controllers of the cgroup v1 hierarchy mounted at `cpu_root` ("cpu" or "cpu,cpuacct"):
    a second mount of that hierarchy must name exactly them."""
    try:
        for line in mounts.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup" and Path(parts[1]) == Path(cpu_root):
                return ",".join(o for o in parts[3].split(",") if o in ("cpu", "cpuacct")) or "cpu"
    except OSError:
        pass
    return "cpu"


class TestbedInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived while a testbed was up; raised so `with` unwinds and tears down."""

    __test__ = False


class Testbed:
    """One running testbed; use as `with Testbed(cluster) as tb:` (see module docstring)."""

    __test__ = False

    def __init__(self, cluster: Cluster | str | Path, *, log_dir: str | Path | None = None,
                 grace_s: float = 5.0, env: Environment | None = None) -> None:
        self.cluster = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
        self._env_override = env
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.grace_s = grace_s
        self.rid = ""
        self.env: Environment | None = None
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._old_handlers: dict[int, object] = {}
        self._up = False

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "Testbed":
        self.env = self._env_override or check_environment()
        check_subnet(self.cluster, host_routes(self.env.ip))
        self._install_signal_handlers()
        try:
            self._bring_up()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _new_rid(self, env: Environment) -> str:
        taken = set(resources.discover(env.ip, env.cpu_root))
        while (rid := secrets.token_hex(2)) in taken:
            continue
        return rid

    def _bring_up(self) -> None:
        env = self._require_env()
        self.rid = self._new_rid(env)
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"{resources.PREFIX}{self.rid}-logs-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        resources.write_state(self.rid, {"cluster": str(self.cluster.source), "log_dir": str(self._log_dir)})
        network.create_bridge(env.ip, self.rid)
        for index, member in enumerate(self.cluster.members):
            network.add_member(env.ip, env.tc, self.rid, index, member, self.cluster)
            cgroups.create_group(env.cpu_root, self.rid, member.name, period_us=self.cluster.period_us(member.device),
                                 quota_us=self.cluster.quota_us(member.device))
        self._up = True

    def teardown(self) -> None:
        """Stop every spawned process, then remove every object of this run. Idempotent."""
        if self.env is None or not self.rid:
            self._restore_signal_handlers()
            return
        blocked = _block_signals()
        try:
            self._stop_processes()
            found = resources.discover(self.env.ip, self.env.cpu_root).get(self.rid)
            if found is not None:
                resources.remove_run(self.env.ip, found)
            self._check_gone(timeout=5.0)
        finally:
            self.procs.clear()
            self._up = False
            self.rid = ""
            self._restore_signal_handlers()
            _unblock_signals(blocked)

    def _check_gone(self, *, timeout: float) -> None:
        """Namespace destruction is asynchronous in the kernel: allow it a moment, then insist."""
        env, deadline = self._require_env(), time.monotonic() + timeout
        while (left := resources.discover(env.ip, env.cpu_root).get(self.rid)) is not None and not left.empty():
            if time.monotonic() > deadline:
                raise TestbedError(f"teardown left {left.names()}; run `python -m benchmarks.testbed cleanup`")
            time.sleep(0.05)

    def _stop_processes(self) -> None:
        """SIGTERM each spawned process group, wait up to grace_s, then SIGKILL the rest."""
        live = [p for _, p in self.procs if p.poll() is None]
        for p in live:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)  # remove_run kills stragglers by namespace and cgroup

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupted)

    def _restore_signal_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _require_env(self) -> Environment:
        if self.env is None:
            raise TestbedError("the testbed is not up; use `with Testbed(cluster) as tb:`")
        return self.env

    # ---- facts about the cluster -------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.cluster.nodes)

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            raise TestbedError("the testbed is not up")
        return self._log_dir

    def ip(self, name: str) -> str:
        return self.cluster.member(name).ip

    def multiaddr(self, name: str, port: int = 4001) -> str:
        return f"/ip4/{self.ip(name)}/tcp/{port}"

    def device(self, name: str) -> DeviceClass:
        return self.cluster.member(name).device

    def netns(self, name: str) -> str:
        self.cluster.member(name)
        return resources.netns_name(self.rid, name)

    def cgroup(self, name: str) -> Path:
        self.cluster.member(name)
        return resources.cgroup_dir(self._require_env().cpu_root, self.rid) / name

    def cpu_stat(self, name: str) -> dict[str, int]:
        return cgroups.read_stat(self.cgroup(name))

    def log_paths(self, name: str) -> tuple[Path, Path]:
        """(stdout, stderr) log files of a member's spawned processes (appended across spawns)."""
        return self.log_dir / f"{name}.stdout.log", self.log_dir / f"{name}.stderr.log"

    def data_dir(self, name: str) -> Path:
        """A fresh-per-run directory for a member's state (e.g. `p2pinfer node start --data-dir`)."""
        self.cluster.member(name)
        path = self.log_dir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def thread_env(self, name: str) -> dict[str, str]:
        """Thread-count variables matching the member's quota (torch/BLAS default to every host
        core, and on a 0.2-core node two threads only contend for the same quota)."""
        cpu = self.device(name).cpu
        n = str(max(1, math.ceil(cpu)) if cpu is not None else os.cpu_count() or 1)
        return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}

    def describe(self) -> dict[str, object]:
        """JSON-able description: run id, logs, and per member its ns, ip, cgroup and caps."""
        return {"rid": self.rid, "cluster": self.cluster.name, "log_dir": str(self.log_dir),
                "members": [{"name": m.name, "class": m.device.name, "ip": m.ip, "netns": self.netns(m.name),
                             "cgroup": str(self.cgroup(m.name)), "cpu": m.device.cpu, "up_mbps": m.device.up_mbps,
                             "down_mbps": m.device.down_mbps, "latency_ms": m.device.latency_ms}
                            for m in self.cluster.members]}

    # ---- running things inside -------------------------------------------------------------

    def command(self, name: str, argv: Sequence[str], *, cgroup: bool = True) -> list[str]:
        """The argv that runs `argv` in the member's namespace (and cgroup, unless cgroup=False)."""
        if not argv:
            raise TestbedError("empty argv")
        procs = str(self.cgroup(name) / "cgroup.procs") if cgroup else ""
        return ["sh", "-c", SPAWN_WRAPPER, "p2pt-spawn", procs, self.netns(name), *argv]

    def _environ(self, env: Mapping[str, str] | None) -> dict[str, str]:
        environment = self._require_env()
        return {**os.environ, **(env or {}), "P2PT_IP": environment.ip,
                "P2PT_CGOPTS": cpu_mount_controllers(environment.cpu_root)}

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, cgroup: bool = True,
              stdout: int | IO[bytes] | None = None, stderr: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-lived process in a member's namespace and cgroup, in its own process group.

        `env` adds to the current environment. stdout/stderr default to the member's log files;
        pass subprocess.PIPE to read them directly. The testbed stops it at teardown.
        """
        if not self._up:
            raise TestbedError("the testbed is not up; use `with Testbed(cluster) as tb:`")
        out_path, err_path = self.log_paths(name)
        with open(out_path, "ab") as out, open(err_path, "ab") as err:
            p = subprocess.Popen(self.command(name, argv, cgroup=cgroup), env=self._environ(env), cwd=cwd,
                                 stdin=subprocess.DEVNULL, stdout=out if stdout is None else stdout,
                                 stderr=err if stderr is None else stderr, start_new_session=True)
        self.procs.append((name, p))
        return p

    def exec(self, name: str, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
             cwd: str | Path | None = None, cgroup: bool = True, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a member's namespace (and cgroup), capturing its output."""
        if not self._up:
            raise TestbedError("the testbed is not up; use `with Testbed(cluster) as tb:`")
        try:
            done = subprocess.run(self.command(name, argv, cgroup=cgroup), env=self._environ(env), cwd=cwd,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TestbedError(f"{name}: `{' '.join(argv)}` did not finish within {timeout}s") from e
        if check and done.returncode != 0:
            raise TestbedError(f"{name}: `{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def requester_spawn(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return self.spawn(REQUESTER, argv, **kw)  # type: ignore[arg-type]

    def requester_exec(self, argv: Sequence[str], *, timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.exec(REQUESTER, argv, timeout=timeout, **kw)  # type: ignore[arg-type]

    def wait_for_log(self, name: str, pattern: str, *, timeout: float, stream: str = "stderr",
                     start: int = 0, proc: subprocess.Popen[bytes] | None = None) -> re.Match[str]:
        """Wait until a member's log (from byte `start`) matches `pattern`; fail fast if `proc` exits."""
        path = self.log_paths(name)[0 if stream == "stdout" else 1]
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = path.read_bytes()[start:].decode(errors="replace") if path.exists() else ""
            if m := rx.search(text):
                return m
            if proc is not None and proc.poll() is not None:
                raise TestbedError(f"{name}: process exited ({proc.returncode}) before its {stream} matched {pattern!r}; see {path}")
            if time.monotonic() > deadline:
                raise TestbedError(f"{name}: {stream} did not match {pattern!r} within {timeout}s; see {path}")
            time.sleep(0.05)


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The first SIGTERM/SIGHUP unwinds to the teardown; later ones are ignored until the
    teardown restores the handlers, so that a second signal (`pkill -f` hits the owner and its
    `timeout` wrapper, which forwards its own) cannot cut that teardown short."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise TestbedInterrupted(f"signal {signal.Signals(signum).name}")


def _block_signals() -> set[int] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *_SIGNALS})


def _unblock_signals(old: set[int] | None) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
