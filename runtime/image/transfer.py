"""Moving images in and out of the store: ``save`` (OCI archive), ``load`` (validated) and ``import``.

An OCI archive is a tar of an OCI image layout holding one or more images -- what
``skopeo copy ... oci-archive:x.tar:name`` reads and writes. ``load`` treats its input as hostile: the
outer tar and every layer tar inside are checked (absolute paths, ``..``, device nodes, links leaving
the root, digest mismatches) in a private staging directory *before* anything reaches the store, so a
rejected archive changes nothing; errors name the member or blob at fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from core.errors import ImageError
from runtime.image import layers as L
from runtime.image.store import (FIXED_CREATED, MT_MANIFEST, REF_ANNOTATION, ImageRecord, ImageStore,
                                 canonical_json, check_name, copy_atomic, digest_bytes)
from runtime.image.bases import DEFAULT_PATH

_LAYER_TYPES = ("tar", "tar+gzip")  # media type suffixes we can unpack (no zstd)


# --------------------------------------------------------------------------- save

def save(store: ImageStore, rec: ImageRecord, out: Path) -> None:
    """Write ``rec`` as an OCI archive at ``out`` (blobs verified while exporting)."""
    manifest_bytes = store.blob_path(rec.manifest_digest).read_bytes()
    if digest_bytes(manifest_bytes) != rec.manifest_digest:
        raise ImageError(f"blob {rec.manifest_digest} is corrupt: content digest is {digest_bytes(manifest_bytes)}")
    manifest = json.loads(manifest_bytes)
    digests = [manifest["config"]["digest"]] + [d["digest"] for d in manifest.get("layers", [])]
    for d in digests:
        L.verify_blob_file(store.blob_path(d), d)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": MT_MANIFEST, "digest": rec.manifest_digest,
                                                 "size": len(manifest_bytes),
                                                 "annotations": {REF_ANNOTATION: rec.name}}]}
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-save-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name in ("blobs", "blobs/sha256"):
                tf.addfile(L.make_info(name, tarfile.DIRTYPE, 0o755))
            for d in sorted(set([rec.manifest_digest] + digests)):
                path = store.blob_path(d)
                info = L.make_info(f"blobs/sha256/{d.split(':')[1]}", tarfile.REGTYPE, 0o644,
                                   size=path.stat().st_size)
                with open(path, "rb") as blob:
                    tf.addfile(info, blob)
            for name, data in (("index.json", canonical_json(index)),
                               ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))):
                tf.addfile(L.make_info(name, tarfile.REGTYPE, 0o644, size=len(data)), _bytes_io(data))
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


# --------------------------------------------------------------------------- load

def load(store: ImageStore, archive: Path) -> list[ImageRecord]:
    """Load every named image of an OCI archive after validating all of it; returns the records."""
    if not archive.is_file():
        raise ImageError(f"{archive}: no such archive file")
    from core.scratch import scratch_dir

    # leased staging dir: after a kill -9 `isobench gc` removes it (core.scratch)
    with scratch_dir(store.paths, "load") as staging:
        _extract_outer(archive, staging)
        images = _validate_layout(staging, archive)
        # everything checked: publish blobs (content addressed, so order does not matter), then names
        blobs = staging / "blobs" / "sha256"
        for digest in sorted({d for _, _, ds in images for d in ds}):
            hexd = digest.split(":", 1)[1]
            if not store.has_blob(digest):
                copy_atomic(blobs / hexd, store.blob_path(digest), "load")
        out = []
        for name, man_digest, _ in images:
            store._set_ref(name, man_digest, store.blob_path(man_digest).stat().st_size)
            out.append(store.resolve(name))
        return out


def _extract_outer(archive: Path, staging: Path) -> None:
    """Extract the layout's files (regular files and dirs only) after checking every member name."""
    label = f"archive {archive.name}"
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:
                rel = L.check_member(m, label, strict=True)
                if not rel:
                    continue
                if m.issym() or m.islnk():
                    raise ImageError(f"{label}: member {m.name!r} is a link; an OCI layout holds only files")
                if not (m.isreg() or m.isdir()):
                    raise ImageError(f"{label}: member {m.name!r} is not a regular file or directory")
                target = L.secure_join(staging, rel)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with open(target, "wb") as out:
                    if src is not None:
                        shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{label}: not a readable tar archive ({type(exc).__name__})") from exc


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _expect(value, kind: type, label: str, what: str):
    """``value`` when it has JSON type ``kind``; else one ImageError line naming the member and field."""
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string"}
        raise ImageError(f"{label}: {what} must be {names.get(kind, kind.__name__)}, "
                         f"not {type(value).__name__} {json.dumps(value)[:40]}")
    return value


