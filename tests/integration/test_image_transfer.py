"""save/load/import (root): round trip, tar-slip archives rejected with nothing written, corrupt blobs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from app.cli import main as cli_main
from core.errors import ImageError
from runtime.image import transfer
from runtime.image.store import ImageStore, canonical_json
from core.paths import HostPaths
from tests.imagefixtures import ensure_busybox

pytestmark = pytest.mark.requires("root", "busybox")


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the image store and caches (what 'store unchanged' means)."""
    out = {}
    for sub in ("images", "layers", "flat"):
        base = root / sub
        for dirpath, _, files in os.walk(base):
            for f in files:
                p = Path(dirpath, f)
                st = p.lstat()
                small_file = p.is_file() and not p.is_symlink() and st.st_size < 4096
                out[str(p.relative_to(root))] = p.read_bytes() if small_file else str(st.st_mode).encode()
    return out


def test_save_load_round_trip_into_a_fresh_store(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    rec = ensure_busybox(paths)
    out = tmp_path / "bb.tar"
    assert cli_main(["image", "save", "busybox", "-o", str(out)]) == 0
    other = ImageStore(HostPaths(root=tmp_path / "other").ensure())
    loaded = transfer.load(other, out)
    assert [r.manifest_digest for r in loaded] == [rec.manifest_digest]
    assert other.resolve("busybox:latest").layers == rec.layers
    assert (other.flat_rootfs(loaded[0]) / "bin" / "busybox").exists()
    # and back into the first store under the same name: no change
    before = store.resolve("busybox").manifest_digest
    transfer.load(store, out)
    assert store.resolve("busybox").manifest_digest == before


def test_import_dir_and_tar(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=test\n")
    os.symlink("/etc/os-release", root / "link")
    rec = transfer.import_rootfs(store, root, "itest-import:dir")
    assert (store.flat_rootfs(rec) / "etc" / "os-release").read_text() == "ID=test\n"
    tarp = tmp_path / "root.tar"
    with tarfile.open(tarp, "w") as tf:
        tf.add(root, arcname=".")
    rec2 = transfer.import_rootfs(store, tarp, "itest-import:tar")
    assert os.readlink(store.flat_rootfs(rec2) / "link") == "/etc/os-release"


def _evil_layer(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name, t=tarfile.REGTYPE, link="", data=b"pwned"):
            info = tarfile.TarInfo(name)
            info.type = t
            info.linkname = link
            info.size = len(data) if t == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if t == tarfile.REGTYPE else None)
        add("ok.txt")
        {
            "absolute": lambda: add("/tmp/isobench-evil-abs"),
            "dotdot": lambda: add("../../isobench-evil-dotdot"),
            "device": lambda: add("dev/sda", tarfile.BLKTYPE),
            "symlink": lambda: add("esc", tarfile.SYMTYPE, "../../../../etc"),
            "hardlink": lambda: add("hl", tarfile.LNKTYPE, "/etc/shadow"),
        }[kind]()
    return buf.getvalue()


def _oci_archive(path: Path, layer_tar: bytes, *, corrupt: bool = False, outer_evil: str | None = None) -> str:
    gz = gzip.compress(layer_tar, mtime=0)
    ldigest = "sha256:" + hashlib.sha256(gz).hexdigest()
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}})
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                                          "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                           "digest": ldigest, "size": len(gz)}]})
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = canonical_json({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "itest-evil:1"}}]})
    if corrupt:
        gz = gz[:-8] + bytes(8)
    with tarfile.open(path, "w") as tf:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                           (f"blobs/sha256/{mdigest[7:]}", manifest), (f"blobs/sha256/{cdigest[7:]}", config),
                           (f"blobs/sha256/{ldigest[7:]}", gz)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if outer_evil:
            info = tarfile.TarInfo(outer_evil)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    return ldigest


@pytest.mark.parametrize("kind,member", [
    ("absolute", "/tmp/isobench-evil-abs"),
    ("dotdot", "../../isobench-evil-dotdot"),
    ("device", "dev/sda"),
    ("symlink", "esc"),
    ("hardlink", "hl"),
])
def test_tar_slip_layers_rejected_nothing_written(paths, tmp_path, capsys, kind, member, leak_check):
    ImageStore(paths)
    archive = tmp_path / "evil.tar"
    _oci_archive(archive, _evil_layer(kind))
    before = _snapshot(paths.root)
    rc = cli_main(["image", "load", "-i", str(archive)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert repr(member) in err, err
    assert _snapshot(paths.root) == before
    assert not Path("/tmp/isobench-evil-abs").exists()
    assert not (paths.root.parent / "isobench-evil-dotdot").exists()
    assert not list(paths.tmp.glob("isobench-load-*"))


@pytest.mark.parametrize("outer", ["/tmp/isobench-evil-outer", "../isobench-evil-outer"])
def test_tar_slip_in_outer_archive_rejected(paths, tmp_path, outer, leak_check):
    archive = tmp_path / "evil.tar"
    _oci_archive(archive, _evil_layer("absolute")[:0] or b"\0" * 1024, outer_evil=outer)
    with pytest.raises(ImageError, match="isobench-evil-outer"):
        transfer.load(ImageStore(paths), archive)
    assert not Path("/tmp/isobench-evil-outer").exists()
    assert not (paths.tmp.parent / "isobench-evil-outer").exists()


def test_corrupt_blob_in_archive_rejected(paths, tmp_path, leak_check):
    archive = tmp_path / "corrupt.tar"
    ldigest = _oci_archive(archive, b"\0" * 1024, corrupt=True)
    with pytest.raises(ImageError, match=f"blob {ldigest}"):
        transfer.load(ImageStore(paths), archive)
    assert "itest-evil:1" not in {r.name for r in ImageStore(paths).list()}


def test_corrupt_blob_in_store_detected_on_unpack(tmp_path, leak_check):
    paths = HostPaths(root=tmp_path / "root").ensure()
    store = ImageStore(paths)
    rec = store.resolve("busybox")
    blob = store.blob_path(rec.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=f"blob {rec.layers[0].digest}"):
        store.layer_dirs(rec)
    assert list(paths.layers.iterdir()) == []  # the temporary unpack dir was removed
    with pytest.raises(ImageError, match=f"blob {rec.layers[0].digest}"):
        transfer.save(store, rec, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()
