"""Guest artifacts without a VM: module order, initrd contents, the init shim and the run fragment."""

import base64
import gzip
import lzma
import subprocess

import pytest

from core.errors import VMError
from vmharness import artifacts as art
from vmharness.vm import kernel_cmdline, plan_command, host_tsc_khz

DEP = """kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
"""


def test_module_order_puts_dependencies_first_once():
    order = art.module_load_order(DEP, ["virtio_blk", "ext4", "not_a_module"])
    names = [art.module_name(p) for p in order]
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_blk")
    assert names.index("jbd2") < names.index("ext4") and names.index("crc16") < names.index("ext4")
    assert len(names) == len(set(names))
    assert "not_a_module" not in names


def test_module_name_normalizes():
    assert art.module_name("kernel/x/virtio-pci.ko.xz") == "virtio_pci"


def test_find_kernel_missing_names_the_package(tmp_path):
    with pytest.raises(VMError, match="linux-image-amd64"):
        art.find_kernel(boot_dir=tmp_path / "boot", modules_dir=tmp_path / "mods")


def test_find_kernel_picks_newest_with_modules(tmp_path):
    boot, mods = tmp_path / "boot", tmp_path / "mods"
    boot.mkdir()
    for v in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.2.0-1-amd64"):
        (boot / f"vmlinuz-{v}").write_text("k")
    for v in ("6.1.0-9-amd64", "6.1.0-56-amd64"):
        (mods / v).mkdir(parents=True)
        (mods / v / "modules.dep").write_text("")
    assert art.find_kernel(boot, mods).version == "6.1.0-56-amd64"


def _newc_names(data: bytes) -> list[str]:
    names, off = [], 0
    while True:
        hdr = data[off:off + 110]
        assert hdr[:6] == b"070701"
        fsize, nsize = int(hdr[54:62], 16), int(hdr[94:102], 16)
        name = data[off + 110: off + 110 + nsize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names.append(name)
        off += 110 + nsize
        off += (4 - off % 4) % 4
        off += fsize
        off += (4 - off % 4) % 4


def test_initrd_holds_busybox_modules_and_init(tmp_path):
    mods = tmp_path / "mods" / "6.1-test"
    for rel in (line.split(":")[0] for line in DEP.splitlines()):
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"\x7fELFmod")
    (mods / "modules.dep").write_text(DEP)
    fake_bb = tmp_path / "busybox"
    fake_bb.write_bytes(b"\x7fELFbusybox")
    k = art.GuestKernel("6.1-test", tmp_path / "vmlinuz", mods)
    out = tmp_path / "initrd.gz"
    art.build_initrd(k, out, busybox=fake_bb)
    names = _newc_names(gzip.decompress(out.read_bytes()))
    assert "init" in names and "bin/busybox" in names and "lib/modules/virtio_blk.ko" in names
    assert "lib/modules/ext4.ko" in names and "lib/modules/jbd2.ko" in names
    cpio = gzip.decompress(out.read_bytes())
    assert b"insmod" in cpio and b"switch_root /newroot /.isobench/busybox sh /.isobench/init" in cpio


def test_initrd_init_loads_modules_in_order():
    text = art.render_initrd_init(["kernel/a/virtio.ko", "kernel/b/virtio_blk.ko"])
    assert "for m in virtio.ko virtio_blk.ko" in text
    assert "ISOBENCH-INITRD" in text and "ISOBENCH-PANIC" in text


def test_shim_mounts_sets_network_reports_and_powers_off():
    shim = art.render_shim()
    for needle in ("mount -t proc proc /proc", "mount -t sysfs sysfs /sys", "hostname", "ip addr add",
                   "ip route add default via", "ISOBENCH-INIT", "ISOBENCH-READY", "ISOBENCH-EXIT $RC",
                   "poweroff -f", "base64 -d"):
        assert needle in shim, needle
    # the shim is valid shell
    assert subprocess.run(["/bin/busybox", "sh", "-n", "-c", shim]).returncode == 0


def test_run_fragment_applies_env_workdir_and_user():
    frag = art.run_fragment(["sh", "-c", "echo 'a b'"], ["PATH=/bin", "X=1 2"], "/srv", (1000, 100))
    assert frag.startswith("WORKDIR=/srv\n")
    out = subprocess.run(["/bin/busybox", "sh", "-c", frag + 'for a in "$@"; do echo "[$a]"; done'],
                         capture_output=True, text=True).stdout.split("\n")
    assert out[:6] == ["[/.isobench/busybox]", "[env]", "[-i]", "[PATH=/bin]", "[X=1 2]", "[/.isobench/setuid]"]
    assert out[6:11] == ["[1000]", "[100]", "[sh]", "[-c]", "[echo 'a b']"]


def test_plan_uses_image_entrypoint_cmd_env_and_overrides():
    conf = {"config": {"Entrypoint": ["/entry"], "Cmd": ["serve"], "Env": ["PATH=/x", "A=1"], "WorkingDir": "/app",
                       "User": "web"}}
    p = plan_command(conf, None, env=("A=2", "B=3"))
    assert p.argv == ("/entry", "serve") and p.workdir == "/app" and p.user == "web"
    assert "A=2" in p.env and "B=3" in p.env and "PATH=/x" in p.env
    assert plan_command(conf, ["other"]).argv == ("/entry", "other")
    with pytest.raises(VMError, match="no command"):
        plan_command({"config": {}}, None)


def test_resolve_user_from_image_files(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    assert art.resolve_user("", tmp_path) is None and art.resolve_user("root", tmp_path) is None
    assert art.resolve_user("web", tmp_path) == (33, 34)
    assert art.resolve_user("web:staff", tmp_path) == (33, 50)
    assert art.resolve_user("1234:5", tmp_path) == (1234, 5)
    with pytest.raises(VMError, match="nobody"):
        art.resolve_user("nobody", tmp_path)


def test_kernel_cmdline_carries_the_run_fragment():
    line = kernel_cmdline("set -- echo hi\n", "h1", "10.88.0.5/16", "10.88.0.1", tsc_khz=2596000)
    parts = dict(p.split("=", 1) for p in line.split() if "=" in p)
    assert base64.b64decode(parts["isobench.run"]).decode() == "set -- echo hi\n"
    assert parts["isobench.ip"] == "10.88.0.5/16" and parts["isobench.gw"] == "10.88.0.1"
    assert parts["tsc_early_khz"] == "2596000" and parts["console"] == "ttyS0"
    with pytest.raises(VMError, match="too long"):
        kernel_cmdline("x" * 3000, "h")


def test_host_tsc_from_cpuinfo():
    assert host_tsc_khz("processor: 0\ncpu MHz\t\t: 2596.148\n") == 2596148
    assert host_tsc_khz("nothing") is None


def test_extract_vmlinux_from_xz_payload():
    elf = b"\x7fELF" + b"\0" * 100
    bz = b"MZ-setup-code" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert art.extract_vmlinux(bz) == elf
    assert art.extract_vmlinux(b"no payload") is None


def test_disk_size_has_headroom():
    assert art.disk_size_mib(100 * 2**20, extra_mib=512) == 130 + 64 + 512
