"""Independent replicates, seeded round order, same-accounting helpers and the VM-cost parsers (issue 14)."""

from __future__ import annotations

import json

import pytest

from bench import runner
from bench.results import Sample, append_samples, independent_counts, load_run
from bench.stats import build_suite
from bench.workloads import footprint, memory, syscalls
from bench.workloads.base import Measurement


def test_round_orders_are_seeded_shuffles_not_the_fixed_order():
    envs = ["native", "container", "runc", "vm"]
    a = runner.round_orders(42, envs, 20)
    assert a == runner.round_orders(42, envs, 20)          # same seed, same orders
    assert a != runner.round_orders(43, envs, 20)
    assert all(sorted(o) == sorted(envs) for o in a)       # every environment once per round
    assert len({tuple(o) for o in a}) > 5                  # orders differ between rounds
    assert sum(o[0] == "native" for o in a) < 20           # native is not always first


class _Ratio:
    ratio_metrics = {"ratio_to_native": "ops"}


def test_ratio_to_native_is_computed_after_the_round_whatever_the_order():
    vals = {"vm": {"ops": (50.0, "vm-boot-x")}, "native": {"ops": (200.0, "native-0")},
            "runc": {"ops": (190.0, "runc-0")}}
    out = runner.derived_ratios(_Ratio(), vals)
    assert out["vm"] == [Measurement("ratio_to_native", 0.25, "vm-boot-x")]  # keeps the shared replicate
    assert out["runc"][0].value == pytest.approx(0.95)
    assert "native" not in out
    assert runner.derived_ratios(_Ratio(), {"vm": {"ops": (1.0, "r")}}) == {}  # no native: no ratio


def test_samples_carry_replicate_and_accelerator_and_count_shared_values_once(tmp_path):
    rows = [Sample("cpu", "vm", "ops", 10.0 + i, "ops/s", i, "higher", replicate="vm-boot-cpu", accelerator="tcg")
            for i in range(5)]
    rows += [Sample("cpu", "native", "ops", 90.0 + i, "ops/s", i, "higher") for i in range(5)]
    append_samples(tmp_path, rows)
    run = load_run(tmp_path)
    assert set(run.samples[run.samples.environment == "vm"].accelerator) == {"tcg"}
    assert set(run.samples[run.samples.environment == "native"].accelerator) == {"none"}
    n = independent_counts(run.samples)
    assert n[("cpu", "ops", "vm")] == 1 and n[("cpu", "ops", "native")] == 5


def test_old_runs_without_the_new_columns_still_load(tmp_path):
    (tmp_path / "samples.csv").write_text("benchmark,environment,metric,value,unit,iteration,direction\n"
                                          "cpu,vm,ops,1.0,ops/s,0,higher\ncpu,vm,ops,2.0,ops/s,1,higher\n")
    (tmp_path / "meta.json").write_text(json.dumps({"accelerator": "tcg"}))
    run = load_run(tmp_path)
    assert list(run.samples.accelerator) == ["tcg", "tcg"]
    assert independent_counts(run.samples)[("cpu", "ops", "vm")] == 2


def test_pyperf_suite_records_independent_values():
    suite = build_suite({"cpu.ops": [(1.0, None, None, "vm-boot"), (2.0, None, None, "vm-boot"),
                                     (3.0, None, None, "vm-boot")],
                         "startup.t": [(1.0, None, None, "a"), (2.0, None, None, "b")]},
                        {"cpu.ops": "ops/s", "startup.t": "s"}, {})
    md = {b.get_name(): b.get_metadata() for b in suite.get_benchmarks()}
    assert md["cpu.ops"]["isobench_independent_values"] == 1
    assert md["startup.t"]["isobench_independent_values"] == 2


def test_slope_fit_recovers_a_cost_and_its_noise():
    slope, se = footprint.slope_fit([1000.0, 990.0, 980.0, 970.0, 960.0])
    assert slope == pytest.approx(-10.0) and se == pytest.approx(0.0, abs=1e-9)
    slope, se = footprint.slope_fit([1000.0, 1001.0, 999.0, 1000.5, 999.5])
    assert abs(slope) < 2 * se                             # noise only: inside its own floor
    assert footprint.slope_fit([5.0, 3.0])[1] == float("inf")


def test_up_and_down_readings_cancel_a_linear_drift():
    counts = footprint.up_down_counts(4)
    assert counts == [0, 1, 2, 3, 4, 3, 2, 1, 0]
    # 10 MiB per instance, while the host frees 7 MiB per reading (another tenant shrinking)
    ys = [1000.0 - 10 * k + 7 * t for t, k in enumerate(counts)]
    assert footprint.slope_fit(ys, counts)[0] == pytest.approx(-10.0)
    assert footprint.slope_fit(ys[:5])[0] == pytest.approx(-3.0)   # the up leg alone is fooled


