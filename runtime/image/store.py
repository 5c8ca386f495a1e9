"""The image store: an OCI image layout under ``paths.images`` plus the unpacked-layer and flat caches.

Layout (readable by skopeo/umoci): ``oci-layout``, ``index.json`` (one manifest descriptor per image
name, named by the ``org.opencontainers.image.ref.name`` annotation) and ``blobs/sha256/<hex>``
(manifests, configs, gzip layers). Blobs are content addressed and written by temp + rename, so
concurrent writers cannot corrupt them; ``index.json`` is rewritten atomically under a file lock.

The container start path calls :meth:`ImageStore.resolve` and :meth:`ImageStore.layer_dirs` on every
start, so both avoid hashing layer blobs: resolve reads index.json plus two small JSON blobs (cached
per process by manifest digest, which is immutable), and layer_dirs only checks that the unpacked
directories exist. Layer blobs are verified whenever their bytes are read (unpack, flatten, export).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from core.errors import ImageError
from core.fsutil import file_lock
from core.scratch import atomic_write_owned, temp_prefix
from runtime.image import layers as L
from core.paths import HostPaths

REF_ANNOTATION = "org.opencontainers.image.ref.name"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_GC_GRACE_S = 600  # blobs younger than this survive `rm` (in-flight builds)
from runtime.image.oci import FIXED_CREATED  # noqa: E402,F401 - re-exported for builder and transfer

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# [registry host:port/]name[:tag]; a registry without a port already matches as a dotted component
_NAME_RE = re.compile(r"^(?:[a-zA-Z0-9][a-zA-Z0-9.-]*:[0-9]+/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


def write_state_json(path: Path, obj) -> None:
    # pid-tagged temp name: a kill -9 mid-write leaves a file `isobench gc` can tell is orphaned
    atomic_write_owned(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class LayerRef:
    digest: str        # sha256 of the gzip blob
    diff_id: str       # sha256 of the uncompressed tar
    size_bytes: int


@dataclass(frozen=True)
class ImageRecord:
    name: str              # as resolved, e.g. "busybox:latest" (or the digest when resolved by digest)
    manifest_digest: str   # THE image digest recorded by benchmark results
    config_digest: str
    config: dict           # full OCI image config JSON
    layers: tuple[LayerRef, ...]

    @property
    def short_id(self) -> str:
        return self.manifest_digest.split(":", 1)[1][:12]


def normalize_ref(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``; names are lower-case repository[:tag] as in Docker."""
    ref = ref.strip()
    if not ref:
        raise ImageError("empty image name")
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        ref += ":latest"
    return ref


def check_name(name: str) -> str:
    """Validate a name given to ``build -t``/``import``/``load``; returns it normalized."""
    norm = normalize_ref(name)
    if not _NAME_RE.match(norm):
        raise ImageError(f"invalid image name {name!r} (use lower-case name[:tag], e.g. myapp:1)")
    return norm


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise ImageError(f"malformed digest {digest!r} (expected sha256:<64 hex>)")
    return digest.split(":", 1)[1]


def _checked_digest(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"digest {value!r} is not a string")
    _hex(value)
    return value


def _check_index(index: object, path: Path) -> None:
    """index.json must be an object whose manifests are descriptors (a digest string, optional annotations)."""
    ok = isinstance(index, dict) and isinstance(index.get("manifests", []), list)
    if ok:
        for m in index.get("manifests", []):
            if not (isinstance(m, dict) and isinstance(m.get("digest"), str) and _DIGEST_RE.match(m["digest"])
                    and isinstance(m.get("annotations", {}), dict)
                    and isinstance(m.get("annotations", {}).get(REF_ANNOTATION, ""), str)):
                raise ImageError(f"{path}: malformed manifest descriptor {json.dumps(m)[:120]}")
    else:
        raise ImageError(f"{path}: not an OCI index (expected an object with a 'manifests' list)")


