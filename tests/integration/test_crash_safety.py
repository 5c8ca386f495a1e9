"""Crash safety: ``kill -9`` of the CLI at random points during build, run, rm (and bench when it
exists), then ``isobench gc``: nothing of the project may remain on the host (mounts, cgroups, veths,
netns, rules, domains, processes — the ``leak_check`` fixture), nothing under the state root (temp dirs,
half-written files, mounts, processes), and the image store must still be valid (index.json parses,
every blob hashes to its name).

Trial counts are sized for CI (~1-2 min); the seed is printed so a failure can be replayed with
``ISOBENCH_CRASH_SEED``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.security import crashkit, harness

pytestmark = pytest.mark.requires("root", "busybox")

# Leftovers no area's gc collects yet (reported to the lead), as (kind, path fragment). Build/RUN/load
# scratch dirs are leased (core.scratch) and the image store's temp files carry their writer's pid, so
# gc removes both; the VM harness's kernel/initrd files are still written through core.fsutil's
# atomic_write_bytes, whose ``.tmp-*`` names do not say which process wrote them.
KNOWN_UNCOLLECTED: set[tuple[str, str]] = set()
TRIALS_TOTAL = int(os.environ.get("ISOBENCH_CRASH_TRIALS", "24"))


def _dockerfile(ctx: Path, i: int) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "payload.txt").write_text(f"trial {i}\n" * 100)
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        f"RUN echo trial-{i} > /trial && dd if=/dev/zero of=/blob bs=64k count=16 2>/dev/null\n"
        "COPY payload.txt /payload.txt\n"
        f"RUN sleep 0.2 && echo done-{i} >> /trial\n")
    return ctx


def _verbs_available() -> set[str]:
    verbs = {"build"}
    ok, _ = harness.isobench_available()
    if ok:
        verbs |= {"run", "rm"}
    from app.cli import build_parser

    try:
        build_parser().parse_args(["bench", "--help"])
    except SystemExit as exc:
        if exc.code == 0:
            verbs.add("bench")
    return verbs


def _trial_plan(tmp_path: Path, root: Path, verbs: set[str], counts: dict[str, int]) -> tuple[list, dict]:
    plan: list[tuple[str, list[str]]] = []
    durations: dict[str, float] = {}
    if "build" in counts:
        # a warm base image and one clean build tell how long a build takes: kills land within that span
        crashkit.isobench(["image", "build", "-t", "crash-warm:1", str(_dockerfile(tmp_path / "ctx-warm", -1))],
                          root, check=True)
        durations["build"] = crashkit.timed(["image", "build", "--no-cache", "-t", "crash-warm:2",
                                             str(tmp_path / "ctx-warm")], root)
        for i in range(counts["build"]):
            plan.append(("build", ["image", "build", "-t", f"crash-{i}:1",
                                   str(_dockerfile(tmp_path / f"ctx-{i}", i))]))
    if "run" in counts:
        durations["run"] = crashkit.timed(["run", "--rm", "busybox", "sh", "-c", "echo warm"], root)
        for i in range(counts["run"]):
            net = ["--network", "bridge"] if i % 2 else ["--network", "none"]
            plan.append(("run", ["run", "--rm", *net, "busybox", "sh", "-c", "echo hi; sleep 0.2"]))
    if "rm" in counts:
        t0 = time.monotonic()
        for i in range(counts["rm"]):
            crashkit.isobench(["run", "--name", f"crash-rm-{i}", "busybox", "true"], root)
        durations["rm"] = (time.monotonic() - t0) / max(1, counts["rm"])
        for i in range(counts["rm"]):
            plan.append(("rm", ["rm", "-f", f"crash-rm-{i}"]))
    if "bench" in counts:
        bench_args = ["bench", "--only", "startup", "--env", "native,container,runc", "--values", "5"]
        durations["bench"] = crashkit.timed([*bench_args, "--out", str(tmp_path / "bench-warm")], root)
        for i in range(counts["bench"]):
            plan.append(("bench", [*bench_args, "--out", str(tmp_path / f"bench-{i}")]))
    if "bench-vm" in counts:
        durations["bench-vm"] = 20.0  # a TCG microvm boot + one sample; no warm-up run (it costs ~30 s)
        for i in range(counts["bench-vm"]):
            plan.append(("bench-vm", ["bench", "--only", "startup", "--env", "vm", "--values", "1",
                                      "--out", str(tmp_path / f"bench-vm-{i}")]))
    return plan, durations


def _crash_and_audit(tmp_path: Path, counts: dict[str, int], capsys) -> tuple[dict, list]:
    seed = int(os.environ.get("ISOBENCH_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    root = tmp_path / "root"
    try:
        plan, durations = _trial_plan(tmp_path, root, set(counts), counts)
        rng.shuffle(plan)
        trials = [crashkit.kill_at(verb, argv, root, rng.uniform(0.0, durations.get(verb, 1.0) * 1.1))
                  for verb, argv in plan]
        # owners that outlive the killed CLI (container monitors, qemu) finish their short commands on
        # their own; what is still alive after that would never be collected by gc
        still_alive = crashkit.wait_owners_gone(root, timeout_s=60 if "bench-vm" in counts else 15)
        if "bench-vm" in counts:
            time.sleep(10)  # libvirtd finishes a domain start the killed harness had asked for
        gc = crashkit.isobench(["gc"], root)
        assert gc.returncode == 0, f"isobench gc failed: {gc.stderr.strip()[-800:]}"
        left = crashkit.leftovers(root)
        if still_alive:
            left["owners_alive_after_crash"] = still_alive
        problems = crashkit.store_problems(root)
        with capsys.disabled():
            by_verb = {v: sum(1 for t in trials if t.verb == v) for v in counts}
            print(f"\ncrash trials: seed={seed} total={len(trials)} killed mid-command={sum(t.killed for t in trials)} "
                  f"per verb={by_verb}; gc: {gc.stdout.strip().splitlines()[-1:]}; "
                  f"left: { {k: len(v) for k, v in left.items()} }")
        assert not problems, f"image store invalid after crashes (seed {seed}): {problems}"
        ls = crashkit.isobench(["image", "ls"], root)
        assert ls.returncode == 0, ls.stderr
        return left, trials
    finally:
        forced = crashkit.cleanup_root(root)
        if forced:
            with capsys.disabled():
                print(f"crash test had to clean up after gc: {forced[:10]}")


def _known(kind: str, item: str) -> bool:
    return any(kind == k and frag in item for k, frag in KNOWN_UNCOLLECTED)


def _verdict(left: dict) -> None:
    hard = {k: [i for i in v if not _known(k, i)] for k, v in left.items()}
    hard = {k: v for k, v in hard.items() if v}
    assert not hard, f"left behind after kill -9 + gc: {left}"
    if left:
        pytest.xfail(f"KNOWN (reported): gc cannot tell whose these core.fsutil temp files are (no pid in the name): "
                     f"{ {k: len(v) for k, v in left.items()} } e.g. {[v[0] for v in left.values()]}")


def test_kill9_build_run_rm_then_gc_leaves_nothing(tmp_path, leak_check, capsys):
    ok, _ = harness.isobench_available()
    counts = {"build": 8, "run": 8, "rm": 6} if ok and harness._cli_has_run() else {"build": TRIALS_TOTAL}
    left, trials = _crash_and_audit(tmp_path, counts, capsys)
    assert len(trials) >= 20
    crashkit.isobench(["image", "build", "-t", "crash-after:1", str(_dockerfile(tmp_path / "ctx-after", 999))],
                      tmp_path / "root", check=True)
    _verdict(left)


@pytest.mark.requires("runc")
def test_kill9_bench_then_gc_leaves_nothing(tmp_path, leak_check, capsys):
    from bench.results import load_run
    from core.errors import IsobenchError

    left, trials = _crash_and_audit(tmp_path, {"bench": 4}, capsys)
    load_run(tmp_path / "bench-warm")  # a completed run stays loadable
    for i in range(4):  # a killed run either loads or says why in one line
        if (tmp_path / f"bench-{i}").exists():
            try:
                load_run(tmp_path / f"bench-{i}")
            except IsobenchError:
                pass
    _verdict(left)


@pytest.mark.requires("libvirt", "qemu")
def test_kill9_vm_bench_then_gc_leaves_no_domain_tap_or_qemu(tmp_path, leak_check, capsys):
    """The harness killed while a VM boots or runs: gc must remove the libvirt domain, its tap and qemu."""
    left, trials = _crash_and_audit(tmp_path, {"bench-vm": 2}, capsys)
    _verdict(left)
