"""Guest artifacts made from an image: an ext4 disk, the guest kernel, a small initrd and the init shim.

A VM must run the *same bytes* as the containers, so the disk is the image's flattened rootfs turned
into ext4 with ``mkfs.ext4 -d`` (no loop mount: works in any mount namespace and leaves nothing
mounted), plus a ``/.isobench`` directory (static busybox, the init shim, an optional setuid helper)
written with ``debugfs``. The shim mounts a pure cgroup v2 hierarchy with its controllers enabled, so
a runtime inside the guest (the vm-container environment) drives cgroup v2 for real. The kernel is the Debian ``linux-image-amd64`` one under /boot; its stock
initrd probes every driver and is slow under TCG, so we build a tiny initrd: busybox plus the handful
of modules (virtio, virtio_blk, ext4, virtio_net ...) copied from ``/lib/modules/<kver>`` with their
dependencies from ``modules.dep``. Everything is cached by image manifest digest (disk) or kernel
version (initrd) under ``paths.vm_artifacts`` and reused; each VM gets a qcow2 overlay so the base
disk stays clean.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.errors import VMError
from core.fsutil import atomic_write_json, file_lock, read_json

BUSYBOX = Path("/bin/busybox")
BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")
SHIM_DIR = "/.isobench"
SHIM_PATH = f"{SHIM_DIR}/init"
SHIM_BUSYBOX = f"{SHIM_DIR}/busybox"
SHIM_SETUID = f"{SHIM_DIR}/setuid"
# Bumped whenever the initrd/shim/disk layout changes so stale caches are not reused.
ARTIFACT_VERSION = "4"

# Modules the guest needs, in load order (deps are added from modules.dep). crc32c_generic: ext4 and
# jbd2 ask the crypto API for "crc32c", which would otherwise need a modprobe in the initrd.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_mmio",
    "virtio_blk", "crc32c_generic", "crc16", "mbcache", "jbd2", "ext4",
    "failover", "net_failover", "virtio_net",
)

# Markers the guest prints on the console; the host timestamps them (see console.py).
MARK_INITRD = "ISOBENCH-INITRD"
MARK_INIT = "ISOBENCH-INIT"
MARK_READY = "ISOBENCH-READY"
MARK_EXIT = "ISOBENCH-EXIT"
MARK_PANIC = "ISOBENCH-PANIC"


@dataclass(frozen=True)
class GuestKernel:
    """A guest kernel image and the module tree of the same version."""

    version: str
    vmlinuz: Path
    modules: Path


@dataclass(frozen=True)
class Artifacts:
    """What a domain boots: kernel + initrd (per kernel version) and the base disk (per image)."""

    kernel: Path
    initrd: Path
    disk: Path                # raw ext4, read-only base: VMs boot a qcow2 overlay of it
    image_digest: str
    kernel_version: str
    built_s: float            # seconds spent building in this call (0 when everything was cached)


# --------------------------------------------------------------------------- kernel

def _kver_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"[.-]", v))


def find_kernel(boot_dir: Path = BOOT_DIR, modules_dir: Path = MODULES_DIR,
                kernel: Path | None = None) -> GuestKernel:
    """The newest /boot/vmlinuz-* with a matching /lib/modules tree (or an explicit ``kernel``)."""
    if kernel is not None:
        if not kernel.is_file():
            raise VMError(f"guest kernel {kernel} not found")
        version = kernel.name.removeprefix("vmlinuz-")
        return GuestKernel(version, kernel, modules_dir / version)
    cands = sorted(boot_dir.glob("vmlinuz-*"), key=lambda p: _kver_key(p.name.removeprefix("vmlinuz-")))
    cands = [p for p in cands if (modules_dir / p.name.removeprefix("vmlinuz-") / "modules.dep").is_file()]
    if not cands:
        raise VMError(f"no guest kernel: {boot_dir}/vmlinuz-* with {modules_dir}/<version>/modules.dep not "
                      "found; install the Debian package linux-image-amd64 (apt-get install linux-image-amd64)")
    best = cands[-1]
    version = best.name.removeprefix("vmlinuz-")
    return GuestKernel(version, best, modules_dir / version)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {module name: [relative paths of it and its deps, deps first]}."""
    rel_by_name: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        name = module_name(path)
        rel_by_name[name] = path
        deps[name] = rest.split()
    out = {}
    for name, path in rel_by_name.items():
        out[name] = list(reversed(deps[name])) + [path]
    return out


