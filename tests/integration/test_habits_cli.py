"""Docker habits a new user tries: argument errors in one short line, --version, a missing absolute
command path, OOMKilled from the cgroup's own OOM counter, `image rm` of an image a container uses,
and `isobench volume ls/inspect/rm/prune` for the named volumes `-v NAME:/x` makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import HostPaths
from runtime.lifecycle import state as S

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(300)]

ISOBENCH = str(Path(sys.executable).with_name("isobench"))


@pytest.fixture
def cli(paths, tmp_path):
    """The `isobench` client without a server (its Python CLI); containers it made are removed after."""
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    before = set(S.all_ids(paths))
    env = {**os.environ, "ISOBENCH_ROOT": str(paths.root), "ISOBENCH_SERVER_SOCKET": str(tmp_path / "none.sock")}

    def run(*argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([ISOBENCH, *argv], env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    run.env = env  # type: ignore[attr-defined]
    yield run
    made = set(S.all_ids(paths)) - before
    if made:
        run("rm", "-f", *sorted(made))


def _one_line(p: subprocess.CompletedProcess) -> str:
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    return p.stderr


def test_argument_errors_are_one_short_line(cli, leak_check):
    p = cli("ps", "-it")
    assert p.returncode == 2 and _one_line(p) == "isobench: unrecognized arguments: -it\n"
    p = cli("nosuchverb")
    assert p.returncode == 2 and _one_line(p) == "isobench: unknown command 'nosuchverb' (see `isobench --help`)\n"
    p = cli("image", "nosuch")
    assert p.returncode == 2 and "isobench image: unknown command 'nosuch'" in _one_line(p)
    p = cli("run", "--memory")
    assert p.returncode == 2 and _one_line(p).startswith("isobench run: ")
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("isobench ") and p.stdout.split()[1][0].isdigit()


def test_missing_absolute_command_says_no_such_file(cli, leak_check):
    for init in ((), ("--init",)):
        p = cli("run", "--rm", "--network", "none", *init, "busybox", "/no/such/prog")
        assert p.returncode == 127, (init, p.stderr)
        assert p.stderr == 'isobench: exec: "/no/such/prog": no such file or directory\n', (init, p.stderr)
    p = cli("run", "--rm", "--network", "none", "busybox", "nosuchprog")
    assert p.returncode == 127 and "not found in $PATH" in p.stderr


def _inspect(cli, ref: str) -> dict:
    p = cli("inspect", ref)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]


def test_oom_killed_comes_from_the_cgroup_counter(cli, leak_check):
    """The README's examples: `tail /dev/zero` as PID 1 is OOM-killed (137, OOMKilled); in the
    pipeline the kernel kills dd (or cat), the shell exits 0 or 1, and OOMKilled is still true,
    as Docker reports it (before: false unless the exit code was 137)."""
    p = cli("run", "--name", "habits-oom1", "--network", "none", "--memory", "32m", "busybox", "tail", "/dev/zero")
    assert p.returncode == 137, p.stderr
    assert _inspect(cli, "habits-oom1")["State"]["OOMKilled"] is True
    p = cli("run", "--name", "habits-oom2", "--network", "none", "--memory", "32m", "busybox", "sh", "-c",
            "dd if=/dev/zero bs=1M count=64 2>/dev/null | cat > /dev/shm/x")
    doc = _inspect(cli, "habits-oom2")
    assert doc["State"]["OOMKilled"] is True, (p.returncode, p.stderr, doc["State"])
    assert cli("rm", "habits-oom1", "habits-oom2").returncode == 0
    p = cli("run", "--name", "habits-nooom", "--network", "none", "--memory", "32m", "busybox", "true")
    assert p.returncode == 0 and _inspect(cli, "habits-nooom")["State"]["OOMKilled"] is False
    cli("rm", "habits-nooom")


def test_image_rm_refuses_an_image_in_use_and_force_keeps_its_layers(cli, tmp_path, leak_check):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo inuse > /f\n")
    assert cli("image", "build", "-q", "-t", "habits-inuse:1", str(ctx)).returncode == 0
    assert cli("run", "--name", "habits-user", "--network", "none", "habits-inuse:1", "true").returncode == 0
    p = cli("image", "rm", "habits-inuse:1")  # a stopped (not removed) container uses it
    assert p.returncode == 1 and "in use by container habits-user" in _one_line(p)
    assert cli("image", "inspect", "habits-inuse:1").returncode == 0
    digest = json.loads(cli("inspect", "habits-user").stdout)[0]["ImageDigest"]
    p = cli("image", "rm", "-f", "habits-inuse:1")
    assert p.returncode == 0, p.stderr
    assert cli("image", "inspect", "habits-inuse:1").returncode != 0  # untagged
    # what the container needs stays (manifest, config, layers), also through another image's rm
    from runtime.image.store import ImageStore

    store = ImageStore(HostPaths(root=paths_root(cli)))
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo other > /f\n")  # another digest
    assert cli("image", "build", "-q", "-t", "habits-other:1", str(ctx)).returncode == 0
    assert cli("image", "rm", "habits-other:1").returncode == 0
    man = store.read_json_blob(digest)
    assert all(store.has_blob(b["digest"]) for b in [man["config"], *man["layers"]])
    assert cli("rm", "habits-user").returncode == 0


def paths_root(cli) -> Path:
    return Path(cli.env["ISOBENCH_ROOT"])


def test_volume_ls_inspect_rm_prune(cli, leak_check):
    p = cli("run", "--name", "habits-vol", "--network", "none", "-v", "habits-data:/data", "busybox", "sh", "-c",
            "echo kept > /data/f")
    assert p.returncode == 0, p.stderr
    assert cli("run", "--rm", "--network", "none", "-v", "habits-spare:/x", "busybox", "true").returncode == 0
    ls = cli("volume", "ls")
    assert ls.returncode == 0 and "habits-data" in ls.stdout and "habits-spare" in ls.stdout, ls.stdout
    line = next(ln for ln in ls.stdout.splitlines() if ln.startswith("habits-data"))
    assert "habits-vol" in line  # used by
    doc = json.loads(cli("volume", "inspect", "habits-data").stdout)[0]
    assert Path(doc["Mountpoint"], "f").read_text() == "kept\n" and doc["UsedBy"] == ["habits-vol"]
    p = cli("volume", "rm", "habits-data")  # the (stopped) container still uses it
    assert p.returncode == 1 and "in use by container habits-vol" in _one_line(p)
    p = cli("volume", "prune")  # removes only the unused one
    assert p.returncode == 0 and "habits-spare" in p.stdout and "habits-data" not in p.stdout, p.stdout
    assert "habits-spare" not in cli("volume", "ls", "-q").stdout.split()
    assert cli("rm", "habits-vol").returncode == 0
    assert cli("volume", "rm", "habits-data").returncode == 0
    assert "habits-data" not in cli("volume", "ls", "-q").stdout.split()
    for argv, needle in ((("volume", "rm", "habits-nosuch"), "no such volume"),
                         (("volume", "inspect", "../etc"), "not valid"),
                         (("run", "--rm", "-v", "a/../../x:/x", "busybox", "true"), "not valid")):
        p = cli(*argv)
        assert p.returncode != 0 and needle in _one_line(p), (argv, p.stderr)
