"""The root filesystem of a guest that runs containers itself (the vm-container environment).

A plain VM boots one image's flat rootfs. A guest that runs containers needs three more things on its
disk, composed here into one directory that :func:`vmharness.artifacts.build_disk` turns into ext4:

- the guest OS image's flat rootfs (Debian + python3 + isobench's runtime + runc), hard-linked from the
  image cache (nothing is copied, and the cache's files are never written: only new files are added);
- an isobench state root at ``/var/lib/isobench`` holding the images the containers run (index,
  manifests and configs, the unpacked layers overlayfs mounts, and each image's flat rootfs for runc's
  bundle; not the compressed layer blobs), so the guest runs the *same digests* as the host with
  either runtime, without a registry or a copy at boot. The flat rootfs costs no disk: each of its
  files is a hard link to the same file of the topmost layer that holds it (mkfs keeps hard links);
- the guest kernel's modules the runtime loads (overlayfs, veth, bridge, nf_tables/NAT), with the
  kernel's modules.dep files, under ``/lib/modules/<version>``: the image has none for this kernel.

The composition is keyed by the guest image digest, the container image digests and the kernel
version, so the disk is rebuilt only when one of them changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import VMError
from core.fsutil import file_lock
from core.paths import HostPaths
from vmharness.artifacts import GuestKernel, module_load_order

COMPOSE_VERSION = "2"   # 2: the flat rootfs of each image (runc in the guest)
GUEST_STATE_ROOT = "var/lib/isobench"
# what the runtime loads in the guest (guest-start.sh modprobes them); dependencies come from modules.dep
RUNTIME_MODULES: tuple[str, ...] = (
    "overlay", "veth", "bridge", "nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_ct",
    "nft_fib_inet", "nft_fib_ipv4",
)
# whole directories as well: nft autoloads expression modules by name as rules use them
MODULE_DIRS: tuple[str, ...] = ("kernel/net/netfilter", "kernel/net/ipv4/netfilter", "kernel/net/ipv6/netfilter",
                                "kernel/net/bridge")


@dataclass(frozen=True)
class GuestRootSpec:
    """What one composed guest root holds."""

    base_digest: str                      # the guest OS image (vmct)
    base_rootfs: Path                     # its flat rootfs
    images: tuple                         # ImageRecords the guest's state root holds
    kernel: GuestKernel

    @property
    def key(self) -> str:
        parts = [COMPOSE_VERSION, self.base_digest, self.kernel.version]
        parts += sorted(f"{r.name}={r.manifest_digest}" for r in self.images)
        return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def module_files(kernel: GuestKernel) -> list[str]:
    """Relative paths (under the module tree) of every module file the guest root carries."""
    dep_text = (kernel.modules / "modules.dep").read_text()
    wanted = set(module_load_order(dep_text, RUNTIME_MODULES))
    for line in dep_text.splitlines():
        rel = line.split(":", 1)[0]
        if rel.startswith(tuple(d + "/" for d in MODULE_DIRS)):
            wanted.add(rel)
            wanted.update(line.split(":", 1)[1].split())
    return sorted(wanted)


def _link_tree(src: Path, dest: Path) -> None:
    """``cp -a --link``: directories made anew, files hard-linked (same filesystem, no bytes copied)."""
    res = subprocess.run(["cp", "-a", "--link", f"{src}/.", str(dest)], capture_output=True, text=True)
    if res.returncode != 0:
        raise VMError(f"cannot hard-link {src} into {dest}: {res.stderr.strip()[-300:]}")


def _add_modules(root: Path, kernel: GuestKernel) -> None:
    dest = root / "lib" / "modules" / kernel.version
    dest.mkdir(parents=True, exist_ok=True)
    for f in kernel.modules.glob("modules.*"):
        shutil.copy2(f, dest / f.name)
    for rel in module_files(kernel):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel.modules / rel, dest / rel)


def _add_state_root(root: Path, host_paths: HostPaths, images: tuple) -> None:
    """An isobench state root in the guest with ``images``: blobs and index, unpacked layers."""
    from runtime.image.store import ImageStore

    host = ImageStore(host_paths)
    gpaths = HostPaths(root=root / GUEST_STATE_ROOT).ensure()
    guest = ImageStore(gpaths)
    for rec in images:
        manifest = host.manifest(rec)
        # manifest and config only: containers mount the unpacked layers, so the compressed layer blobs
        # (as large again) stay on the host
        for digest in (rec.manifest_digest, manifest["config"]["digest"]):
            dst = guest.blob_path(digest)
            if not dst.exists():
                os.link(host.blob_path(digest), dst)
        for layer_dir in host.layer_dirs(rec):
            dst = gpaths.layers / layer_dir.name
            if not dst.exists():
                dst.mkdir(parents=True)
                _link_tree(layer_dir, dst)
        flat = gpaths.flat / rec.manifest_digest.split(":", 1)[1]
        if not flat.exists():
            link_flat_rootfs(host.flat_rootfs(rec), host.layer_dirs(rec), flat)
        guest._set_ref(rec.name, rec.manifest_digest, host.blob_path(rec.manifest_digest).stat().st_size)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ("st_mode", "st_uid", "st_gid", "st_size"))


def link_flat_rootfs(flat: Path, layers: list[Path], dest: Path) -> int:
    """``dest``: the image's flat rootfs ``flat`` (``cp -a --link``), each regular file then re-linked to
    the same file of the topmost unpacked layer (``layers`` lowest first) holding that path, so the
    flat tree and the layers share their inodes and the guest disk carries the bytes once. A file no
    layer holds as the same regular file (mode, owner, size) keeps the flat tree's inode. Returns the
    number of files re-linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.mkdir()
    _link_tree(flat, dest)
    relinked = 0
    real = [(layer, os.path.realpath(layer)) for layer in reversed(layers)]
    for dirpath, _dirs, files in os.walk(dest):
        rel_dir = os.path.relpath(dirpath, dest)
        for name in files:
            target = os.path.join(dirpath, name)
            st = os.lstat(target)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, name))
            for layer, real_layer in real:
                try:
                    lst = os.lstat(layer / rel)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if os.path.realpath(layer / rel) != os.path.join(real_layer, rel):
                    break  # reached through a symlink of that layer: not the path flattening kept
                if _same_file(st, lst) and (lst.st_dev, lst.st_ino) != (st.st_dev, st.st_ino):
                    tmp = f"{target}.isobench-link"
                    os.link(layer / rel, tmp)
                    os.replace(tmp, target)
                    relinked += 1
                break  # the topmost layer holding the path is what flattening kept
    return relinked


def compose(spec: GuestRootSpec, host_paths: HostPaths, cache: Path) -> Path:
    """The composed root for ``spec`` under ``cache`` (made once, reused while the key is unchanged)."""
    dest = cache / "guest-roots" / spec.key.split(":", 1)[1][:24]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f"{dest.name}.lock"):
        if dest.is_dir():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-root-", dir=dest.parent))
        try:
            _link_tree(spec.base_rootfs, tmp)
            _add_state_root(tmp, host_paths, spec.images)
            _add_modules(tmp, spec.kernel)
            os.chmod(tmp, 0o755)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    prune_others(dest)
    return dest


def prune_others(keep: Path) -> list[Path]:
    """Remove the composed roots of earlier keys beside ``keep``: a root only feeds the build of its
    disk (cached separately), and every code change of the guest image makes a new one. Roots being
    composed right now (``.tmp-*``) and their locks are left alone."""
    removed = []
    for other in keep.parent.iterdir():
        if other != keep and other.is_dir() and not other.name.startswith("."):
            with file_lock(other.parent / f"{other.name}.lock"):
                shutil.rmtree(other, ignore_errors=True)
            (other.parent / f"{other.name}.lock").unlink(missing_ok=True)
            removed.append(other)
    return removed