def module_name(path: str) -> str:
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def module_load_order(dep_text: str, wanted: Iterable[str]) -> list[str]:
    """Relative module paths to insmod, dependencies before dependants, each once."""
    table = parse_modules_dep(dep_text)
    order: list[str] = []
    for name in wanted:
        if name not in table:
            continue  # built into this kernel (=y): nothing to load
        for rel in table[name]:
            if rel not in order:
                order.append(rel)
    return order


def kernel_supports_pvh(kernel: GuestKernel) -> bool:
    cfg = kernel.vmlinuz.parent / f"config-{kernel.version}"
    try:
        return "CONFIG_PVH=y" in cfg.read_text().splitlines()
    except OSError:
        return False


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage (xz or gzip payload), or None.

    Under TCG, decompressing the ~8 MB xz payload in the guest takes ~3 s — more than the rest of the
    boot. A PVH-capable ELF vmlinux is entered directly by QEMU (as Firecracker does), so we
    decompress once on the host and cache it."""
    import lzma
    import zlib

    for magic, make in ((b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor()),
                        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(31))):
        start = bzimage.find(magic)
        while start >= 0:
            try:
                out = make().decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            start = bzimage.find(magic, start + 1)
    return None


def ensure_boot_kernel(cache: Path, kernel: GuestKernel) -> Path:
    """The kernel file domains boot: a cached PVH vmlinux when possible, else the bzImage itself."""
    if not kernel_supports_pvh(kernel):
        return kernel.vmlinuz
    dest = cache / "kernel" / f"vmlinux-{kernel.version}"
    if dest.is_file():
        return dest
    with file_lock(cache / "kernel.lock"):
        if dest.is_file():
            return dest
        elf = extract_vmlinux(kernel.vmlinuz.read_bytes())
        if elf is None:
            return kernel.vmlinuz
        from core.fsutil import atomic_write_bytes

        atomic_write_bytes(dest, elf)
    return dest


# --------------------------------------------------------------------------- initrd

INITRD_INIT = """#!/bin/busybox sh
# isobench initrd: load the few modules the guest needs, mount the ext4 root, hand over to the shim.
B=/bin/busybox
$B mount -t devtmpfs dev /dev
$B mount -t proc proc /proc
echo {mark_initrd}
for m in {modules}; do $B insmod /lib/modules/$m 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 1000 ]; do $B usleep 5000; i=$((i+1)); done
if ! $B mount -t ext4 -o rw /dev/vda /newroot; then
  echo "{mark_panic} root disk /dev/vda could not be mounted"
  $B poweroff -f
fi
$B umount /proc
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot {shim_busybox} sh {shim}
"""


def render_initrd_init(module_files: list[str]) -> str:
    return INITRD_INIT.format(mark_initrd=MARK_INITRD, mark_panic=MARK_PANIC, shim=SHIM_PATH,
                              shim_busybox=SHIM_BUSYBOX,
                              modules=" ".join(os.path.basename(m) for m in module_files))


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive from (name, mode, data); directories have empty data."""
    out = io.BytesIO()
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
        ino += 1
    return out.getvalue()


