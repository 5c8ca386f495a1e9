"""The prespawned start helper's plan hand-off (runtime.lifecycle.process): a cgroup the helper joined at
its spawn is not in the plan it gets; a helper that is gone is reported, not waited for. Pipes only."""

from __future__ import annotations

import json
import os

from runtime.lifecycle import process
from runtime.lifecycle.process import LaunchPlan, Prespawned
from runtime.rootfs.mounts import RootfsPlan
from runtime.security import prepare
from runtime.spec import SecuritySpec

JOIN = ("/sys/fs/cgroup/pids/isobench-abc/tasks", "/sys/fs/cgroup/memory/isobench-abc/tasks")


def _plan(**kw) -> LaunchPlan:
    kw.setdefault("cgroup_join", JOIN)
    return LaunchPlan(container_id="abc", hostname="abc", argv=("true",), env=(), workdir="/", uid=0, gid=0,
                      groups=(), rootfs=RootfsPlan(lowerdirs=("/l",), upper="/u", work="/w", merged="/m"),
                      unshare_flags=0, **kw)


def _records(data: bytes) -> list[str]:
    head = data.split(b"seccomp\0", 1)[0]  # the seccomp program is raw bytes at the end
    return head.decode().split("\0")


def _prespawned() -> tuple[Prespawned, int]:
    r_plan, w_plan = os.pipe2(os.O_CLOEXEC)
    r_ready, w_ready = os.pipe2(os.O_CLOEXEC)
    r_go, w_go = os.pipe2(os.O_CLOEXEC)
    for fd in (w_ready, r_go):
        os.close(fd)
    return Prespawned(pid=-1, w_plan=w_plan, r_ready=r_ready, w_go=w_go, joined=JOIN), r_plan


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


def _assert_closed(*fds: int) -> None:
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            continue
        raise AssertionError(f"fd {fd} left open")


def test_a_cgroup_joined_at_spawn_is_not_joined_again():
    p, r_plan = _prespawned()
    assert process._hand_plan(p, _plan(), prepare(SecuritySpec()))
    fields = _records(_read_all(r_plan))
    assert "cgjoin" not in fields and "true" in fields  # the plan, then EOF: its write end was closed
    for fd in (p.r_ready, p.w_go):
        os.close(fd)


def test_another_cgroup_is_still_joined():
    p, r_plan = _prespawned()
    other = _plan(cgroup_join=("/sys/fs/cgroup/pids/isobench-other/tasks",))
    assert process._hand_plan(p, other, prepare(SecuritySpec()))
    fields = _records(_read_all(r_plan))
    assert fields[fields.index("cgjoin") + 1] == "/sys/fs/cgroup/pids/isobench-other/tasks"
    for fd in (p.r_ready, p.w_go):
        os.close(fd)


def test_a_gone_helper_is_reported_and_its_pipes_closed(monkeypatch):
    p, r_plan = _prespawned()
    os.close(r_plan)  # nobody reads: the helper is gone
    reaped = []
    monkeypatch.setattr(process, "_kill_and_reap", reaped.append)
    assert not process._hand_plan(p, _plan(), prepare(SecuritySpec()))
    assert reaped == [-1]
    _assert_closed(p.w_plan, p.r_ready, p.w_go)


def test_only_a_plan_with_a_new_pid_namespace_fits(monkeypatch):
    monkeypatch.setattr(process, "_caller_spawner", None)
    assert process.prespawned_fits(_plan())
    assert not process.prespawned_fits(_plan(pid_ns="host"))
    assert not process.prespawned_fits(_plan(console_fd=5))  # needs the Python child
    monkeypatch.setattr(process, "_caller_spawner", lambda *a: 1)
    assert not process.prespawned_fits(_plan())


def test_spec_json_is_json_dumps_with_the_profile_text_reused():
    from runtime import api
    from runtime.oci import specconv
    from runtime.security import caps

    profile = specconv.seccomp_json(SecuritySpec(), caps.effective_set(last_cap=caps.cap_last_cap()))
    spec = {"ociVersion": "1.0.2", "process": {"env": [f"X={api._SECCOMP_TOKEN}"]},
            "linux": {"namespaces": [{"type": "pid"}], "seccomp": profile, "maskedPaths": ["/proc/kcore"]},
            "annotations": {"a": "b"}}
    for _ in range(2):  # the second time from the cached text
        assert api._spec_json(spec) == json.dumps(spec)
    assert api._spec_json({"linux": {"seccomp": None}}) == json.dumps({"linux": {"seccomp": None}})
    spec["process"]["env"] = [api._SECCOMP_TOKEN]  # the token itself elsewhere: plain json.dumps
    assert api._spec_json(spec) == json.dumps(spec)


def test_a_failing_meanwhile_discards_the_prespawned_helper(monkeypatch):
    """Work done before the helper gets its plan (config.json) fails: the helper, which would wait
    for a plan for ever, is killed and reaped and its pipes closed; the error reaches the caller."""
    r_plan, w_plan = os.pipe2(os.O_CLOEXEC)
    r_ready, w_ready = os.pipe2(os.O_CLOEXEC)
    r_go, w_go = os.pipe2(os.O_CLOEXEC)  # the helper's end stays open: it takes its go-ahead
    p = Prespawned(pid=-1, w_plan=w_plan, r_ready=r_ready, w_go=w_go, joined=JOIN)
    reaped = []
    monkeypatch.setattr(process, "_caller_spawner", None)
    monkeypatch.setattr(process, "_kill_and_reap", reaped.append)

    def meanwhile():
        raise OSError(28, "No space left on device")

    try:
        process.spawn(_plan(), prepare(SecuritySpec()), (0, 1, 2), lambda pid: None, None, meanwhile, p)
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("spawn did not raise")
    assert reaped == [-1]
    assert _read_all(r_plan) == b""  # no plan was handed over, and its write end is closed
    assert _read_all(r_go) == b"CG"  # its go-ahead (cgroup ready, no handshake) came before the failure
    os.close(w_ready)
    _assert_closed(p.w_plan, p.r_ready, p.w_go)
