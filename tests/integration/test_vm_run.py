"""The VM harness for real: libvirt + QEMU (TCG here) booting the busybox image.

One session-scoped artifacts build is shared by every test (each TCG boot then costs ~5-10 s). Every
test ends with the leak check: no ``isobench-*`` domain, tap, QEMU process or rule may be left, and
the overlay disks must be gone.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.errors import IsobenchError, VMError
from runtime.spec import PortMapping

pytestmark = pytest.mark.requires("root", "libvirt", "qemu", "busybox")

ISOBENCH = [sys.executable, "-m", "app.cli"]


@pytest.fixture(scope="session")
def vm_paths(isobench_root):
    """The session's state root with the busybox image's VM artifacts built once."""
    from core.paths import HostPaths
    from vmharness import artifacts as art
    from vmharness.vm import resolve_image

    paths = HostPaths(root=isobench_root).ensure()
    img = resolve_image("busybox", paths)
    art.ensure_artifacts(paths.vm_artifacts, img.digest, img.rootfs)
    return paths


def _overlays(paths) -> list[Path]:
    return sorted(paths.vms.glob("*/disk.qcow2")) if paths.vms.is_dir() else []


def _domains(paths) -> set[str]:
    """isobench domains of this test session's state root (other roots may run VMs concurrently)."""
    from vmharness import hypervisor

    return {name for name, xml in hypervisor.domain_xmls().items()
            if name.startswith("isobench-") and str(paths.root) in xml}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*ISOBENCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


def test_echo_hello_returns_output_exit_code_and_phases(vm_paths, leak_check):
    from vmharness import api

    res = api.run("busybox", ["echo", "hello"], api.VMRunConfig(network="none", memory_mib=256), vm_paths)
    assert res.exit_code == 0
    assert res.output == "hello\n"
    assert res.accel in ("kvm", "tcg") and res.accel_reason
    ph = res.phases
    order = ["create", "qemu_up", "first_output", "initrd", "init_started", "ready", "exited", "gone"]
    assert [p for p in order if p in ph] == order, ph
    assert all(ph[a] <= ph[b] for a, b in zip(order, order[1:])), ph
    assert res.console_log.is_file() and "ISOBENCH-EXIT 0" in res.console_log.read_text()
    assert res.artifacts_s < 1.0, "artifacts of a cached image must be reused"
    assert not _overlays(vm_paths)


def test_exit_status_env_workdir_user_through_the_cli(vm_paths, leak_check):
    r = _cli("vm", "run", "--rm", "--network", "none", "--memory", "256m", "-e", "FOO=bar", "-w", "/etc",
             "-u", "65534:65534", "busybox", "sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g); exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "bar /etc 65534:65534\n"
    assert not _overlays(vm_paths)


def test_kernel_panic_is_reported_with_console_tail(vm_paths, leak_check):
    from vmharness import api

    with pytest.raises(VMError, match=r"kernel panic while running the workload: Kernel panic - not syncing: "
                                      r"sysrq triggered crash.*full console log"):
        api.run("busybox", ["sh", "-c", "echo c > /proc/sysrq-trigger"],
                api.VMRunConfig(network="none", memory_mib=256), vm_paths)
    assert not _overlays(vm_paths)


def test_http_from_guest_through_published_port(vm_paths, leak_check):
    from vmharness import api

    port = _free_port()
    cfg = api.VMRunConfig(network="bridge", memory_mib=256, ports=(PortMapping(port, 80, "tcp", "127.0.0.1"),))
    vm = api.start("busybox", ["httpd", "-f", "-p", "80", "-h", "/etc"], cfg, vm_paths)
    try:
        vm.wait_ready()
        assert vm.ip.startswith("10.")
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=3).read()
                break
            except OSError:
                time.sleep(0.3)
        assert b"root:" in body
        use = vm.usage()
        assert use.pss_bytes > 0 and use.guest_ram_bytes == 256 * 2**20
        assert 0 < use.overhead_pss_bytes < use.pss_bytes
        tap = f"isobench-{vm.id[:6]}"
        assert Path(f"/sys/class/net/{tap}").exists()
    finally:
        vm.close()
    assert not Path(f"/sys/class/net/{tap}").exists()
    assert not _overlays(vm_paths)


def test_user_mode_network_with_port_forward(vm_paths, leak_check):
    from vmharness import api

    port = _free_port()
    cfg = api.VMRunConfig(network="user", memory_mib=256, ports=(PortMapping(port, 8080),))
    vm = api.start("busybox", ["httpd", "-f", "-p", "8080", "-h", "/etc"], cfg, vm_paths)
    try:
        vm.wait_ready()
        deadline = time.monotonic() + 30
        body = b""
        while time.monotonic() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/group", timeout=3).read()
            except OSError:
                time.sleep(0.3)
        assert b"root:" in body
    finally:
        vm.close()


