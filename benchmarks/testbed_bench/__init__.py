"""Benchmarks on the testbed (benchmarks/testbed): real `p2pinfer node start` processes in network
namespaces with tbf bandwidth caps and cgroup CPU quotas; the requester in its own namespace.

- `swarm`: node configs from the cluster's device classes, start/stop the node processes, wait
  for them with deadlines, read their advertised records.
- `requester`: the script run in the requester's namespace (plans with the planner and the
  baselines, forces each plan through `net.circuit_client.run_plan`, measures, prints JSON).
- `report`: tables and plots for docs/benchmarks.md.
`benchmarks/bench_testbed.py` ties them together.
"""
