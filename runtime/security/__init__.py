"""Container hardening applied in the container's init process just before execve.

Why: a root process in namespaces is still root on the host kernel. Docker and runc add four walls,
and isobench adds the same ones by default (build containers included): the capability bounding set
cut to Docker's 14 defaults, no_new_privs, a seccomp allowlist modelled on Docker's default profile,
and masked / read-only /proc and /sys paths. ``--privileged`` is the explicit opt-out.

How the runtime calls this (signatures are fixed):

1. In the parent, before fork: ``prepared = prepare(config.security)`` — validates cap names and the
   seccomp profile (one-line :class:`SecurityError` on bad input, before anything is created) and
   compiles the seccomp BPF program (cached per profile+caps). Doing it here keeps the forked child's
   work to a few syscalls.
2. In the child, after /proc, /sys, /dev are mounted in the new root (after pivot_root):
   ``prepare_mounts_in_child(prepared)``.
3. In the child, as the very last step before ``os.execve``: ``enter(prepared, uid, gid, groups)``.
   Both hooks also accept a plain :class:`SecuritySpec` (then they call :func:`prepare` themselves).

CVE-2019-5736 (overwriting the host runtime through /proc/self/exe): the container's init must be a
fork of the runtime that *execve*s the container's program, never re-executing the runtime binary
through /proc/self/exe inside the container; a process that *joins* a running container (``exec``)
while still being the host Python must call :func:`harden_joining_process` before ``setns`` so that
container processes cannot open its /proc/<pid>/exe (the host interpreter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import SecurityError
from runtime.security import caps as _caps
from runtime.security import masks as _masks
from runtime.security import seccomp as _seccomp
from runtime.spec import SecuritySpec

PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class PreparedSecurity:
    """Everything :func:`enter` needs, computed in the parent (pure data; survives fork)."""

    privileged: bool
    cap_names: frozenset[str]           # capabilities the container keeps
    keep_mask: int                      # the same as a 64-bit mask
    last_cap: int                       # highest capability of the running kernel
    no_new_privileges: bool
    seccomp_program: bytes | None       # classic BPF (struct sock_filter[]) or None = unconfined
    masked_paths: tuple[str, ...] = _masks.MASKED_PATHS
    readonly_paths: tuple[str, ...] = _masks.READONLY_PATHS


def prepare(spec: SecuritySpec) -> PreparedSecurity:
    """Validate ``spec`` and precompute the caps and the seccomp program. Call in the parent."""
    last = _caps.cap_last_cap()
    names = _caps.effective_set(spec.cap_add, spec.cap_drop, spec.privileged, last_cap=last)
    program = None
    if not spec.privileged:
        program = _seccomp.program_for(spec.seccomp or "default", names)
        if program is not None:
            _seccomp.ready(program)
    return PreparedSecurity(
        privileged=spec.privileged, cap_names=names, keep_mask=_caps.mask_of(names), last_cap=last,
        no_new_privileges=spec.no_new_privileges, seccomp_program=program,
        masked_paths=() if spec.privileged else _masks.MASKED_PATHS,
        readonly_paths=() if spec.privileged else _masks.READONLY_PATHS,
    )


# id(doc) -> (doc, caps, program) for the last few docs: specconv hands every container of one config
# the same (cached) doc, so a harness loop compiles once without even hashing ~20 KB of JSON per start;
# other docs (bundles read from disk) are found by content
_by_id: dict[int, tuple[dict, frozenset[str], bytes]] = {}
_by_content: dict[str, bytes] = {}


def _oci_program(doc: dict, caps: frozenset[str]) -> bytes:
    hit = _by_id.get(id(doc))
    if hit is not None and hit[0] is doc and hit[1] == caps:
        return hit[2]
    import hashlib
    import json

    key = hashlib.sha256(json.dumps([doc, sorted(caps)], sort_keys=True).encode()).hexdigest()
    program = _by_content.get(key)
    if program is None:
        program = _by_content[key] = _seccomp.compile_bpf(_seccomp.resolve(doc, caps, source="linux.seccomp"))
    if len(_by_id) >= 16:
        _by_id.pop(next(iter(_by_id)))
    _by_id[id(doc)] = (doc, caps, program)
    return program


_HELD: list[int] = []


def _held_mask() -> int:
    """The runtime's own permitted capabilities (on this machine root lacks CAP_SYS_RESOURCE)."""
    if not _HELD:
        from core import syscalls

        _HELD.append(syscalls.capget(0)[1])
    return _HELD[0]


