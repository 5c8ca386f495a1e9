"""Layer tars: writing them reproducibly, checking untrusted ones, unpacking and flattening them.

Every image layer is a gzip'd tar (OCI "layer.v1.tar+gzip"). This module is the one place that turns
directories into layer blobs and layer blobs back into directories, because the rules must agree:

* **Reproducible writing**: entries sorted, numeric uid/gid without names, one fixed mtime, gzip header
  with mtime 0 and no file name, so building the same thing twice gives the same digest.
* **Whiteouts**: an overlayfs upper dir marks deletions as char 0:0 devices and opaque dirs with the
  ``trusted.overlay.opaque`` xattr; layer tars carry the OCI form (``.wh.name``, ``.wh..wh..opq``).
  Unpacking for overlayfs converts back; flattening applies them by deletion.
* **Untrusted input** (``image load``/``import``, any blob read): member names are checked (no
  absolute paths, no ``..``), hard links must stay inside the root, and every write goes through
  :func:`secure_join`, which resolves symlinks *inside* the root, so a tar can never write outside it.
* **Digests verified while reading**: the compressed stream is hashed as it is consumed and compared
  at the end; a mismatch raises :class:`ImageError` naming the blob and the output is discarded by the
  caller (unpacking always goes to a temporary directory first).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from core.errors import ImageError

# Fixed mtime of every entry of a generated layer: 2000-01-01T00:00:00Z (not 0, which some tools
# treat as "unset"). Same role as SOURCE_DATE_EPOCH in reproducible builds.
FIXED_MTIME = 946684800
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerDigests:
    """What writing a layer yields: digest of the gzip blob, diff_id of the tar, blob size."""

    digest: str
    diff_id: str
    size_bytes: int


# --------------------------------------------------------------------------- path rules

def normalize_member_name(name: str, label: str) -> str:
    """The member's path relative to the root ('' for the root itself); ImageError for slips."""
    if name.startswith("/"):
        raise ImageError(f"{label}: member {name!r} has an absolute path (tar-slip)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{label}: member {name!r} has a '..' component (tar-slip)")
    return "/".join(parts)


def symlink_escapes(member_rel: str, target: str) -> bool:
    """True when a relative symlink at ``member_rel`` climbs above the root (lexically).

    Absolute targets are interpreted inside the rootfs by every consumer (chroot, overlay, and
    :func:`secure_join` here), so they cannot escape and are allowed, as in Debian images."""
    if target.startswith("/"):
        return False
    depth = len(member_rel.split("/")) - 1  # directories above the link
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def check_member(member: tarfile.TarInfo, label: str, *, strict: bool) -> str:
    """Validate one tar member; returns its normalized name.

    Always: no absolute paths, no ``..``, hard links inside the root. ``strict`` (archives from
    users: ``image load``/``import``): also no device nodes and no relative symlinks climbing out."""
    rel = normalize_member_name(member.name, label)
    if member.islnk():
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            raise ImageError(f"{label}: member {member.name!r} is a hard link to {member.linkname!r} "
                             "outside the root (tar-slip)")
    if strict:
        if member.ischr() or member.isblk():
            raise ImageError(f"{label}: member {member.name!r} is a device node (not allowed in images)")
        if member.issym() and symlink_escapes(rel, member.linkname):
            raise ImageError(f"{label}: member {member.name!r} is a symlink to {member.linkname!r} "
                             "pointing outside the root (tar-slip)")
    return rel


