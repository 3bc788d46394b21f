"""Measurement probes run inside the testbed: `python -m benchmarks.testbed.probes MODE ...`.

serve  TCP server in a node's namespace; per connection the client asks `recv N` (client sends
       N bytes, server measures and answers with JSON) or `send N` (server sends N bytes).
fetch  TCP client in the requester's namespace: runs one `recv` or `send` exchange and prints
       the receiver-side rate as JSON. Rates are measured where bytes arrive, from the first
       to the last byte, so socket buffers on the sending side cannot inflate them.
cpu    single-thread float32 matmul for a fixed wall time; prints GFLOP/s and CPU seconds.

Every socket operation has a timeout and every transfer a byte bound.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

CHUNK = 256 * 1024


def _recv_exact(conn: socket.socket, n: int) -> dict[str, float]:
    got, first, last = 0, 0.0, 0.0
    while got < n:
        data = conn.recv(min(CHUNK, n - got))
        if not data:
            break
        last = time.monotonic()
        first = first or last
        got += len(data)
    seconds = max(last - first, 1e-9)
    return {"bytes": got, "seconds": seconds, "mbps": 8 * got / seconds / 1e6}


def _send_n(conn: socket.socket, n: int) -> None:
    block = b"\0" * CHUNK
    sent = 0
    while sent < n:
        sent += conn.send(memoryview(block)[: min(CHUNK, n - sent)])


def _read_line(conn: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 64:
        data = conn.recv(1)
        if not data:
            break
        buf += data
    return buf.decode().strip()


def serve(host: str, port: int, count: int, timeout: float) -> None:
    with socket.create_server((host, port)) as srv:
        srv.settimeout(timeout)
        print(json.dumps({"ready": True, "port": srv.getsockname()[1]}), flush=True)
        for _ in range(count):
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                mode, _, n = _read_line(conn).partition(" ")
                if mode == "recv":
                    conn.sendall((json.dumps(_recv_exact(conn, int(n))) + "\n").encode())
                elif mode == "send":
                    _send_n(conn, int(n))


def fetch(host: str, port: int, mode: str, nbytes: int, timeout: float) -> dict[str, float]:
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(f"{mode} {nbytes}\n".encode())
        if mode == "send":
            return _recv_exact(conn, nbytes)
        _send_n(conn, nbytes)
        return json.loads(_read_line_long(conn))


def _read_line_long(conn: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        data = conn.recv(4096)
        if not data:
            break
        buf += data
    return buf.decode()


def cpu(seconds: float, size: int) -> dict[str, float]:
    """Single-thread matmul throughput over `seconds` of wall time (after one warm-up)."""
    import numpy as np  # imported here: the thread limits below must be set first

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a.T.copy()
    a @ b
    flops, n = 2.0 * size**3, 0
    t0, c0 = time.monotonic(), time.thread_time()
    while (wall := time.monotonic() - t0) < seconds:
        a @ b
        n += 1
    cpu_s = time.thread_time() - c0
    return {"gflops": n * flops / wall / 1e9, "wall_s": wall, "cpu_s": cpu_s, "cpu_fraction": cpu_s / wall,
            "gflops_per_cpu_s": n * flops / max(cpu_s, 1e-9) / 1e9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.testbed.probes")
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--count", type=int, default=2)
    s.add_argument("--timeout", type=float, default=30.0)
    f = sub.add_parser("fetch")
    f.add_argument("--host", required=True)
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--direction", choices=["recv", "send"], required=True)
    f.add_argument("--bytes", type=int, required=True)
    f.add_argument("--timeout", type=float, default=30.0)
    c = sub.add_parser("cpu")
    c.add_argument("--seconds", type=float, default=2.0)
    c.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    if args.mode == "serve":
        serve(args.host, args.port, args.count, args.timeout)
        return 0
    if args.mode == "fetch":
        print(json.dumps(fetch(args.host, args.port, args.direction, args.bytes, args.timeout)))
        return 0
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    print(json.dumps(cpu(args.seconds, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
