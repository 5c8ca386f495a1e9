"""The breakout suite: every probe of runtime/security/probes.py inside runc's default config, inside a
bare container carrying only the security hooks, and inside isobench's runtime; all must block, except
documented gaps of a runtime's defaults (printed in the table and marked xfail with the reason)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runtime.security import probes
from tests.security import harness
from tests.security.conftest import RESULTS

pytestmark = pytest.mark.requires("root", "busybox")

# What a runtime's *defaults* are known not to stop, and why (the suite still runs and reports them).
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "runc": {"keyctl": "runc's default config.json has no seccomp profile, and keyrings are not namespaced"},
    "hooks": {},
    "isobench": {},
}


def _record(runtime: str, name: str, code: int, out: str) -> None:
    blocked = probes.PROBES[name].blocked_if(code, out)
    RESULTS.setdefault(runtime, {})[name] = blocked
    if not blocked:
        if name in KNOWN_GAPS[runtime]:
            pytest.xfail(f"{runtime} does not block {name}: {KNOWN_GAPS[runtime][name]}")
        pytest.fail(f"{runtime}: probe {name} ({probes.PROBES[name].description}) was NOT blocked; "
                    f"exit {code}, output: {out.strip()[:400]}")


@pytest.fixture(scope="module")
def hooks_rootfs(probe_dir: Path, helper: Path) -> Path:
    return harness.busybox_rootfs(probe_dir / "hooks-rootfs", helper)


@pytest.fixture(scope="module")
def runc_bundle(probe_dir: Path, helper: Path) -> Path:
    return harness.runc_bundle(probe_dir / "runc-bundle", helper)


@pytest.mark.parametrize("name", list(probes.PROBES))
def test_hooks_only(name, hooks_rootfs, host_ctx, leak_check):
    p = probes.PROBES[name]
    code, out = harness.run_hooks(hooks_rootfs, probes.render(p.argv, host_ctx), cap_drop=p.cap_drop)
    _record("hooks", name, code, out)


@pytest.mark.requires("runc")
@pytest.mark.parametrize("name", list(probes.PROBES))
def test_runc_default(name, runc_bundle, host_ctx, probe_dir, leak_check):
    p = probes.PROBES[name]
    code, out = harness.run_runc(runc_bundle, probes.render(p.argv, host_ctx), probe_dir)
    _record("runc", name, code, out)


@pytest.mark.requires("cgroup_v1")
@pytest.mark.parametrize("name", list(probes.PROBES))
def test_isobench_default(name, helper, host_ctx, leak_check):
    ok, why = harness.isobench_available()
    if not ok:
        pytest.skip(why)
    p = probes.PROBES[name]
    code, out = harness.run_isobench(probes.render(p.argv, host_ctx), helper.parent, cap_drop=p.cap_drop)
    _record("isobench", name, code, out)


def test_hooks_privileged_opts_out(hooks_rootfs, leak_check):
    """--privileged: no masks, all caps, no seccomp: the probes that the hooks alone stop now get through."""
    code, out = harness.run_hooks(hooks_rootfs, ["/bin/sh", "-c", "grep -E 'CapEff|Seccomp:' /proc/self/status; "
                                                 "head -c 16 /proc/kcore | wc -c; " + probes.HELPER + " keyctl"],
                                  privileged=True)
    eff = int(out.split("CapEff:")[1].split()[0], 16)
    assert eff & (1 << 21), f"CAP_SYS_ADMIN missing when privileged: {out}"
    assert "Seccomp:\t0" in out and "OK keyctl" in out, out


def test_hooks_root_keeps_docker_default_caps(hooks_rootfs, leak_check):
    code, out = harness.run_hooks(hooks_rootfs, ["/bin/sh", "-c", "grep -E 'Cap(Eff|Prm)|NoNewPrivs' /proc/self/status"])
    assert "NoNewPrivs:\t1" in out and "CapEff:\t00000000a80425fb" in out, out


@pytest.mark.parametrize("nnp", [True, False])
def test_hooks_non_root_user_has_no_caps(hooks_rootfs, nnp, leak_check):
    """uid 1000: no capabilities at all (Docker); without no_new_privs the filter is loaded before setuid."""
    code, out = harness.run_hooks(hooks_rootfs, ["/bin/sh", "-c", "grep -E 'Cap(Eff|Prm|Bnd)|NoNewPrivs|Seccomp:' "
                                                 "/proc/self/status; id -u; " + probes.HELPER + " keyctl"],
                                  uid=1000, no_new_privileges=nnp)
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out, out
    assert "CapBnd:\t00000000a80425fb" in out and "Seccomp:\t2" in out and "1000" in out, out
    assert f"NoNewPrivs:\t{int(nnp)}" in out and "DENIED keyctl" in out, out


def test_hooks_seccomp_unconfined_and_profile_file(hooks_rootfs, tmp_path, leak_check):
    code, out = harness.run_hooks(hooks_rootfs, [probes.HELPER, "keyctl"], seccomp="unconfined")
    assert "OK keyctl" in out, out
    prof = tmp_path / "deny-mkdir.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], '
                    '"action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}')
    code, out = harness.run_hooks(hooks_rootfs, ["/bin/sh", "-c", "mkdir /tmp/x && echo MADE"], seccomp=str(prof))
    assert "MADE" not in out and "Permission denied" in out, out


def test_hooks_workloads_still_run(hooks_rootfs, leak_check):
    """The default filter must not break ordinary programs: fork/exec, pipes, subshells, chroot, files."""
    script = ("echo hi | tr a-z A-Z && ls / >/dev/null && (sleep 0.1 &) && wait && "
              "date >/dev/null && id -u && chroot / true && mkdir -p /tmp/w && echo x > /tmp/w/f && echo DONE")
    code, out = harness.run_hooks(hooks_rootfs, ["/bin/sh", "-c", script])
    assert code == 0 and "HI" in out and "DONE" in out, out


def test_helper_compiles_and_runs_natively(helper):
    out = subprocess.run([str(helper), "nope"], capture_output=True, text=True)
    assert out.returncode == 2


@pytest.mark.requires("cgroup_v1")
def test_isobench_init_pid1_exe_unreachable(host_ctx, leak_check):
    """CVE-2019-5736 with --init: PID 1 is the runtime's init (a static binary bound read-only at /dev/init,
    or a non-dumpable fork of the host Python). A container process must not be able to open it for
    writing, and whatever /proc/1/exe resolves to must be a file of the container's own view."""
    ok, why = harness.isobench_available()
    if not ok:
        pytest.skip(why)
    watch = probes.render(probes.PROBES["host_runtime_exe"].argv, host_ctx)[2]
    script = ("(: >> /proc/1/exe) 2>/dev/null && echo OPENED-FOR-WRITE; "
              "(: >> \"$(readlink /proc/1/exe)\") 2>/dev/null && echo TARGET-WRITABLE; " + watch + "; echo END")
    code, out = harness.run_isobench(["/bin/sh", "-c", script], Path("/nonexistent-helper-dir"), extra=("--init",),
                                     with_helper=False)
    assert "END" in out, out
    assert "OPENED-FOR-WRITE" not in out and "TARGET-WRITABLE" not in out, out
    assert "HOSTEXE" not in out, f"PID 1's executable is a host file outside the container's view: {out}"
    RESULTS.setdefault("isobench", {})["init_pid1_exe"] = True