def copy_atomic(src: Path, dest: Path, tag: str) -> None:
    """Copy ``src`` to ``dest`` through a pid-tagged temp + rename: a reader (or a kill -9) sees the
    whole blob or none of it, and `isobench gc` removes a killed writer's temp."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(tag), dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ImageStore:
    """OCI layout + derived caches for one state root. Cheap to construct; safe across processes."""

    _record_cache: dict[str, tuple[str, str, dict, tuple[LayerRef, ...]]] = {}  # manifest digest -> parts

    def __init__(self, paths: HostPaths):
        self.paths = paths
        self.root = paths.images
        self.blobs = self.root / "blobs" / "sha256"
        self._index_lock = paths.locks / "image-index.lock"
        self._ensure_layout()

    # ----------------------------------------------------------------- layout & blobs
    def _ensure_layout(self) -> None:
        if (self.root / "index.json").exists():
            return
        self.blobs.mkdir(parents=True, exist_ok=True)
        with file_lock(self._index_lock):
            if not (self.root / "oci-layout").exists():
                write_state_json(self.root / "oci-layout", {"imageLayoutVersion": "1.0.0"})
            if not (self.root / "index.json").exists():
                write_state_json(self.root / "index.json", {"schemaVersion": 2, "manifests": []})

    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_blob(self, data: bytes) -> str:
        """Store bytes as a blob (no-op when present); returns its digest."""
        digest = digest_bytes(data)
        path = self.blob_path(digest)
        if not path.exists():
            atomic_write_owned(path, data)
        return digest

    def read_json_blob(self, digest: str) -> dict:
        """A small JSON blob (manifest/config), verified against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise ImageError(f"blob {digest} is missing from the store ({self.blob_path(digest)})") from exc
        got = digest_bytes(data)
        if got != digest:
            raise ImageError(f"blob {digest} is corrupt: content digest is {got}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ImageError(f"blob {digest} is not valid JSON: {exc}") from exc

    @contextlib.contextmanager
    def new_layer(self) -> Iterator[Callable[[Iterable[L.Entry]], LayerRef]]:
        """Context yielding ``write(entries) -> LayerRef``; the blob is published by rename."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix("layer"), dir=self.blobs)
        published: list[bool] = []

        def write(entries: Iterable[L.Entry]) -> LayerRef:
            with os.fdopen(fd, "wb") as f:
                d = L.write_layer(f, entries)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(d.digest))
            published.append(True)
            return LayerRef(d.digest, d.diff_id, d.size_bytes)

        try:
            yield write
        finally:
            if not published:
                with contextlib.suppress(OSError):
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def write_layer(self, entries: Iterable[L.Entry]) -> LayerRef:
        with self.new_layer() as write:
            return write(entries)

    def put_layer_file(self, src: Path) -> LayerRef:
        """Adopt an existing gzip'd layer tar (e.g. the cached debootstrap tarball), hashing it."""
        import gzip

        sha, tsha, size = hashlib.sha256(), hashlib.sha256(), 0
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        with gzip.open(src, "rb") as g:
            while chunk := g.read(1 << 20):
                tsha.update(chunk)
        digest = "sha256:" + sha.hexdigest()
        dest = self.blob_path(digest)
        if not dest.exists():
            copy_atomic(src, dest, "layer")
        return LayerRef(digest, "sha256:" + tsha.hexdigest(), size)

    # ----------------------------------------------------------------- index
    def _read_index(self) -> dict:
        path = self.root / "index.json"
        try:
            with open(path, "rb") as f:
                index = json.loads(f.read())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except ValueError as exc:
            raise ImageError(f"{path} is not valid JSON: {exc}") from exc
        _check_index(index, path)
        return index

    def commit(self, name: str, config: dict, layers: Iterable[LayerRef],
               annotations: dict[str, str] | None = None) -> ImageRecord:
        """Write config + manifest blobs and point ``name`` at them (atomic index update)."""
        name = normalize_ref(name)
        layers = tuple(layers)
        cfg = dict(config)
        cfg["rootfs"] = {"type": "layers", "diff_ids": [lr.diff_id for lr in layers]}
        cfg_bytes = canonical_json(cfg)
        cfg_digest = self.put_blob(cfg_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
            "layers": [{"mediaType": MT_LAYER_GZIP, "digest": lr.digest, "size": lr.size_bytes} for lr in layers],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        man_bytes = canonical_json(manifest)
        man_digest = self.put_blob(man_bytes)
        self._set_ref(name, man_digest, len(man_bytes))
        return ImageRecord(name, man_digest, cfg_digest, cfg, layers)

    def _set_ref(self, name: str, man_digest: str, size: int) -> None:
        with file_lock(self._index_lock):
            index = self._read_index()
            kept = [m for m in index.get("manifests", [])
                    if m.get("annotations", {}).get(REF_ANNOTATION) != name]
            kept.append({"mediaType": MT_MANIFEST, "digest": man_digest, "size": size,
                         "annotations": {REF_ANNOTATION: name}})
            kept.sort(key=lambda m: m.get("annotations", {}).get(REF_ANNOTATION, ""))
            if kept != index.get("manifests"):
                index["schemaVersion"] = 2
                index["manifests"] = kept
                write_state_json(self.root / "index.json", index)

    # ----------------------------------------------------------------- resolve / list / remove
    def _record(self, name: str, man_digest: str) -> ImageRecord:
        parts = self._record_cache.get(man_digest)
        if parts is None:
            manifest = self.read_json_blob(man_digest)
            try:
                cfg_digest = manifest["config"]["digest"]
                _hex(cfg_digest)
                config = self.read_json_blob(cfg_digest)
                if not isinstance(config, dict):
                    raise ImageError(f"image {name}: config {cfg_digest} is not a JSON object")
                rootfs = config.get("rootfs", {})
                diff_ids = rootfs.get("diff_ids", []) if isinstance(rootfs, dict) else None
                descs = manifest.get("layers", [])
                if not isinstance(diff_ids, list) or not isinstance(descs, list):
                    raise ImageError(f"image {name}: malformed layer lists in manifest {man_digest}")
                if len(diff_ids) != len(descs):
                    raise ImageError(f"image {name}: manifest has {len(descs)} layers but config lists "
                                     f"{len(diff_ids)} diff_ids")
                layers = tuple(LayerRef(_checked_digest(d["digest"]), _checked_digest(diff), int(d["size"]))
                               for d, diff in zip(descs, diff_ids))
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ImageError(f"image {name}: malformed manifest {man_digest} ({type(exc).__name__}: {exc})") from exc
            parts = (cfg_digest, man_digest, config, layers)
            self._record_cache[man_digest] = parts
        cfg_digest, _, config, layers = parts
        return ImageRecord(name, man_digest, cfg_digest, config, layers)

    _index_cache: dict[str, tuple[tuple[int, int, int], dict]] = {}  # index path -> (stat key, index)

    def _read_index_for_lookup(self) -> dict:
        """The index for read-only use, re-read only when index.json changed (every writer replaces it
        by rename: a new inode): a stat instead of a read and a JSON parse on every container create."""
        path = self.root / "index.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return self._read_index()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._index_cache.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
        index = self._read_index()
        self._index_cache[str(path)] = (key, index)
        return index

    def _lookup(self, ref: str) -> ImageRecord | None:
        manifests = self._read_index_for_lookup().get("manifests", [])
        ref = ref.strip()
        if _DIGEST_RE.match(ref) or re.fullmatch(r"[0-9a-f]{12,64}", ref):
            hexpart = ref.split(":", 1)[-1]
            hits = {m["digest"] for m in manifests if m["digest"].split(":", 1)[1].startswith(hexpart)}
            if len(hits) > 1:
                raise ImageError(f"image id {ref!r} is ambiguous ({len(hits)} images match)")
            if hits:
                digest = hits.pop()
                names = [m.get("annotations", {}).get(REF_ANNOTATION, digest) for m in manifests
                         if m["digest"] == digest]
                return self._record(sorted(names)[0], digest)
            if ref.startswith("sha256:") or len(hexpart) == 64:
                return None
        name = normalize_ref(ref)
        for m in manifests:
            if m.get("annotations", {}).get(REF_ANNOTATION) == name:
                return self._record(name, m["digest"])
        return None

    def resolve(self, ref: str) -> ImageRecord:
        """The image named ``ref`` (name[:tag], full digest, or 12+ hex id prefix). Base images
        (busybox, debian:bookworm, scratch) are created on first use."""
        rec = self._lookup(ref)
        if rec is not None:
            return rec
        from runtime.image import bases

        name = normalize_ref(ref)
        if name in bases.BASES:
            with file_lock(self.paths.locks / f"base-{name.replace('/', '_').replace(':', '_')}.lock"):
                rec = self._lookup(name)
                if rec is None:
                    rec = bases.BASES[name](self)
            return rec
        raise ImageError(f"unknown image {ref!r} (try: isobench image ls)")

    def list(self) -> list[ImageRecord]:
        out = []
        for m in self._read_index().get("manifests", []):
            name = m.get("annotations", {}).get(REF_ANNOTATION)
            if name:
                out.append(self._record(name, m["digest"]))
        return sorted(out, key=lambda r: r.name)

    def remove(self, ref: str, *, force: bool = False) -> None:
        """Drop the name from the index and delete blobs no remaining image and no container uses.

        An image a container of this state root uses (running or stopped, not removed) is refused, as
        Docker does, unless another name keeps it; ``force`` only untags it: the blobs (manifest,
        config, layers) stay while such a container exists, and the next ``image rm`` after it is gone
        collects them. Unpacked layer and flat caches stay (keyed by digest)."""
        rec = self._lookup(ref)
        if rec is None:
            raise ImageError(f"unknown image {ref!r} (try: isobench image ls)")
        with file_lock(self._index_lock):
            index = self._read_index()
            removed_digest = rec.manifest_digest
            if _DIGEST_RE.match(ref.strip()) or re.fullmatch(r"[0-9a-f]{12,64}", ref.strip()):
                kept = [m for m in index["manifests"] if m["digest"] != removed_digest]
            else:
                kept = [m for m in index["manifests"]
                        if m.get("annotations", {}).get(REF_ANNOTATION) != rec.name]
            users = self.container_users()
            if not force and removed_digest in users and all(m["digest"] != removed_digest for m in kept):
                who = users[removed_digest]
                more = f" and {len(who) - 1} more" if len(who) > 1 else ""
                raise ImageError(f"image {rec.name} is in use by container {who[0]}{more}: remove the "
                                 f"container first (isobench rm), or untag it with isobench image rm -f")
            index["manifests"] = kept
            write_state_json(self.root / "index.json", index)
            self._gc_blobs(kept, users)

    def container_users(self) -> dict[str, list[str]]:
        """Manifest digest -> the containers of this state root made from it (name, else short id)."""
        from runtime.lifecycle.state import iter_states

        out: dict[str, list[str]] = {}
        for st in iter_states(self.paths):
            digest = st.get("image_digest")
            if digest:
                out.setdefault(digest, []).append(st.get("name") or str(st.get("id", ""))[:12])
        return out

    def _gc_blobs(self, manifests: list[dict], users: dict[str, list[str]]) -> None:
        live: set[str] = set()
        for m in manifests + [{"digest": d} for d in users if self.has_blob(d)]:
            live.add(m["digest"])
            try:
                man = self.read_json_blob(m["digest"])
            except ImageError:
                continue
            live.add(man["config"]["digest"])
            live.update(d["digest"] for d in man.get("layers", []))
        cached = self._build_cache_blobs()
        young = time.time() - _GC_GRACE_S
        for path in self.blobs.iterdir():
            if path.name.startswith("."):
                continue
            digest = "sha256:" + path.name
            with contextlib.suppress(FileNotFoundError):
                # a concurrent build may have written a blob it has not yet recorded anywhere
                if digest not in live and digest not in cached and path.stat().st_mtime < young:
                    path.unlink()

    def _build_cache_blobs(self) -> set[str]:
        """Layer blobs the build cache points at stay, so `rm` then rebuild still hits the cache."""
        out: set[str] = set()
        cache = self.paths.build_cache
        if cache.is_dir():
            for p in cache.glob("*.json"):
                with contextlib.suppress(OSError, ValueError):
                    layer = json.loads(p.read_bytes()).get("layer")
                    if layer:
                        out.add(layer["digest"])
        return out

    # ----------------------------------------------------------------- unpacked layers
    def layer_dirs(self, img: ImageRecord) -> list[Path]:
        """Each layer unpacked once into ``paths.layers/<hex>`` (overlayfs form), lowest first."""
        out = []
        for lr in img.layers:
            d = self.paths.layers / _hex(lr.digest)
            if not d.is_dir():
                self._unpack(lr, d)
            out.append(d)
        return out

    def _unpack(self, lr: LayerRef, dest: Path) -> None:
        with file_lock(self.paths.locks / f"layer-{_hex(lr.digest)[:32]}.lock"):
            if dest.is_dir():
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_hex(lr.digest)[:12]}-", dir=dest.parent))
            try:
                L.apply_layer(self.blob_path(lr.digest), lr.digest, tmp, overlay=True,
                              label=f"layer {lr.digest}", diff_id=lr.diff_id)
                os.chmod(tmp, 0o755)
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def flatten(self, img: ImageRecord, dest: Path) -> None:
        """Apply every layer of ``img`` onto ``dest`` (whiteouts by deletion)."""
        dest.mkdir(parents=True, exist_ok=True)
        for lr in img.layers:
            L.apply_layer(self.blob_path(lr.digest), lr.digest, dest, overlay=False,
                          label=f"layer {lr.digest}", diff_id=lr.diff_id)

    def flat_rootfs(self, img: ImageRecord) -> Path:
        """A flattened rootfs cached under ``paths.flat/<manifest hex>`` (treat as read-only)."""
        dest = self.paths.flat / _hex(img.manifest_digest)
        if dest.is_dir():
            return dest
        with file_lock(self.paths.locks / f"flat-{_hex(img.manifest_digest)[:32]}.lock"):
            if dest.is_dir():
                return dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-flat-", dir=dest.parent))
            try:
                self.flatten(img, tmp)
                os.chmod(tmp, 0o755)
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return dest

    # ----------------------------------------------------------------- helpers for save/load
    def manifest(self, img: ImageRecord) -> dict:
        return self.read_json_blob(img.manifest_digest)

    def open_blob(self, digest: str) -> BinaryIO:
        return open(self.blob_path(digest), "rb")
