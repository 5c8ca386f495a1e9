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

# Leftover kinds no area's gc collects yet (reported to the lead): build/run temp dirs under <root>/tmp and
# half-written ``.tmp-*`` files of atomic writes. Remove from this set once `isobench gc` removes them.
KNOWN_UNCOLLECTED = {"tmp", "partial_files"}
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
    from bench.cli import build_parser

    try:
        build_parser().parse_args(["bench", "--help"])
    except SystemExit as exc:
        if exc.code == 0:
            verbs.add("bench")
    return verbs


def test_kill9_at_random_points_then_gc_leaves_nothing(tmp_path, leak_check, capsys):
    seed = int(os.environ.get("ISOBENCH_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    root = tmp_path / "root"
    verbs = _verbs_available()
    # a warm base image and one clean build tell how long each verb takes: kills land within that span
    crashkit.isobench(["image", "build", "-t", "crash-warm:1", str(_dockerfile(tmp_path / "ctx-warm", -1))],
                      root, check=True)
    durations = {"build": crashkit.timed(["image", "build", "--no-cache", "-t", "crash-warm:2",
                                          str(tmp_path / "ctx-warm")], root)}
    plan: list[tuple[str, list[str]]] = []
    per_verb = {"run": 6, "rm": 4, "bench": 2} if "run" in verbs else {}
    per_verb = {v: n for v, n in per_verb.items() if v in verbs}
    per_verb["build"] = max(TRIALS_TOTAL - sum(per_verb.values()), 8)
    for i in range(per_verb["build"]):
        plan.append(("build", ["image", "build", "-t", f"crash-{i}:1", str(_dockerfile(tmp_path / f"ctx-{i}", i))]))
    if "run" in per_verb:
        durations["run"] = crashkit.timed(["run", "--rm", "busybox", "sh", "-c", "echo warm"], root)
        for i in range(per_verb["run"]):
            net = ["--network", "bridge"] if i % 2 else ["--network", "none"]
            plan.append(("run", ["run", "--rm", *net, "busybox", "sh", "-c", "echo hi; sleep 0.2"]))
    if "rm" in per_verb:
        for i in range(per_verb["rm"]):
            name = f"crash-rm-{i}"
            crashkit.isobench(["run", "--name", name, "busybox", "true"], root)
            plan.append(("rm", ["rm", "-f", name]))
        durations["rm"] = 0.5
    if "bench" in per_verb:
        durations["bench"] = 5.0
        for i in range(per_verb["bench"]):
            plan.append(("bench", ["bench", "--help"]))  # replaced by a short real bench once it exists
    rng.shuffle(plan)

    trials = []
    for verb, argv in plan:
        delay = rng.uniform(0.0, durations.get(verb, 1.0) * 1.1)
        trials.append(crashkit.kill_at(verb, argv, root, delay))
    time.sleep(0.5)  # let orphaned short-lived container commands finish

    gc = crashkit.isobench(["gc"], root)
    assert gc.returncode == 0, f"isobench gc failed: {gc.stderr.strip()[-800:]}"
    left = crashkit.leftovers(root)
    problems = crashkit.store_problems(root)
    killed = sum(t.killed for t in trials)
    with capsys.disabled():
        by_verb = {v: sum(1 for t in trials if t.verb == v) for v in per_verb}
        print(f"\ncrash trials: seed={seed} total={len(trials)} killed mid-command={killed} per verb={by_verb} "
              f"not available: {sorted({'run', 'rm', 'bench'} - verbs)}; gc: {gc.stdout.strip().splitlines()[-1:]}")
    assert len(trials) >= 20
    assert not problems, f"image store invalid after crashes (seed {seed}): {problems}"
    # the store still works: every committed image resolves and a new build succeeds
    ls = crashkit.isobench(["image", "ls"], root)
    assert ls.returncode == 0, ls.stderr
    crashkit.isobench(["image", "build", "-t", "crash-after:1", str(_dockerfile(tmp_path / "ctx-after", 999))],
                      root, check=True)
    hard = {k: v for k, v in left.items() if k not in KNOWN_UNCOLLECTED}
    assert not hard, f"left behind after kill -9 + gc (seed {seed}): {left}"
    if left:
        pytest.xfail(f"KNOWN (reported): gc does not collect temp dirs/partial files of killed commands: "
                     f"{ {k: len(v) for k, v in left.items()} } e.g. {[v[0] for v in left.values()]}")
