"""Base images made on this machine, so no registry is ever needed.

* ``busybox``: the host's static ``/bin/busybox`` plus one symlink per applet (``busybox --list-full``),
  a minimal /etc (passwd, group) and the usual empty dirs. Generated entries get a fixed mtime, so the
  layer digest only changes when the host's busybox binary does.
* ``debian:bookworm``: ``debootstrap --variant=minbase`` from the mirror the machine's apt sources
  name. The result is cached as a layer tarball in ``paths.base_cache`` (shared by every state root,
  including test roots) so the minutes-long debootstrap happens once per machine.
* ``scratch``: no layers at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from core import syscalls
from core.errors import ImageError
from core.fsutil import file_lock
from runtime.image import layers as L

BUSYBOX_BIN = Path("/bin/busybox")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_SUITE = "bookworm"
DEBIAN_TARBALL = f"debian-{DEBIAN_SUITE}-minbase.tar.gz"

_PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
           "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
_GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"


def base_config(cmd: list[str], created_by: str) -> dict:
    from runtime.image.oci import FIXED_CREATED

    return {
        "architecture": "amd64",
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {"Env": [DEFAULT_PATH], "Cmd": cmd} if cmd else {"Env": [DEFAULT_PATH]},
        "history": [{"created": FIXED_CREATED, "created_by": created_by}] if cmd else [],
    }


# --------------------------------------------------------------------------- busybox

def busybox_entries(busybox: Path = BUSYBOX_BIN) -> Iterator[L.Entry]:
    if not busybox.is_file():
        raise ImageError(f"cannot make the busybox base image: {busybox} not found (apt-get install busybox-static)")
    try:
        listing = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True,
                                 text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot list busybox applets with {busybox} --list-full: {exc}") from exc
    dirs = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
            "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
            "var": 0o755, "var/tmp": 0o1777, "var/log": 0o755, "var/run": 0o755}
    files: dict[str, tuple[bytes | Path, int]] = {
        "bin/busybox": (busybox, 0o755),
        "etc/passwd": (_PASSWD.encode(), 0o644),
        "etc/group": (_GROUP.encode(), 0o644),
        "etc/hostname": (b"busybox\n", 0o644),
        "etc/hosts": (b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
        "etc/nsswitch.conf": (b"hosts: files dns\npasswd: files\ngroup: files\n", 0o644),
    }
    links = {p: "/bin/busybox" for p in listing if p != "bin/busybox" and p not in files}
    entries: dict[str, L.Entry] = {}
    for d, mode in dirs.items():
        entries[d] = (L.make_info(d, tarfile.DIRTYPE, mode), None)
    for p, target in links.items():
        parent = p.rpartition("/")[0]
        if parent and parent not in entries:
            entries[parent] = (L.make_info(parent, tarfile.DIRTYPE, 0o755), None)
        entries[p] = (L.make_info(p, tarfile.SYMTYPE, 0o777, linkname=target), None)
    for p, (data, mode) in files.items():
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        entries[p] = (L.make_info(p, tarfile.REGTYPE, mode, size=size), data)
    return iter([entries[k] for k in sorted(entries)])


def make_busybox(store) -> "object":
    layer = store.write_layer(busybox_entries())
    cfg = base_config(["sh"], f"isobench: busybox-static from {BUSYBOX_BIN}")
    return store.commit("busybox:latest", cfg, [layer])


# --------------------------------------------------------------------------- scratch

def make_scratch(store) -> "object":
    return store.commit("scratch:latest", base_config([], ""), [])


# --------------------------------------------------------------------------- debian

def apt_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror URL the machine's apt sources use for the main archive."""
    candidates: list[str] = []
    files = [etc_apt / "sources.list"] + sorted((etc_apt / "sources.list.d").glob("*.list")) + \
        sorted((etc_apt / "sources.list.d").glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and DEBIAN_SUITE in fields.get("Suites", "").split():
                    candidates.extend(fields.get("URIs", "").split())
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == DEBIAN_SUITE:
                    candidates.append(m.group(1))
    for url in candidates:
        if "security" not in url and url.startswith(("http://", "https://", "file:/")):
            return url.rstrip("/")
    raise ImageError(f"no Debian {DEBIAN_SUITE} mirror found in {etc_apt}/sources.list or "
                     f"{etc_apt}/sources.list.d/*.sources/*.list (needed for debootstrap)")


def _skip_runtime_dirs(rel: str) -> bool:
    """Parts of a debootstrap tree that are runtime state or caches, not image content."""
    top = rel.split("/", 1)
    if top[0] in ("dev", "proc", "sys", "run") and len(top) > 1:
        return True
    return rel.startswith(("var/cache/apt/archives/", "var/lib/apt/lists/")) and not rel.endswith("/partial")


def write_rootfs_tarball(rootfs: Path, out: Path) -> None:
    """Turn a debootstrap tree into the cached layer tarball (atomically)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            L.write_layer(f, L.dir_entries(rootfs, skip=_skip_runtime_dirs, skip_devices=True))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def debian_tarball(base_cache: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """The cached debootstrap tarball, running debootstrap once per machine when missing."""
    out = base_cache / DEBIAN_TARBALL
    if out.exists():
        return out
    base_cache.mkdir(parents=True, exist_ok=True)
    with file_lock(base_cache / ".debian.lock"):
        if out.exists():
            return out
        if shutil.which("debootstrap") is None:
            raise ImageError("cannot make debian:bookworm: debootstrap is not installed (run: make setup)")
        mirror = apt_mirror()
        work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=base_cache))
        try:
            log(f"debian:{DEBIAN_SUITE}: debootstrap --variant=minbase {DEBIAN_SUITE} from {mirror} "
                "(once per machine, a few minutes)")
            res = syscalls.run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(work / "rootfs"), mirror],
                               check=False, timeout_s=3600)
            if res.returncode != 0:
                tail = (res.stdout or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
                raise ImageError(f"debootstrap {DEBIAN_SUITE} from {mirror} failed (exit {res.returncode}): {tail[0]}")
            write_rootfs_tarball(work / "rootfs", out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def make_debian(store) -> "object":
    import sys

    tarball = debian_tarball(store.paths.base_cache, log=lambda s: print(s, file=sys.stderr))
    layer = store.put_layer_file(tarball)
    cfg = base_config(["bash"], f"isobench: debootstrap --variant=minbase {DEBIAN_SUITE}")
    return store.commit(f"debian:{DEBIAN_SUITE}", cfg, [layer])


BASES: dict[str, Callable] = {
    "busybox:latest": make_busybox,
    "scratch:latest": make_scratch,
    f"debian:{DEBIAN_SUITE}": make_debian,
}
