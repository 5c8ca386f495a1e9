"""Registry images through skopeo against a real registry on loopback: Debian's docker-registry
(distribution 2.8), started here on 127.0.0.1:<free port> with its storage in tmp_path and stopped by
its pid. Push an image built here, remove it locally, pull it back with the same digest, build
``FROM localhost:PORT/name:tag``; bad references and an unreachable registry give one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(300)]

ISOBENCH = str(Path(sys.executable).with_name("isobench"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(tmp_path):
    """``localhost:PORT`` of a private docker-registry; stopped (by pid) and its storage removed after."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (make setup installs it)")
    port = _free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "
                   f"{tmp_path / 'registry-data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(tmp_path / 'registry.log').read_text()}")
                time.sleep(0.05)
        yield f"localhost:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def cli(paths, tmp_path):
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    env = {**os.environ, "ISOBENCH_ROOT": str(paths.root), "ISOBENCH_SERVER_SOCKET": str(tmp_path / "none.sock")}

    def run(*argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([ISOBENCH, *argv], env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    return run


def _digest(cli, name: str) -> str:
    import json

    p = cli("image", "inspect", name)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["Id"]


def test_push_rm_pull_same_digest_and_build_from_registry(registry, cli, tmp_path, leak_check):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox\nRUN echo pushed > /msg\nCMD ["cat", "/msg"]\n')
    b = cli("image", "build", "-q", "-t", "habits-push:1", str(ctx))
    assert b.returncode == 0, b.stderr
    built = _digest(cli, "habits-push:1")
    ref = f"{registry}/habits/app:1"
    p = cli("image", "push", "habits-push:1", ref)
    assert p.returncode == 0 and built in p.stdout, p.stderr
    assert cli("image", "rm", "habits-push:1").returncode == 0
    assert cli("image", "inspect", "habits-push:1").returncode != 0  # gone locally
    p = cli("image", "pull", ref)
    assert p.returncode == 0, p.stderr
    assert _digest(cli, ref) == built  # identical digest after the round trip
    run = cli("run", "--rm", "--network", "none", ref)
    assert (run.returncode, run.stdout) == (0, "pushed\n"), run.stderr
    # FROM a registry image that is not in the store: pulled by the build
    assert cli("image", "rm", ref).returncode == 0
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN echo built-on-top >> /msg\n")
    b = cli("image", "build", "-t", "habits-from:1", str(ctx))
    assert b.returncode == 0, b.stderr
    run = cli("run", "--rm", "--network", "none", "habits-from:1")
    assert (run.returncode, run.stdout) == (0, "pushed\nbuilt-on-top\n"), run.stderr
    for name in ("habits-from:1", ref):
        cli("image", "rm", name)


def test_bad_reference_missing_image_and_unreachable_registry_one_line(registry, cli, leak_check):
    closed = f"localhost:{_free_port()}"
    cases = (
        (("image", "pull", "Bad::Ref"), "invalid image reference"),
        (("image", "pull", f"{registry}/no/such:1"), "no such image in registry"),
        (("image", "pull", f"{closed}/x:1"), "cannot reach registry"),
        (("image", "push", "busybox", f"{closed}/x:1"), "cannot reach registry"),
        (("image", "push", "no-such-image:1", f"{registry}/x:1"), "unknown image"),
    )
    for argv, needle in cases:
        p = cli(*argv)
        assert p.returncode != 0 and needle in p.stderr, (argv, p.stderr)
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (argv, p.stderr)
