"""Pure checks of the security defaults: capability arithmetic, Docker-format profile resolution and
validation, the compiled filter's shape. No root, no host effects (libseccomp compiles in memory)."""

from __future__ import annotations

import json

import pytest

from core.errors import SecurityError
from runtime.security import PreparedSecurity, caps, masks, prepare, seccomp
from runtime.spec import SecuritySpec

DOCKER_DEFAULT_MASK = 0xA80425FB  # CapEff of a default `docker run` (and of ours)


def test_default_caps_are_dockers():
    assert caps.mask_of(caps.effective_set()) == DOCKER_DEFAULT_MASK
    assert len(caps.DEFAULT_CAPS) == 14


@pytest.mark.parametrize("add,drop,expect_in,expect_out", [
    (("NET_ADMIN",), (), {"NET_ADMIN", "CHOWN"}, {"SYS_ADMIN"}),
    (("cap_sys_ptrace",), ("CAP_NET_RAW",), {"SYS_PTRACE"}, {"NET_RAW"}),
    ((), ("ALL",), set(), set(caps.DEFAULT_CAPS)),
    (("CHOWN",), ("ALL",), {"CHOWN"}, {"KILL"}),
    (("ALL",), (), {"SYS_ADMIN", "SYS_MODULE"}, set()),
    (("ALL",), ("ALL",), {"SYS_ADMIN"}, set()),  # add wins, as in Docker
])
def test_cap_add_drop(add, drop, expect_in, expect_out):
    got = caps.effective_set(add, drop, last_cap=40)
    assert expect_in <= got
    assert not expect_out & got


def test_privileged_gets_every_kernel_cap():
    assert caps.effective_set(privileged=True, last_cap=37) == frozenset(n for n, v in caps.CAPS.items() if v <= 37)


@pytest.mark.parametrize("bad", ["SYS_GOD", "", "CAP_", "net admin"])
def test_unknown_cap_is_one_line_error(bad):
    with pytest.raises(SecurityError, match="--cap-add") as ei:
        caps.effective_set((bad,), ())
    assert "\n" not in str(ei.value)


def test_mask_roundtrip():
    s = frozenset({"SYS_ADMIN", "BPF", "CHOWN"})
    assert caps.names_of(caps.mask_of(s)) == s


def _default_profile(capset=caps.DEFAULT_CAPS, kernel=(6, 1)):
    doc, _ = seccomp.read_profile("default")
    return seccomp.resolve(doc, frozenset(capset), arch="x86_64", kernel=kernel)


def test_default_profile_allows_basics_and_denies_dangerous():
    allowed = _default_profile().allowed_names()
    for name in ("execve", "openat", "read", "write", "mmap", "clone3" if False else "wait4", "setuid",
                 "capset", "prctl", "rt_sigaction", "futex", "getdents64", "statx", "bind", "connect"):
        assert name in allowed, name
    for name in ("keyctl", "add_key", "request_key", "mount", "umount2", "unshare", "setns", "bpf",
                 "init_module", "finit_module", "kexec_load", "settimeofday", "clock_settime", "sethostname",
                 "reboot", "swapon", "perf_event_open", "open_by_handle_at", "userfaultfd", "io_uring_setup",
                 "ptrace" if False else "kcmp", "syslog", "acct", "iopl"):
        assert name not in allowed, name


def test_cap_conditional_rules():
    admin = _default_profile(caps.DEFAULT_CAPS | {"SYS_ADMIN"}).allowed_names()
    assert {"mount", "unshare", "setns", "sethostname", "clone", "clone3"} <= admin
    assert "chroot" in _default_profile().allowed_names()
    assert "chroot" not in _default_profile(caps.DEFAULT_CAPS - {"SYS_CHROOT"}).allowed_names()
    assert {"settimeofday", "clock_settime"} <= _default_profile(caps.DEFAULT_CAPS | {"SYS_TIME"}).allowed_names()