@pytest.mark.requires("cgroup_v1")
def test_build_containers_get_the_same_defaults(tmp_path, isobench_root, leak_check):
    """RUN steps of `isobench image build` run with Docker's default caps, no_new_privs and seccomp."""
    from tests.security import crashkit

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status && "
        "(mount -t tmpfs x /mnt 2>&1 || true) && echo KEYS=$(head -c 64 /proc/keys | wc -c) && "
        "(mkdir /sys/fs/cgroup/pids/isobench-sec-buildprobe 2>/dev/null && echo CGROUP-CREATED-$((40+2)); "
        "rmdir /sys/fs/cgroup/pids/isobench-sec-buildprobe 2>/dev/null; true)\n")
    proc = crashkit.isobench(["image", "build", "--no-cache", "-t", "sec-build-defaults:1", str(ctx)], isobench_root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "CapEff:\t00000000a80425fb" in out, f"build RUN step is not limited to Docker's default caps: {out}"
    assert "Seccomp:\t2" in out and "NoNewPrivs:\t1" in out, out
    assert "KEYS=0" in out, f"/proc/keys is not masked in build containers: {out}"
    assert "CGROUP-CREATED-42" not in out, f"a RUN step could create a host cgroup: {out}"


@pytest.mark.requires("cgroup_v1")
def test_isobench_exec_leaves_no_host_exe_reachable(host_ctx, isobench_root, leak_check):
    """CVE-2019-5736 for `isobench exec`: while a host-Python process joins the container, a process
    already inside loops over /proc/*/exe; none may resolve to a file outside the container."""
    from tests.security import crashkit

    if not harness._cli_has_run():
        pytest.skip("needs the isobench run CLI")
    watch = probes.render(probes.PROBES["host_runtime_exe"].argv, host_ctx)[2]
    loop = f"i=0; while [ $i -lt 60 ]; do {watch}; i=$((i+1)); done > /tmp/watch.log 2>&1; sleep 30"
    started = crashkit.isobench(["run", "-d", "--network", "none", "busybox", "sh", "-c", loop], isobench_root)
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip().splitlines()[-1]
    try:
        for _ in range(5):
            ex = crashkit.isobench(["exec", cid, "sh", "-c", watch + "; echo EXEC-END"], isobench_root)
            assert "EXEC-END" in ex.stdout, ex.stdout + ex.stderr
            RESULTS.setdefault("isobench", {})["exec_host_exe"] = probes.PROBES["host_runtime_exe"].blocked_if(
                ex.returncode, ex.stdout + ex.stderr)
            assert "HOSTEXE" not in ex.stdout and "STATE" not in ex.stdout, ex.stdout
        log = crashkit.isobench(["exec", cid, "cat", "/tmp/watch.log"], isobench_root)
        assert "HOSTEXE" not in log.stdout, f"a container process saw a host executable during exec: {log.stdout}"
    finally:
        crashkit.isobench(["rm", "-f", cid], isobench_root)


@pytest.mark.requires("cgroup_v1", "iptables")
def test_isobench_bridge_cannot_reach_host_loopback(host_ctx, leak_check):
    """With --network bridge the host is the gateway: a 127.0.0.1-only host listener must stay unreachable
    (no route_localnet leak through the port-mapping hairpin rules)."""
    if not harness._cli_has_run():
        pytest.skip("needs the isobench run CLI")
    p = probes.PROBES["host_loopback"]
    code, out = harness.run_isobench(probes.render(p.argv, host_ctx), Path("/nonexistent"), with_helper=False,
                                     extra=("--network", "bridge"))
    assert out.count("nc:") >= 2, f"expected attempts via 127.0.0.1 and via the bridge gateway: {out}"
    RESULTS.setdefault("isobench", {})["host_loopback_bridge"] = p.blocked_if(code, out)
    assert p.blocked_if(code, out), f"a bridge container reached the host-only listener: {out}"


@pytest.mark.requires("cgroup_v1")
@pytest.mark.parametrize("cap,probe", [("SYS_TIME", "set_time"), ("SYS_ADMIN", "mount_fs")])
def test_isobench_cap_add_reopens_exactly_that_door(cap, probe, helper, host_ctx, leak_check):
    """--cap-add gives the capability *and* the syscalls Docker's profile gates on it (both probes are
    harmless when they succeed: settimeofday(NULL, NULL), a tmpfs in the container's mount namespace)."""
    if not harness._cli_has_run():
        pytest.skip("needs the isobench run CLI")
    p = probes.PROBES[probe]
    code, out = harness.run_isobench(probes.render(p.argv, host_ctx), helper.parent, extra=("--cap-add", cap))
    assert not p.blocked_if(code, out), f"--cap-add {cap} did not allow {probe}: {out}"
    code, out = harness.run_isobench(probes.render(probes.PROBES["keyctl"].argv, host_ctx), helper.parent,
                                     extra=("--cap-add", cap))
    assert probes.PROBES["keyctl"].blocked_if(code, out), f"--cap-add {cap} opened keyctl too: {out}"
