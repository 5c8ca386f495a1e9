"""Image store and builder pure logic: names, digests, index updates, cache keys, .dockerignore, mirrors."""

from __future__ import annotations

import json
import os
import tarfile

import pytest

from core.errors import ImageError
from runtime.image import bases, builder
from runtime.image import layers as L
from runtime.image.store import ImageStore, canonical_json, check_name, digest_bytes, normalize_ref
from core.paths import HostPaths


@pytest.fixture
def store(tmp_path):
    return ImageStore(HostPaths(root=tmp_path / "root").ensure())


def _layer(store, content=b"hi"):
    return store.write_layer([(L.make_info("f", tarfile.REGTYPE, 0o644), content)])


def test_names():
    assert normalize_ref("busybox") == "busybox:latest"
    assert normalize_ref("reg.example:5000/x") == "reg.example:5000/x:latest"
    assert check_name("my-app:1.0") == "my-app:1.0"
    with pytest.raises(ImageError, match="invalid image name"):
        check_name("Bad Name")


def test_layout_files_and_commit_resolve_list_remove(store):
    lay = _layer(store)
    rec = store.commit("app:1", {"config": {"Cmd": ["sh"]}}, [lay])
    root = store.root
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "app:1"
    assert (root / "blobs" / "sha256" / lay.digest.split(":")[1]).exists()
    got = ImageStore(store.paths).resolve("app:1")
    assert got.manifest_digest == rec.manifest_digest
    assert got.layers == (lay,)
    assert got.config["rootfs"]["diff_ids"] == [lay.diff_id]
    assert store.resolve(rec.manifest_digest).name == "app:1"
    assert store.resolve(rec.short_id).manifest_digest == rec.manifest_digest
    assert [r.name for r in store.list()] == ["app:1"]
    young = store.blob_path(rec.manifest_digest)
    store.remove("app:1")
    assert store.list() == []
    assert young.exists()  # blobs of in-flight builds survive a concurrent rm for a grace period
    store.commit("app:1", {"config": {"Cmd": ["sh"]}}, [lay])
    for p in store.blobs.iterdir():
        os.utime(p, (1, 1))
    store.remove("app:1")
    assert not store.has_blob(rec.manifest_digest)
    with pytest.raises(ImageError, match=r"unknown image 'app:1' \(try: isobench image ls\)"):
        store.resolve("app:1")


def test_retag_replaces_index_entry_and_same_content_same_digest(store):
    lay = _layer(store)
    a = store.commit("x", {"config": {}}, [lay])
    b = store.commit("x", {"config": {}}, [lay])
    assert a.manifest_digest == b.manifest_digest
    assert len(json.loads((store.root / "index.json").read_text())["manifests"]) == 1


def test_corrupt_manifest_blob_is_reported(store):
    rec = store.commit("x", {"config": {}}, [_layer(store)])
    ImageStore._record_cache.clear()
    store.blob_path(rec.manifest_digest).write_bytes(b"{}")
    with pytest.raises(ImageError, match=f"blob {rec.manifest_digest} is corrupt"):
        ImageStore(store.paths).resolve("x")


def test_digests_are_content_addressed():
    assert digest_bytes(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert canonical_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_chain_keys_depend_on_parent_text_and_content():
    k1 = builder._chain_key("sha256:p", "COPY [\"a\"] /a", "sources=sha256:1")
    assert k1 == builder._chain_key("sha256:p", "COPY [\"a\"] /a", "sources=sha256:1")
    assert k1 != builder._chain_key("sha256:q", "COPY [\"a\"] /a", "sources=sha256:1")
    assert k1 != builder._chain_key("sha256:p", "COPY [\"a\"] /b", "sources=sha256:1")
    assert k1 != builder._chain_key("sha256:p", "COPY [\"a\"] /a", "sources=sha256:2")


def test_content_hash_sees_content_and_mode_changes_but_not_mtime(tmp_path):
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "f"
    f.write_text("one")
    h1 = builder._content_hash([tmp_path / "d"], tmp_path, None)
    import os
    os.utime(f, (5, 5))
    assert builder._content_hash([tmp_path / "d"], tmp_path, None) == h1
    f.write_text("two")
    h2 = builder._content_hash([tmp_path / "d"], tmp_path, None)
    assert h2 != h1
    f.chmod(0o700)
    assert builder._content_hash([tmp_path / "d"], tmp_path, None) != h2


def test_dockerignore_rules():
    rules = builder.IgnoreRules(["# c", "*.key", "build/", "**/*.tmp", "docs", "!docs/keep.md"])
    assert rules.ignored("a.key")
    assert not rules.ignored("sub/a.key")  # '*' does not cross directories
    assert rules.ignored("build/x/y")
    assert rules.ignored("deep/er/z.tmp") and rules.ignored("z.tmp")
    assert rules.ignored("docs/other.md")
    assert not rules.ignored("docs/keep.md")
    assert not rules.ignored("src/main.c")


def test_apt_mirror_from_deb822_and_list(tmp_path):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    assert bases.apt_mirror(d) == "http://mirror.example/debian"
    (d / "sources.list").write_text("deb [arch=amd64] http://other.example/debian/ bookworm main\n")
    assert bases.apt_mirror(d) == "http://other.example/debian"
    (d / "sources.list").write_text("")
    (d / "sources.list.d" / "debian.sources").write_text("Types: deb\nURIs: http://x/ubuntu\nSuites: jammy\n")
    with pytest.raises(ImageError, match="no Debian bookworm mirror"):
        bases.apt_mirror(d)


@pytest.mark.requires("busybox")
def test_busybox_layer_is_reproducible(tmp_path):
    with open(tmp_path / "a", "wb") as fa, open(tmp_path / "b", "wb") as fb:
        da = L.write_layer(fa, bases.busybox_entries())
        db = L.write_layer(fb, bases.busybox_entries())
    assert da == db
    with tarfile.open(tmp_path / "a") as tf:
        names = tf.getnames()
    assert "bin/busybox" in names and "bin/sh" in names and "etc/passwd" in names
    assert names == sorted(names, key=lambda n: n.split("/"))


@pytest.mark.parametrize("index", ['{"manifests": [null]}', '[]', '{"manifests": {}}',
                                   '{"manifests": [{"digest": "md5:x"}]}'])
def test_malformed_index_is_a_one_line_image_error(store, index):
    (store.root / "index.json").write_text(index)
    with pytest.raises(ImageError, match="index.json"):
        store.list()


def test_malformed_manifest_is_a_one_line_image_error(store):
    cfg = store.put_blob(canonical_json({"rootfs": {"diff_ids": ["x"]}}))
    man = store.put_blob(canonical_json({"config": {"digest": cfg}, "layers": [1]}))
    (store.root / "index.json").write_text(json.dumps(
        {"manifests": [{"digest": man, "annotations": {"org.opencontainers.image.ref.name": "m:1"}}]}))
    with pytest.raises(ImageError, match="m:1"):
        store.resolve("m:1")


def test_gc_removes_orphaned_temp_dirs_only(tmp_path):
    from runtime.image import gc as image_gc

    paths = HostPaths(root=tmp_path / "r").ensure()
    (paths.layers / ".tmp-abcdef012345-x").mkdir(parents=True)
    (paths.layers / "abcdef").mkdir()
    old = paths.tmp / "isobench-build-old"
    old.mkdir()
    os.utime(old, (1, 1))
    (paths.tmp / "isobench-build-new").mkdir()
    removed = image_gc.gc(paths)
    assert len(removed) == 2
    assert (paths.layers / "abcdef").exists() and (paths.tmp / "isobench-build-new").exists()
