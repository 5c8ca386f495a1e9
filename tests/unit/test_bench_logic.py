"""Pure logic of the harness: job -> ContainerConfig / VMRunConfig (the shared bundle and runc's
config.json: test_bench_bundles), batching of VM iterations, isolation verdicts, phase medians, pyperf
round trip, CLI list parsing, ETA."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench import interrupt, profiles, runner, stats
from bench.environments import runc as runcenv
from bench.environments.base import Job, Limits, Volume, fill_port
from bench.workloads import base as wbase
from bench.workloads import footprint, isolation, startup
from core.errors import UsageError


def test_container_config_from_job(tmp_path):
    from bench.environments.container import container_config
    from core.paths import HostPaths

    job = Job(image="img", argv=("httpd", "-p", "{port}"), port=80, limits=Limits(cpus=1.5, memory_bytes=1 << 30),
              volume=Volume(tmp_path / "v", "/data"))
    cfg = container_config(job, HostPaths(root=tmp_path))
    assert cfg.command == ("httpd", "-p", "80")
    assert cfg.resources.cpu_quota_us == 150000 and cfg.resources.memory_bytes == 1 << 30
    assert cfg.network.mode == "bridge" and cfg.network.ports[0].container_port == 80
    assert cfg.network.ports[0].host_ip == "127.0.0.1"
    assert cfg.mounts[0].destination == "/data"
    assert container_config(Job(image="i", argv=("true",)), HostPaths(root=tmp_path)).network.mode == "none"


def test_container_phases_in_time_order():
    from bench.environments.container import phases_s

    ph = phases_s({"call": 1_000, "exec": 5_000, "created": 2_000, "exited": 9_000})
    assert list(ph) == ["created", "exec", "exited"] and ph["exited"] == pytest.approx(8e-6)


def test_vm_config_from_job():
    pytest.importorskip("vmharness.api")
    from bench.environments.vm import vm_config

    cfg = vm_config(Job(image="i", argv=("x",), vcpus=2, limits=Limits(cpus=0.5, memory_bytes=64 << 20), port=80), 18080)
    assert cfg.vcpus == 2 and cfg.cpus == 0.5 and cfg.memory_mib >= 128
    assert cfg.network == "bridge" and cfg.ports[0].host_port == 18080
    assert vm_config(Job(image="i", argv=("x",))).network == "none"


def test_fill_port():
    assert fill_port(("a", "-p", "{port}"), 8080) == ["a", "-p", "8080"]


def test_batch_split_roundtrip():
    argv = wbase.batch_argv(("sysbench", "cpu", "run"), 3)
    assert argv[:2] == ("/bin/sh", "-c") and "-lt 3" in argv[2]
    out = "boot noise\n==ISOBENCH-ITER 0\na\n==ISOBENCH-ITER 1\nb\nb2\n==ISOBENCH-ITER 2\nc\n"
    assert wbase.split_batch(out) == ["a\n", "b\nb2\n", "c\n"]


HOST = {"boot_id": "host-boot", "hostname": "vm", "shm_key": "123", "marker_file": "/tmp/m", "pids": "99",
        "ifaces": "eth0,isobench0,lo"}


def test_isolation_native_sees_everything():
    p = isolation.parse("BOOT host-boot\nPIDS 100\nMARKER 1\nHOSTNAME vm\nIFACES lo,eth0,isobench0,\n"
                        "LOOPBACK 1\nUIDMAP 0 0 4294967295;\nSHM 1\nFILE visible\n")
    row = isolation.judge(p, HOST)
    assert set(row) == set(isolation.KINDS)
    assert not any(v["isolated"] for v in row.values())
    assert "eth0" in row["network"]["evidence"]


def test_isolation_container_identity_uidmap_shares_users():
    p = isolation.parse("BOOT host-boot\nPIDS 3\nMARKER 0\nHOSTNAME abc\nIFACES lo,\nLOOPBACK 0\n"
                        "UIDMAP 0 0 4294967295;\nSHM 0\nFILE hidden\n")
    row = isolation.judge(p, HOST)
    assert row["pid"]["isolated"] and row["network"]["isolated"] and row["ipc"]["isolated"]
    assert row["hostname"]["isolated"] and row["filesystem"]["isolated"]
    assert row["user"]["isolated"] is False


def test_isolation_vm_own_kernel():
    p = isolation.parse("BOOT guest-boot\nPIDS 20\nMARKER 0\nHOSTNAME vm\nIFACES lo,\nLOOPBACK 0\n"
                        "UIDMAP 0 0 4294967295;\nSHM 0\nFILE hidden\n")
    row = isolation.judge(p, HOST)
    assert all(v["isolated"] for v in row.values())
    assert "own kernel" in row["user"]["evidence"]


def test_median_phases_ordered_segments():
    segs = startup.median_phases([{"a": 0.001, "b": 0.003}, {"a": 0.002, "b": 0.005}, {"a": 0.003, "b": 0.004}])
    assert [s["phase"] for s in segs] == ["a", "b"]
    assert segs[0] == {"phase": "a", "start_ms": 0.0, "end_ms": 2.0}
    assert segs[1]["start_ms"] == 2.0 and segs[1]["end_ms"] == 4.0


def test_pyperf_suite_roundtrip(tmp_path):
    import pyperf

    ok = stats.write_suite(tmp_path / "runc.json", {"startup.create_to_exit_s": [0.01, 0.02, 0.03],
                                                     "cpu.events_per_s_1t": [100.0, 0.0, 120.0]},
                           {"startup.create_to_exit_s": "s", "cpu.events_per_s_1t": "events/s"},
                           {"hostname": "h", "isobench_environment": "runc"})
    assert ok
    suite = pyperf.BenchmarkSuite.load(str(tmp_path / "runc.json"))
    b = suite.get_benchmark("startup.create_to_exit_s")
    assert b.get_values() == (0.01, 0.02, 0.03) and b.get_unit() == "second"
    cpu = suite.get_benchmark("cpu.events_per_s_1t")
    assert cpu.get_values() == (100.0, 120.0)  # pyperf stores only positive values
    assert cpu.get_metadata()["isobench_unit"] == "events/s"


def test_write_suite_nothing_storable(tmp_path):
    assert stats.write_suite(tmp_path / "x.json", {"a.b": [0.0]}, {}, {}) is False
    assert not (tmp_path / "x.json").exists()


def test_parse_list():
    assert runner.parse_list("vm,native", runner.ENV_ORDER, "--env") == ("native", "vm")
    assert runner.parse_list(None, runner.ENV_ORDER, "--env") == runner.ENV_ORDER
    with pytest.raises(UsageError, match="--only bogus"):
        runner.parse_list("startup,bogus", runner.WORKLOAD_ORDER, "--only")


def test_profiles():
    q = profiles.get("quick")
    assert q.values >= 5
    assert q.with_values(2).values == 2
    with pytest.raises(UsageError):
        profiles.get("slow")
    with pytest.raises(UsageError):
        q.with_values(0)


def test_progress_eta_uses_measured_step_times():
    prog = runner.Progress({("cpu", "vm"): 3, ("cpu", "native"): 3}, io.StringIO())
    prog.done(("cpu", "vm"), 10.0)
    prog.done(("cpu", "native"), 1.0)
    assert prog.eta_s() == pytest.approx(2 * 10.0 + 2 * 1.0)
    prog.skip(("cpu", "vm"))
    assert prog.eta_s() == pytest.approx(2.0)


def test_mem_available():
    assert footprint.mem_available_bytes("MemTotal: 10 kB\nMemAvailable:   2048 kB\n") == 2048 * 1024


def test_workload_metric_prefix_lookup():
    wl = footprint.WORKLOAD
    assert wl.metric("accounted_mib_per_instance_n3").unit == "MiB"
    assert wl.metric("accounted_mib_per_instance_n1").direction == "lower"


def test_every_workload_module_declares_itself():
    for name in runner.WORKLOAD_ORDER:
        wl = runner.load_workload(name)
        assert wl.name == name
        for m in wl.metrics.values():
            assert m.direction in ("lower", "higher") and m.unit


def test_cpu_model():
    from bench import meta

    assert meta.cpu_model("processor: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"


def test_pyperf_runs_carry_date_and_duration(tmp_path):
    import pyperf

    stats.write_suite(tmp_path / "vm.json", {"startup.create_to_exit_s": [(5.0, "2026-01-01 10:00:00", 6.0),
                                                                           (6.0, "2026-01-01 10:00:07", 7.0)]},
                      {"startup.create_to_exit_s": "s"}, {"isobench_accelerator": "tcg"})
    b = pyperf.BenchmarkSuite.load(str(tmp_path / "vm.json")).get_benchmark("startup.create_to_exit_s")
    assert b.get_values() == (5.0, 6.0)
    assert b.get_total_duration() == pytest.approx(13.0)
    assert b.get_metadata()["isobench_accelerator"] == "tcg"


def test_gc_recognises_bench_mount_points():
    from bench import gc

    m = gc._ID.search("/var/lib/isobench/tmp/bench/isobench-0123abcd/rootfs/proc")
    assert m and m.group(1) == "isobench-0123abcd"
    assert gc._ID.search("/var/lib/isobench/containers/0123/rootfs") is None


class _Env:
    def __init__(self, name: str) -> None:
        self.name = name


class _InterruptedStep(wbase.Workload):
    """Second step: a Ctrl-C that CPython swallowed, or that a failing clean-up turned into an OSError."""

    name = "startup"
    metrics = {"x_s": wbase.Metric("s", "lower")}
    environments = ("native", "runc")

    def __init__(self, how: str) -> None:
        self.how, self.calls, self.torn_down = how, [], False

    def measure(self, env, ctx, iteration):
        self.calls.append((env.name, iteration))
        if len(self.calls) == 2:
            interrupt.INTERRUPTED.set()
            if self.how == "oserror":
                raise OSError(16, "Device or resource busy")
        return [wbase.Measurement("x_s", 0.001)]

    def teardown(self, ctx):
        self.torn_down = True


@pytest.mark.parametrize("how", ["swallowed", "oserror"])
def test_swallowed_ctrl_c_still_ends_the_run(tmp_path, how):
    (tmp_path / "logs").mkdir()
    w = _InterruptedStep(how)
    state = runner.RunState(run_dir=tmp_path, meta={})
    ctx = wbase.Context(paths=None, profile=profiles.get("quick"), images={})
    prog = runner.Progress({("startup", "native"): 6, ("startup", "runc"): 6}, io.StringIO())
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run_workload(w, {"native": _Env("native"), "runc": _Env("runc")}, ctx, state, prog,
                                lambda s: None)
    finally:
        interrupt.reset()
    assert w.calls == [("native", 0), ("runc", 0)]  # no step after the interrupted one
    assert state.failures == []                     # the interrupt's symptom is not a benchmark failure
    assert w.torn_down


@pytest.fixture
def sigint_restored():
    import signal

    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)
    interrupt.reset()


def test_ctrl_c_inside_deferred_section_is_raised_when_it_ends(sigint_restored):
    import signal

    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred():
            with interrupt.deferred():       # nested: held until the outermost section ends
                interrupt.on_sigint(signal.SIGINT, None)
                done.append("recorded")      # the section still finishes its bookkeeping
            done.append("outer")
    assert done == ["recorded", "outer"]
    assert interrupt.INTERRUPTED.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a second Ctrl-C cannot cut the clean-up short
    with interrupt.deferred():               # raised once: clean-up code using sections runs through
        pass


def test_ctrl_c_outside_sections_raises_at_once(sigint_restored):
    import signal

    with pytest.raises(KeyboardInterrupt):
        interrupt.on_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        interrupt.raise_if_interrupted()


def test_error_inside_deferred_section_wins(sigint_restored):
    import signal

    with pytest.raises(OSError):
        with interrupt.deferred():
            interrupt.on_sigint(signal.SIGINT, None)
            raise OSError("mount failed")
    with pytest.raises(KeyboardInterrupt):   # noticed by the runner's next step
        interrupt.raise_if_interrupted()


def test_abandoned_runc_state_dir_removed_only_without_state_json(tmp_path, monkeypatch):
    monkeypatch.setattr(runcenv, "RUNC_STATE_ROOT", tmp_path)
    half = tmp_path / "isobench-half"
    half.mkdir()
    (half / "exec.fifo").touch()
    full = tmp_path / "isobench-full"
    full.mkdir()
    (full / "state.json").write_text("{}")
    assert runcenv.remove_abandoned_state("isobench-half")
    assert not half.exists()
    assert not runcenv.remove_abandoned_state("isobench-full")  # runc can load it: `runc delete` owns it
    assert full.exists()
    assert not runcenv.remove_abandoned_state("isobench-none")


def test_remove_cgroups_removes_ctr_then_parent_in_every_hierarchy(tmp_path, monkeypatch):
    monkeypatch.setattr(runcenv, "CGROUP_ROOT", tmp_path)
    for hier in ("cpu", "memory", "pids"):
        (tmp_path / hier / "isobench-x" / "ctr").mkdir(parents=True)
    (tmp_path / "cpu" / "isobench-other").mkdir()
    runcenv.remove_cgroups("isobench-x")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "cpu", "cpu/isobench-other", "memory", "pids"]
