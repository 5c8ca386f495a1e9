"""Property tests: every parser of user input either returns a value or raises the project's one-line
error (exit 1 or 2), never another exception (which would surface as a traceback).

Targets: the Dockerfile parser and word processing, size/CPU options (core.units), ``-p`` specs
(runtime.network.portspec) and OCI image JSON read back from the store (runtime.image.store)."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.errors import BuildError, ImageError, IsobenchError, UsageError
from runtime.image import dockerfile
from runtime.network.portspec import parse_port_spec
from core.units import parse_cpus, parse_size_bytes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYWORDS = sorted(dockerfile.FLAGS) + sorted(dockerfile.UNSUPPORTED) + ["FROM", "from", "Run", "NOPE"]
_chars = st.sampled_from(list(string.printable) + ["\\", "`", "$", "{", "}", "\"", "'", "[", "]", "é", "\u2028", "\x00"])
words = st.text(_chars, max_size=20)


@st.composite
def dockerfile_text(draw) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["# escape=`", "# escape=\\", "# escape=x", "# syntax=docker/dockerfile:1",
                                           "#escape =  `"])))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            lines.append(draw(words))
        elif kind == 1:
            lines.append("# " + draw(words))
        else:
            kw = draw(st.sampled_from(KEYWORDS))
            flags = " ".join(f"--{draw(st.sampled_from(['from', 'chown', 'chmod', 'platform', 'x']))}={draw(words)}"
                             for _ in range(draw(st.integers(0, 2))))
            if draw(st.booleans()):
                arg = json.dumps(draw(st.lists(words, max_size=4))) if draw(st.booleans()) else "[" + draw(words)
            else:
                arg = " ".join(draw(st.lists(words, max_size=4)))
            tail = draw(st.sampled_from(["", " \\", "\\", " `"]))
            lines.append(f"{kw} {flags} {arg}{tail}")
    return "\n".join(lines)


@SETTINGS
@given(dockerfile_text())
def test_dockerfile_parse_never_crashes(text):
    try:
        df = dockerfile.parse(text)
    except BuildError as exc:
        assert "\n" not in str(exc).strip(), repr(str(exc))
        return
    for ins in df.instructions:
        assert ins.keyword.isupper() and ins.lineno >= 1


@SETTINGS
@given(st.text(max_size=300))
def test_dockerfile_parse_arbitrary_text(text):
    try:
        dockerfile.parse(text)
    except BuildError:
        pass


@SETTINGS
@given(words, st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True), words, max_size=4),
       st.sampled_from(["\\", "`"]))
def test_word_processing_never_crashes(text, env, escape):
    for fn in (dockerfile.expand, dockerfile.split_words):
        try:
            fn(text, env, escape)
        except dockerfile.SubstitutionError:
            pass
    if text.strip():  # whitespace-only: known bug, see test_kv_pairs_whitespace_only
        try:
            dockerfile.parse_kv_pairs(text, env, escape, "ENV")
        except dockerfile.SubstitutionError:
            pass


@SETTINGS
@given(st.one_of(words, st.from_regex(r"[0-9]{1,6}(-[0-9]{1,6})?(/[a-z]{0,4})?", fullmatch=True)))
def test_expose_port_never_crashes(text):
    try:
        out = dockerfile.parse_port(text)
    except dockerfile.SubstitutionError:
        return
    assert "/" in out


sizes = st.one_of(words, st.from_regex(r"\s*[0-9]{1,30}(\.[0-9]{0,5})?\s*[bkmgtBKMGT]?[iI]?[bB]?\s*", fullmatch=True))


@SETTINGS
@given(sizes)
def test_size_option_never_crashes(text):
    try:
        assume(float(text.strip().rstrip("bkmgtiBKMGTI").strip() or "x") >= 1)  # sub-byte: known bug below
    except ValueError:
        pass
    try:
        value = parse_size_bytes(text, "--memory")
    except UsageError as exc:
        assert "--memory" in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(value, int) and value > 0


@SETTINGS
@given(st.one_of(words, st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers().map(str)))
def test_cpus_option_never_crashes(text):
    try:
        value = parse_cpus(text, "--cpus", max_cpus=2)
    except UsageError as exc:
        assert "--cpus" in str(exc)
        return
    assert 0 < value <= 2


ports = st.one_of(
    words,
    st.from_regex(r"(\[?[0-9a-f.:]{0,20}\]?:)?[0-9]{0,6}(:[0-9]{0,6})?(/[a-zA-Z]{0,4})?", fullmatch=True),
)


@SETTINGS
@given(ports)
def test_port_spec_never_crashes(text):
    try:
        pm = parse_port_spec(text)
    except UsageError as exc:
        assert "\n" in text or "\n" not in str(exc)
        return
    assert 0 <= pm.host_port <= 65535 and 1 <= pm.container_port <= 65535 and pm.protocol in ("tcp", "udp")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def _config_like(draw_val):
    return draw_val


@st.composite
def oci_documents(draw):
    """(index, manifest, config) where each is valid-shaped with random holes, or random JSON."""
    cfg = draw(st.one_of(json_values, st.fixed_dictionaries(
        {}, optional={"config": json_values, "rootfs": st.one_of(json_values, st.fixed_dictionaries(
            {"type": st.just("layers"), "diff_ids": st.one_of(json_values, st.lists(st.text(max_size=8), max_size=2))})),
            "architecture": json_values, "os": json_values})))
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(oci_documents(), json_values, st.booleans())
def test_store_reads_malformed_oci_json_with_one_line_errors(tmp_path_factory, config, manifest_extra, break_index):
    from runtime.image.store import REF_ANNOTATION, ImageStore, canonical_json
    from core.paths import HostPaths

    root = tmp_path_factory.mktemp("fuzz-store")
    store = ImageStore(HostPaths(root=root).ensure())
    cfg_digest = store.put_blob(canonical_json(config))
    manifest = {"schemaVersion": 2, "config": {"digest": cfg_digest}, "layers": manifest_extra}
    if isinstance(manifest_extra, dict):
        manifest = {**manifest_extra, "config": manifest_extra.get("config", {"digest": cfg_digest})}
    man_bytes = canonical_json(manifest)
    man_digest = store.put_blob(man_bytes)
    index = {"schemaVersion": 2, "manifests": [{"digest": man_digest, "size": len(man_bytes),
                                                "annotations": {REF_ANNOTATION: "fuzz:latest"}}]}
    if break_index:
        index = {"manifests": manifest_extra}
    (root / "images" / "index.json").write_text(json.dumps(index))
    try:
        store.list()
        store.resolve("fuzz:latest")
    except IsobenchError as exc:
        assert "\n" not in str(exc)


# ---- concrete bugs the properties above found, pinned as regression tests (fixed).

def test_kv_pairs_whitespace_only():
    with pytest.raises(dockerfile.SubstitutionError):
        dockerfile.parse_kv_pairs("\x0c", {}, "\\", "ENV")


def test_size_below_one_byte_is_an_error():
    with pytest.raises(UsageError):
        parse_size_bytes("0.1", "--memory")


def test_huge_size_is_an_error():
    with pytest.raises(UsageError):
        parse_size_bytes("9" * 400, "--memory")


def test_store_index_with_non_object_entry(tmp_path):
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    store = ImageStore(HostPaths(root=tmp_path).ensure())
    (tmp_path / "images" / "index.json").write_text('{"manifests": [null]}')
    with pytest.raises(ImageError):
        store.list()


image_configs = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "config": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "Env": st.one_of(json_values, st.lists(st.text(max_size=12), max_size=3)),
        "Cmd": st.one_of(json_values, st.lists(st.text(max_size=8), max_size=3)),
        "Entrypoint": st.one_of(json_values, st.lists(st.text(max_size=8), max_size=3)),
        "WorkingDir": json_values, "User": json_values,
        "ExposedPorts": st.one_of(json_values, st.dictionaries(st.text(max_size=10), st.just({}), max_size=3)),
    }))}))


@SETTINGS
@given(image_configs, st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=2).map(tuple)))
def test_image_config_to_process_never_crashes(image_config, command):
    """OCI image config (as read from a loaded/imported image) -> the container's process."""
    from runtime.config_image import exposed_ports, process_spec
    from runtime.spec import ContainerConfig

    cfg = ContainerConfig(image="x", command=command)
    try:
        spec = process_spec(cfg, image_config if isinstance(image_config, dict) else {"config": image_config},
                            "host")
        exposed_ports(image_config if isinstance(image_config, dict) else {})
    except IsobenchError:
        return
    assert all(isinstance(a, str) for a in spec.argv)


