"""The environment interface for real, on the busybox benchmark image, in all four environments:
run to completion (exit code, output, phases), a published HTTP server reached from the host, usage
readings, limits applied (container, runc), and nothing left on the host afterwards (leak check).
"""

from __future__ import annotations

import urllib.request

import pytest

from bench.environments.base import READY_MARKER, Job, Limits

ENV_REQUIRES = {
    "native": ("root",),
    "container": ("root", "cgroup_v1"),
    "runc": ("root", "runc"),
    "vm": ("root", "libvirt", "qemu"),
}
ENVS = [pytest.param(name, marks=pytest.mark.requires(*req), id=name) for name, req in ENV_REQUIRES.items()]


@pytest.fixture(scope="module")
def busybox_image(isobench_root):
    from bench.environments import images
    from core.paths import HostPaths

    return images.ensure(HostPaths(root=isobench_root).ensure(), ("busybox",))["busybox"].manifest_digest


def make_env(name, paths):
    from bench.runner import make_environment

    return make_environment(name, paths)


@pytest.mark.parametrize("env_name", ENVS)
def test_run_exit_code_output_phases(env_name, paths, busybox_image, leak_check):
    """Also: every environment ran the job's bundle (the digest of its process is the one
    bench.environments.bundles makes for the job) and times its teardown apart from start-up."""
    from bench.environments import bundles

    job = Job(image=busybox_image, argv=("/bin/sh", "-c", "echo hello-from-inside; exit 3"), timeout_s=120)
    env = make_env(env_name, paths)
    try:
        out = env.run(job)
        bundles_seen = env.describe()["bundles"]
    finally:
        env.close()
    assert out.exit_code == 3
    assert "hello-from-inside" in out.output
    assert out.wall_s > 0 and out.phases
    assert list(out.phases.values()) == sorted(out.phases.values())
    assert max(out.phases.values()) <= out.wall_s + 0.01   # phases lie within create..exit
    assert out.extra["teardown_s"] > 0
    expected = bundles.job_bundle(job, paths, hostname="any")
    assert out.extra["process_sha256"] == expected.process_sha256
    assert out.extra["image_digest"] == expected.image_digest == busybox_image
    assert bundles_seen[expected.process_sha256]["args"] == list(job.argv)


@pytest.mark.parametrize("env_name", ENVS)
def test_published_http_server_and_usage(env_name, paths, busybox_image, leak_check):
    from bench.workloads.startup import first_response_s

    env = make_env(env_name, paths)
    inst = env.start(Job(image=busybox_image, argv=("httpd", "-f", "-p", "{port}", "-h", "/www"), port=80,
                         timeout_s=120))
    try:
        host, port = inst.endpoint
        assert host == "127.0.0.1"
        assert first_response_s(host, port, inst.created_ns, timeout_s=120) > 0
        assert urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read() == b"ok\n"
        u = inst.usage()
        assert u.pss_bytes > 0
        assert inst.target
    finally:
        inst.stop()
        env.close()


@pytest.mark.parametrize("env_name", ENVS)
def test_ready_marker_and_stop(env_name, paths, busybox_image, leak_check):
    env = make_env(env_name, paths)
    inst = env.start(Job(image=busybox_image, argv=("/bin/sh", "-c", f"echo {READY_MARKER}; exec sleep 1000"),
                         ready_marker=READY_MARKER, memory_mib=128, timeout_s=120))
    try:
        assert inst.wait_ready(120) > 0
    finally:
        inst.stop()
        env.close()


@pytest.mark.parametrize("env_name", [p for p in ENVS if p.id in ("container", "runc")])
def test_memory_limit_is_enforced(env_name, paths, busybox_image, leak_check):
    env = make_env(env_name, paths)
    script = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}"
    try:
        out = env.run(Job(image=busybox_image, argv=("/bin/sh", "-c", script),
                          limits=Limits(memory_bytes=32 << 20, pids_max=20), timeout_s=60))
    finally:
        env.close()
    assert out.exit_code == 137, out.output
    assert "survived" not in out.output
    assert 0 < out.extra["memory_peak_bytes"] <= (32 << 20) * 1.02


PROBE_DOCKERFILE = """\
FROM busybox
ENV GREETING="hello world"
WORKDIR /srv/app
USER nobody
ENTRYPOINT ["/bin/sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd) greeting=$GREETING home=$HOME args=$*", "probe"]
CMD ["one", "two"]
"""


@pytest.mark.requires("root", "runc", "cgroup_v1")
def test_native_container_runc_run_the_same_bundle(paths, busybox_image, tmp_path, leak_check):
    """An image whose config sets Entrypoint, Cmd, User, Env and WorkingDir: native, container and runc
    print the same uid, gid, groups, directory, environment and argv, with the same recorded digest;
    a job's command replaces Cmd after the Entrypoint in all three alike."""
    from runtime.image.builder import BuildOptions, build
    from runtime.image.store import ImageStore

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(PROBE_DOCKERFILE)
    rec = build(ImageStore(paths), BuildOptions(context_dir=ctx, dockerfile=ctx / "Dockerfile",
                                                tag="isobench-bundle-probe:test"))
    try:
        for argv, args in (((), "one two"), (("three", "four five"), "three four five")):
            outs = {}
            for name in ("native", "container", "runc"):
                env = make_env(name, paths)
                try:
                    outs[name] = env.run(Job(image=rec.manifest_digest, argv=argv, timeout_s=60))
                finally:
                    env.close()
            texts = {n: o.output.strip() for n, o in outs.items()}
            assert all(o.exit_code == 0 for o in outs.values()), texts
            assert len(set(texts.values())) == 1, texts
            assert texts["native"] == ("uid=65534 gid=65534 groups=65534 pwd=/srv/app greeting=hello world "
                                       f"home=/nonexistent args={args}")
            assert len({o.extra["process_sha256"] for o in outs.values()}) == 1
            assert {o.extra["image_digest"] for o in outs.values()} == {rec.manifest_digest}
    finally:
        ImageStore(paths).remove("isobench-bundle-probe:test")


@pytest.mark.requires("root", "runc")
def test_every_oci_runtime_on_the_host_runs_the_bundle_or_says_why(paths, busybox_image, leak_check):
    """runc and each other OCI runtime found here (crun, youki, runsc) run the same bundle through the
    same environment; one that cannot fails with its own message, which the runner records. crun 1.8
    refuses this machine's hybrid cgroup layout."""
    from bench.environments.ociruntimes import found_on_host
    from bench.environments.runc import RuncEnvironment
    from runtime.cgroups import detect

    runtimes = found_on_host()
    assert runtimes[0].name == "runc"
    for rt in runtimes:
        out = RuncEnvironment(paths, rt).run(Job(image=busybox_image, argv=("/bin/true",), timeout_s=60))
        if rt.name == "runc":
            assert out.exit_code == 0, out.output
            assert out.extra["cpu_usage_s"] > 0 and out.extra["memory_peak_bytes"] > 0  # runtime's readers
        elif out.exit_code != 0:
            assert out.output.strip(), f"{rt.name} failed without saying why"
        if rt.name == "crun" and detect().version == "hybrid":
            assert out.exit_code != 0 and "hybrid" in out.output, out.output