def prepare_oci(caps: frozenset[str], no_new_privileges: bool, seccomp_doc: dict | None,
                masked: tuple[str, ...], readonly: tuple[str, ...]) -> PreparedSecurity:
    """The same from an OCI bundle: its bounding set, noNewPrivileges, ``linux.seccomp`` (compiled
    here) and masked/read-only paths."""
    last = _caps.cap_last_cap()
    held = _held_mask()  # a capability this runtime does not hold cannot be granted (capset: EPERM)
    names = frozenset(c for c in caps if _caps.CAPS.get(c, last + 1) <= last and held >> _caps.CAPS[c] & 1)
    program = None
    if seccomp_doc is not None:
        program = _oci_program(seccomp_doc, names)
        _seccomp.ready(program)
    return PreparedSecurity(privileged=False, cap_names=names, keep_mask=_caps.mask_of(names), last_cap=last,
                            no_new_privileges=no_new_privileges, seccomp_program=program,
                            masked_paths=tuple(masked), readonly_paths=tuple(readonly))


def _prepared(spec: SecuritySpec | PreparedSecurity) -> PreparedSecurity:
    return spec if isinstance(spec, PreparedSecurity) else prepare(spec)


def prepare_mounts_in_child(spec: SecuritySpec | PreparedSecurity) -> None:
    """Mask and read-only paths inside the container's root (after pivot_root, /proc, /sys, /dev
    mounted, /dev/null present). Skipped when privileged."""
    p = _prepared(spec)
    try:
        _masks.apply(p.masked_paths, p.readonly_paths)
    except OSError as exc:
        raise SecurityError(f"masking /proc and /sys paths failed: {exc}") from exc


def enter(spec: SecuritySpec | PreparedSecurity, uid: int, gid: int, groups: tuple[int, ...] = ()) -> None:
    """Become ``uid:gid`` and lock the process down (bounding set, caps, no_new_privs, seccomp).

    Order matters: the bounding set is cut while CAP_SETPCAP is still held; without no_new_privs the
    seccomp filter is loaded before setuid (loading needs CAP_SYS_ADMIN then, as in runc), with it the
    filter goes last so that it only has to allow ``execve``. uid 0 keeps the container's cap set;
    any other uid ends with no capabilities at all (Docker's behaviour for non-root users)."""
    p = _prepared(spec)
    step = "start"
    try:
        if p.privileged:
            step = "setgroups/setgid/setuid"
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            if p.no_new_privileges:
                step = "no_new_privs"
                _caps.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
            return
        step = "capability bounding set"
        _caps.drop_bounding(p.keep_mask, p.last_cap)
        if p.seccomp_program is not None and not p.no_new_privileges:
            step = "seccomp (before setuid)"
            _seccomp.load_bpf(p.seccomp_program)
        step = f"setgroups/setgid/setuid {uid}:{gid}"
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
        step = "capset"
        keep = p.keep_mask if uid == 0 else 0
        _caps.capset(keep, keep, 0)
        _caps.clear_ambient()
        if p.no_new_privileges:
            step = "no_new_privs"
            _caps.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
            if p.seccomp_program is not None:
                step = "seccomp"
                _seccomp.load_bpf(p.seccomp_program)
    except OSError as exc:
        raise SecurityError(f"container init: {step} failed: {exc}") from exc


def harden_joining_process() -> None:
    """Make the calling (host Python) process non-dumpable before it joins a container's namespaces,
    so container processes cannot open /proc/<pid>/exe of the host interpreter (CVE-2019-5736)."""
    try:
        _caps.prctl(PR_SET_DUMPABLE, 0, what="PR_SET_DUMPABLE")
    except OSError as exc:
        raise SecurityError(f"prctl(PR_SET_DUMPABLE, 0) failed: {exc}") from exc


__all__ = ["PreparedSecurity", "prepare", "prepare_oci", "prepare_mounts_in_child", "enter", "harden_joining_process",
           "SecuritySpec"]
