"""A tiny real benchmark run (the CI smoke run): ``isobench bench --values 2 --only
startup,isolation,ephemerality`` in every environment this host has, producing files pyperf and the
results loader accept. And Ctrl-C: a partial but valid run, nothing left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import hostprobe

pytestmark = pytest.mark.requires("root", "runc", "cgroup_v1")
ISOBENCH = [sys.executable, "-m", "app.cli"]


def available_envs() -> list[str]:
    envs = ["native", "container", "runc"]
    if hostprobe.feature("libvirt")[0] and hostprobe.feature("qemu")[0]:
        envs.append("vm")
    return envs


def bench(args: list[str], root: Path, timeout_s: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, ISOBENCH_ROOT=str(root))
    return subprocess.run(ISOBENCH + ["bench", *args], capture_output=True, text=True, timeout=timeout_s, env=env,
                          cwd=Path(__file__).resolve().parents[2])


def test_tiny_run_valid_files(isobench_root, tmp_path, leak_check):
    import pyperf

    from bench.results import META_KEYS, SAMPLE_COLUMNS, load_run
    from runtime.security import probes

    envs = available_envs()
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = bench(["--values", "2", "--only", "startup,isolation,ephemerality", "--env", ",".join(envs),
                 "--out", str(out)], isobench_root)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ETA" in res.stderr
    run = load_run(out)
    assert list(run.samples.columns[:len(SAMPLE_COLUMNS)]) == list(SAMPLE_COLUMNS)
    for key in META_KEYS:
        assert key in run.meta, key
    assert run.meta["image_digests"]["busybox"].startswith("sha256:")
    assert run.failures == [], run.failures
    for env in envs:
        suite = pyperf.BenchmarkSuite.load(str(out / f"{env}.json"))
        b = suite.get_benchmark("startup.create_to_exit_s")
        assert len(b.get_values()) == 2
        iso = run.facts["isolation"][env]
        assert {k for k in iso if not k.startswith("breakout:")} == {"pid", "hostname", "network", "user", "ipc",
                                                                      "filesystem"}
        assert {k.removeprefix("breakout:") for k in iso if k.startswith("breakout:")} == set(probes.PROBES)
        assert run.facts["phases"][env]
    assert set(run.facts["ephemerality"]) == set(envs) - {"native"}
    for env in set(envs) - {"native"}:
        assert run.facts["ephemerality"][env]["without_volume_survived"] is False
    assert run.facts["isolation"]["native"]["pid"]["isolated"] is False
    assert run.facts["isolation"]["runc"]["pid"]["isolated"] is True
    # breakout probes: runc's defaults block the host-reaching ones; natively they get through
    assert run.facts["isolation"]["runc"]["breakout:see_host_pids"]["isolated"] is True
    assert run.facts["isolation"]["native"]["breakout:see_host_pids"]["isolated"] is False
    assert run.facts["isolation"]["native"]["breakout:set_hostname"]["isolated"] is None  # skipped natively
    # environments interleaved in a seeded random order per round, recorded in meta.json and followed
    orders = run.meta["round_orders"]["startup"]
    assert isinstance(run.meta["order_seed"], int) and len(orders) == 3 and all(sorted(o) == sorted(envs) for o in orders)
    first = run.samples[run.samples.metric == "create_to_exit_s"]
    assert list(first.environment) == orders[1] + orders[2]   # round 0 is the warm-up
    # every start-up value from its own instance; every VM row labelled with its accelerator
    assert first.replicate.nunique() == len(first)
    assert set(run.samples[run.samples.environment != "vm"].accelerator) == {"none"}
    if "vm" in envs:
        assert set(run.samples[run.samples.environment == "vm"].accelerator) == {run.meta["accelerator"]}
        assert run.meta["vm_machine"] in ("microvm", "q35")
    for key in ("isobench_commit", "kernel_cmdline", "cpu_governor"):
        assert run.meta[key], key
    assert run.meta["system"]["aslr"] and "load_avg_1min" in run.meta["system"]
    print(f"tiny run ({','.join(envs)}): {took:.1f}s")


def test_ctrl_c_leaves_valid_partial_run(isobench_root, tmp_path, leak_check):
    from bench.results import load_run

    out = tmp_path / "partial"
    env = dict(os.environ, ISOBENCH_ROOT=str(isobench_root))
    proc = subprocess.Popen(ISOBENCH + ["bench", "--values", "50", "--only", "startup", "--env", "native,runc",
                                        "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "samples.csv").exists():
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1000:]
    run = load_run(out)
    assert len(run.samples) > 0
    json.loads((out / "facts.json").read_text())
    assert run.meta.get("finished_utc")
    assert run.meta.get("interrupted") is True


@pytest.mark.parametrize("delay_s", [0.05, 0.4, 0.9, 1.6])
def test_terminal_ctrl_c_at_any_moment_leaves_nothing(isobench_root, tmp_path, leak_check, delay_s):
    """A terminal's Ctrl-C (SIGINT to the whole process group: the harness, runc, monitors) at a
    different moment each time: while runc, a mount or a container is being made, or in between. The
    run must end with 130, record no failure the interrupt caused, and leave nothing on the host
    (the leak check covers runc's state dirs, cgroups, mounts, port claims and DNAT rules)."""
    out = tmp_path / "partial"
    env = dict(os.environ, ISOBENCH_ROOT=str(isobench_root))
    proc = subprocess.Popen(ISOBENCH + ["bench", "--values", "30", "--only", "startup,isolation",
                                        "--env", "native,container,runc", "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "samples.csv").exists():
            time.sleep(0.05)
        time.sleep(delay_s)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-1500:]
    assert json.loads((out / "failures.json").read_text()) == []
    assert json.loads((out / "meta.json").read_text())["interrupted"] is True
