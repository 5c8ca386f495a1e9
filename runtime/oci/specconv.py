"""Image config + run options -> an OCI runtime-spec ``config.json`` (a dict), table-driven like runc's specconv.

Why one module: every environment (``isobench run``, the harness's isobench/runc/other-runtime columns,
native chroot, the VM) must run the *same* process with the same limits, so Docker's process rules
(Entrypoint/Cmd/User/Env/WorkingDir precedence) and the limit translation live here once, and every
launcher starts from the spec this module writes.

API (stable; used by :mod:`runtime.oci.bundle`, :mod:`runtime.api` and the bench environments)::

    proc = process_spec(config, image_config, hostname)      # Docker's process rules -> ProcessSpec
    spec = to_spec(config, proc, SpecHost(...))               # -> config.json dict (pure)
    resources_json(Resources, resolve_device) -> dict         # linux.resources
    seccomp_json(SecuritySpec, caps) -> dict | None           # linux.seccomp (Docker profile, resolved)
    ANN_* constants                                           # isobench's annotations

``SpecHost`` carries what is not in the image or the options: the resolved uid/gid/home, the rootfs
path, and optional isobench extensions (overlay layers as annotations, /etc files and the init binary
as bind mounts). A spec written here is plain runtime-spec 1.0: runc runs it (the annotations are
ignored by other runtimes, so give them a real rootfs directory).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from core.errors import ContainerError, ImageError
from runtime.namespaces import REMAP_HOST_BASE, REMAP_SIZE
from runtime.security.masks import MASKED_PATHS, READONLY_PATHS
from runtime.spec import DEFAULT_PATH, ContainerConfig, MountSpec, Resources, SecuritySpec

OCI_VERSION = "1.0.2"

# isobench's annotations (runtime-spec: reverse domain names); other runtimes ignore them
ANN_LOWERDIRS = "org.isobench.rootfs.lowerdirs"   # ":"-joined image layer dirs, lowest first
ANN_UPPERDIR = "org.isobench.rootfs.upperdir"
ANN_WORKDIR = "org.isobench.rootfs.workdir"
ANN_IMAGE = "org.opencontainers.image.ref.name"
ANN_IMAGE_DIGEST = "org.isobench.image.digest"

# runc's default mounts (libcontainer/specconv/example.go) without its read-only /sys/fs/cgroup: isobench
# containers never had one, and on a v1 host it is a dozen mount calls on every start (a bundle that asks
# for a "cgroup" mount, as podman's do, gets it: runtime.rootfs.ocimounts)
DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
)

DEFAULT_RLIMITS: tuple[dict[str, Any], ...] = ({"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},)

# Which namespaces, by option: (runtime-spec type, predicate on the config and cgroupns support)
NAMESPACES: tuple[tuple[str, Callable[[ContainerConfig, bool], bool]], ...] = (
    ("pid", lambda c, cgns: True),
    ("network", lambda c, cgns: c.network.mode != "host"),
    ("ipc", lambda c, cgns: True),
    ("uts", lambda c, cgns: True),
    ("mount", lambda c, cgns: True),
    ("cgroup", lambda c, cgns: cgns),
    ("user", lambda c, cgns: c.userns == "remap"),
)



@dataclass(frozen=True)
class ProcessSpec:
    """What the container's first process runs: argv, environment (K=V), cwd and user spec."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str


@dataclass(frozen=True)
class SpecHost:
    """Host-side facts the spec needs beyond the image and the options."""

    rootfs: str                                   # root.path (absolute, or relative to the bundle)
    hostname: str
    uid: int = 0
    gid: int = 0
    home: str = "/root"
    cgroupns: bool = False
    cgroups_path: str = ""                        # linux.cgroupsPath ("" = the runtime's isobench-<id>)
    overlay: tuple[tuple[str, ...], str, str] | None = None   # (lowerdirs lowest first, upper, work)
    etc_files: tuple[tuple[str, str], ...] = ()  # (container path, host file) bind mounts
    init_binary: str = ""                         # --init: host path bound read-only at /dev/init
    volumes_dir: str = ""                         # named volumes: <volumes_dir>/<name>/_data
    image_digest: str = ""
    resolve_device: Callable[[str], tuple[int, int]] | None = None  # throttle devices -> (major, minor)


# ----------------------------------------------------------------------------- Docker's process rules

def merge_env(image_env: list[str] | tuple[str, ...], overrides: tuple[str, ...]) -> dict[str, str]:
    """Image Env first, then ``-e`` entries by key (``-e K`` without ``=`` sets K to empty)."""
    env: dict[str, str] = {}
    for item in list(image_env or ()) + list(overrides):
        key, sep, value = item.partition("=")
        if key:
            env[key] = value
    return env


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def config_member(image_config: object, image: str) -> dict:
    """The image config's ``config`` object ({} when absent or null)."""
    if not isinstance(image_config, dict):
        raise ImageError(f"image {image!r}: config is a JSON {_json_type(image_config)}, not an object")
    cfg = image_config.get("config")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ImageError(f"image {image!r}: config field 'config' is a JSON {_json_type(cfg)}, not an object")
    return cfg


