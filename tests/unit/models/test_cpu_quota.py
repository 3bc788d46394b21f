"""The CPU quota a process may use, read from fake cgroup v1 / v2 trees (real files, real parser)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer.models import calibrate
from p2pinfer.models.kind_workloads import KIND_INSTANCES
from p2pinfer.models.cpu_quota import QuotaUnknown, cgroup_cpu_limit, cgroup_cpu_quota


def _v1(tmp: Path, groups: dict[str, tuple[int, int]], member: str) -> tuple[Path, Path]:
    mount = tmp / "cpu,cpuacct"
    for rel, (quota, period) in groups.items():
        d = mount / rel.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    (tmp / "mounts").write_text(f"cgroup {mount} cgroup rw,nosuid,cpu,cpuacct 0 0\ncgroup2 {tmp / 'unified'} cgroup2 rw 0 0\n")
    (tmp / "cgroup").write_text(f"4:memory:/x\n2:cpu,cpuacct:{member}\n0::/\n")
    return tmp / "cgroup", tmp / "mounts"


def test_v1_quota_is_the_tightest_on_the_path_to_the_root(tmp_path: Path) -> None:
    groups = {"/": (-1, 100000), "/p2pt-1": (-1, 100000), "/p2pt-1/rpi4-1": (5000, 25000)}
    cg, mounts = _v1(tmp_path, groups, "/p2pt-1/rpi4-1")
    assert cgroup_cpu_quota(proc_cgroup=cg, views=((mounts, Path('/')),)) == pytest.approx(0.2)
    groups["/p2pt-1"] = (10000, 100000)  # a parent capped tighter than its member
    cg, mounts = _v1(tmp_path, groups, "/p2pt-1/rpi4-1")
    assert cgroup_cpu_quota(proc_cgroup=cg, views=((mounts, Path('/')),)) == pytest.approx(0.1)
    # the limit keeps the tightest group's own period: 10 ms of each 100 ms, not 2.5 of 25
    assert cgroup_cpu_limit(proc_cgroup=cg, views=((mounts, Path('/')),)) == (10000, 100000)


def test_no_quota_anywhere_is_unlimited(tmp_path: Path) -> None:
    cg, mounts = _v1(tmp_path, {"/": (-1, 100000), "/a": (-1, 100000)}, "/a")
    assert cgroup_cpu_quota(proc_cgroup=cg, views=((mounts, Path('/')),)) is None
    assert cgroup_cpu_quota(proc_cgroup=tmp_path / "missing", views=((mounts, Path("/")),)) is None


def test_v2_cpu_max(tmp_path: Path) -> None:
    mount = tmp_path / "cg2"
    (mount / "pod" / "job").mkdir(parents=True)
    (mount / "pod" / "cpu.max").write_text("max 100000\n")
    (mount / "pod" / "job" / "cpu.max").write_text("40000 100000\n")
    (tmp_path / "mounts").write_text(f"cgroup2 {mount} cgroup2 rw 0 0\n")
    (tmp_path / "cgroup").write_text("0::/pod/job\n")
    assert cgroup_cpu_quota(proc_cgroup=tmp_path / "cgroup", views=((tmp_path / "mounts", Path("/")),)) == pytest.approx(0.4)


def test_a_group_whose_quota_no_view_shows_is_unknown_not_unlimited(tmp_path: Path) -> None:
    """`ip netns exec` hides the cgroup file system: a non-root group with no readable quota must
    not be taken for an unlimited one (a 0.2-core node would advertise a whole core)."""
    cg, mounts = _v1(tmp_path, {"/a": (20000, 100000)}, "/a")
    (tmp_path / "cpu,cpuacct" / "a" / "cpu.cfs_period_us").write_text("garbage")
    with pytest.raises(QuotaUnknown, match="/a"):
        cgroup_cpu_quota(proc_cgroup=cg, views=((mounts, Path("/")),))
    (tmp_path / "hidden").write_text("sysfs /sys sysfs rw 0 0\n")  # a view without cgroup mounts, then the host's
    host = (tmp_path / "cpu,cpuacct" / "a" / "cpu.cfs_period_us")
    host.write_text("100000")
    assert cgroup_cpu_quota(proc_cgroup=cg, views=((tmp_path / "hidden", Path("/")), (mounts, Path("/")))) == pytest.approx(0.2)


def _rates() -> dict[str, float]:
    """Per-CPU-second rates as a calibration measures them: classes, and kinds under KIND_KEY
    (the kind "linear", a batch-1 matrix-vector product, is much slower than the class)."""
    kinds = {kind: 60.0 for kind in KIND_INSTANCES} | {"linear": 10.0}
    return {"linear": 80.0, "conv": 70.0, "attention": 50.0} | {calibrate.KIND_KEY + k: v for k, v in kinds.items()}


def test_calibration_falls_back_to_the_measured_share_when_the_quota_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(threads: int) -> float:
        raise QuotaUnknown("cgroup /a is not the root and no quota file of it is readable")
    monkeypatch.setattr(calibrate, "usable_cores", unknown)
    got = calibrate._scaled(_rates(), 1, measured_share=0.19)
    assert got.by_class["linear"] == pytest.approx(0.19 * 80.0)
    assert got.by_kind["bottleneck"] == pytest.approx(0.19 * 60.0)
    with pytest.raises(QuotaUnknown):  # a cached calibration cannot be scaled: measured again
        calibrate._scaled(_rates(), 1)


def test_calibration_scales_cpu_second_rates_by_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.2-core quota advertises 0.2 x the per-CPU-second rate, however busy the host was."""
    monkeypatch.setattr(calibrate, "usable_cores", lambda threads: 0.2)
    got = calibrate._scaled(_rates(), 1)
    assert got.by_class["linear"] == pytest.approx(16.0) and got.by_class["conv"] == pytest.approx(14.0)
    assert got.by_kind["linear"] == pytest.approx(2.0) and got.by_kind["bottleneck"] == pytest.approx(12.0)
    assert got.gflops == pytest.approx(0.2 * 3 / (1 / 80 + 1 / 70 + 1 / 50)) and got.by_class["other"] == got.gflops
