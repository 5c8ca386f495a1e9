"""Which cgroup layout this host runs, and where each controller lives. Detected, never assumed.

Three layouts exist in the wild: pure v1 (one hierarchy per controller), pure v2 (one unified tree whose
``cgroup.controllers`` lists what it can do) and hybrid (v1 controllers plus a v2 mount that holds no
controllers, as systemd sets up and as this project's CI machine runs). Hybrid is driven with the v1
driver. The answer comes from ``/proc/self/mountinfo`` (cached per process: detection sits on the
container start path); a tree with no mounts under the root (a unit test's fake cgroupfs) is read from
its directory names instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import CgroupError
from core.paths import CGROUP_ROOT

Version = Literal["v1", "v2", "hybrid"]
DEFAULT_ROOT = CGROUP_ROOT

# v1 controllers the runtime uses or may report; mount options like "rw" or "name=systemd" are ignored
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices",
                            "net_cls", "net_prio", "hugetlb", "perf_event", "rdma", "misc"})


@dataclass(frozen=True)
class CgroupLayout:
    """Where the controllers live. ``v1`` maps controller -> hierarchy mount dir (co-mounted ones share a
    dir); ``unified`` is the v2 mount, with the controllers its root offers."""

    version: Version
    root: Path = DEFAULT_ROOT
    v1: dict[str, Path] = field(default_factory=dict)
    unified: Path | None = None
    unified_controllers: frozenset[str] = frozenset()
    named: dict[str, Path] = field(default_factory=dict)  # v1 hierarchies without controllers (name=systemd)

    @property
    def driver(self) -> Literal["v1", "v2"]:
        return "v2" if self.version == "v2" else "v1"

    def has(self, controller: str) -> bool:
        if self.driver == "v2":
            return controller in self.unified_controllers
        return controller in self.v1


def _classify(v1: dict[str, Path], unified: Path | None, root: Path,
              named: dict[str, Path] | None = None) -> CgroupLayout:
    controllers = frozenset()
    if unified is not None:
        try:
            controllers = frozenset((unified / "cgroup.controllers").read_text().split())
        except OSError:
            controllers = frozenset()
    if v1:
        version: Version = "hybrid" if unified is not None else "v1"
    elif unified is not None:
        version = "v2"
    else:
        raise CgroupError(f"no cgroup hierarchy found under {root} (is cgroupfs mounted?)")
    return CgroupLayout(version=version, root=root, v1=v1, unified=unified, unified_controllers=controllers,
                        named=named or {})


def parse_mountinfo(text: str, root: Path) -> tuple[dict[str, Path], Path | None, dict[str, Path]]:
    """cgroup mounts under ``root`` from mountinfo text -> ({controller: dir}, unified dir or None,
    {"name=systemd": dir} for named hierarchies, which only ``gc`` looks at: other runtimes use them)."""
    v1: dict[str, Path] = {}
    named: dict[str, Path] = {}
    unified: Path | None = None
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        mount_point = Path(pre.split()[4].replace("\\040", " "))
        fstype, _source, *rest = post.split()
        if not (mount_point == root or mount_point.is_relative_to(root)):
            continue
        if fstype == "cgroup2":
            unified = mount_point
        elif fstype == "cgroup":
            opts = rest[0].split(",") if rest else []
            for ctl in opts:
                if ctl in V1_CONTROLLERS:
                    v1.setdefault(ctl, mount_point)
                elif ctl.startswith("name="):
                    named.setdefault(ctl, mount_point)
    return v1, unified, named


def scan_tree(root: Path) -> tuple[dict[str, Path], Path | None]:
    """Fallback without mounts: a root with cgroup.controllers is v2; else dirs named after controllers."""
    if (root / "cgroup.controllers").exists():
        return {}, root
    v1: dict[str, Path] = {}
    unified: Path | None = None
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        if not entry.is_dir():
            continue
        if (entry / "cgroup.controllers").exists():
            unified = entry
            continue
        for ctl in entry.name.split(","):
            if ctl in V1_CONTROLLERS:
                v1.setdefault(ctl, entry)
    return v1, unified


def detect_uncached(cgroup_root: Path = DEFAULT_ROOT, mountinfo: str | None = None) -> CgroupLayout:
    root = Path(cgroup_root)
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    v1, unified, named = parse_mountinfo(mountinfo, root)
    if not v1 and unified is None:
        v1, unified = scan_tree(root)
    return _classify(v1, unified, root, named)


@functools.cache
def _detect_cached(root: str) -> CgroupLayout:
    return detect_uncached(Path(root))


def detect(cgroup_root: Path = DEFAULT_ROOT) -> CgroupLayout:
    """The host's layout (cached per process and root)."""
    return _detect_cached(str(cgroup_root))
