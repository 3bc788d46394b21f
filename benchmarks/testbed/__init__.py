"""Real heterogeneity on one Linux host: namespaces + veth + tbf caps + cgroup v1 CPU quotas.

Public API: `Testbed` (context manager), `load_cluster`, `check_environment`, the errors.
Command line: `python -m benchmarks.testbed {check,show,up,verify,cleanup}`; see docs/testbed.md.
"""

from .errors import FALLBACK, TestbedConfigError, TestbedError, TestbedUnavailable
from .preflight import check_environment
from .profile import REQUESTER, Cluster, DeviceClass, Member, load_classes, load_cluster
from .testbed import Testbed, TestbedInterrupted

__all__ = ["FALLBACK", "REQUESTER", "Cluster", "DeviceClass", "Member", "Testbed", "TestbedConfigError",
           "TestbedError", "TestbedInterrupted", "TestbedUnavailable", "check_environment", "load_classes",
           "load_cluster"]
