"""Spawn `p2pinfer node start` as real OS processes, read their stderr, always kill them.

`NodeProcess` parses the lines `node start` prints (peer_id, listen, ready, stopped) from a
reader thread, so tests wait on conditions with deadlines instead of sleeping. Use the
`cli_nodes` fixture (or `spawn_node` inside a `with` block): every process is SIGKILLed at
teardown if it is still alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import wait_until

PREFIX = "p2pinfer node: "


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pinfer", *args]


def write_config(path: Path, *, name: str, gflops: float | None = 5.0, ttl_s: float = 30.0) -> Path:
    """A loopback node config; gflops=None makes the node run the real compute calibration."""
    lines = ["[node]", f'name = "{name}"', 'listen = ["/ip4/127.0.0.1/tcp/0"]',
             f"record_ttl_s = {ttl_s}", f"republish_s = {ttl_s / 3}", "", "[resources]", 'mem_bytes = "1 GiB"']
    if gflops is not None:
        lines.append(f"gflops = {gflops}")
    lines += ["", "[emulation]", "up_mbps = 50.0", "down_mbps = 80.0", "latency_ms = 3.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """One `p2pinfer node start` process and what it said on stderr."""

    def __init__(self, config: Path, data_dir: Path, *, bootstrap: list[str] = ()) -> None:  # type: ignore[assignment]
        args = ["node", "start", "--config", str(config), "--data-dir", str(data_dir)]
        for addr in bootstrap:
            args += ["--bootstrap", addr]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, what: str) -> list[str]:
        """Values of the `p2pinfer node: <what> <value>` lines so far."""
        head = PREFIX + what
        return [line[len(head):].strip() for line in list(self.lines) if line.startswith(head)]

    def wait_ready(self, timeout: float = 60.0) -> NodeProcess:
        wait_until(lambda: self.said("ready") or self.proc.poll() is not None, timeout=timeout,
                   what="the node to print 'ready'")
        assert self.said("ready"), f"node exited with {self.proc.returncode}:\n" + "\n".join(self.lines[-30:])
        return self

    @property
    def peer_id(self) -> str:
        return self.said("peer_id")[0]

    @property
    def addr(self) -> str:
        return self.said("listen")[0]

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL and fail if it does not exit)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node did not exit within {timeout}s of SIGTERM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


class NodeProcesses:
    """Every node a test spawned; `close` kills the survivors (fixture finalizer)."""

    def __init__(self) -> None:
        self.all: list[NodeProcess] = []

    def start(self, config: Path, data_dir: Path, *, bootstrap: list[str] = ()) -> NodeProcess:  # type: ignore[assignment]
        node = NodeProcess(config, data_dir, bootstrap=list(bootstrap))
        self.all.append(node)
        return node

    def close(self) -> None:
        for node in self.all:
            node.kill()
