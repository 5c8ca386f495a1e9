"""Builder end to end (root): busybox and multi-stage builds with RUN, cache hits, reproducibility,
OCI tools reading the layout, and bad input leaving the store unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from app.cli import main as cli_main
from core.errors import BuildError
from runtime.image.builder import BuildOptions, build
from runtime.image.store import ImageStore

pytestmark = pytest.mark.requires("root", "busybox")

SIMPLE = """\
FROM busybox
ENV GREETING="hello world"
COPY app.txt /app/
RUN echo "$GREETING" > /app/greeting && rm /bin/ls
CMD ["cat", "/app/greeting"]
"""

MULTI = """\
ARG BASE=busybox
FROM ${BASE} AS build
WORKDIR /src
COPY . .
RUN tr a-z A-Z < app.txt > upper.txt && mkdir -p /out && cp upper.txt /out/
FROM busybox
LABEL stage=final
COPY --from=build /out/upper.txt /srv/
COPY --chown=nobody:nogroup app.txt /tmp/app.txt
USER nobody
EXPOSE 8080
VOLUME /data
ENTRYPOINT ["cat"]
CMD ["/srv/upper.txt"]
"""


def _ctx(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {"app.txt": "hello app\n"}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def _build(store, ctx, tag, **kw):
    lines: list[str] = []
    rec = build(store, BuildOptions(context_dir=ctx, dockerfile=ctx / "Dockerfile", tag=tag, **kw), log=lines.append)
    return rec, lines


def test_busybox_build_run_step_cache_and_reproducibility(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    ctx = _ctx(tmp_path, SIMPLE)
    rec, lines = _build(store, ctx, "itest-simple:1")
    assert "Step 4/5 : RUN echo \"$GREETING\" > /app/greeting && rm /bin/ls" in lines
    assert rec.config["config"]["Cmd"] == ["cat", "/app/greeting"]
    assert "GREETING=hello world" in rec.config["config"]["Env"]
    flat = store.flat_rootfs(rec)
    assert (flat / "app" / "greeting").read_text() == "hello world\n"
    assert (flat / "app" / "app.txt").read_text() == "hello app\n"
    assert not os.path.lexists(flat / "bin" / "ls")  # deletion carried as an OCI whiteout
    # the RUN layer unpacked for overlayfs holds the whiteout as a char 0:0 device
    run_dir = store.layer_dirs(rec)[-1]
    st = os.lstat(run_dir / "bin" / "ls")
    assert st.st_rdev == 0 and (st.st_mode & 0o170000) == 0o020000

    again, lines2 = _build(store, ctx, "itest-simple:1")
    assert lines2.count(" ---> Using cache") == 2  # COPY and RUN
    assert again.manifest_digest == rec.manifest_digest

    fresh, lines3 = _build(store, ctx, "itest-simple:2", no_cache=True)
    assert " ---> Using cache" not in lines3
    assert [lr.digest for lr in fresh.layers] == [lr.digest for lr in rec.layers]

    (ctx / "app.txt").write_text("changed\n")
    changed, lines4 = _build(store, ctx, "itest-simple:3")
    assert lines4.count(" ---> Using cache") == 0
    assert changed.layers[1].digest != rec.layers[1].digest


def test_multistage_build(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    ctx = _ctx(tmp_path, MULTI, {"app.txt": "hello app\n", ".dockerignore": "secret.txt\n", "secret.txt": "x"})
    rec, lines = _build(store, ctx, "itest-multi:1")
    cfg = rec.config["config"]
    assert cfg["Entrypoint"] == ["cat"] and cfg["Cmd"] == ["/srv/upper.txt"]
    assert cfg["User"] == "nobody" and cfg["ExposedPorts"] == {"8080/tcp": {}} and cfg["Volumes"] == {"/data": {}}
    assert cfg["Labels"] == {"stage": "final"}
    flat = store.flat_rootfs(rec)
    assert (flat / "srv" / "upper.txt").read_text() == "HELLO APP\n"
    st = os.stat(flat / "tmp" / "app.txt")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert oct(os.stat(flat / "tmp").st_mode & 0o7777) == "0o1777"  # COPY kept the parent's mode
    assert not (flat / "src").exists()  # the build stage is not part of the final image
    assert len(rec.layers) == 3  # busybox + COPY --from + COPY --chown
    # .dockerignore kept secret.txt out of the build stage's COPY . .
    stage_layers = [json.loads(p.read_text()) for p in paths.build_cache.glob("*.json")]
    assert stage_layers  # cache entries exist
    _, again = _build(store, ctx, "itest-multi:1", build_args={"BASE": "busybox"})
    assert again.count(" ---> Using cache") == 5


def test_rebuild_uses_cache_from_cli(paths, tmp_path, capsys, leak_check):
    ctx = _ctx(tmp_path, SIMPLE)
    assert cli_main(["image", "build", "-t", "itest-cli:1", str(ctx)]) == 0
    capsys.readouterr()
    assert cli_main(["image", "build", "-t", "itest-cli:1", str(ctx)]) == 0
    out = capsys.readouterr().out
    assert out.count("Using cache") == 2
    assert cli_main(["image", "ls"]) == 0
    assert "itest-cli:1" in capsys.readouterr().out


BAD = [
    ("FROM nosuchimage:1\n", "Dockerfile:1: unknown base image 'nosuchimage:1'"),
    ("FROM busybox\nCOPY ../outside /x\n", "Dockerfile:2: COPY source '../outside' is outside the build context"),
    ("FROM busybox\nCOPY /etc/passwd /x\n", "Dockerfile:2: COPY source '/etc/passwd' is outside the build context"),
    ("FROM busybox\nCOPY escape /x\n", "Dockerfile:2: COPY source 'escape' is a symlink pointing outside"),
    ("FROM busybox\nCOPY missing.txt /x\n", "Dockerfile:2: COPY source 'missing.txt' not found"),
    ("FROM busybox\nCOPY --from=nostage /a /b\n", "Dockerfile:2: COPY --from=nostage: no stage named"),
    ("FROM busybox\nRUN [\"sh\", \n", "Dockerfile:2: malformed exec-form JSON"),
    ("FROM busybox\nBOGUS x\n", "Dockerfile:2: unknown instruction 'BOGUS'"),
    ("RUN true\nFROM busybox\n", "Dockerfile:1: RUN before the first FROM"),
    ("# nothing\nRUN true\n", "Dockerfile:2: missing FROM"),
    ("FROM busybox\nRUN exit 3\n", "Dockerfile:2: RUN exit 3 failed with exit code 3"),
    ("FROM busybox\nADD http://example.com/x /x\n", "Dockerfile:2: ADD from a URL"),
    ("FROM busybox\nENV A=${B\n", "Dockerfile:2: missing '}'"),
]


@pytest.mark.parametrize("dockerfile,msg", BAD)
def test_bad_input_one_line_exit_1_store_unchanged(paths, tmp_path, capsys, dockerfile, msg, leak_check):
    ctx = _ctx(tmp_path, dockerfile)
    os.symlink("/etc/passwd", ctx / "escape")
    ImageStore(paths)  # make sure the layout exists
    index_before = (paths.images / "index.json").read_bytes()
    rc = cli_main(["image", "build", "-t", "itest-bad:1", str(ctx)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert msg in err, err
    assert (paths.images / "index.json").read_bytes() == index_before


def test_concurrent_builds_do_not_corrupt_the_index(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            ctx = _ctx(tmp_path / f"c{i}", f"FROM busybox\nCOPY app.txt /app{i}.txt\nRUN echo {i} > /n\n",
                       {"app.txt": f"{i}\n"})
            _build(ImageStore(paths), ctx, f"itest-conc:{i}")
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised by the test
            errors.append(exc)

    for i in range(4):
        (tmp_path / f"c{i}").mkdir()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    names = {r.name for r in store.list()}
    assert {f"itest-conc:{i}" for i in range(4)} <= names


@pytest.mark.requires("skopeo")
def test_oci_tools_read_the_layout(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    rec, _ = _build(store, _ctx(tmp_path, SIMPLE), "itest-oci:1")
    out = subprocess.run(["skopeo", "inspect", f"oci:{paths.images}:itest-oci:1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["Digest"] == rec.manifest_digest
    assert info["Layers"] == [lr.digest for lr in rec.layers]
    if shutil.which("umoci"):
        ls = subprocess.run(["umoci", "ls", "--layout", str(paths.images)], capture_output=True, text=True, timeout=60)
        assert ls.returncode == 0 and "itest-oci:1" in ls.stdout.split()


def test_scratch_image_with_run_free_copy(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    ctx = _ctx(tmp_path, "FROM scratch\nCOPY app.txt /\nWORKDIR /w\n")
    rec, _ = _build(store, ctx, "itest-scratch:1")
    flat = store.flat_rootfs(rec)
    assert sorted(os.listdir(flat)) == ["app.txt", "w"]


def test_build_error_is_builderror_with_location(paths, tmp_path, leak_check):
    ctx = _ctx(tmp_path, "FROM busybox\nCOPY nothere /x\n")
    with pytest.raises(BuildError, match=r"Dockerfile:2:"):
        _build(ImageStore(paths), ctx, "itest-err:1")


def test_run_deletions_renames_and_opaque_dirs(paths, tmp_path, leak_check):
    store = ImageStore(paths)
    ctx = _ctx(tmp_path, "FROM busybox\nRUN mkdir -p /d/sub && echo a > /d/sub/f\n"
                         "RUN mv /d /e && chown nobody /bin/busybox && rm -rf /var && mkdir /var && echo n > /var/only\n")
    rec, _ = _build(store, ctx, "itest-overlay:1")
    flat = store.flat_rootfs(rec)
    assert not (flat / "d").exists() and (flat / "e" / "sub" / "f").read_text() == "a\n"
    assert os.listdir(flat / "var") == ["only"]
    assert os.stat(flat / "bin" / "busybox").st_uid == 65534
    assert os.stat(flat / "bin" / "busybox").st_size > 100_000  # data copied up, not metadata-only
    top = store.layer_dirs(rec)[-1]
    assert os.getxattr(top / "var", "trusted.overlay.opaque") == b"y"


def test_add_tar_globs_dockerignore_chmod(paths, tmp_path, leak_check):
    import tarfile as _tar

    store = ImageStore(paths)
    ctx = _ctx(tmp_path, "FROM busybox\nADD bundle.tar.gz /opt/\nCOPY *.txt /txt/\nCOPY --chmod=700 . /ctx/\n"
                         "ADD plain.bin /opt/plain.bin\n",
               {"a.txt": "a", "b.txt": "b", "secret.key": "k", ".dockerignore": "*.key\n", "plain.bin": "raw"})
    payload = tmp_path / "payload"
    (payload / "dir").mkdir(parents=True)
    (payload / "dir" / "inner.txt").write_text("inside")
    with _tar.open(ctx / "bundle.tar.gz", "w:gz") as tf:
        tf.add(payload / "dir", arcname="dir")
    rec, _ = _build(store, ctx, "itest-add:1")
    flat = store.flat_rootfs(rec)
    assert (flat / "opt" / "dir" / "inner.txt").read_text() == "inside"
    assert (flat / "opt" / "plain.bin").read_text() == "raw"
    assert sorted(os.listdir(flat / "txt")) == ["a.txt", "b.txt"]
    assert (flat / "ctx" / "Dockerfile").exists() and not (flat / "ctx" / "secret.key").exists()
    assert os.stat(flat / "ctx" / "a.txt").st_mode & 0o777 == 0o700


@pytest.mark.slow
def test_debian_base_with_run_step(paths, tmp_path, leak_check):
    """debian:bookworm comes from the machine-wide debootstrap cache (made once, minutes, if missing)."""
    store = ImageStore(paths)
    ctx = _ctx(tmp_path, "FROM debian:bookworm\nRUN dpkg-query -W -f='${Package}\\n' > /pkgs && id -u > /uid\n")
    rec, _ = _build(store, ctx, "itest-debian:1")
    flat = store.flat_rootfs(rec)
    assert "bash" in (flat / "pkgs").read_text().split()
    assert (flat / "uid").read_text() == "0\n"
    assert (paths.base_cache / "debian-bookworm-minbase.tar.gz").exists()
