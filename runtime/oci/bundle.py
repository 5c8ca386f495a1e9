"""OCI bundles on disk: make one (``config.json`` + rootfs) and read one back into what the runtime needs.

Why: a bundle is the unit every environment runs (``isobench run``, the harness, runc, other OCI
runtimes, the VM), and the unit other tools hand to ``isobench-runtime create``. Reading it is the
only place runtime-spec JSON turns into typed values, so a malformed field is one line naming the
field (``config.json: process.args must be a non-empty array of strings``), never a KeyError later.

API (stable)::

    write(bundle_dir, spec) -> Path                 # config.json (temp + rename); rootfs is the caller's
    make(bundle_dir, spec, rootfs_dir=None) -> Path # write + root.path pointing at rootfs_dir
    from_image(paths, config, bundle_dir, rootfs_dir=None) -> FromImage   # image + options -> bundle
    load(bundle_dir) -> Bundle                      # read and validate config.json
    parse(spec, bundle_dir) -> Bundle               # the same from a dict already in memory
    parse_process(doc, where) -> OciProcess         # a process object (``exec --process FILE``)
    Bundle.overlay -> (lowerdirs, upper, work) | None   # isobench's layered rootfs annotations
    Bundle.resources -> runtime.spec.Resources      # linux.resources in the runtime's own type

What :func:`parse` reads is listed in README ("OCI runtime: what of the spec is not supported");
everything else in the spec is ignored, as runc ignores fields it does not know.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ContainerError
from runtime.oci import specconv
from runtime.spec import Resources, ThrottleDevice

CONFIG = "config.json"
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")


class BundleError(ContainerError):
    """A bundle that cannot be run: its message names the file and the field."""


@dataclass(frozen=True)
class OciMount:
    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class OciDevice:
    path: str
    type: str          # c, b, u or p
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class OciProcess:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None        # (height, width)
    bounding: frozenset[str] = frozenset()             # capability names without CAP_
    effective: frozenset[str] = frozenset()
    no_new_privileges: bool = False
    rlimits: tuple[tuple[str, int, int], ...] = ()      # (RLIMIT_X, soft, hard)
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Bundle:
    dir: Path
    spec: dict[str, Any] = field(repr=False, compare=False)
    process: OciProcess
    root_path: str                                     # absolute
    root_readonly: bool
    hostname: str
    mounts: tuple[OciMount, ...]
    namespaces: tuple[tuple[str, str], ...]            # (type, path or "")
    uid_mappings: tuple[tuple[int, int, int], ...]     # (containerID, hostID, size)
    gid_mappings: tuple[tuple[int, int, int], ...]
    cgroups_path: str
    seccomp: dict[str, Any] | None = field(repr=False, compare=False)
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    sysctl: tuple[tuple[str, str], ...]
    devices: tuple[OciDevice, ...]
    annotations: tuple[tuple[str, str], ...]

    @property
    def overlay(self) -> tuple[tuple[str, ...], str, str] | None:
        ann = dict(self.annotations)
        if specconv.ANN_LOWERDIRS not in ann:
            return None
        return (tuple(ann[specconv.ANN_LOWERDIRS].split(":")), ann.get(specconv.ANN_UPPERDIR, ""),
                ann.get(specconv.ANN_WORKDIR, ""))

    @property
    def resources(self) -> Resources:
        return resources_of(((self.spec.get("linux") or {}).get("resources")) or {}, f"{self.dir}/{CONFIG}")

    def namespace(self, kind: str) -> str | None:
        """``None``: not in the list (shared with the host); ``""``: a new one; else a path to join."""
        for t, p in self.namespaces:
            if t == kind:
                return p
        return None


# ----------------------------------------------------------------------------- writing

def write(bundle_dir: Path | str, spec: dict[str, Any]) -> Path:
    """Write ``config.json`` into ``bundle_dir`` (made if missing); a reader never sees half a file."""
    d = Path(bundle_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{CONFIG}.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, json.dumps(spec).encode())
        finally:
            os.close(fd)
        os.replace(tmp, d / CONFIG)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return d / CONFIG


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make(bundle_dir: Path | str, spec: dict[str, Any], rootfs_dir: Path | str | None = None) -> Path:
    """A bundle: ``config.json`` whose ``root.path`` is ``rootfs_dir`` (kept as given when None)."""
    spec = dict(spec)
    if rootfs_dir is not None:
        spec["root"] = dict(spec.get("root") or {}, path=str(rootfs_dir))
    write(bundle_dir, spec)
    return Path(bundle_dir)


# ----------------------------------------------------------------------------- from an image

@dataclass(frozen=True)
class FromImage:
    """What :func:`image_spec` made: the spec, the image it came from and its process."""

    spec: dict[str, Any] = field(repr=False)
    image: Any                       # runtime.image.store.ImageRecord
    process: specconv.ProcessSpec
    lowerdirs: tuple[str, ...]


def resolve_user(user: str, lowerdirs: tuple[str, ...] | list) -> tuple[int, int, str]:
    """``-u``/image User to (uid, gid, home) using the image's /etc/passwd and /etc/group (the topmost
    layer holding each file; a flat rootfs is one layer)."""
    if user in ("", "0", "root", "0:0", "root:root"):
        return 0, 0, "/root"
    from core.errors import IsobenchError
    from runtime.image.runstep import resolve_user_in

    def top(rel: str) -> Path | None:
        for d in reversed(lowerdirs):
            if os.path.lexists(f"{d}/{rel}"):
                return Path(f"{d}/{rel}")
        return None

    try:
        return resolve_user_in(user, top("etc/passwd"), top("etc/group"))
    except IsobenchError as exc:
        raise ContainerError(f"--user {user!r}: {exc}") from exc


def image_spec(paths: Any, config: Any, *, hostname: str, rootfs: str,
               overlay_dirs: tuple[str, str] | None = None, etc_files: tuple[tuple[str, str], ...] = (),
               cgroups_path: str = "") -> FromImage:
    """The spec for running ``config`` (a :class:`runtime.spec.ContainerConfig`) from the image store
    under ``paths``. ``rootfs``: root.path; with ``overlay_dirs`` (upper, work) the image layers are
    named in isobench's annotations and mounted as an overlay at ``rootfs`` (isobench only), else
    ``rootfs`` must be a directory holding the image (:func:`from_image` makes one)."""
    from runtime.cgroups import cgroup_namespace_supported

    store = _store(paths)
    img = store.resolve(config.image)
    lowers = tuple(str(d) for d in store.layer_dirs(img))
    proc = specconv.process_spec(config, img.config, hostname)
    uid, gid, home = resolve_user(proc.user, lowers)
    init_bin = ""
    if config.init:
        from core.cbin import helper

        init_bin = str(helper("isobench-init"))
    for m in config.mounts:
        if m.type == "volume":
            (paths.volumes / m.source / "_data").mkdir(parents=True, exist_ok=True)  # persist: never undone
    overlay = None
    if overlay_dirs:  # isobench's own overlay: the image's layers under its mountpoints layer
        from runtime.image.mountpoints import layer_for

        mountpoints = layer_for(lowers, paths.root)
        overlay = ((*lowers, mountpoints) if mountpoints else lowers,) + overlay_dirs
    host = specconv.SpecHost(
        rootfs=rootfs, hostname=hostname, uid=uid, gid=gid, home=home, cgroupns=cgroup_namespace_supported(),
        cgroups_path=cgroups_path, overlay=overlay, etc_files=etc_files,
        init_binary=init_bin, volumes_dir=str(paths.volumes), image_digest=img.manifest_digest)
    return FromImage(spec=specconv.to_spec(config, proc, host), image=img, process=proc, lowerdirs=lowers)


@functools.lru_cache(maxsize=8)
def _store(paths: Any) -> Any:
    """The image store of ``paths``, one per state root in this process (cheap, but made on every
    container create otherwise)."""
    from runtime.image.store import ImageStore

    return ImageStore(paths)


def from_image(paths: Any, config: Any, bundle_dir: Path | str, rootfs_dir: Path | str | None = None,
               hostname: str | None = None, cgroups_path: str = "") -> FromImage:
    """A runnable bundle in ``bundle_dir`` for any OCI runtime: ``config.json`` plus the image's
    flattened files copied to ``rootfs_dir`` (default ``<bundle_dir>/rootfs``; an existing non-empty
    directory is used as it is, e.g. an overlay the caller mounted over the flat cache)."""
    import shutil

    from runtime.image.store import ImageStore

    d = Path(bundle_dir).absolute()
    root = Path(rootfs_dir).absolute() if rootfs_dir is not None else d / "rootfs"
    made = image_spec(paths, config, hostname=hostname or config.hostname or d.name[:12] or "isobench",
                      rootfs=str(root), cgroups_path=cgroups_path)
    if not root.is_dir() or not any(root.iterdir()):
        store = ImageStore(paths)
        shutil.copytree(store.flat_rootfs(made.image), root, symlinks=True, dirs_exist_ok=True)
    write(d, made.spec)
    return made


# ----------------------------------------------------------------------------- reading

def load(bundle_dir: Path | str) -> Bundle:
    d = Path(bundle_dir).absolute()
    path = d / CONFIG
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle {d}: no {CONFIG}") from None
    except OSError as exc:
        raise BundleError(f"bundle {d}: cannot read {CONFIG}: {exc.strerror}") from exc
    try:
        spec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc
    return parse(spec, d)


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise BundleError(f"{where}: {what}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _obj(doc: dict, key: str, where: str) -> dict:
    v = doc.get(key)
    if v is None:
        return {}
    _need(isinstance(v, dict), where, f"{key} must be an object")
    return v


def _caps(v: Any, where: str) -> frozenset[str]:
    if v is None:
        return frozenset()
    _need(_strs(v), where, "must be an array of capability names")
    from runtime.security.caps import CAPS

    names = {c.upper().removeprefix("CAP_") for c in v}
    return frozenset(n for n in names if n in CAPS)  # unknown to this kernel's table: ignored, as runc warns


def parse_process(doc: Any, where: str) -> OciProcess:
    """A runtime-spec ``process`` object (also the whole file of ``exec --process``)."""
    _need(isinstance(doc, dict), where, "must be an object")
    args = doc.get("args")
    _need(_strs(args) and bool(args), where, "args must be a non-empty array of strings")
    env = doc.get("env") or []
    _need(_strs(env), where, "env must be an array of K=V strings")
    cwd = doc.get("cwd", "/")
    _need(isinstance(cwd, str) and cwd.startswith("/"), where, f"cwd must be an absolute path, got {cwd!r}")
    user = _obj(doc, "user", where)
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    _need(_is_int(uid) and _is_int(gid) and uid >= 0 and gid >= 0, f"{where}.user", "uid and gid must be integers >= 0")
    extra = user.get("additionalGids") or []
    _need(isinstance(extra, list) and all(_is_int(g) for g in extra), f"{where}.user",
          "additionalGids must be integers")
    umask = user.get("umask")
    _need(umask is None or _is_int(umask), f"{where}.user", "umask must be an integer")
    size = doc.get("consoleSize")
    console = None
    if size is not None:
        _need(isinstance(size, dict) and _is_int(size.get("height", 0)) and _is_int(size.get("width", 0)),
              f"{where}.consoleSize", "must be {height, width} integers")
        console = (size.get("height", 0), size.get("width", 0))
    caps = _obj(doc, "capabilities", where)
    rlimits = []
    for i, r in enumerate(doc.get("rlimits") or []):
        w = f"{where}.rlimits[{i}]"
        _need(isinstance(r, dict) and isinstance(r.get("type"), str) and _is_int(r.get("soft"))
              and _is_int(r.get("hard")), w, "must be {type, soft, hard}")
        import resource

        _need(hasattr(resource, r["type"]), w, f"unknown rlimit {r['type']!r}")
        rlimits.append((r["type"], r["soft"], r["hard"]))
    oom = doc.get("oomScoreAdj")
    _need(oom is None or (_is_int(oom) and -1000 <= oom <= 1000), where, "oomScoreAdj must be -1000..1000")
    terminal = doc.get("terminal", False)
    _need(isinstance(terminal, bool), where, "terminal must be true or false")
    return OciProcess(
        args=tuple(args), env=tuple(env), cwd=cwd, uid=uid, gid=gid, additional_gids=tuple(extra), umask=umask,
        terminal=terminal, console_size=console, bounding=_caps(caps.get("bounding"), f"{where}.capabilities.bounding"),
        effective=_caps(caps.get("effective"), f"{where}.capabilities.effective"),
        no_new_privileges=bool(doc.get("noNewPrivileges", False)), rlimits=tuple(rlimits), oom_score_adj=oom)


def _mounts(v: Any, where: str) -> tuple[OciMount, ...]:
    if v is None:
        return ()
    _need(isinstance(v, list), where, "mounts must be an array")
    out = []
    for i, m in enumerate(v):
        w = f"{where}.mounts[{i}]"
        _need(isinstance(m, dict), w, "must be an object")
        dest = m.get("destination")
        _need(isinstance(dest, str) and dest.startswith("/"), w, f"destination must be an absolute path, got {dest!r}")
        opts = m.get("options") or []
        _need(_strs(opts), w, "options must be an array of strings")
        kind = m.get("type") or ("bind" if any(o in ("bind", "rbind") for o in opts) else "")
        _need(isinstance(kind, str) and bool(kind), w, "type is missing (and options has no bind/rbind)")
        src = m.get("source") or ""
        _need(isinstance(src, str), w, "source must be a string")
        out.append(OciMount(destination=dest, type=kind, source=src, options=tuple(opts)))
    return tuple(out)


def _namespaces(v: Any, where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for i, ns in enumerate(v or []):
        w = f"{where}.namespaces[{i}]"
        got = ns.get("type") if isinstance(ns, dict) else ns
        _need(isinstance(ns, dict) and got in NAMESPACE_TYPES, w,
              f"type must be one of {', '.join(NAMESPACE_TYPES)}, got {got!r}")
        path = ns.get("path") or ""
        _need(isinstance(path, str), w, "path must be a string")
        _need(all(t != ns["type"] for t, _ in out), w, f"namespace {ns['type']} listed twice")
        out.append((ns["type"], path))
    return tuple(out)


def _id_maps(v: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    out = []
    for i, m in enumerate(v or []):
        _need(isinstance(m, dict) and all(_is_int(m.get(k)) for k in ("containerID", "hostID", "size")),
              f"{where}[{i}]", "must be {containerID, hostID, size} integers")
        out.append((m["containerID"], m["hostID"], m["size"]))
    return tuple(out)


def _devices(v: Any, where: str) -> tuple[OciDevice, ...]:
    out = []
    for i, d in enumerate(v or []):
        w = f"{where}.devices[{i}]"
        _need(isinstance(d, dict) and isinstance(d.get("path"), str) and d.get("type") in ("c", "b", "u", "p"),
              w, "must have a path and a type c, b, u or p")
        nums = {k: d.get(k, default) for k, default in (("major", 0), ("minor", 0), ("fileMode", 0o666),
                                                         ("uid", 0), ("gid", 0))}
        _need(all(_is_int(v) for v in nums.values()), w, "major, minor, fileMode, uid and gid must be integers")
        out.append(OciDevice(path=d["path"], type=d["type"], major=nums["major"], minor=nums["minor"],
                             file_mode=nums["fileMode"], uid=nums["uid"], gid=nums["gid"]))
    return tuple(out)


def parse(spec: Any, bundle_dir: Path | str) -> Bundle:
    """Validate a runtime-spec document and type what the runtime uses."""
    d = Path(bundle_dir)
    where = f"{d / CONFIG}"
    _need(isinstance(spec, dict), where, "must be a JSON object")
    version = spec.get("ociVersion")
    _need(isinstance(version, str) and version.startswith("1."), where,
          f"ociVersion {version!r} is not a runtime-spec 1.x version")
    process = parse_process(spec.get("process"), f"{where}: process")
    root = _obj(spec, "root", where)
    rpath = root.get("path")
    _need(isinstance(rpath, str) and bool(rpath), where, "root.path is missing")
    rpath = rpath if rpath.startswith("/") else str(d / rpath)
    linux = _obj(spec, "linux", where)
    lw = f"{where}: linux"
    hostname = spec.get("hostname") or ""
    _need(isinstance(hostname, str), where, "hostname must be a string")
    sysctl = _obj(linux, "sysctl", lw)
    ann = spec.get("annotations") or {}
    _need(isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values()), where,
          "annotations must map strings to strings")
    cgpath = linux.get("cgroupsPath") or ""
    _need(isinstance(cgpath, str), lw, "cgroupsPath must be a string")
    seccomp = linux.get("seccomp")
    _need(seccomp is None or isinstance(seccomp, dict), lw, "seccomp must be an object")
    masked, ro = linux.get("maskedPaths") or [], linux.get("readonlyPaths") or []
    _need(_strs(masked) and _strs(ro), lw, "maskedPaths and readonlyPaths must be arrays of paths")
    return Bundle(
        dir=d, spec=spec, process=process, root_path=rpath, root_readonly=bool(root.get("readonly", False)),
        hostname=hostname, mounts=_mounts(spec.get("mounts"), where),
        namespaces=_namespaces(linux.get("namespaces"), lw),
        uid_mappings=_id_maps(linux.get("uidMappings"), f"{lw}.uidMappings"),
        gid_mappings=_id_maps(linux.get("gidMappings"), f"{lw}.gidMappings"),
        cgroups_path=cgpath, seccomp=seccomp, masked_paths=tuple(masked), readonly_paths=tuple(ro),
        sysctl=tuple((str(k), str(v)) for k, v in sysctl.items()), devices=_devices(linux.get("devices"), lw),
        annotations=tuple((str(k), v) for k, v in ann.items()))


# ----------------------------------------------------------------------------- limits back

def _num(section: dict, key: str, where: str) -> int | None:
    v = section.get(key)
    if v is None:
        return None
    _need(_is_int(v), where, f"{key} must be an integer, got {v!r}")
    return v


def resources_of(res: dict[str, Any], where: str) -> Resources:
    """``linux.resources`` -> :class:`Resources` (the inverse of :func:`specconv.resources_json`)."""
    w = f"{where}: linux.resources"
    _need(isinstance(res, dict), w, "must be an object")
    kw: dict[str, Any] = {}
    for section, key, name in specconv.RESOURCE_FIELDS:
        sec = res.get(section) or {}
        _need(isinstance(sec, dict), w, f"{section} must be an object")
        v = sec.get(key)
        if name == "cpuset_cpus":
            _need(v is None or isinstance(v, str), f"{w}.{section}", f"{key} must be a string")
            kw[name] = v or None
        else:
            kw[name] = _num(sec, key, f"{w}.{section}")
    if kw.get("memory_bytes") is not None and kw["memory_bytes"] <= 0:
        kw["memory_bytes"] = None  # 0 / -1: unlimited in the spec
        kw["memory_swap_bytes"] = None
    if kw.get("pids_max") is not None and kw["pids_max"] <= 0:
        kw["pids_max"] = None
    if kw.get("cpu_quota_us") is not None and kw["cpu_quota_us"] <= 0:
        kw["cpu_quota_us"] = None
    if kw.get("cpu_shares") == 0:
        kw["cpu_shares"] = None
    period = _num(res.get("cpu") or {}, "period", f"{w}.cpu")
    if period:
        kw["cpu_period_us"] = period
    blkio = res.get("blockIO") or {}
    for key, name in specconv.THROTTLE_FIELDS:
        devs = []
        for i, item in enumerate(blkio.get(key) or []):
            iw = f"{w}.blockIO.{key}[{i}]"
            _need(isinstance(item, dict) and all(_is_int(item.get(k)) for k in ("major", "minor", "rate")),
                  iw, "must be {major, minor, rate} integers")
            devs.append(ThrottleDevice(path=f"{item['major']}:{item['minor']}", rate_bytes_per_s=item["rate"]))
        kw[name] = tuple(devs)
    return Resources(**kw)


# ----------------------------------------------------------------------------- identity of a process

PER_INSTANCE_ENV = ("HOSTNAME",)   # set from the instance's own hostname: not part of the workload's identity


def process_identity(process: dict[str, Any]) -> dict[str, Any]:
    """The part of a runtime-spec ``process`` object that says *what runs*: args, env (without the
    per-instance ``HOSTNAME``), cwd and user (uid, gid, additional gids). Capabilities, rlimits and the
    terminal are how it is confined, not what it is."""
    user = process.get("user") or {}
    env = [e for e in process.get("env") or () if e.partition("=")[0] not in PER_INSTANCE_ENV]
    return {"args": list(process.get("args") or ()), "env": env, "cwd": process.get("cwd") or "/",
            "user": {"uid": int(user.get("uid", 0)), "gid": int(user.get("gid", 0)),
                     "additionalGids": sorted(int(g) for g in user.get("additionalGids") or ())}}


def process_digest(process: dict[str, Any]) -> str:
    """``sha256:<hex>`` of :func:`process_identity` as canonical JSON (sorted keys, no spaces): equal
    digests mean the same program, arguments, environment, directory and user."""
    import hashlib

    doc = json.dumps(process_identity(process), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()
