"""Every environment runs the same bundle (pure logic, no root): for one job on an image whose config
sets Entrypoint, Cmd, User, Env and WorkingDir, native, runc, container and vm derive the same process
from bench.environments.bundles, and record the same digest."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from bench.environments import bundles
from bench.environments.base import Job, Limits, Volume
from core.paths import HostPaths
from runtime.image import layers as L
from runtime.image.store import ImageStore

IMAGE_CONFIG = {"config": {"Entrypoint": ["/bin/sh", "-c", 'echo "$@"', "probe"], "Cmd": ["default-arg"],
                           "User": "app", "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
                           "WorkingDir": "/srv/app"}}


@pytest.fixture
def app(tmp_path):
    """(paths, image name) of an image with a user ``app`` (1000:1000) in its /etc/passwd."""
    paths = HostPaths(root=tmp_path / "root").ensure()
    store = ImageStore(paths)
    entries = [(L.make_info("etc", tarfile.DIRTYPE, 0o755), None),
               (L.make_info("etc/group", tarfile.REGTYPE, 0o644), b"root:x:0:\napp:x:1000:\n"),
               (L.make_info("etc/passwd", tarfile.REGTYPE, 0o644),
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")]
    store.commit("app:1", IMAGE_CONFIG, [store.write_layer(entries)])
    return paths, "app:1"


def _processes(paths: HostPaths, job: Job) -> dict[str, tuple[dict, str]]:
    """Each environment's process for ``job`` as it derives it (its own hostname and port), with the
    digest it records."""
    pytest.importorskip("vmharness.api")
    from bench.environments import native, runc
    from bench.environments.container import container_config
    from bench.environments.vm import vm_config
    from runtime.oci import bundle

    out = {}
    # native: a free host port, the host's hostname; the child's launch comes from the bundle
    jb = bundles.job_bundle(job, paths, hostname="the-host", port=40123 if job.port else None)
    launch = native.launch_of(dict(jb.spec, root={"path": "/b/rootfs"}))
    proc = {"args": list(launch.args), "env": list(launch.env), "cwd": launch.cwd,
            "user": {"uid": launch.uid, "gid": launch.gid, "additionalGids": list(launch.groups)}}
    out["native"] = (proc, jb.process_sha256)
    # runc (and every OCI runtime): the bundle's config.json with its own root, cgroup and netns
    jb = bundles.job_bundle(job, paths, hostname="isobench-abcdef", throttle_dir=paths.tmp)
    cfg = runc.bundle_config(jb, Path("/b/rootfs"), "isobench-abcdef", "/proc/1/ns/net" if job.port else None)
    out["runc"] = (cfg["process"], bundles.digest(cfg["process"], job))
    # container: runtime.api.create converts the job's ContainerConfig with the same call
    made = bundle.image_spec(paths, container_config(job, paths), hostname="cid123", rootfs="/shared",
                             overlay_dirs=("/c/upper", "/c/work"), etc_files=(("/etc/hosts", "/c/hosts"),))
    out["container"] = (made.spec["process"], bundles.digest(made.spec["process"], job))
    # vm: the guest is handed the bundle's process
    jb = bundles.job_bundle(job, paths, hostname="vmhost")
    vcfg = vm_config(job, 18080 if job.port else None, process=jb.process, hostname="vmhost")
    out["vm"] = (vcfg.process, bundles.digest(vcfg.process, job))
    return out


def test_image_cmd_entrypoint_user_env_workdir_same_everywhere(app):
    paths, image = app
    got = _processes(paths, Job(image=image, argv=(), env=("EXTRA=1",)))
    digests = {name: d for name, (_, d) in got.items()}
    assert len(set(digests.values())) == 1, digests
    for name, (proc, _) in got.items():
        assert proc["args"] == ["/bin/sh", "-c", 'echo "$@"', "probe", "default-arg"], name
        assert proc["cwd"] == "/srv/app", name
        assert proc["user"]["uid"] == 1000 and proc["user"]["gid"] == 1000, name
        assert proc["user"].get("additionalGids") == [1000], name
        env = dict(e.partition("=")[::2] for e in proc["env"])
        assert env["GREETING"] == "hello world" and env["EXTRA"] == "1" and env["HOME"] == "/home/app", name
        assert env["PATH"] == "/usr/bin:/bin", name


def test_job_command_and_port_same_workload_everywhere(app):
    """The job's command replaces Cmd after the Entrypoint; ``{port}`` is the one per-environment value
    (natively a free host port) and the digest is taken with it unfilled."""
    paths, image = app
    job = Job(image=image, argv=("serve", "--port", "{port}"), port=80, workdir="/tmp", env=("GREETING=x",))
    got = _processes(paths, job)
    assert len({d for _, d in got.values()}) == 1
    assert got["native"][0]["args"][-3:] == ["serve", "--port", "40123"]
    for name in ("runc", "container", "vm"):
        assert got[name][0]["args"] == ["/bin/sh", "-c", 'echo "$@"', "probe", "serve", "--port", "80"], name
        assert got[name][0]["cwd"] == "/tmp"
        assert "GREETING=x" in got[name][0]["env"]


def test_digest_changes_with_what_runs_not_with_the_hostname(app):
    paths, image = app
    a = bundles.job_bundle(Job(image=image, argv=("x",)), paths, hostname="one")
    b = bundles.job_bundle(Job(image=image, argv=("x",)), paths, hostname="two")
    c = bundles.job_bundle(Job(image=image, argv=("y",)), paths, hostname="one")
    d = bundles.job_bundle(Job(image=image, argv=("x",), env=("A=1",)), paths, hostname="one")
    assert a.process_sha256 == b.process_sha256
    assert len({a.process_sha256, c.process_sha256, d.process_sha256}) == 3
    assert a.process_sha256.startswith("sha256:") and a.image_digest.startswith("sha256:")


def test_vm_guest_command_is_the_bundles_process(app):
    """What the guest's init shim runs (the fragment on the kernel command line) is the bundle's
    process: its env only (env -i), its cwd, its uid:gid through the setuid helper, its args."""
    pytest.importorskip("vmharness.api")
    import shlex

    from bench.environments.vm import vm_config
    from vmharness import artifacts as art
    from vmharness.vm import guest_fragment

    paths, image = app
    job = Job(image=image, argv=("a b", "c"))
    jb = bundles.job_bundle(job, paths, hostname="vmhost")
    frag = guest_fragment(vm_config(job, process=jb.process, hostname="vmhost").process)
    lines = frag.splitlines()
    assert lines[0] == "WORKDIR=/srv/app"
    argv = shlex.split(lines[1].removeprefix("set -- "))
    p = jb.process
    assert argv == [art.SHIM_BUSYBOX, "env", "-i", *p["env"], art.SHIM_SETUID, "1000", "1000", *p["args"]]
    assert p["args"][-2:] == ["a b", "c"] and "HOSTNAME=vmhost" in p["env"]
    # root: no setuid helper
    root = dict(p, user={"uid": 0, "gid": 0})
    assert art.SHIM_SETUID not in guest_fragment(root)


def test_runc_config_changes_only_root_cgroup_and_netns(app):
    from bench.environments import runc

    paths, image = app
    job = Job(image=image, argv=("httpd", "-p", "{port}"), port=80, cap_drop=("NET_RAW",),
              limits=Limits(cpus=0.5, cpu_shares=512, cpuset_cpus="0", memory_bytes=64 << 20, pids_max=32),
              volume=Volume(paths.root / "vol", "/data"))
    jb = bundles.job_bundle(job, paths, hostname="isobench-abc")
    cfg = runc.bundle_config(jb, Path("/b/rootfs"), "isobench-abc", "/proc/42/ns/net")
    assert cfg["root"] == {"path": "/b/rootfs", "readonly": False}
    assert cfg["linux"]["cgroupsPath"] == "/isobench-abc/ctr"
    assert {"type": "network", "path": "/proc/42/ns/net"} in cfg["linux"]["namespaces"]
    assert {"type": "network"} in jb.spec["linux"]["namespaces"]  # the shared bundle is not changed
    assert cfg["process"] == jb.process and cfg["mounts"] == jb.spec["mounts"]
    res = cfg["linux"]["resources"]
    assert res["cpu"] == {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"}
    assert res["memory"]["limit"] == 64 << 20 and res["pids"] == {"limit": 32}
    assert cfg["mounts"][-1]["destination"] == "/data" and cfg["mounts"][-1]["source"] == str(paths.root / "vol")
    assert "CAP_NET_RAW" not in cfg["process"]["capabilities"]["bounding"]
    assert cfg["process"]["terminal"] is False
    plain = runc.bundle_config(bundles.job_bundle(Job(image=image, argv=("true",)), paths, hostname="h"),
                               Path("/r"), "isobench-x", None)
    assert {"type": "network"} in plain["linux"]["namespaces"] and "resources" in plain["linux"]


def test_ledger_records_each_process_once(app):
    paths, image = app
    led = bundles.Ledger()
    job = Job(image=image, argv=("x", "{port}"), port=80)
    jb = bundles.job_bundle(job, paths, hostname="h")
    extra = led.note(jb.process_sha256, jb.image_digest, job, jb.process)
    led.note(jb.process_sha256, jb.image_digest, job, jb.process)
    assert extra == {"process_sha256": jb.process_sha256, "image_digest": jb.image_digest}
    (rec,) = led.describe().values()
    assert rec["args"][-2:] == ["x", "{port}"] and rec["uid"] == 1000 and rec["cwd"] == "/srv/app"
