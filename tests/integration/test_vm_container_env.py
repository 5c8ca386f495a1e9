"""The vm-container environments end to end: containers inside a booted Linux guest, with isobench's
runtime (``vm-container``) and with runc (``vm-container-runc``), driven from the host as the bench does.

One guest boots for the whole module (TCG here: ~15 s to the agent) and both environments share it, as
they do in a bench run. Each runtime runs a job to completion (output, exit codes) and a published
port (HTTP from the host through host DNAT -> VM -> guest DNAT -> container); the guest's store holds the
host's image digest (and, for runc's bundle, its flat rootfs). The module's own leak check covers the
guest itself; every test also ends with the usual one (taken with the guest up).
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from bench.environments.base import Job
from tests import hostprobe

pytestmark = pytest.mark.requires("root", "libvirt", "qemu", "busybox")

RUNTIMES = ("vm-container", "vm-container-runc")
HTTP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def guest_envs(isobench_root):
    """Both environments on one booted guest carrying the bench busybox image; on teardown the guest
    is destroyed and nothing named isobench may be left on the host."""
    from bench.environments import images, vm_container
    from core.paths import HostPaths

    paths = HostPaths(root=isobench_root).ensure()
    rec = images.ensure(paths, ("busybox",))["busybox"]
    before = hostprobe.host_objects()
    envs = {}
    try:
        envs["vm-container"] = vm_container.VMContainerEnvironment(paths, images=(rec,))
        envs["vm-container-runc"] = vm_container.VMContainerRuncEnvironment(paths, images=(rec,))
        yield rec, envs
    finally:
        for env in envs.values():
            env.close()
        left = hostprobe.leaks(before, hostprobe.host_objects())
        assert not left, f"the vm-container guest left host objects behind: {left}"


@pytest.fixture
def leak_check(guest_envs):
    """The usual per-test leak check, taken once the module's guest is up (conftest's own would take
    its first snapshot before the module fixture boots the guest, and count the guest as a leak)."""
    before = hostprobe.host_objects()
    yield
    left = hostprobe.leaks(before, hostprobe.host_objects())
    assert not left, f"test leaked host objects: {left}"


def _job(rec, argv, **kw) -> Job:
    return Job(image=rec.name, argv=tuple(argv), timeout_s=60, **kw)


def test_one_guest_serves_both_runtimes_with_the_hosts_image_digest(guest_envs, leak_check):
    from vmharness import accel

    rec, envs = guest_envs
    iso, runc = envs["vm-container"], envs["vm-container-runc"]
    assert iso.guest is runc.guest, "the two columns must share one booted guest"
    assert iso.info["cgroup"] == "v2" and {"cpu", "memory", "pids", "io"} <= set(iso.info["controllers"])
    held = iso.guest.call({"op": "images"})
    assert held["images"].get(rec.name) == rec.manifest_digest
    assert rec.manifest_digest.split(":", 1)[1] in held["flat"], "runc's flat rootfs is not on the guest disk"
    # the accelerator the report labels the columns with is the one the guest really ran with
    want, _ = accel.choose("auto", iso.paths)
    if not hostprobe.feature("kvm")[0]:
        assert want == "tcg"  # this host: /dev/kvm cannot boot a guest, the columns must say TCG
    for env in envs.values():
        name, reason = env.accelerator()
        assert name == want and reason
        d = env.describe()
        assert d["accelerator"] == name and f"accelerator {name}" in d["execution"]
    assert envs["vm-container-runc"].describe()["runtime"] == "runc"
    assert envs["vm-container-runc"].describe()["execution"].startswith("runc")


@pytest.mark.parametrize("env_name", RUNTIMES)
def test_a_job_runs_to_completion_with_output_and_exit_code(guest_envs, leak_check, env_name):
    rec, envs = guest_envs
    env = envs[env_name]
    out = env.run(_job(rec, ["echo", "hello from the guest"]))
    assert (out.exit_code, out.output) == (0, "hello from the guest\n")
    assert out.extra["accel"] == env.accelerator()[0]
    assert 0 < out.extra["guest_wall_s"] <= out.wall_s      # the host's span includes the guest's
    assert out.extra.get("cpu_usage_s", 0) > 0              # read from the container's v2 cgroup in the guest
    assert env.run(_job(rec, ["sh", "-c", "echo oops >&2; exit 3"])).exit_code == 3
    assert env.run(_job(rec, ["true"])).exit_code == 0
    gone = env.run(_job(rec, ["/no/such/program"]))
    assert gone.exit_code != 0


@pytest.mark.parametrize("env_name", RUNTIMES)
def test_a_published_port_crosses_host_vm_and_container(guest_envs, leak_check, env_name):
    rec, envs = guest_envs
    env = envs[env_name]
    inst = env.start(_job(rec, ["httpd", "-f", "-p", "{port}", "-h", "/www"], port=80))
    try:
        host, port = inst.endpoint
        assert host == "127.0.0.1"
        vm_hop, _, ctr_hop = inst.target.partition(" -> ")
        assert vm_hop.startswith(f"{env.guest.ip}:") and ctr_hop.endswith(":80"), inst.target
        deadline, body, last = time.monotonic() + HTTP_TIMEOUT_S, None, None
        while body is None and time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=5).read()
            except OSError as exc:
                last = exc
                time.sleep(0.2)
        assert body == b"ok\n", f"no answer through {inst.endpoint} -> {inst.target}: {last}"
        u = inst.usage()
        assert u.pss_bytes > 0 and "QEMU PSS" in u.detail and u.memory_peak_bytes
    finally:
        inst.stop()
    inst.stop()  # idempotent