def test_memory_cgroup_and_kernel_memory_readers(tmp_path):
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("12:memory:/isobench-abc/ctr\n0::/\n")
    assert footprint.memory_cgroup_of(7, proc, root) == root / "memory" / "isobench-abc" / "ctr"
    cg = root / "memory" / "isobench-abc" / "ctr"
    cg.mkdir(parents=True)
    (cg / "memory.kmem.usage_in_bytes").write_text("1048576\n")
    assert footprint.kernel_memory_bytes(cg) == 1 << 20
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.stat").write_text("anon 5\nkernel 4096\n")
    assert footprint.kernel_memory_bytes(v2) == 4096


def test_working_set_is_well_above_the_last_level_cache(tmp_path):
    for idx, (typ, size) in enumerate((("Data", "48K"), ("Instruction", "32K"), ("Unified", "2048K"),
                                       ("Unified", "32M"))):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "type").write_text(typ)
        (d / "size").write_text(size)
    llc = memory.last_level_cache_bytes(tmp_path)
    assert llc == 32 << 20
    assert memory.working_set_mib(llc) == 256                 # 4 x 32 MiB = 128, floor 256
    assert memory.working_set_mib(300 << 20) == 1024          # 4 x 300 MiB capped at 1 GiB
    assert memory.working_set_mib(100 << 20) == 448           # 400 rounded up to 64 MiB steps


def test_sysbench_memory_both_and_stress_ng_get_parsers():
    out = ("Total operations: 1 (  0.43 per second)\n1024.00 MiB transferred (9120.30 MiB/sec)\n"
           "...\n1024.00 MiB transferred (438.30 MiB/sec)\n")
    assert memory.parse_all(out) == [9120.30, 438.30]
    sng = ("stress-ng: metrc: [6890] stressor       bogo ops real time  usr time  sys time   bogo ops/s     bogo ops/s\n"
           "stress-ng: metrc: [6890] null             336624      2.00      0.35      1.43    168305.42      188843.12\n")
    assert syscalls.parse(sng) == pytest.approx(168305.42)
    with pytest.raises(Exception, match="no metrics line"):
        syscalls.parse("stress-ng: error: no stressor")
    assert "--memory-access-mode=rnd" in memory.random_command(1024, 1.0)


class _FakeEnv:
    def __init__(self, name: str) -> None:
        self.name = name

    def accelerator(self):
        return ("tcg", "test") if self.name == "vm" else ("none", "")


class _Ops:
    """A workload whose VM values share one boot (as run_tool's batch does) and that asks for a ratio."""

    name = "cpu"
    images = ()
    environments = ("native", "container", "vm")
    metrics = {}
    ratio_metrics = {"ratio_to_native": "ops"}
    noise_metrics = {}

    def __init__(self):
        from bench.workloads.base import Metric

        self.metrics = {"ops": Metric("ops/s", "higher"), "ratio_to_native": Metric("ratio", "higher")}
        self.calls = []

    def iterations(self, profile):
        return 1, 4

    def metric(self, name):
        return self.metrics[name]

    def setup(self, ctx):
        pass

    def measure(self, env, ctx, iteration):
        self.calls.append(env.name)
        if env.name == "vm":
            ctx.step_replicate = "vm-boot-cpu"
        return [Measurement("ops", {"native": 100.0, "container": 99.0, "vm": 20.0}[env.name])]

    def finish(self, ctx):
        pass

    def teardown(self, ctx):
        pass


def test_run_workload_follows_the_recorded_orders_and_labels_replicates(tmp_path):
    import io

    from bench import profiles
    from bench.workloads.base import Context

    (tmp_path / "logs").mkdir()
    w = _Ops()
    state = runner.RunState(run_dir=tmp_path, meta={"order_seed": 7})
    ctx = Context(paths=None, profile=profiles.get("quick"), images={})
    envs = {n: _FakeEnv(n) for n in ("native", "container", "vm")}
    prog = runner.Progress({("cpu", n): 5 for n in envs}, io.StringIO())
    runner.run_workload(w, envs, ctx, state, prog, lambda s: None)
    orders = state.meta["round_orders"]["cpu"]
    assert w.calls == [e for o in orders for e in o]          # every round in its recorded order
    assert len({tuple(o) for o in orders}) > 1
    run = load_run(tmp_path)
    ops = run.samples[run.samples.metric == "ops"]
    assert list(ops.environment) == [e for o in orders[1:] for e in o]   # round 0 was the warm-up
    n = independent_counts(run.samples)
    assert n[("cpu", "ops", "vm")] == 1 and n[("cpu", "ops", "native")] == 4
    assert n[("cpu", "ratio_to_native", "vm")] == 1
    vm_ratio = run.samples[(run.samples.metric == "ratio_to_native") & (run.samples.environment == "vm")]
    assert list(vm_ratio.value) == [0.2] * 4 and set(vm_ratio.accelerator) == {"tcg"}
