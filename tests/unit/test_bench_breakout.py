"""The isolation workload's breakout part: probe script + parsing + verdicts, cap_drop mapping, report rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.environments.base import Job
from bench.report import tables
from bench.workloads import isolation

def test_breakout_script_roundtrip_through_sh():
    script = isolation.breakout_script({"a": ["/bin/sh", "-c", "echo 'hi'; exit 3"], "b": ["/nonexistent/x"],
                                        "c": ["/bin/sh", "-c", 'echo "$((1+1))" WROTE']})
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10).stdout
    res = isolation.parse_breakout(out)
    assert res["a"] == (3, "hi")
    assert res["b"][0] == 127
    assert res["c"] == (0, "2 WROTE")


def test_parse_breakout_unfinished_probe():
    out = f"{isolation.PROBE_MARK} a\npartial\n"
    assert isolation.parse_breakout(out) == {"a": (None, "partial")}


def test_judge_breakout_verdicts_and_notes():
    res = {"raw": (1, "DENIED socket: Operation not permitted"), "mod": (1, "DENIED init_module: Function not implemented"),
           "pids": (0, "1"), "gone": (None, "")}
    cells = isolation.judge_breakout("runc", res, {"raw": ("NET_RAW",)}, {n: n + " desc" for n in res},
                                     lambda n, c, t: "DENIED" in t)
    assert cells["breakout:raw"]["isolated"] is True
    assert "--cap-drop NET_RAW" in cells["breakout:raw"]["evidence"]
    assert "ENOSYS" in cells["breakout:mod"]["evidence"]
    assert cells["breakout:pids"]["isolated"] is False
    assert cells["breakout:pids"]["evidence"].startswith("NOT blocked")
    assert cells["breakout:gone"]["isolated"] is None


def test_native_skips_only_host_changing_probes():
    from runtime.security import probes

    assert set(isolation.NATIVE_SKIP) <= set(probes.PROBES)


def test_container_config_cap_drop(tmp_path):
    from bench.environments.container import container_config
    from core.paths import HostPaths

    cfg = container_config(Job(image="i", argv=("true",), cap_drop=("NET_RAW",)), HostPaths(root=tmp_path))
    assert cfg.security.cap_drop == ("NET_RAW",)


def test_report_breakout_rows_and_counts():
    facts = {"isolation": {
        "native": {"pid": {"isolated": False, "evidence": "x"},
                   "breakout:a": {"isolated": False, "evidence": "NOT blocked: exit 0", "description": "do a"},
                   "breakout:b": {"isolated": None, "evidence": "skipped natively: would change the host"}},
        "runc": {"breakout:a": {"isolated": True, "evidence": "blocked: exit 1"},
                 "breakout:b": {"isolated": True, "evidence": "blocked: exit 1"}}}}
    df = tables.namespace_matrix(facts)
    rows = {r["namespace"]: r for r in df.to_dict("records")}
    assert rows["breakout probe a: do a"]["native"].startswith("NOT blocked")
    assert rows["breakout probe b"]["native"].startswith("skipped")
    assert rows["breakout probes blocked"] == {"namespace": "breakout probes blocked", "native": "0/1 run",
                                               "runc": "2/2 run"}
    assert not any(k.startswith("breakout:") for k in rows)  # not also listed as extra namespaces


def test_enforcement_window_deltas_and_median_fact():
    from bench.profiles import PROFILES
    from bench.workloads import enforcement
    from bench.workloads.base import Context
    from core.paths import HostPaths

    assert enforcement.window_deltas([(0.0, 0.0), (1.0, 0.5), (3.0, 1.5)]) == [0.5, 0.5]
    ctx = Context(paths=HostPaths(root=Path("/nonexistent")), profile=PROFILES["quick"], images={})
    for v, ok in ((0.5, True), (0.6, True), (0.52, False)):
        enforcement._fact(ctx, "runc", "memory", 64, v, "MiB", ok, "ev")
    enforcement._fact(ctx, "runc", "cpus", 0.5, 0.5, "CPUs", lambda m: m <= 0.575, "ev")
    enforcement._fact(ctx, "runc", "cpus", 0.5, 0.9, "CPUs", lambda m: m <= 0.575, "ev")
    enforcement._fact(ctx, "runc", "cpus", 0.5, 0.51, "CPUs", lambda m: m <= 0.575, "ev")
    rows = {r["limit"]: r for r in ctx.facts["enforcement"]}
    assert rows["memory"]["values"] == 3 and rows["memory"]["measured"] == 0.52
    assert rows["memory"]["held"] is False           # a per-run verdict: every run must hold
    assert rows["cpus"]["held"] is True and rows["cpus"]["measured"] == 0.51  # judged on the median
    assert "median of 3 values" in rows["cpus"]["evidence"]


def test_quick_profile_gives_five_enforcement_values():
    from bench.profiles import PROFILES
    from bench.workloads import enforcement

    assert enforcement.WORKLOAD.iterations(PROFILES["quick"]) == (0, 5)


def test_vm_groups_fit_the_kernel_command_line():
    import base64
    import shlex

    from runtime.security import probes

    ctx = {"host_pid": 4194304, "loopback_port": 65535, "state_root": "/var/lib/isobench/some/long/root"}
    argvs = {n: probes.render(p.argv, ctx) for n, p in probes.PROBES.items() if not p.needs_helper}
    groups = isolation.vm_groups(argvs)
    assert [n for g in groups for n in g] == list(argvs)
    for g in groups:
        encoded = base64.b64encode(shlex.join(["/bin/sh", "-c", isolation.breakout_script(g)]).encode())
        assert len(encoded) <= isolation.VM_CMDLINE_BUDGET or len(g) == 1
