"""Typed, frozen container configuration, mirroring OCI runtime-spec names where they exist.

One config type is shared by the CLI (``isobench run``), the benchmark harness (in-process), the runc
bundle exporter and the security and network layers, so a limit asked on the command line and a limit
recorded in a result are the same value. Validation lives beside it as small named checks
(``runtime.validate``); this module only holds data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NetworkMode = Literal["bridge", "none", "host"]
UsernsMode = Literal["host", "remap"]
MountType = Literal["bind", "volume", "tmpfs"]
Protocol = Literal["tcp", "udp"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # PATH when the image sets none


@dataclass(frozen=True)
class MountSpec:
    """``-v HOST:CTR[:ro]`` (bind), ``-v NAME:CTR`` (named volume under the state dir), ``--tmpfs PATH``."""

    destination: str
    source: str = ""
    type: MountType = "bind"
    read_only: bool = False


@dataclass(frozen=True)
class PortMapping:
    """``-p [HOSTIP:]HOSTPORT:CTRPORT[/proto]``."""

    host_port: int
    container_port: int
    protocol: Protocol = "tcp"
    host_ip: str = ""  # "" = all host addresses


@dataclass(frozen=True)
class ThrottleDevice:
    """``--device-read-bps /dev/vda:1mb``: the device path as given, and bytes per second."""

    path: str
    rate_bytes_per_s: int


@dataclass(frozen=True)
class Resources:
    """cgroup limits; ``None`` means "not limited". Units in the names."""

    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None  # memory+swap total, as docker's --memory-swap; -1 unlimited
    pids_max: int | None = None
    device_read_bps: tuple[ThrottleDevice, ...] = ()
    device_write_bps: tuple[ThrottleDevice, ...] = ()

    @staticmethod
    def quota_for_cpus(cpus: float, period_us: int = 100_000) -> int:
        """``--cpus 0.5`` -> 50000 us of every 100000 us period."""
        return int(round(cpus * period_us))


@dataclass(frozen=True)
class NetworkSpec:
    mode: NetworkMode = "bridge"
    ports: tuple[PortMapping, ...] = ()
    publish_all: bool = False  # -P


@dataclass(frozen=True)
class SecuritySpec:
    """Docker-like defaults: default capability set, no_new_privs, default seccomp profile, masked paths."""

    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp: str = "default"  # "default", "unconfined" or a path to a profile file
    no_new_privileges: bool = True


@dataclass(frozen=True)
class ContainerConfig:
    """Everything needed to create one container from an image reference."""

    image: str
    command: tuple[str, ...] | None = None      # None: the image's Cmd
    entrypoint: tuple[str, ...] | None = None   # None: the image's Entrypoint
    env: tuple[str, ...] = ()                   # K=V, applied over the image's Env
    workdir: str | None = None
    user: str | None = None                     # UID[:GID] or name
    hostname: str | None = None
    name: str | None = None
    mounts: tuple[MountSpec, ...] = ()
    read_only_rootfs: bool = False
    resources: Resources = field(default_factory=Resources)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    userns: UsernsMode = "host"
    init: bool = False
    security: SecuritySpec = field(default_factory=SecuritySpec)
    labels: tuple[tuple[str, str], ...] = ()
