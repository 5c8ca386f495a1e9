"""Seccomp filters from Docker-format JSON profiles, compiled once in the parent, loaded in the child.

Capabilities stop root from *using* some kernel features; seccomp removes whole system calls from the
container's view (keyctl, kexec, new mount API, namespace creation), the second wall Docker and runc put
up. Profiles use Docker's JSON format so users can pass the profiles they already have
(``--security-opt seccomp=FILE``); the default is ``seccomp_default.json`` beside this module.

Split for speed (container start is a headline metric): :func:`resolve` (pure: includes/excludes by
capability, architecture and kernel) and :func:`compile_bpf` (libseccomp through ctypes, exporting a
classic BPF program) run in the parent; the forked init only calls :func:`load_bpf`, a single
``prctl(PR_SET_SECCOMP)``. Compiled programs are cached in-process by profile content and cap set.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import syscalls
from core.errors import SecurityError

DEFAULT_PROFILE_PATH = Path(__file__).with_name("seccomp_default.json")

# libseccomp action values (<seccomp.h>); ERRNO and TRACE carry their data in the low 16 bits.
_ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_DATA = {"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"}

# enum scmp_compare
_OPS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# Docker's arch names in includes/excludes "arches", for the one architecture this host runs.
_NATIVE_ARCH_NAMES = {"x86_64": {"amd64", "x86_64", "SCMP_ARCH_X86_64"}}


@dataclass(frozen=True)
class ArgCmp:
    """One argument comparison: ``args[index] <op> value`` (MASKED_EQ: ``args[index] & value == value_two``)."""

    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class Rule:
    """Every name gets ``action`` when all ``args`` comparisons hold (rules for one name are OR-ed)."""

    names: tuple[str, ...]
    action: int
    args: tuple[ArgCmp, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A profile resolved for one capability set, architecture and kernel: ready to compile."""

    default_action: int
    rules: tuple[Rule, ...]

    def allowed_names(self) -> frozenset[str]:
        """Names with an unconditional ALLOW rule (for tests and the report)."""
        allow = _ACTIONS["SCMP_ACT_ALLOW"]
        return frozenset(n for r in self.rules if r.action == allow and not r.args for n in r.names)