def test_clone_filtered_without_sys_admin():
    prof = _default_profile()
    clone = [r for r in prof.rules if "clone" in r.names]
    assert clone and all(r.args for r in clone)
    (cmp,) = clone[0].args
    assert cmp.op == "SCMP_CMP_MASKED_EQ" and cmp.value == 0x7E020000 and cmp.value_two == 0
    clone3 = [r for r in prof.rules if "clone3" in r.names]
    assert clone3[0].action == 0x00050000 | 38  # ENOSYS so glibc falls back to clone(2)


def test_min_kernel_gates_ptrace():
    assert "ptrace" in _default_profile(kernel=(6, 1)).allowed_names()
    assert "ptrace" not in _default_profile(kernel=(4, 4)).allowed_names()


def test_socket_denies_vsock_only():
    (rule,) = [r for r in _default_profile().rules if "socket" in r.names]
    assert rule.args[0].op == "SCMP_CMP_NE" and rule.args[0].value == 40


def test_compiled_program_is_whole_instructions_and_cached():
    p1 = seccomp.program_for("default", caps.DEFAULT_CAPS)
    p2 = seccomp.program_for("default", caps.DEFAULT_CAPS)
    assert p1 is p2 and len(p1) % 8 == 0 and len(p1) > 8 * 100
    assert seccomp.program_for("unconfined", caps.DEFAULT_CAPS) is None


@pytest.mark.parametrize("doc,match", [
    ([], "JSON object"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}, "must be a list"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}, "names"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}, "index"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 0, "op": "EQ"}]}]}, "unknown op"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": -1}]}]},
     "unsigned"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "x"}, "errnoRet"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, doc, match):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(SecurityError, match=match) as ei:
        prepare(SecuritySpec(seccomp=str(f)))
    assert "\n" not in str(ei.value)


def test_unreadable_or_invalid_profile(tmp_path):
    with pytest.raises(SecurityError, match="cannot read profile"):
        prepare(SecuritySpec(seccomp=str(tmp_path / "missing.json")))
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    with pytest.raises(SecurityError, match="not valid JSON"):
        prepare(SecuritySpec(seccomp=str(f)))


def test_user_profile_unknown_syscalls_are_skipped(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["keyctl", "no_such_syscall_xyz"], "action": "SCMP_ACT_ERRNO"}]}))
    p = prepare(SecuritySpec(seccomp=str(f)))
    assert p.seccomp_program and len(p.seccomp_program) % 8 == 0


def test_prepare_privileged_skips_everything():
    p = prepare(SecuritySpec(privileged=True))
    assert isinstance(p, PreparedSecurity)
    assert p.seccomp_program is None and p.masked_paths == () and p.readonly_paths == ()
    assert "SYS_ADMIN" in p.cap_names


def test_prepare_default():
    p = prepare(SecuritySpec())
    assert p.keep_mask == DOCKER_DEFAULT_MASK and p.no_new_privileges and p.seccomp_program
    assert "/proc/kcore" in p.masked_paths and "/proc/sys" in p.readonly_paths


def test_mask_lists_cover_the_issue():
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/acpi",
                 "/sys/firmware", "/proc/latency_stats", "/proc/timer_stats", "/proc/scsi"):
        assert path in masks.MASKED_PATHS
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"):
        assert path in masks.READONLY_PATHS


def test_device_nodes_refused_without_sys_admin():
    """Stricter than Docker (no device cgroup in isobench): mknod only of files, FIFOs and sockets."""
    prof = _default_profile()
    assert "mknod" not in prof.allowed_names() and "mknodat" not in prof.allowed_names()
    kinds = {(r.names[0], r.args[0].index, r.args[0].value_two) for r in prof.rules
             if r.names[0] in ("mknod", "mknodat") and r.args}
    assert kinds == {(n, i, k) for n, i in (("mknod", 1), ("mknodat", 2)) for k in (0, 0o100000, 0o010000, 0o140000)}
    assert {"mknod", "mknodat"} <= _default_profile(caps.DEFAULT_CAPS | {"SYS_ADMIN"}).allowed_names()
