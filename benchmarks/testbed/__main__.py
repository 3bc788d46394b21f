"""`python -m benchmarks.testbed {check,show,up,verify,cleanup}`.

Exit codes: 0 ok, 1 a verification failed, 2 bad profile or a command failed,
3 this machine cannot run the testbed (the message says why and what the fallback is).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from p2pinfer.errors import P2PInferError

from .errors import TestbedUnavailable
from .preflight import check_environment
from .profile import REQUESTER, load_cluster
from .resources import cleanup_runs
from .testbed import Testbed, TestbedInterrupted
from .verify import render, verify

EXIT_UNAVAILABLE = 3


def _check(args: argparse.Namespace) -> int:
    env = check_environment()
    print(f"testbed available: ip={env.ip} tc={env.tc} cgroup v1 cpu at {env.cpu_root}")
    return 0


def _show(args: argparse.Namespace) -> int:
    c = load_cluster(args.cluster)
    print(json.dumps({"cluster": c.name, "subnet": str(c.subnet), "cpu_period_us": c.cpu_period_us, "min_slice_us": c.min_slice_us,
                      "queue_ms": c.queue_ms, "node_cpu_total": round(c.node_cpu_total(), 3),
                      "members": [{"name": m.name, "ip": m.ip, "class": m.device.name, "cpu": m.device.cpu,
                                   "period_us": c.period_us(m.device), "quota_us": c.quota_us(m.device), **m.device.node_config_fields()}
                                  for m in c.members]}, indent=2))
    return 0


def _up(args: argparse.Namespace) -> int:
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    with Testbed(args.cluster, log_dir=args.log_dir) as tb:
        print(json.dumps(tb.describe()), flush=True)
        if cmd:
            proc = tb.requester_spawn(cmd, stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno())
            return proc.wait()
        print("testbed up; Ctrl-C or SIGTERM tears it down", file=sys.stderr, flush=True)
        while True:
            signal.pause()


def _verify(args: argparse.Namespace) -> int:
    with Testbed(args.cluster) as tb:
        report = verify(tb, nodes=args.node or None, link_seconds=args.link_seconds, cpu_seconds=args.cpu_seconds)
    print(report.to_json() if args.json else render(report))
    return 0 if report.ok else 1


def _cleanup(args: argparse.Namespace) -> int:
    env = check_environment()
    removed, live = cleanup_runs(env.ip, env.cpu_root, all_runs=args.all)
    for rid, names in removed.items():
        print(f"removed run {rid}: {', '.join(names)}")
    for rid in live:
        print(f"kept run {rid}: its owner is still running (use --all to remove it anyway)")
    if not removed and not live:
        print("nothing to clean up")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.testbed", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="say whether this machine can run the testbed").set_defaults(fn=_check)
    p = sub.add_parser("show", help="parse a cluster file and print its members (no root needed)")
    p.add_argument("--cluster", required=True)
    p.set_defaults(fn=_show)
    p = sub.add_parser("up", help="bring a cluster up; run COMMAND in the requester namespace, or wait for a signal")
    p.add_argument("--cluster", required=True)
    p.add_argument("--log-dir")
    p.add_argument("command", nargs=argparse.REMAINDER, help=f"optional: -- CMD ... (runs in the {REQUESTER} namespace)")
    p.set_defaults(fn=_up)
    p = sub.add_parser("verify", help="bring a cluster up, measure every cap, print a table, tear down")
    p.add_argument("--cluster", required=True)
    p.add_argument("--node", action="append", help="verify only this node (repeatable)")
    p.add_argument("--link-seconds", type=float, default=2.0)
    p.add_argument("--cpu-seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_verify)
    p = sub.add_parser("cleanup", help="remove p2pt- objects left by crashed runs")
    p.add_argument("--all", action="store_true", help="also remove runs whose owner is still alive")
    p.set_defaults(fn=_cleanup)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TestbedUnavailable as e:
        print(f"p2pinfer testbed: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except P2PInferError as e:  # TestbedError, TestbedConfigError: one line, exit 2
        print(f"p2pinfer testbed: error: {e}", file=sys.stderr)
        return 2
    except (TestbedInterrupted, KeyboardInterrupt) as e:
        print(f"p2pinfer testbed: interrupted ({e or 'SIGINT'}); torn down", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as e:
        print(f"p2pinfer testbed: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