def read_profile(source: str) -> tuple[dict[str, Any], bytes]:
    """``"default"`` or a file path -> (parsed JSON, raw bytes). One-line SecurityError on any problem."""
    path = DEFAULT_PROFILE_PATH if source == "default" else Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"--security-opt seccomp={source}: cannot read profile: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SecurityError(f"--security-opt seccomp={source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SecurityError(f"--security-opt seccomp={source}: a profile is a JSON object, got {type(doc).__name__}")
    return doc, raw


def _action(name: Any, errno_ret: Any, where: str, default_errno: int) -> int:
    if not isinstance(name, str) or name not in _ACTIONS:
        raise SecurityError(f"{where}: unknown action {name!r} (known: {', '.join(sorted(_ACTIONS))})")
    value = _ACTIONS[name]
    if name in _WITH_DATA:
        data = default_errno if errno_ret is None else errno_ret
        if not isinstance(data, int) or isinstance(data, bool) or not 0 <= data <= 0xFFFF:
            raise SecurityError(f"{where}: errnoRet must be an integer 0..65535, got {data!r}")
        value |= data
    return value


def _uint(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
        raise SecurityError(f"{where}: must be an unsigned 64-bit integer, got {v!r}")
    return v


def _parse_args(args: Any, where: str) -> tuple[ArgCmp, ...]:
    if args is None:
        return ()
    if not isinstance(args, list):
        raise SecurityError(f"{where}: 'args' must be a list")
    out = []
    for i, a in enumerate(args):
        w = f"{where} args[{i}]"
        if not isinstance(a, dict):
            raise SecurityError(f"{w}: must be an object")
        idx = a.get("index")
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx <= 5:
            raise SecurityError(f"{w}: index must be 0..5, got {idx!r}")
        op = a.get("op")
        if op not in _OPS:
            raise SecurityError(f"{w}: unknown op {op!r} (known: {', '.join(sorted(_OPS))})")
        out.append(ArgCmp(idx, op, _uint(a.get("value", 0), f"{w} value"),
                          _uint(a.get("valueTwo", 0), f"{w} valueTwo")))
    return tuple(out)


def _kernel_version() -> tuple[int, int]:
    rel = os.uname().release.split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return (0, 0)


def _applies(entry: dict[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, int], where: str) -> bool:
    """Docker's includes (all must hold) / excludes (any one excludes) filters."""
    arch_names = _NATIVE_ARCH_NAMES.get(arch, {arch})

    def caps_of(block: dict[str, Any]) -> set[str]:
        return {str(c).upper().removeprefix("CAP_") for c in block.get("caps") or ()}

    inc = entry.get("includes") or {}
    exc = entry.get("excludes") or {}
    if not isinstance(inc, dict) or not isinstance(exc, dict):
        raise SecurityError(f"{where}: includes/excludes must be objects")
    if inc.get("arches") and not arch_names & set(inc["arches"]):
        return False
    if not caps_of(inc) <= caps:
        return False
    if inc.get("minKernel"):
        try:
            want = tuple(int(x) for x in str(inc["minKernel"]).split(".")[:2])
        except ValueError as e:
            raise SecurityError(f"{where}: minKernel {inc['minKernel']!r} is not a version like 4.8") from e
        if kernel < want:
            return False
    if exc.get("arches") and arch_names & set(exc["arches"]):
        return False
    if caps_of(exc) & caps:
        return False
    return True


def resolve(doc: dict[str, Any], caps: frozenset[str], source: str = "profile",
            arch: str | None = None, kernel: tuple[int, int] | None = None) -> Profile:
    """A Docker-format profile -> the rules that apply to a container with capability names ``caps``."""
    arch = arch or os.uname().machine
    kernel = kernel or _kernel_version()
    default_errno = doc.get("defaultErrnoRet", errno_mod.EPERM)
    default = _action(doc.get("defaultAction"), default_errno, f"{source} defaultAction", errno_mod.EPERM)
    entries = doc.get("syscalls")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise SecurityError(f"{source}: 'syscalls' must be a list")
    rules = []
    for i, entry in enumerate(entries):
        where = f"{source} syscalls[{i}]"
        if not isinstance(entry, dict):
            raise SecurityError(f"{where}: must be an object")
        names = entry.get("names")
        if names is None and "name" in entry:
            names = [entry["name"]]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise SecurityError(f"{where}: 'names' must be a list of syscall names")
        action = _action(entry.get("action"), entry.get("errnoRet"), where,
                         default_errno if isinstance(default_errno, int) else errno_mod.EPERM)
        args = _parse_args(entry.get("args"), where)
        if not _applies(entry, caps, arch, kernel, where):
            continue
        rules.append(Rule(tuple(names), action, args))
    return Profile(default, tuple(rules))


# ---------------------------------------------------------------------------------------------- libseccomp

class _ArgCmpC(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def _lib() -> ctypes.CDLL:
    name = "libseccomp.so.2"  # by soname: find_library would fork ldconfig
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SecurityError(f"seccomp: cannot load libseccomp ({name}): install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmpC)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


# seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2): a binary tree of syscall numbers instead of a
# linear list. Loading the filter is on every container's start path, and the kernel evaluates the
# program once per syscall number when it loads it (its constant-action cache): with Docker's ~350
# rules that took ~450 us linear, ~150 us as a tree here (and every syscall is checked faster too).
_SCMP_FLTATR_CTL_OPTIMIZE = 8
_OPTIMIZE_BINARY_TREE = 2


_NR_SCMP_ERROR = -1


def compile_bpf(profile: Profile) -> bytes:
    """The classic-BPF program (array of ``struct sock_filter``) for ``profile``, via libseccomp.

    Names this libseccomp does not know for the native architecture are skipped, as Docker does (a
    profile lists syscalls of several kernels and architectures). Rules whose action equals the default
    are skipped: libseccomp refuses them and they change nothing."""
    lib = _lib()
    ctx = lib.seccomp_init(profile.default_action)
    if not ctx:
        raise SecurityError(f"seccomp: seccomp_init(0x{profile.default_action:x}) failed")
    try:
        ret = lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
        if ret < 0:
            raise SecurityError(f"seccomp: libseccomp >= 2.5 needed (binary-tree filters): {os.strerror(-ret)}")
        for rule in profile.rules:
            if rule.action == profile.default_action:
                continue
            arr = (_ArgCmpC * max(1, len(rule.args)))()
            for i, a in enumerate(rule.args):
                arr[i] = _ArgCmpC(a.index, _OPS[a.op], a.value, a.value_two)
            for name in rule.names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == _NR_SCMP_ERROR or nr < 0:
                    continue
                ret = lib.seccomp_rule_add_array(ctx, rule.action, nr, len(rule.args), arr)
                if ret < 0:
                    raise SecurityError(f"seccomp: rule for {name} (action 0x{rule.action:x}, "
                                        f"{len(rule.args)} arg checks) rejected: {os.strerror(-ret)}")
        fd = os.memfd_create("isobench-seccomp", os.MFD_CLOEXEC)
        try:
            ret = lib.seccomp_export_bpf(ctx, fd)
            if ret < 0:
                raise SecurityError(f"seccomp: exporting the BPF program failed: {os.strerror(-ret)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


_cache: dict[str, bytes] = {}


def program_for(source: str, caps: frozenset[str]) -> bytes | None:
    """The compiled filter for ``--security-opt seccomp=<source>`` and a cap set; ``None`` when
    unconfined. Cached by profile content + caps + kernel, so a harness starting many containers
    compiles once."""
    if source == "unconfined":
        return None
    doc, raw = read_profile(source)
    key = hashlib.sha256(raw + b"\0" + ",".join(sorted(caps)).encode() + b"\0" + os.uname().release.encode()
                         ).hexdigest()
    if key not in _cache:
        _cache[key] = compile_bpf(resolve(doc, caps, source=source if source != "default" else "default profile"))
    return _cache[key]


# ------------------------------------------------------------------------------------- in the container

class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


# program bytes -> (buffer, struct sock_fprog): built in the parent by :func:`ready`, so the forked child
# only issues the prctl (no allocation, fewer copy-on-write page faults on the start path)
_fprogs: dict[bytes, tuple[ctypes.Array, _SockFprog]] = {}


def ready(program: bytes) -> None:
    """Build the ``sock_fprog`` for ``program`` ahead of :func:`load_bpf` (call in the parent)."""
    if program in _fprogs:
        return
    if len(program) % 8 or not program:
        raise OSError(errno_mod.EINVAL, f"seccomp program of {len(program)} bytes is not whole instructions")
    buf = ctypes.create_string_buffer(program, len(program))
    _fprogs[program] = (buf, _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p)))


def load_bpf(program: bytes) -> None:
    """Install ``program`` on the calling thread (needs no_new_privs or CAP_SYS_ADMIN). Irreversible."""
    if program not in _fprogs:
        ready(program)
    _, fprog = _fprogs[program]
    try:
        syscalls.prctl_ptr(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog))
    except OSError as exc:
        raise OSError(exc.errno, f"prctl(PR_SET_SECCOMP): {os.strerror(exc.errno)}") from None