def build_initrd(kernel: GuestKernel, dest: Path, busybox: Path = BUSYBOX) -> None:
    """Write a gzip'd newc initrd with busybox, the guest modules and the init above."""
    if not busybox.is_file():
        raise VMError(f"{busybox} not found; install the Debian package busybox-static")
    dep_file = kernel.modules / "modules.dep"
    try:
        dep_text = dep_file.read_text()
    except OSError as exc:
        raise VMError(f"{dep_file} not readable; install the Debian package linux-image-amd64 "
                      f"(modules of kernel {kernel.version})") from exc
    order = module_load_order(dep_text, GUEST_MODULES)
    d, f = 0o040755, 0o100755
    entries: list[tuple[str, int, bytes]] = [
        (n, d, b"") for n in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")]
    entries.append(("bin/busybox", f, busybox.read_bytes()))
    for rel in order:
        src = kernel.modules / rel
        data = src.read_bytes()
        if src.name.endswith(".xz") or src.name.endswith(".zst"):
            raise VMError(f"compressed module {src} is not supported by the isobench initrd")
        entries.append((f"lib/modules/{os.path.basename(rel)}", 0o100644, data))
    entries.append(("init", f, render_initrd_init(order).encode()))
    from core.fsutil import atomic_write_bytes

    atomic_write_bytes(dest, gzip.compress(_cpio_newc(entries), compresslevel=6))


# --------------------------------------------------------------------------- init shim

SHIM = r"""#!/.isobench/busybox sh
# isobench init shim: PID 1 of the guest. Mounts the API filesystems, sets hostname and network from
# the kernel command line, prints timestamped markers for the host, runs the workload with the image's
# Env/WorkingDir/User (passed as isobench.run=<base64 shell fragment>), reports its exit status, and
# powers the VM off (on_poweroff=destroy ends the domain).
B=/.isobench/busybox
echo {mark_init}
for d in /proc /sys /dev /tmp /run; do [ -d $d ] || $B mkdir -p $d; done
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
# a pure cgroup v2 hierarchy (nothing mounts v1 in the guest, so every controller is free for v2), with
# the controllers enabled for children: a runtime in the guest drives it with its v2 driver
if $B mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null; then
  for c in cpuset cpu io memory pids; do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
fi
[ -c /dev/null ] || $B mount -t devtmpfs devtmpfs /dev
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts devpts /dev/pts -o newinstance,ptmxmode=0666 2>/dev/null
$B mount -t tmpfs shm /dev/shm 2>/dev/null
RUN= IP= GW= HN=isobench DNS=
for a in $($B cat /proc/cmdline); do
  case "$a" in
    isobench.run=*) RUN="${{a#isobench.run=}}" ;;
    isobench.ip=*) IP="${{a#isobench.ip=}}" ;;
    isobench.gw=*) GW="${{a#isobench.gw=}}" ;;
    isobench.host=*) HN="${{a#isobench.host=}}" ;;
  esac
done
$B hostname "$HN"
$B ip link set lo up
if [ -n "$IP" ]; then
  $B ip link set eth0 up && $B ip addr add "$IP" dev eth0 || echo "{mark_panic} network setup failed"
  [ -n "$GW" ] && $B ip route add default via "$GW"
fi
if [ -z "$RUN" ]; then echo "{mark_panic} no isobench.run on the kernel command line"; $B poweroff -f; fi
echo "$RUN" | $B base64 -d > /run/isobench-run.sh || {{ echo "{mark_panic} bad isobench.run"; $B poweroff -f; }}
. /run/isobench-run.sh
echo 1 > /proc/sys/kernel/printk
cd "$WORKDIR" 2>/dev/null || {{ echo "{mark_panic} working directory $WORKDIR missing"; }}
read UP _ < /proc/uptime
echo "{mark_ready} $UP"
"$@" </dev/null
RC=$?
echo "{mark_exit} $RC"
$B sync
$B poweroff -f
"""


def render_shim() -> str:
    return SHIM.format(mark_init=MARK_INIT, mark_ready=MARK_READY, mark_exit=MARK_EXIT, mark_panic=MARK_PANIC)


def build_setuid_helper(dest: Path) -> None:
    """Copy the static setuid helper (csrc/guest_setuid.c, built by `make setup`) to ``dest`` once."""
    if dest.is_file():
        return
    from core.cbin import helper

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-pid{os.getpid()}")
    shutil.copy2(helper("guest-setuid"), tmp)
    os.replace(tmp, dest)


# --------------------------------------------------------------------------- run fragment

def resolve_user(user: str, rootfs: Path | None) -> tuple[int, int] | None:
    """Image ``User`` (name, uid, name:group, uid:gid) -> numeric (uid, gid) from the rootfs's files."""
    if not user or user in ("root", "0", "0:0", "root:root"):
        return None
    name, _, group = user.partition(":")

    def table(fname: str) -> list[list[str]]:
        if rootfs is None:
            return []
        try:
            return [ln.split(":") for ln in (rootfs / "etc" / fname).read_text().splitlines() if ln.count(":") >= 2]
        except OSError:
            return []

    uid = gid = None
    if name.isdigit():
        uid = int(name)
        for row in table("passwd"):
            if len(row) > 3 and row[2] == name:
                gid = int(row[3])
    else:
        for row in table("passwd"):
            if row[0] == name and len(row) > 3:
                uid, gid = int(row[2]), int(row[3])
        if uid is None:
            raise VMError(f"image user {name!r} not found in the image's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = [int(r[2]) for r in table("group") if r[0] == group]
            if not match:
                raise VMError(f"image group {group!r} not found in the image's /etc/group")
            gid = match[0]
    return uid, (gid if gid is not None else uid)


def run_fragment(argv: list[str], env: list[str], workdir: str, uid_gid: tuple[int, int] | None) -> str:
    """The shell fragment the shim sources: clean environment, working dir and the argv via busybox env."""
    cmd = [SHIM_BUSYBOX, "env", "-i", *env]
    if uid_gid is not None:
        cmd += [SHIM_SETUID, str(uid_gid[0]), str(uid_gid[1])]
    cmd += argv
    return f"WORKDIR={shlex.quote(workdir or '/')}\nset -- {' '.join(shlex.quote(a) for a in cmd)}\n"


# --------------------------------------------------------------------------- disk

def _rootfs_bytes(rootfs: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(rootfs):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def disk_size_mib(rootfs_bytes: int, extra_mib: int = 512) -> int:
    """Room for the rootfs (ext4 overhead ~1.3x) plus free space for workloads; the file is sparse."""
    return int(rootfs_bytes * 1.3 / 2**20) + 64 + extra_mib


def build_disk(rootfs: Path, dest: Path, shim: str, setuid_helper: Path | None = None,
               busybox: Path = BUSYBOX, extra_mib: int = 512) -> None:
    """``mkfs.ext4 -d rootfs`` into a sparse file, then add /.isobench with debugfs (no mounting)."""
    for tool in ("mkfs.ext4", "debugfs"):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} not found; install the Debian package e2fsprogs")
    size = disk_size_mib(_rootfs_bytes(rootfs), extra_mib)
    tmp = dest.with_name(f".tmp-disk-pid{os.getpid()}-{dest.name}")  # gc-able after a kill (core.scratch)
    try:
        res = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "isobench", "-O", "^has_journal",
                              "-E", "root_owner=0:0", "-d", str(rootfs), str(tmp), f"{size}M"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise VMError(f"mkfs.ext4 -d {rootfs} failed: {res.stderr.strip()[-300:]}")
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".tmp-shim-pid{os.getpid()}-") as td:
            shim_file = Path(td) / "init"
            shim_file.write_text(shim)
            cmds = []
            for d in ("proc", "sys", "dev", "tmp", "run"):
                if not (rootfs / d).exists() and not (rootfs / d).is_symlink():
                    cmds.append(f"mkdir /{d}")
            cmds += ["mkdir /.isobench",
                     f"write {busybox} /.isobench/busybox", "sif /.isobench/busybox mode 0100755",
                     f"write {shim_file} /.isobench/init", "sif /.isobench/init mode 0100755"]
            if setuid_helper is not None:
                cmds += [f"write {setuid_helper} /.isobench/setuid", "sif /.isobench/setuid mode 0100755"]
            cmd_file = Path(td) / "cmds"
            cmd_file.write_text("\n".join(cmds) + "\n")
            res = subprocess.run(["debugfs", "-w", "-f", str(cmd_file), str(tmp)], capture_output=True, text=True)
            if res.returncode != 0 or "error" in res.stderr.lower().replace("debugfs 1.", ""):
                raise VMError(f"debugfs on {tmp} failed: {res.stderr.strip()[-300:]}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------- cache

def _digest_hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def ensure_initrd(cache: Path, kernel: GuestKernel) -> tuple[Path, bool]:
    """The cached initrd for ``kernel``; (path, built now?)."""
    key = hashlib.sha256(f"{ARTIFACT_VERSION}:{kernel.version}:{render_initrd_init([])}".encode()).hexdigest()[:16]
    dest = cache / "initrd" / f"initrd-{kernel.version}-{key}.cpio.gz"
    if dest.is_file():
        return dest, False
    with file_lock(cache / "initrd.lock"):
        if dest.is_file():
            return dest, False
        build_initrd(kernel, dest)
    return dest, True


def ensure_artifacts(cache: Path, image_digest: str, rootfs_fn, kernel: GuestKernel | None = None,
                     needs_setuid: bool = False) -> Artifacts:
    """Kernel, initrd and base disk for an image, building only what is missing (cache by digest).
    ``rootfs_fn()`` returns the flat rootfs dir; it is only called when the disk must be built."""
    import time

    t0 = time.monotonic()
    kernel = kernel or find_kernel()
    initrd, _ = ensure_initrd(cache, kernel)
    boot_kernel = ensure_boot_kernel(cache, kernel)
    shim = render_shim()
    disk_key = hashlib.sha256(f"{ARTIFACT_VERSION}:{shim}".encode()).hexdigest()[:12]
    img_dir = cache / "disks" / _digest_hex(image_digest)
    disk = img_dir / f"disk-{disk_key}.ext4"
    helper = cache / "bin" / "setuid" if needs_setuid else None
    if helper is not None:
        with file_lock(cache / "setuid.lock"):
            build_setuid_helper(helper)
    if not disk.is_file():
        img_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(img_dir / "build.lock"):
            if not disk.is_file():
                build_disk(rootfs_fn(), disk, shim, setuid_helper=helper or _maybe_helper(cache))
                atomic_write_json(img_dir / "meta.json", {"image_digest": image_digest, "disk": disk.name})
    return Artifacts(kernel=boot_kernel, initrd=initrd, disk=disk, image_digest=image_digest,
                     kernel_version=kernel.version, built_s=time.monotonic() - t0)


def _maybe_helper(cache: Path) -> Path:
    """The USER helper (built by ``make setup``), always on the disk: the disk is shared by every run
    of the image, whatever its USER."""
    helper = cache / "bin" / "setuid"
    with file_lock(cache / "setuid.lock"):
        build_setuid_helper(helper)
    return helper


def create_overlay(base: Path, dest: Path) -> None:
    """A per-VM qcow2 overlay over the raw base disk, so the cached disk stays clean."""
    if shutil.which("qemu-img") is None:
        raise VMError("qemu-img not found; install the Debian package qemu-utils")
    res = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(dest)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise VMError(f"qemu-img create overlay {dest} failed: {res.stderr.strip()[-300:]}")


def cached_images(cache: Path) -> list[dict]:
    out = []
    for meta in sorted((cache / "disks").glob("*/meta.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(read_json(meta))
    return out
