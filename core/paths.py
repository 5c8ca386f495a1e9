"""Where isobench keeps state on the host.

Every path derives from one state root (default ``/var/lib/isobench``, overridden by ``ISOBENCH_ROOT``)
so tests can run against a private root and ``gc`` knows exactly what belongs to the project.
Host objects are named ``isobench-<id>``; :data:`PREFIX` is that prefix.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "isobench-"
DEFAULT_ROOT = Path("/var/lib/isobench")
DEFAULT_RUN_DIR = Path("/run/isobench")
CGROUP_ROOT = Path("/sys/fs/cgroup")  # where the host mounts cgroupfs (v1 hierarchies, or the v2 root)


SERVER_SOCKET_ENV = "ISOBENCH_SERVER_SOCKET"


def server_socket(option: str | None = None) -> Path:
    """The isobench server's socket: ``--socket`` wins, then ``$ISOBENCH_SERVER_SOCKET``, then
    ``run_dir()/server.sock`` (the C client, csrc/client.c, follows the same rule)."""
    return Path(os.path.abspath(option or os.environ.get(SERVER_SOCKET_ENV) or str(run_dir() / "server.sock")))


def cli_client() -> Path:
    """The ``isobench`` command ``make setup`` installed beside this interpreter (the C client)."""
    import sys

    return Path(sys.executable).parent / "isobench"


def run_dir() -> Path:
    """Host-wide runtime state shared by every state root (leases, IPAM and port claims, locks, the
    server socket): ``/run/isobench``, or ``ISOBENCH_RUN_DIR``. Cleared at reboot, as its owners are."""
    return Path(os.environ.get("ISOBENCH_RUN_DIR", str(DEFAULT_RUN_DIR)))


def new_id(nbytes: int = 6) -> str:
    """A short random hex id; host object names are ``isobench-<id>``. (``os.urandom`` as
    ``secrets.token_hex`` does, without importing ``secrets``/``hashlib``: ~6 ms of every
    ``isobench-runtime`` verb's start-up.)"""
    return os.urandom(nbytes).hex()


def host_name(obj_id: str) -> str:
    """The host-visible name for an object id (cgroup, netns, domain, rule comment)."""
    return obj_id if obj_id.startswith(PREFIX) else PREFIX + obj_id


@dataclass(frozen=True)
class HostPaths:
    """All state-directory paths, from one root. Construct with :meth:`from_env` in production.
    The root-derived paths are computed once per instance (every container create asked for several)."""

    root: Path
    cgroup_root: Path = CGROUP_ROOT
    proc: Path = Path("/proc")

    @classmethod
    def from_env(cls) -> "HostPaths":
        return cls(root=Path(os.environ.get("ISOBENCH_ROOT", str(DEFAULT_ROOT))))

    # image store (OCI layout) and derived, content-addressed caches
    @functools.cached_property
    def images(self) -> Path:
        return self.root / "images"

    @functools.cached_property
    def layers(self) -> Path:
        """Unpacked read-only layers, one dir per layer digest (overlayfs lowerdirs)."""
        return self.root / "layers"

    @functools.cached_property
    def flat(self) -> Path:
        """Flattened rootfs per image digest (native chroot, runc bundles, VM disks)."""
        return self.root / "flat"

    @functools.cached_property
    def build_cache(self) -> Path:
        return self.root / "build-cache"

    @property
    def base_cache(self) -> Path:
        """Cached base rootfs tarballs (debootstrap output): outside the root so private test roots
        share one minutes-long debootstrap. ``ISOBENCH_CACHE`` overrides /var/cache/isobench."""
        return Path(os.environ.get("ISOBENCH_CACHE", "/var/cache/isobench")) / "base"

    @functools.cached_property
    def containers(self) -> Path:
        return self.root / "containers"

    @functools.cached_property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @functools.cached_property
    def network(self) -> Path:
        return self.root / "network"

    @functools.cached_property
    def vms(self) -> Path:
        return self.root / "vms"

    @functools.cached_property
    def vm_artifacts(self) -> Path:
        return self.root / "vm-artifacts"

    @functools.cached_property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @functools.cached_property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def run(self) -> Path:
        """Host-wide runtime dir (:func:`run_dir`): one for every state root on the host."""
        return run_dir()

    def ensure(self) -> "HostPaths":
        for p in (self.root, self.tmp, self.locks):
            p.mkdir(parents=True, exist_ok=True)
        return self
