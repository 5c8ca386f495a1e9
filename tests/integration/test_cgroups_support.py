"""Shared fixtures for the cgroup integration and enforcement tests (this module holds no tests).

``cgroup_factory`` makes real ``isobench-<id>`` cgroups with a lease held by the test process (so a
concurrent ``isobench gc`` leaves them alone), and always kills, reaps and removes what it made.
``spawn`` starts a plain process that joins a cgroup itself before it execs (``Cgroup.join_self``), as a
container's init does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Callable

import pytest

from core import leases
from runtime.cgroups import Cgroup, create_cgroup
from core.paths import host_name, new_id
from runtime.spec import Resources

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


class Made:
    def __init__(self) -> None:
        self.cgroups: list[Cgroup] = []
        self.procs: list[subprocess.Popen] = []
        self.lease_ids: list[str] = []

    def cgroup(self, resources: Resources) -> Cgroup:
        obj_id = new_id()
        leases.take(obj_id, kind="cgroup-test")
        self.lease_ids.append(obj_id)
        cg = create_cgroup(host_name(obj_id), resources)
        self.cgroups.append(cg)
        return cg

    def spawn(self, cg: Cgroup, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``cg`` (it joins between fork and exec, so it never runs outside)."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, preexec_fn=cg.join_self, **kwargs)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        try:
            for cg in self.cgroups:
                cg.kill_all()
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            for cg in self.cgroups:
                cg.destroy()
            # a precise check of our own objects (leak_check also sees other suites' objects on a shared host)
            left = [str(p) for cg in self.cgroups for p in cg.paths.values() if p.exists()]
            assert not left, f"cgroups left behind: {left}"
        finally:
            for obj_id in self.lease_ids:
                leases.release(obj_id)


@pytest.fixture
def made(leak_check):  # leak_check first: its after-snapshot runs once our cleanup is done
    m = Made()
    try:
        yield m
    finally:
        m.cleanup()


def cpu_fraction(cg: Cgroup, seconds: float) -> float:
    """CPUs used by the cgroup over ``seconds`` of wall time, from its cgroup CPU accounting."""
    u0, t0 = cg.usage().cpu_usage_ns, time.monotonic()
    time.sleep(seconds)
    u1, t1 = cg.usage().cpu_usage_ns, time.monotonic()
    return (u1 - u0) / ((t1 - t0) * 1e9)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