def _digest(value, label: str, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ImageError(f"{label}: {what} {json.dumps(value)[:80]} is not a sha256 digest")
    return value


def _read_verified(blobs: Path, digest: str, label: str) -> bytes:
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ImageError(f"{label}: unsupported digest {digest!r} (only sha256)")
    digest = _digest(digest, label, "digest")
    path = blobs / digest.split(":", 1)[1]
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{label}: blob {digest} is missing from the archive") from exc
    if digest_bytes(data) != digest:
        raise ImageError(f"{label}: blob {digest} is corrupt: content digest is {digest_bytes(data)}")
    return data


def _json_object(data: bytes, label: str, member: str) -> dict:
    """Parse ``member`` (index.json or a blob) as a JSON object, or one ImageError line naming it."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{label}: {member} is not valid JSON: {str(exc).splitlines()[0]}") from exc
    return _expect(obj, dict, label, member)


def _validate_layout(staging: Path, archive: Path) -> list[tuple[str, str, list[str]]]:
    """(name, manifest digest, all blob digests) per image, after checking every blob and layer member."""
    label = f"archive {archive.name}"
    try:
        raw_index = (staging / "index.json").read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{label}: no index.json (not an OCI archive)") from exc
    index = _json_object(raw_index, label, "index.json")
    blobs = staging / "blobs" / "sha256"
    images = []
    for i, desc in enumerate(_expect(index.get("manifests", []), list, label, "index.json manifests")):
        where = f"index.json manifests[{i}]"
        _expect(desc, dict, label, where)
        if desc.get("mediaType") not in (MT_MANIFEST, None):
            raise ImageError(f"{label}: {desc.get('mediaType')} entries (multi-platform indexes) are not supported")
        man_digest = _digest(desc.get("digest"), label, f"{where} digest")
        annotations = _expect(desc.get("annotations") or {}, dict, label, f"{where} annotations")
        name_raw = annotations.get(REF_ANNOTATION)
        if not name_raw:
            raise ImageError(f"{label}: manifest {man_digest} has no {REF_ANNOTATION} annotation (no image name)")
        name = check_name(_expect(name_raw, str, label, f"{where} {REF_ANNOTATION}"))
        mlabel = f"manifest blob {man_digest[:19]}"
        manifest = _json_object(_read_verified(blobs, man_digest, label), label, mlabel)
        cfg_desc = _expect(manifest.get("config", {}), dict, label, f"{mlabel} config")
        cfg_digest = _digest(cfg_desc.get("digest"), label, f"{mlabel} config digest")
        clabel = f"config blob {cfg_digest[:19]}"
        config = _json_object(_read_verified(blobs, cfg_digest, label), label, clabel)
        rootfs = _expect(config.get("rootfs", {}), dict, label, f"{clabel} rootfs")
        diff_ids = _expect(rootfs.get("diff_ids", []), list, label, f"{clabel} rootfs.diff_ids")
        layers = _expect(manifest.get("layers", []), list, label, f"{mlabel} layers")
        if len(diff_ids) != len(layers):
            raise ImageError(f"{label}: manifest {man_digest} has {len(layers)} layers but its config lists "
                             f"{len(diff_ids)} diff_ids")
        layer_digests = []
        for j, (ld, diff_id) in enumerate(zip(layers, diff_ids)):
            _expect(ld, dict, label, f"{mlabel} layers[{j}]")
            mt = ld.get("mediaType", "")
            if not isinstance(mt, str) or not mt.endswith(_LAYER_TYPES):
                raise ImageError(f"{label}: layer {ld.get('digest')} has unsupported media type {mt!r}")
            ldig = _digest(ld.get("digest"), label, f"{mlabel} layers[{j}] digest")
            _digest(diff_id, label, f"{clabel} rootfs.diff_ids[{j}]")
            for _ in L.iter_blob_members(blobs / ldig.split(":", 1)[1], ldig,
                                         f"{label}: layer {ldig[:19]}", strict=True, diff_id=diff_id):
                pass
            layer_digests.append(ldig)
        images.append((name, man_digest, [man_digest, cfg_digest] + layer_digests))
    if not images:
        raise ImageError(f"{label}: index.json lists no images")
    return images


# --------------------------------------------------------------------------- import

def _skip_pseudo_fs(rel: str) -> bool:
    top = rel.split("/", 1)
    return top[0] in ("dev", "proc", "sys") and len(top) > 1


def _tar_entries(src: Path) -> Iterator[L.Entry]:
    label = f"import {src.name}"
    try:
        with tarfile.open(src, "r:*") as tf:
            for m in tf:
                rel = L.check_member(m, label, strict=True)
                if not rel:
                    continue
                info = L.make_info(rel, m.type, m.mode, uid=m.uid, gid=m.gid, size=m.size,
                                   linkname=L.normalize_member_name(m.linkname, label) if m.islnk() else m.linkname,
                                   mtime=int(m.mtime))
                data = None
                if m.isreg():
                    f = tf.extractfile(m)
                    data = f.read() if f is not None else b""
                yield info, data
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{label}: not a readable tar archive ({type(exc).__name__})") from exc


def import_rootfs(store: ImageStore, src: Path, name: str) -> ImageRecord:
    """A one-layer image from a rootfs directory (device nodes and /proc,/sys,/dev contents skipped)
    or a tar (validated like ``load``)."""
    name = check_name(name)
    if src.is_dir():
        entries: Iterator[L.Entry] = L.dir_entries(src, skip=_skip_pseudo_fs, skip_devices=True)
    elif src.is_file():
        entries = _tar_entries(src)
    else:
        raise ImageError(f"import: {src} is neither a directory nor a tar file")
    layer = store.write_layer(entries)
    cfg = {"architecture": "amd64", "os": "linux", "created": FIXED_CREATED,
           "config": {"Env": [DEFAULT_PATH]},
           "history": [{"created": FIXED_CREATED, "created_by": f"isobench image import {src.name}"}]}
    return store.commit(name, cfg, [layer])
