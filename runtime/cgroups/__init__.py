"""cgroups for isobench containers, on v1, v2 and hybrid hosts (detected at run time).

Public API (the runtime core and the harness call these)::

    detect(cgroup_root=Path("/sys/fs/cgroup")) -> CgroupLayout
    create_cgroup(name, resources, layout=None) -> Cgroup
    plan_cgroup(name, resources, layout=None) -> CgroupPlan; CgroupPlan.make() -> Cgroup
    open_cgroup(name, layout=None) -> Cgroup
    cgroup_namespace_supported(layout=None) -> bool
    Cgroup.add_pid(pid)      # from the parent (v1: may wait ~10 ms for the kernel's RCU grace period)
    Cgroup.join_self()       # from the forked child before exec: the fast way in
    Cgroup.usage() -> CgroupUsage; .pids(); .kill_all(sig=SIGKILL); .destroy()

``runtime.cgroups.gc.gc(paths)`` removes orphaned ``isobench-*`` cgroups for ``isobench gc``.
Names are ``isobench-<id>`` at the top of every hierarchy; the caller holds the lease on ``<id>``.
"""

from __future__ import annotations

from runtime.cgroups.cgroup import Cgroup, CgroupPlan, CgroupUsage, create_cgroup, open_cgroup, plan_cgroup
from runtime.cgroups.layout import CgroupLayout, detect

__all__ = ["Cgroup", "CgroupLayout", "CgroupPlan", "CgroupUsage", "cgroup_namespace_supported", "create_cgroup",
           "detect", "open_cgroup", "plan_cgroup"]


def cgroup_namespace_supported(layout: CgroupLayout | None = None) -> bool:
    """A cgroup namespace is only useful where the container sees one unified tree: pure v2 hosts."""
    return (layout or detect()).version == "v2"