def _str_list(cfg: dict, field: str, image: str) -> tuple[str, ...]:
    value = cfg.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ImageError(f"image {image!r}: config field {field!r} is not an array of strings "
                         f"(got a JSON {_json_type(value)})")
    return tuple(value)


def _str(cfg: dict, field: str, image: str) -> str:
    value = cfg.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImageError(f"image {image!r}: config field {field!r} is not a string (got a JSON {_json_type(value)})")
    return value


def command_of(config: ContainerConfig, image_cfg: dict) -> tuple[str, ...]:
    """``--entrypoint`` replaces the image's Entrypoint *and* drops its Cmd; a command replaces Cmd."""
    if config.entrypoint is not None:
        entry = tuple(a for a in config.entrypoint if a != "") if config.entrypoint != ("",) else ()
        cmd = tuple(config.command or ())
    else:
        entry = _str_list(image_cfg, "Entrypoint", config.image)
        cmd = tuple(config.command) if config.command is not None else _str_list(image_cfg, "Cmd", config.image)
    argv = entry + cmd
    if not argv:
        raise ContainerError(f"image {config.image!r} has no Cmd or Entrypoint and no command was given")
    return argv


def process_spec(config: ContainerConfig, image_config: dict, hostname: str) -> ProcessSpec:
    """Merge ``image_config`` (the full OCI image config; its ``config`` member) with ``config``.
    Raises ImageError when a field of the image config has the wrong JSON type."""
    cfg = config_member(image_config, config.image)
    env = merge_env(_str_list(cfg, "Env", config.image), config.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    workdir = config.workdir or _str(cfg, "WorkingDir", config.image) or "/"
    user = config.user or _str(cfg, "User", config.image) or "0"
    return ProcessSpec(argv=command_of(config, cfg), env=tuple(f"{k}={v}" for k, v in env.items()),
                       workdir=workdir, user=user)


def exposed_ports(image_config: dict, image: str = "?") -> tuple[str, ...]:
    """``ExposedPorts`` keys (``"80/tcp"``) for ``-P``."""
    ports = config_member(image_config, image).get("ExposedPorts")
    if ports is None:
        return ()
    if not isinstance(ports, dict):
        raise ImageError(f"image {image!r}: config field 'ExposedPorts' is not an object "
                         f"(got a JSON {_json_type(ports)})")
    return tuple(sorted(ports))


# ----------------------------------------------------------------------------- limits

def _throttle(devs: tuple, resolve: Callable[[str], tuple[int, int]] | None) -> list[dict[str, int]]:
    if resolve is None:
        from runtime.cgroups.devices import block_device_number as resolve
    out = []
    for d in devs:
        major, minor = resolve(d.path)
        out.append({"major": major, "minor": minor, "rate": d.rate_bytes_per_s})
    return out


# (runtime-spec section, key, Resources field): the scalar limits, one row each
RESOURCE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("cpu", "quota", "cpu_quota_us"),
    ("cpu", "shares", "cpu_shares"),
    ("cpu", "cpus", "cpuset_cpus"),
    ("memory", "limit", "memory_bytes"),
    ("memory", "swap", "memory_swap_bytes"),
    ("pids", "limit", "pids_max"),
)
THROTTLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("throttleReadBpsDevice", "device_read_bps"),
    ("throttleWriteBpsDevice", "device_write_bps"),
)


def resources_json(r: Resources, resolve_device: Callable[[str], tuple[int, int]] | None = None) -> dict[str, Any]:
    """``linux.resources`` for the limits set (unset ones are left out: "not limited")."""
    out: dict[str, dict[str, Any]] = {}
    for section, key, name in RESOURCE_FIELDS:
        value = getattr(r, name)
        if value is not None:
            out.setdefault(section, {})[key] = value
    if "quota" in out.get("cpu", {}):
        out["cpu"]["period"] = r.cpu_period_us
    for key, name in THROTTLE_FIELDS:
        devs = getattr(r, name)
        if devs:
            out.setdefault("blockIO", {})[key] = _throttle(devs, resolve_device)
    return out


# ----------------------------------------------------------------------------- security

def _cap_list(names: frozenset[str]) -> list[str]:
    return sorted(f"CAP_{n}" for n in names)


def seccomp_json(sec: SecuritySpec, caps: frozenset[str]) -> dict[str, Any] | None:
    """The profile (Docker format, ``default`` or a file) with its includes/excludes resolved for this
    cap set, architecture and kernel, in runtime-spec form; ``None`` when unconfined or privileged.
    The built-in profile's result is cached (the same dict for the same options: never mutate it): a
    harness starts one config often; a profile file is read every time (it may change)."""
    if not sec.privileged and (sec.seccomp or "default") == "default":
        return _default_seccomp_json(sec, caps)
    return _seccomp_json(sec, caps)


@functools.lru_cache(maxsize=32)
def _default_seccomp_json(sec: SecuritySpec, caps: frozenset[str]) -> dict[str, Any] | None:
    return _seccomp_json(sec, caps)


