"""One bundle, two runtimes: a bundle made by the spec converter runs the same process, with the same
limits, under runc and under isobench's create-from-bundle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.spec import ContainerConfig, NetworkSpec, Resources

pytestmark = [pytest.mark.requires("root", "busybox", "runc"), pytest.mark.timeout(120)]

PROBE = ("sh", "-c", "id -u; hostname; cat /proc/self/status | grep CapBnd; ulimit -n; "
         "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; echo $FOO; pwd")


def _config() -> ContainerConfig:
    return ContainerConfig(image="busybox", command=PROBE, env=("FOO=bar",), workdir="/tmp",
                           hostname="same", network=NetworkSpec(mode="none"), resources=Resources(pids_max=42))


def test_runc_and_isobench_run_the_same_bundle(paths, tmp_path, leak_check):
    from tests.imagefixtures import ensure_busybox
    from runtime import api
    from runtime.oci import bundle
    from core.paths import new_id

    ensure_busybox(paths)
    rid = f"isobench-{new_id()}"
    made = bundle.from_image(paths, _config(), tmp_path / "b", cgroups_path=f"/{rid}")
    # runc's own default: /sys/fs/cgroup read-only, showing the container's cgroup (isobench leaves it
    # out of its defaults; a bundle that asks gets it, here from both runtimes)
    made.spec["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    bundle.write(tmp_path / "b", made.spec)
    assert (tmp_path / "b" / "config.json").is_file() and (tmp_path / "b" / "rootfs" / "bin").is_dir()
    try:
        runc = subprocess.run(["runc", "run", "--bundle", str(tmp_path / "b"), rid], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["runc", "delete", "--force", rid], capture_output=True)
        for d in Path("/sys/fs/cgroup").glob(f"*/{rid}"):
            d.rmdir()
    assert runc.returncode == 0, runc.stderr

    spec = dict(made.spec, linux={k: v for k, v in made.spec["linux"].items() if k != "cgroupsPath"})
    bundle.write(tmp_path / "b", spec)  # the runtime's own cgroup name, isobench-<id>
    out = tmp_path / "out"
    with open(out, "wb") as f:
        c = api.create_from_bundle(tmp_path / "b", paths, stdio=(0, f.fileno(), f.fileno()))
        try:
            api.start(c)
            assert api.wait(c, timeout_s=30) == 0
        finally:
            api.delete(c, force=True)
    ours = out.read_text()
    lines = runc.stdout.splitlines()
    assert lines[0] == "0" and lines[1] == "same" and lines[4] == "42" and lines[5] == "bar" and lines[6] == "/tmp"
    assert ours.splitlines() == lines
    shutil.rmtree(tmp_path / "b")


def test_bad_bundle_is_one_line_and_leaves_nothing(paths, tmp_path, leak_check):
    from runtime import api
    from runtime.oci.bundle import BundleError
    from runtime.lifecycle import state as S

    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": []}, "root": {"path": "r"}}')
    before = set(S.all_ids(paths))
    with pytest.raises(BundleError, match="process: args must be a non-empty array"):
        api.create_from_bundle(tmp_path, paths)
    assert set(S.all_ids(paths)) == before
