"""Escape through a symlink in the image at a volume's mount point.

An image can ship ``/vol -> /some/host/path`` (absolute) or ``/vol -> ../../../../some/host/path``
(relative). A runtime that joins ``rootfs + "/vol"`` and lets the *host* kernel follow the link mounts
the volume — and lets the container write — outside the rootfs. Inside the container both links must
resolve within its own root (runc uses securejoin for this). Checked from both sides: the container
must see the volume's content at /vol and its write must land in the volume, and the host directory the
link names must stay untouched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.security import crashkit, harness
from tests.security.conftest import RESULTS

pytestmark = pytest.mark.requires("root", "busybox")

SCRIPT = "cat /vol/marker; echo written-by-container > /vol/written; echo EXIT=$?"


def _host_setup(tmp_path: Path) -> tuple[Path, Path]:
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    (host_dir / "host-secret").write_text("HOST\n")
    src = tmp_path / "volsrc"
    src.mkdir()
    (src / "marker").write_text("VOLUME-CONTENT\n")
    return host_dir, src


def _links(host_dir: Path) -> dict[str, str]:
    return {"absolute": str(host_dir), "relative": "../" * 12 + str(host_dir).lstrip("/")}


def _verdict(runtime: str, kind: str, out: str, host_dir: Path, src: Path) -> None:
    host_untouched = sorted(p.name for p in host_dir.iterdir()) == ["host-secret"]
    in_volume = (src / "written").exists()
    mounted_on_host = any(str(host_dir) == ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines())
    blocked = host_untouched and not mounted_on_host and ("VOLUME-CONTENT" in out and in_volume
                                                         or "VOLUME-CONTENT" not in out)
    RESULTS.setdefault(runtime, {})[f"image_symlink_{kind}"] = blocked
    assert host_untouched, f"{runtime}: the container wrote into the host dir {host_dir}: {list(host_dir.iterdir())}"
    assert not mounted_on_host, f"{runtime}: the volume was mounted on the host path {host_dir}"
    if "VOLUME-CONTENT" in out:
        assert in_volume, f"{runtime}: the container saw the volume but its write went elsewhere: {out}"


@pytest.mark.requires("runc")
@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_runc_image_symlink_at_mount_point(kind, tmp_path, helper, leak_check):
    host_dir, src = _host_setup(tmp_path)
    bundle = harness.runc_bundle(tmp_path / "bundle", helper)
    (bundle / "rootfs" / "vol").symlink_to(_links(host_dir)[kind])
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["mounts"].append({"destination": "/vol", "type": "bind", "source": str(src), "options": ["rbind", "rw"]})
    (bundle / "config.json").write_text(json.dumps(cfg))
    code, out = harness.run_runc(bundle, ["/bin/sh", "-c", SCRIPT], tmp_path)
    _verdict("runc", kind, out, host_dir, src)


@pytest.mark.requires("cgroup_v1")
@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_isobench_image_symlink_at_mount_point(kind, tmp_path, isobench_root, leak_check):
    ok, why = harness.isobench_available()
    if not ok:
        pytest.skip(why)
    host_dir, src = _host_setup(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN ln -s {_links(host_dir)[kind]} /vol\n")
    tag = f"symlink-escape-{kind}:1"
    crashkit.isobench(["image", "build", "-t", tag, str(ctx)], isobench_root, check=True)
    proc = subprocess.run([*crashkit_cli(), "run", "--rm", "--network", "none", "-v", f"{src}:/vol", tag,
                           "sh", "-c", SCRIPT], cwd=crashkit.REPO, env=crashkit.cli_env(isobench_root),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    _verdict("isobench", kind, proc.stdout + proc.stderr, host_dir, src)


def crashkit_cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "app.cli"]


@pytest.mark.requires("cgroup_v1")
def test_isobench_image_symlinks_at_etc_files(tmp_path, isobench_root, leak_check):
    """The runtime bind-mounts its own /etc/hostname, /etc/hosts and /etc/resolv.conf: image symlinks at
    those paths pointing to host files must neither redirect the mounts nor let the host files be written."""
    ok, why = harness.isobench_available()
    if not ok or not harness._cli_has_run():
        pytest.skip(why or "needs the isobench run CLI")
    host = {n: tmp_path / f"host-{n}" for n in ("hostname", "hosts", "resolv.conf")}
    for p in host.values():
        p.write_text("HOST-ORIGINAL\n")
    # RUN cannot replace these files (they are bind-mounted in build containers, as in Docker): import a
    # crafted rootfs instead
    rootfs = harness.busybox_rootfs(tmp_path / "rootfs", None)
    for i, (n, p) in enumerate(host.items()):
        (rootfs / "etc" / n).unlink(missing_ok=True)
        (rootfs / "etc" / n).symlink_to(str(p) if i % 2 else "../" * 10 + str(p).lstrip("/"))
    crashkit.isobench(["image", "import", str(rootfs), "symlink-etc:1"], isobench_root, check=True)
    script = ("cat /etc/hostname /etc/hosts /etc/resolv.conf 2>&1; "
              "for f in /etc/hostname /etc/hosts /etc/resolv.conf; do echo PWNED > $f; done 2>&1; echo END")
    proc = subprocess.run([*crashkit_cli(), "run", "--rm", "--network", "none", "symlink-etc:1", "sh", "-c", script],
                          cwd=crashkit.REPO, env=crashkit.cli_env(isobench_root), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    changed = {n: p.read_text() for n, p in host.items() if p.read_text() != "HOST-ORIGINAL\n"}
    RESULTS.setdefault("isobench", {})["image_symlink_etc_files"] = not changed
    assert not changed, f"host files written through image symlinks at /etc: {changed}; output: {out}"
    assert "HOST-ORIGINAL" not in out, f"the container read host files through /etc symlinks: {out}"
    assert "END" in out, f"the container did not run (nothing was tested): {out}"