def _seccomp_json(sec: SecuritySpec, caps: frozenset[str]) -> dict[str, Any] | None:
    if sec.privileged or (sec.seccomp or "default") == "unconfined":
        return None
    import os

    from runtime.security import seccomp

    doc, _ = seccomp.read_profile(sec.seccomp or "default")
    entries = doc.get("syscalls") or []
    if not isinstance(entries, list):
        raise ContainerError(f"seccomp profile {sec.seccomp}: 'syscalls' must be a list")
    kernel = seccomp._kernel_version()
    arch = os.uname().machine
    syscalls_out = []
    for i, entry in enumerate(entries):
        where = f"seccomp profile {sec.seccomp} syscalls[{i}]"
        if not isinstance(entry, dict):
            raise ContainerError(f"{where}: must be an object")
        if not seccomp._applies(entry, caps, arch, kernel, where):
            continue
        names = entry.get("names") or ([entry["name"]] if "name" in entry else [])
        item: dict[str, Any] = {"names": list(names), "action": entry.get("action")}
        for key in ("args", "errnoRet"):
            if entry.get(key) is not None:
                item[key] = entry[key]
        syscalls_out.append(item)
    out: dict[str, Any] = {"defaultAction": doc.get("defaultAction"), "syscalls": syscalls_out}
    if doc.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = doc["defaultErrnoRet"]
    if doc.get("architectures"):
        out["architectures"] = list(doc["architectures"])
    return out


def capabilities_json(caps: frozenset[str], uid: int) -> dict[str, list[str]]:
    """Docker's rule: the set bounds every process; a non-root user starts with none effective."""
    names = _cap_list(caps)
    held = names if uid == 0 else []
    return {"bounding": names, "effective": held, "permitted": held}


# ----------------------------------------------------------------------------- mounts

def mounts_json(config: ContainerConfig, host: SpecHost) -> list[dict[str, Any]]:
    """runc's defaults, then /dev/init, the /etc files, then the volumes (in option order)."""
    out = [dict(m, options=list(m["options"])) for m in DEFAULT_MOUNTS]
    if host.init_binary:
        out.append({"destination": "/dev/init", "type": "bind", "source": host.init_binary,
                    "options": ["bind", "ro", "nosuid", "nodev"]})
    for dest, src in host.etc_files:
        out.append({"destination": dest, "type": "bind", "source": src, "options": ["bind", "rw"]})
    out += [volume_json(m, host.volumes_dir) for m in config.mounts]
    return out


def volume_json(m: MountSpec, volumes_dir: str) -> dict[str, Any]:
    mode = "ro" if m.read_only else "rw"
    if m.type == "tmpfs":
        return {"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", mode]}
    src = f"{volumes_dir}/{m.source}/_data" if m.type == "volume" else m.source
    return {"destination": m.destination, "type": "bind", "source": src, "options": ["rbind", mode]}


# ----------------------------------------------------------------------------- the spec

def to_spec(config: ContainerConfig, proc: ProcessSpec, host: SpecHost) -> dict[str, Any]:
    """The runtime-spec ``config.json`` for ``config`` whose process is ``proc`` (pure but for reading
    the seccomp profile file and resolving throttle devices)."""
    from runtime.security import caps as capsmod

    sec = config.security
    caps = capsmod.effective_set(sec.cap_add, sec.cap_drop, sec.privileged, last_cap=capsmod.cap_last_cap())
    env = list(proc.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={host.home}")
    argv = ("/dev/init", "--") + proc.argv if host.init_binary else proc.argv
    process: dict[str, Any] = {
        "terminal": False, "user": {"uid": host.uid, "gid": host.gid}, "args": list(argv), "env": env,
        "cwd": proc.workdir, "capabilities": capabilities_json(caps, host.uid),
        "rlimits": [dict(r) for r in DEFAULT_RLIMITS], "noNewPrivileges": sec.no_new_privileges,
    }
    if host.uid != 0:
        process["user"]["additionalGids"] = [host.gid]
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t, wanted in NAMESPACES if wanted(config, host.cgroupns)],
        "resources": resources_json(config.resources, host.resolve_device),
    }
    if config.userns == "remap":
        linux["uidMappings"] = [{"containerID": 0, "hostID": REMAP_HOST_BASE, "size": REMAP_SIZE}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": REMAP_HOST_BASE, "size": REMAP_SIZE}]
    if host.cgroups_path:
        linux["cgroupsPath"] = host.cgroups_path
    seccomp = seccomp_json(sec, caps)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if not sec.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    annotations = {ANN_IMAGE: config.image}
    if host.image_digest:
        annotations[ANN_IMAGE_DIGEST] = host.image_digest
    if host.overlay is not None:
        lowers, upper, work = host.overlay
        annotations.update({ANN_LOWERDIRS: ":".join(lowers), ANN_UPPERDIR: upper, ANN_WORKDIR: work})
    annotations.update(dict(config.labels))
    return {"ociVersion": OCI_VERSION, "process": process,
            "root": {"path": host.rootfs, "readonly": config.read_only_rootfs},
            "hostname": host.hostname, "mounts": mounts_json(config, host), "annotations": annotations,
            "linux": linux}
