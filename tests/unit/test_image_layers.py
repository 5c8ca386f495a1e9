"""Layer tars: reproducibility, whiteout conversion, tar-slip checks (pure file work in tmp dirs)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from core.errors import ImageError
from runtime.image import layers as L


def _blob(tmp_path: Path, entries, name="blob") -> tuple[Path, L.LayerDigests]:
    p = tmp_path / name
    with open(p, "wb") as f:
        d = L.write_layer(f, entries)
    return p, d


def _tar_members(blob: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(blob, "r:gz") as tf:
        return tf.getmembers()


def test_write_layer_is_reproducible_and_digests_match(tmp_path):
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    (src / "b" / "f").write_text("hello")
    (src / "a").write_text("x")
    os.symlink("a", src / "lnk")
    p1, d1 = _blob(tmp_path, L.dir_entries(src), "one")
    os.utime(src / "a", (1, 1))  # mtimes of sources do not matter: entries get FIXED_MTIME
    p2, d2 = _blob(tmp_path, L.dir_entries(src), "two")
    assert d1 == d2
    assert "sha256:" + __import__("hashlib").sha256(p1.read_bytes()).hexdigest() == d1.digest
    names = [m.name for m in _tar_members(p1)]
    assert names == ["a", "b", "b/f", "lnk"]
    assert all(m.mtime == L.FIXED_MTIME and m.uname == "" for m in _tar_members(p1))


@pytest.mark.requires("root")  # mknod and trusted.* xattrs
def test_overlay_upper_whiteouts_become_oci_markers(tmp_path):
    upper = tmp_path / "upper"
    (upper / "opq").mkdir(parents=True)
    os.setxattr(upper / "opq", L.OPAQUE_XATTR, b"y")
    os.mknod(upper / "gone", stat.S_IFCHR, os.makedev(0, 0))
    blob, _ = _blob(tmp_path, L.dir_entries(upper, overlay_upper=True))
    names = [m.name for m in _tar_members(blob)]
    assert names == [".wh.gone", "opq", "opq/.wh..wh..opq"]


@pytest.mark.requires("root")  # mknod and trusted.* xattrs
def test_unpack_converts_whiteouts_to_overlay_form(tmp_path):
    entries = [
        (L.make_info("d", tarfile.DIRTYPE, 0o755), None),
        (L.make_info("d/.wh..wh..opq", tarfile.REGTYPE, 0), None),
        (L.make_info("d/keep", tarfile.REGTYPE, 0o644), b"k"),
        (L.make_info(".wh.removed", tarfile.REGTYPE, 0), None),
    ]
    blob, d = _blob(tmp_path, entries)
    out = tmp_path / "out"
    out.mkdir()
    L.apply_layer(blob, d.digest, out, overlay=True, label="t", diff_id=d.diff_id)
    st = os.lstat(out / "removed")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(out / "d", L.OPAQUE_XATTR) == b"y"
    assert (out / "d" / "keep").read_text() == "k"


def test_flatten_applies_whiteouts_by_deletion(tmp_path):
    lower = [
        (L.make_info("d", tarfile.DIRTYPE, 0o755), None),
        (L.make_info("d/old", tarfile.REGTYPE, 0o644), b"o"),
        (L.make_info("x", tarfile.REGTYPE, 0o644), b"x"),
    ]
    upper = [
        (L.make_info("d", tarfile.DIRTYPE, 0o755), None),
        (L.make_info("d/new", tarfile.REGTYPE, 0o644), b"n"),
        (L.make_info("d/.wh..wh..opq", tarfile.REGTYPE, 0), None),
        (L.make_info(".wh.x", tarfile.REGTYPE, 0), None),
    ]
    b1, d1 = _blob(tmp_path, lower, "l")
    b2, d2 = _blob(tmp_path, upper, "u")
    out = tmp_path / "flat"
    out.mkdir()
    L.apply_layer(b1, d1.digest, out, overlay=False, label="l")
    L.apply_layer(b2, d2.digest, out, overlay=False, label="u")
    assert sorted(os.listdir(out)) == ["d"]
    assert os.listdir(out / "d") == ["new"]


def test_corrupt_blob_names_the_digest(tmp_path):
    blob, d = _blob(tmp_path, [(L.make_info("f", tarfile.REGTYPE, 0o644), b"data" * 100)])
    raw = bytearray(blob.read_bytes())
    raw[-20] ^= 0xFF
    blob.write_bytes(bytes(raw))
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(ImageError, match=d.digest.split(":")[1]):
        L.apply_layer(blob, d.digest, out, overlay=False, label="t")


def _raw_tar(tmp_path: Path, build) -> Path:
    p = tmp_path / "evil.tar"
    with tarfile.open(p, "w") as tf:
        build(tf)
    return p


def _add(tf, name, kind=tarfile.REGTYPE, linkname="", data=b""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("name,kind,link,msg", [
    ("/etc/passwd", tarfile.REGTYPE, "", "absolute path"),
    ("a/../../x", tarfile.REGTYPE, "", "'..'"),
    ("hl", tarfile.LNKTYPE, "/etc/shadow", "hard link"),
    ("hl2", tarfile.LNKTYPE, "../../etc/shadow", "hard link"),
    ("dev/sda", tarfile.BLKTYPE, "", "device node"),
    ("dev/mem", tarfile.CHRTYPE, "", "device node"),
    ("a/esc", tarfile.SYMTYPE, "../../etc", "symlink"),
])
def test_check_member_rejects_tar_slip(tmp_path, name, kind, link, msg):
    blob = _raw_tar(tmp_path, lambda tf: _add(tf, name, kind, link))
    digest = "sha256:" + __import__("hashlib").sha256(blob.read_bytes()).hexdigest()
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(ImageError, match=msg) as ei:
        L.apply_layer(blob, digest, out, overlay=False, label="evil.tar", strict=True)
    assert name in str(ei.value)
    assert os.listdir(out) == []


def test_symlink_rules():
    assert not L.symlink_escapes("a/b", "/etc/passwd")  # absolute: inside the rootfs
    assert not L.symlink_escapes("etc/mtab", "../proc/self/mounts")
    assert L.symlink_escapes("etc/x", "../../y")
    assert not L.symlink_escapes("lib", "usr/lib")


def test_secure_join_keeps_symlinks_inside_root(tmp_path):
    root = tmp_path / "r"
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("/", root / "up")
    os.symlink("../../../../", root / "rel")
    os.symlink("usr/lib", root / "lib")
    assert L.secure_join(root, "up/etc/passwd") == root / "etc" / "passwd"
    assert L.secure_join(root, "rel/etc") == root / "etc"
    assert L.secure_join(root, "lib/x") == root / "usr" / "lib" / "x"
    assert L.secure_join(root, "lib") == root / "lib"


def test_flatten_never_writes_through_a_symlinked_parent(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    entries1 = [(L.make_info("etc", tarfile.SYMTYPE, 0o777, linkname=str(outside)), None)]
    entries2 = [(L.make_info("etc/passwd", tarfile.REGTYPE, 0o644), b"pwn")]
    b1, d1 = _blob(tmp_path, entries1, "1")
    b2, d2 = _blob(tmp_path, entries2, "2")
    root = tmp_path / "root"
    root.mkdir()
    L.apply_layer(b1, d1.digest, root, overlay=False, label="1")
    L.apply_layer(b2, d2.digest, root, overlay=False, label="2")
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "passwd").read_bytes() == b"pwn"