def secure_join(root: Path, rel: str, *, follow_last: bool = False) -> Path:
    """``root/rel`` with every symlink on the way resolved *inside* ``root`` (absolute links restart
    at ``root``, ``..`` stops at ``root``), like runc's securejoin. The last component is not
    followed unless ``follow_last``, so callers act on the entry itself."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        cand = os.path.join(root, *resolved, comp)
        if (parts or follow_last) and os.path.islink(cand):
            hops += 1
            if hops > 40:
                raise ImageError(f"too many levels of symlinks resolving {rel!r} in {root}")
            link = os.readlink(cand)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(comp)
    return Path(root, *resolved)


# --------------------------------------------------------------------------- writing

class _HashingWriter:
    """File-like sink that hashes and counts what passes through."""

    def __init__(self, sink: BinaryIO):
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


# An entry to put in a layer: the header plus where its data comes from (bytes, a file, or None).
Entry = tuple[tarfile.TarInfo, "bytes | Path | None"]


def write_layer(out: BinaryIO, entries: Iterable[Entry], *, compresslevel: int = 6) -> LayerDigests:
    """Write ``entries`` (already in the order wanted) as a gzip'd PAX tar into ``out``."""
    zsink = _HashingWriter(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=zsink, mtime=0, compresslevel=compresslevel) as gz:
        tsink = _HashingWriter(gz)
        with tarfile.open(fileobj=tsink, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for info, data in entries:
                if isinstance(data, bytes):
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                elif isinstance(data, Path):
                    with open(data, "rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info)
    return LayerDigests(digest="sha256:" + zsink.sha.hexdigest(), diff_id="sha256:" + tsink.sha.hexdigest(),
                        size_bytes=zsink.size)


def make_info(name: str, kind: bytes, mode: int, *, uid: int = 0, gid: int = 0, size: int = 0,
              linkname: str = "", mtime: int = FIXED_MTIME, devmajor: int = 0, devminor: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode & 0o7777
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.size = size
    info.linkname = linkname
    info.mtime = mtime
    info.devmajor, info.devminor = devmajor, devminor
    return info


def dir_entries(root: Path, *, prefix: str = "", overlay_upper: bool = False,
                chown: tuple[int, int] | None = None, mtime: int = FIXED_MTIME,
                skip: Callable[[str], bool] | None = None, include_root: bool = False,
                skip_devices: bool = False) -> Iterator[Entry]:
    """Tar entries for the tree under ``root`` in sorted depth-first order, named ``prefix/rel``.

    ``overlay_upper``: ``root`` is an overlayfs upper dir, so char 0:0 devices become ``.wh.`` files
    and opaque dirs get a ``.wh..wh..opq`` entry. ``chown`` overrides ownership (COPY --chown).
    ``skip(rel)`` drops an entry (and its subtree). Hard links inside the tree are kept as links."""
    seen_inodes: dict[tuple[int, int], str] = {}
    prefix = prefix.strip("/")

    def name_of(rel: str) -> str:
        return "/".join(p for p in (prefix, rel) if p)

    def owner(st: os.stat_result) -> tuple[int, int]:
        return chown if chown is not None else (st.st_uid, st.st_gid)

    def entry_for(path: str, rel: str, st: os.stat_result) -> Iterator[Entry]:
        uid, gid = owner(st)
        name = name_of(rel)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            yield make_info(name, tarfile.DIRTYPE, mode, uid=uid, gid=gid, mtime=mtime), None
            if overlay_upper and _is_opaque(path):
                yield make_info(f"{name}/{OPAQUE_MARKER}", tarfile.REGTYPE, 0, mtime=mtime), None
        elif stat.S_ISCHR(mode) and overlay_upper and st.st_rdev == 0:
            parent, _, base = name.rpartition("/")
            wh = f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else WHITEOUT_PREFIX + base
            yield make_info(wh, tarfile.REGTYPE, 0, mtime=mtime), None
        elif stat.S_ISLNK(mode):
            yield make_info(name, tarfile.SYMTYPE, 0o777, uid=uid, gid=gid, linkname=os.readlink(path),
                            mtime=mtime), None
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                yield make_info(name, tarfile.LNKTYPE, mode, uid=uid, gid=gid, linkname=seen_inodes[key],
                                mtime=mtime), None
                return
            if st.st_nlink > 1:
                seen_inodes[key] = name
            yield make_info(name, tarfile.REGTYPE, mode, uid=uid, gid=gid, size=st.st_size, mtime=mtime), Path(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            if skip_devices:
                return
            kind = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            yield make_info(name, kind, mode, uid=uid, gid=gid, mtime=mtime,
                            devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev)), None
        elif stat.S_ISFIFO(mode):
            yield make_info(name, tarfile.FIFOTYPE, mode, uid=uid, gid=gid, mtime=mtime), None
        # sockets are runtime objects, never part of an image

    def walk(path: str, rel: str) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise ImageError(f"cannot read directory {path}: {exc.strerror}") from exc
        for n in names:
            child_rel = f"{rel}/{n}" if rel else n
            if skip is not None and skip(child_rel):
                continue
            child = os.path.join(path, n)
            st = os.lstat(child)
            yield from entry_for(child, child_rel, st)
            if stat.S_ISDIR(st.st_mode):
                yield from walk(child, child_rel)

    root_s = str(root)
    if include_root:
        st = os.lstat(root_s)
        if stat.S_ISDIR(st.st_mode) and prefix:
            yield from entry_for(root_s, "", st)
    yield from walk(root_s, "")


def parent_dir_entries(path: str, *, mtime: int = FIXED_MTIME) -> Iterator[Entry]:
    """Directory entries for every parent of ``path`` (``a``, ``a/b`` for ``a/b/c``), so a layer that
    adds a deep path also creates its parents with sane modes."""
    parts = [p for p in path.strip("/").split("/") if p][:-1]
    for i in range(1, len(parts) + 1):
        yield make_info("/".join(parts[:i]), tarfile.DIRTYPE, 0o755, mtime=mtime), None


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


# --------------------------------------------------------------------------- reading

class _HashingReader:
    """Read-through wrapper hashing everything read (to verify a blob while streaming it)."""

    def __init__(self, src: BinaryIO):
        self.src = src
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def iter_blob_members(blob: Path, digest: str, label: str, *, strict: bool = False,
                      diff_id: str | None = None) -> Iterator[tuple[tarfile.TarInfo, str, tarfile.TarFile]]:
    """Stream the members of a gzip'd (or plain) layer tar, verifying ``digest`` at the end.

    Yields (member, normalized name, tarfile) so the caller can ``extractfile`` the current member.
    The digest check happens after the last member, so callers must write into a temporary place and
    only publish it once this generator finished without error."""
    try:
        raw = open(blob, "rb")
    except FileNotFoundError as exc:
        raise ImageError(f"blob {digest} is missing from the store ({blob})") from exc
    with raw:
        hr = _HashingReader(raw)
        magic = raw.read(2)
        hr.sha.update(magic)
        stream: BinaryIO = _Prepend(magic, hr)
        if magic == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[arg-type]
        tr = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=tr, mode="r|") as tf:  # type: ignore[call-overload]
                for member in tf:
                    rel = check_member(member, label, strict=strict)
                    yield member, rel, tf
            tr.drain()
            hr.drain()
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError, zlib_error()) as exc:
            # a corrupt blob shows up as a format error before the digest check: say which blob
            got = _finish_hash(hr)
            if got != digest:
                raise ImageError(f"blob {digest} is corrupt: content digest is {got}") from exc
            raise ImageError(f"{label}: unreadable layer tar ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        got = "sha256:" + hr.sha.hexdigest()
        if got != digest:
            raise ImageError(f"blob {digest} is corrupt: content digest is {got}")
        if diff_id is not None and "sha256:" + tr.sha.hexdigest() != diff_id:
            raise ImageError(f"blob {digest}: uncompressed digest {'sha256:' + tr.sha.hexdigest()} "
                             f"does not match diff_id {diff_id}")


def zlib_error() -> type[BaseException]:
    import zlib

    return zlib.error


def _finish_hash(hr: _HashingReader) -> str:
    try:
        hr.drain()
    except OSError:
        pass
    return "sha256:" + hr.sha.hexdigest()


class _Prepend:
    """Give back already-consumed magic bytes before the rest of a stream."""

    def __init__(self, head: bytes, rest: _HashingReader):
        self.head = head
        self.rest = rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.rest.read(n - len(data))
            return data
        return self.rest.read(n)


def verify_blob_file(path: Path, digest: str) -> None:
    """Hash a whole blob file and compare (used when exporting or loading)."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
    except FileNotFoundError as exc:
        raise ImageError(f"blob {digest} is missing from the store ({path})") from exc
    got = "sha256:" + sha.hexdigest()
    if got != digest:
        raise ImageError(f"blob {digest} is corrupt: content digest is {got}")


def apply_layer(blob: Path, digest: str, dest: Path, *, overlay: bool, label: str,
                strict: bool = False, diff_id: str | None = None) -> None:
    """Extract one layer blob onto ``dest``.

    ``overlay=True``: ``dest`` is a fresh per-layer dir for overlayfs; whiteouts become char 0:0
    devices and opaque markers the ``trusted.overlay.opaque`` xattr. ``overlay=False``: ``dest`` is a
    rootfs being flattened; whiteouts delete what lower layers put there."""
    written: set[str] = set()
    dir_attrs: list[tuple[Path, tarfile.TarInfo]] = []
    opaque_dirs: list[Path] = []
    for member, rel, tf in iter_blob_members(blob, digest, label, strict=strict, diff_id=diff_id):
        if not rel:
            continue  # the root itself: keep dest's own attributes
        parent_rel, _, base = rel.rpartition("/")
        if base == OPAQUE_MARKER:
            pdir = secure_join(dest, parent_rel, follow_last=True) if parent_rel else dest
            pdir.mkdir(parents=True, exist_ok=True)
            if overlay:
                opaque_dirs.append(pdir)
            else:
                _clear_except(pdir, parent_rel, written)
            continue
        if base.startswith(WHITEOUT_PREFIX):
            victim_rel = f"{parent_rel}/{base[len(WHITEOUT_PREFIX):]}" if parent_rel else base[len(WHITEOUT_PREFIX):]
            target = secure_join(dest, victim_rel)
            if overlay:
                target.parent.mkdir(parents=True, exist_ok=True)
                _remove(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            else:
                _remove(target)
            continue
        target = secure_join(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        written.add(rel)
        _extract_one(tf, member, target, dest, dir_attrs)
    for pdir in opaque_dirs:
        os.setxattr(pdir, OPAQUE_XATTR, b"y", follow_symlinks=False)
    # directories last and deepest first, so writing children did not disturb their mtimes
    for path, member in reversed(dir_attrs):
        os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime))


def _extract_one(tf: tarfile.TarFile, m: tarfile.TarInfo, target: Path, root: Path,
                 dir_attrs: list[tuple[Path, tarfile.TarInfo]]) -> None:
    if m.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        target.mkdir(exist_ok=True)
        os.lchown(target, m.uid, m.gid)
        os.chmod(target, 0o700 | (m.mode & 0o7777))
        dir_attrs.append((target, m))
        return
    if os.path.lexists(target):
        _remove(target)
    if m.isreg():
        src = tf.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                shutil.copyfileobj(src, out, _CHUNK)
    elif m.issym():
        os.symlink(m.linkname, target)
    elif m.islnk():
        source = secure_join(root, normalize_member_name(m.linkname, "hard link"))
        os.link(source, target, follow_symlinks=False)
        return  # shares the source inode's attributes
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(target, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
    elif m.isfifo():
        os.mkfifo(target, m.mode & 0o7777)
    else:
        return  # unknown member kinds carry nothing a rootfs needs
    os.lchown(target, m.uid, m.gid)
    if not m.issym():
        os.chmod(target, m.mode & 0o7777)
    os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _clear_except(pdir: Path, parent_rel: str, written: set[str]) -> None:
    """Opaque dir while flattening: drop what lower layers put in ``pdir``, keep this layer's."""
    for name in os.listdir(pdir):
        rel = f"{parent_rel}/{name}" if parent_rel else name
        if rel not in written:
            _remove(pdir / name)
