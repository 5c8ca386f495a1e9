"""Build containers (RUN steps) through the runtime: output streamed, exit codes, only the command's
changes land in ``upper``, host network, no mounts or cgroups left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.lifecycle.build import run_build_step

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(120)]


@pytest.fixture
def step_dirs(paths, tmp_path):
    from runtime.image.store import ImageStore
    from tests.imagefixtures import ensure_busybox

    img = ensure_busybox(paths)
    lowers = ImageStore(paths).layer_dirs(img)
    dirs = {name: tmp_path / name for name in ("upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    return lowers, dirs


def step(paths, step_dirs, argv, uid=0, gid=0):
    lowers, d = step_dirs
    lines: list[str] = []
    code = run_build_step(paths, lowers, d["upper"], d["work"], d["merged"], argv, ["A=1"], "/", uid, gid,
                          "/root", lines.append)
    return code, lines


def _open_fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own
            pass
    return out


def test_build_step_output_and_changes(paths, step_dirs, leak_check):
    step(paths, step_dirs, ["true"])  # this process's lasting fds (its own PID namespace's) exist from now on
    fds = _open_fds()
    code, lines = step(paths, step_dirs, ["sh", "-c", "hostname; echo $A; mkdir -p /opt/x; echo d > /opt/x/f"])
    assert code == 0 and lines == ["isobench-build", "1"]
    assert _open_fds() == fds  # nothing held: the step's overlay is gone with it
    upper = step_dirs[1]["upper"]
    assert sorted(str(p.relative_to(upper)) for p in upper.rglob("*")) == ["opt", "opt/x", "opt/x/f"]
    assert not any("isobench-build" in ln for ln in Path("/proc/self/mountinfo").read_text().splitlines())


def test_build_step_exit_codes_and_user(paths, step_dirs, leak_check):
    assert step(paths, step_dirs, ["sh", "-c", "exit 5"])[0] == 5
    code, lines = step(paths, step_dirs, ["no-such-tool"])
    assert code == 127 and "no-such-tool" in lines[-1]
    code, lines = step(paths, step_dirs, ["id", "-u"], uid=65534, gid=65534)
    assert (code, lines) == (0, ["65534"])


def test_build_step_shares_the_host_network(paths, step_dirs, leak_check):
    stable = [n for n in os.listdir("/sys/class/net") if n != "lo" and not n.startswith(("isobench", "veth"))]
    if not stable:
        pytest.skip("the host has no network interface besides lo")
    code, lines = step(paths, step_dirs, ["ls", "/sys/class/net"])
    assert code == 0 and stable[0] in lines