@st.composite
def oci_archives(draw):
    """(index, blobs) of an OCI layout where manifests/configs are content-addressed (so digests verify
    and the loader gets past them) but their JSON has random holes and wrong types."""
    blobs: dict[str, bytes] = {}

    def put(obj) -> str:
        import hashlib

        data = json.dumps(obj).encode()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d

    config = draw(st.one_of(json_values, st.fixed_dictionaries({"rootfs": st.one_of(json_values, st.fixed_dictionaries(
        {"diff_ids": st.one_of(json_values, st.lists(st.text(max_size=4), max_size=1))}))})))
    cfg_digest = put(config)
    layers = draw(st.one_of(json_values, st.lists(st.one_of(json_values, st.fixed_dictionaries(
        {"mediaType": st.sampled_from(["application/vnd.oci.image.layer.v1.tar+gzip", "x"]),
         "digest": st.sampled_from([cfg_digest, "sha256:" + "0" * 64, "md5:x"])})), max_size=1)))
    manifest = draw(st.one_of(json_values, st.fixed_dictionaries(
        {"config": st.one_of(json_values, st.just({"digest": cfg_digest})), "layers": st.just(layers)})))
    man_digest = put(manifest)
    desc = draw(st.one_of(json_values, st.fixed_dictionaries(
        {"digest": st.sampled_from([man_digest, "sha256:" + "1" * 64, "nope"]),
         "annotations": st.one_of(json_values, st.just({"org.opencontainers.image.ref.name": "fuzz:1"}))})))
    index = draw(st.one_of(json_values, st.fixed_dictionaries({"manifests": st.one_of(json_values, st.just([desc]))})))
    return index, blobs


def _write_archive(path, index, blobs) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", json.dumps(index).encode())] + \
                [(f"blobs/sha256/{d.split(':', 1)[1]}", b) for d, b in blobs.items()]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(oci_archives())
def test_image_load_of_malformed_oci_archives(tmp_path_factory, doc):
    from runtime.image import transfer
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    root = tmp_path_factory.mktemp("fuzz-load")
    archive = root / "a.tar"
    _write_archive(archive, *doc)
    store = ImageStore(HostPaths(root=root / "state").ensure())
    try:
        transfer.load(store, archive)
    except IsobenchError as exc:
        assert "\n" not in str(exc)


def test_image_load_index_is_a_list(tmp_path):
    from runtime.image import transfer
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    _write_archive(tmp_path / "a.tar", [], {})
    with pytest.raises(ImageError):
        transfer.load(ImageStore(HostPaths(root=tmp_path / "state").ensure()), tmp_path / "a.tar")
