"""The v2 driver on a real unified hierarchy. This project's CI host is hybrid (controllers on v1), so
these run only where a host has v2 controllers; here the v2 driver is covered by the fake-tree unit tests
(tests/unit/test_cgroups_fake_tree.py)."""

from __future__ import annotations

import time

import pytest

from runtime.cgroups import cgroup_namespace_supported, detect
from runtime.spec import Resources
from tests.integration.test_cgroups_support import BUSY_LOOP, cpu_fraction, made  # noqa: F401

pytestmark = pytest.mark.requires("root", "cgroup_v2")
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _pure_v2():
    if detect().driver != "v2":
        pytest.skip(f"host layout is {detect().version}: its v1 controllers are driven by the v1 driver")


def test_v2_limits_reach_the_kernel(leak_check, made):
    cg = made.cgroup(Resources(cpu_quota_us=50_000, cpu_shares=1024, memory_bytes=64 * MIB, pids_max=20))
    d = cg.paths["unified"]
    assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
    assert (d / "cpu.weight").read_text().strip() == "39"
    assert (d / "memory.max").read_text().strip() == str(64 * MIB)
    assert (d / "pids.max").read_text().strip() == "20"
    assert cgroup_namespace_supported()


def test_v2_cpu_quota_and_oom(leak_check, made):
    cg = made.cgroup(Resources(cpu_quota_us=50_000))
    made.spawn(cg, BUSY_LOOP)
    time.sleep(0.3)
    assert 0.4 <= cpu_fraction(cg, 2.0) <= 0.55
    hog = made.cgroup(Resources(memory_bytes=32 * MIB, memory_swap_bytes=32 * MIB))
    proc = made.spawn(hog, ["python3", "-c", "b = []\nwhile True: b.append(b'x' * (1 << 20))"])
    proc.wait(timeout=60)
    assert hog.usage().oom_kill_count >= 1