def test_boot_timeout_destroys_domain_and_keeps_console_log(vm_paths, leak_check):
    from vmharness import api

    with pytest.raises(VMError, match=r"did not reach the workload within 0 s.*full console log: (\S+)") as ei:
        api.run("busybox", ["true"], api.VMRunConfig(network="none", memory_mib=256, boot_timeout_s=0.3),
                vm_paths)
    assert "\n" not in str(ei.value)
    log = Path(str(ei.value).rsplit("full console log: ", 1)[1])
    assert log.exists()
    assert not _domains(vm_paths) & {f"isobench-{p.parent.name}" for p in _overlays(vm_paths)}
    assert not _overlays(vm_paths)


def test_ctrl_c_destroys_the_domain(vm_paths, leak_check):
    before = _domains(vm_paths)
    proc = subprocess.Popen([*ISOBENCH, "vm", "run", "--rm", "--network", "none", "--memory", "256m", "busybox",
                             "sleep", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (_domains(vm_paths) - before):
            time.sleep(0.2)
        assert _domains(vm_paths) - before, "the VM never started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert not (_domains(vm_paths) - before)
    assert not _overlays(vm_paths)


def test_gc_removes_orphaned_domain_and_overlay(vm_paths, leak_check):
    from core import leases
    from vmharness import gc as vmgc
    from vmharness import vm as vmmod

    img = vmmod.resolve_image("busybox", vm_paths)
    vm = vmmod.create(img, ["sleep", "600"], paths=vm_paths, memory_mib=256)
    try:
        leases.release(vm.id)  # as if the creator had crashed: no live lease
        removed = vmgc.gc(vm_paths)
        assert f"domain {vm.name}" in removed
        assert not vmmod.domain_active(vm.name)
        assert not (vm.dir / "disk.qcow2").exists()
    finally:
        vm.close()


@pytest.mark.parametrize("args, code, needle", [
    (["vm", "run", "--rm", "no-such-image:1", "true"], 1, "unknown image 'no-such-image:1'"),
    (["vm", "run", "--rm", "--memory", "64m", "busybox", "true"], 2, "minimum 128m"),
    (["vm", "run", "--rm", "--vcpus", "99", "busybox", "true"], 2, "--vcpus 99 exceeds the"),
    (["vm", "run", "--rm", "--accel", "kvm", "busybox", "true"], None, None),
])
def test_bad_input_is_one_line_and_leaves_nothing(vm_paths, leak_check, args, code, needle):
    from vmharness.accel import probe_cached

    if "--accel" in args:
        if probe_cached(vm_paths).accel == "kvm":
            pytest.skip("KVM works here: --accel kvm is valid")
        code, needle = 1, "--accel kvm: KVM is not usable on this host"
    before = sorted(p.name for p in vm_paths.vms.iterdir()) if vm_paths.vms.is_dir() else []
    r = _cli(*args)
    assert r.returncode == code, r.stderr
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    after = sorted(p.name for p in vm_paths.vms.iterdir()) if vm_paths.vms.is_dir() else []
    assert [p for p in after if p != "logs"] == [p for p in before if p != "logs"]


def test_port_in_use_is_one_line_and_leaves_nothing(vm_paths, leak_check):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for net in ("user", "bridge"):
            r = _cli("vm", "run", "--rm", "--network", net, "-p", f"127.0.0.1:{port}:80", "busybox", "true")
            assert r.returncode == 1, r.stderr
            assert "already in use" in r.stderr and str(port) in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not _overlays(vm_paths)


def test_missing_kernel_names_the_package(tmp_path):
    from vmharness.artifacts import find_kernel

    with pytest.raises(IsobenchError, match="linux-image-amd64"):
        find_kernel(boot_dir=tmp_path, modules_dir=tmp_path)


def test_kvm_probe_notices_a_hanging_guest_within_its_bound(vm_paths, leak_check):
    """With QEMU's default CPU model (no host-passthrough) nested KVM here hangs instead of aborting:
    the probe must give up after its bound, destroy the probe VM and report why."""
    from vmharness import accel as accel_mod

    if not Path("/dev/kvm").exists():
        pytest.skip("/dev/kvm missing: the probe does not boot at all")
    before = _domains(vm_paths)
    t = time.monotonic()
    out = accel_mod.probe_boot(vm_paths, 3.0, kvm_cpu_passthrough=False)
    elapsed = time.monotonic() - t
    assert elapsed < 3.0 + 5.0, "the probe must not hang"
    if not out.reached_init:
        assert "hung" in out.detail or "exited" in out.detail or "failed" in out.detail
    assert not (_domains(vm_paths) - before)


@pytest.mark.requires("kvm")
def test_kvm_boot(vm_paths, leak_check):
    from vmharness import api

    res = api.run("busybox", ["echo", "kvm"], api.VMRunConfig(network="none", accel="kvm"), vm_paths)
    assert res.accel == "kvm" and res.output == "kvm\n" and res.exit_code == 0
