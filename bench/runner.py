"""The benchmark runner: workloads x environments x iterations, interleaved, into a run directory.

Order: for each workload, for each iteration (a round), every environment once, in an order drawn
afresh for every round from a seeded generator (the seed and every round's order go to meta.json).
Interleaving spreads slow drift of the host (other tenants, thermal state, page cache) over all
environments; shuffling keeps a fixed position in the round (always first after an idle spell,
always right after the VM freed its memory) from favouring one environment. An optional idle gap
before each step lets the host settle. Values derived from a pair (ratio to native) are computed
once the round is complete, so native need not come first. The first ``warmups`` iterations are
measured and thrown away. After every round the samples are appended and the pyperf suites, facts and
failures rewritten atomically, so Ctrl-C (or a crash) leaves a valid partial run; instances are
stopped by the workloads' ``finally`` blocks before the interrupt propagates.

Every value carries its replicate: the instance or boot it came from. A step's values come from its
own instance unless the workload says they share one (VM tool batches), and then they count as one
independent value.

A failing (workload, environment) is recorded in failures.json with its one-line error, skipped for the
rest of that workload, and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from bench import results
from bench.environments.base import Environment
from bench.interrupt import INTERRUPTED, raise_if_interrupted
from bench.profiles import Profile
from bench.workloads.base import Context, Measurement, Workload
from core.errors import BenchError, IsobenchError, UsageError
from core.fsutil import atomic_write_json
from core.paths import HostPaths

WORKLOAD_ORDER = ("startup", "cpu", "memory", "syscalls", "disk", "network", "footprint", "enforcement",
                  "isolation", "ephemerality")
ENV_ORDER = ("native", "container", "runc", "vm", "vm-container", "vm-container-runc")
# rough seconds per (workload, environment) value before anything was measured: only for the first ETA
DEFAULT_STEP_S = {"vm": 12.0, "native": 2.0, "container": 2.0, "runc": 2.0, "vm-container": 4.0,
                 "vm-container-runc": 4.0}


def round_orders(seed: int, envs: list[str], rounds: int) -> list[list[str]]:
    """The environment order of each round: an independent shuffle per round from one seeded generator
    (the same seed gives the same orders, so a run can be repeated in the same order)."""
    rng = random.Random(seed)
    orders = []
    for _ in range(rounds):
        order = list(envs)
        rng.shuffle(order)
        orders.append(order)
    return orders


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)


def parse_list(text: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    if not text:
        return allowed
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad:
        raise UsageError(f"{flag} {','.join(bad)}: unknown (choose from {','.join(allowed)})")
    return tuple(x for x in allowed if x in items)


def load_workload(name: str) -> Workload:
    return importlib.import_module(f"bench.workloads.{name}").WORKLOAD


def make_environment(name: str, paths: HostPaths) -> Environment:
    mods = {"native": ("bench.environments.native", "NativeEnvironment"),
            "container": ("bench.environments.container", "ContainerEnvironment"),
            "runc": ("bench.environments.runc", "RuncEnvironment"),
            "vm": ("bench.environments.vm", "VMEnvironment"),
            "vm-container": ("bench.environments.vm_container", "VMContainerEnvironment"),
            "vm-container-runc": ("bench.environments.vm_container", "VMContainerRuncEnvironment")}
    if name not in mods:  # another OCI runtime (crun, --runtime NAME=PATH): runc's environment class
        from bench.environments.ociruntimes import registered
        from bench.environments.runc import RuncEnvironment

        rt = registered(name)
        if rt is None:
            raise BenchError(f"no OCI runtime {name!r} (not on PATH, not given with --runtime)")
        return RuncEnvironment(paths, rt)
    mod = mods[name]
    return getattr(importlib.import_module(mod[0]), mod[1])(paths)


def default_run_dir(base: Path = Path("results")) -> Path:
    import socket

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return base / f"{stamp}-{socket.gethostname()}"


def point_latest(run_dir: Path) -> None:
    """``results/latest`` -> this run (relative link, replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{run_dir.name}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


@dataclass
class RunState:
    run_dir: Path
    meta: dict
    values: dict[str, dict[str, list]] = field(default_factory=dict)   # env -> name -> (value, date, s)
    units: dict[str, str] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    def save(self, facts: dict) -> None:
        from bench import meta as metamod
        from bench import stats

        for env, vals in self.values.items():
            stats.write_suite(self.run_dir / f"{env}.json", vals, self.units, metamod.suite_meta(self.meta, env))
        atomic_write_json(self.run_dir / "facts.json", {k: v for k, v in facts.items() if not k.startswith("_")})
        atomic_write_json(self.run_dir / "failures.json", self.failures)
        atomic_write_json(self.run_dir / "meta.json", self.meta)


class Progress:
    """One status line: benchmark, environment, iteration, ETA (from measured step times)."""

    def __init__(self, total_steps: dict[tuple[str, str], int], stream=sys.stderr) -> None:
        self.remaining = dict(total_steps)
        self.spent: dict[tuple[str, str], list[float]] = {}
        self.stream = stream
        self.tty = stream.isatty()

    def step_time(self, key: tuple[str, str]) -> float:
        got = self.spent.get(key)
        if got:
            return sum(got) / len(got)
        same_env = [t for (w, e), ts in self.spent.items() if e == key[1] for t in ts]
        return (sum(same_env) / len(same_env)) if same_env else DEFAULT_STEP_S.get(key[1], 3.0)

    def eta_s(self) -> float:
        return sum(self.step_time(k) * n for k, n in self.remaining.items())

    def show(self, wl: str, env: str, it: int, total: int) -> None:
        eta = self.eta_s()
        line = f"[bench] {wl:<12} {env:<9} {it + 1}/{total}  ETA {int(eta // 60)}m{int(eta % 60):02d}s"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, key: tuple[str, str], seconds: float) -> None:
        self.spent.setdefault(key, []).append(seconds)
        self.remaining[key] = max(0, self.remaining.get(key, 0) - 1)

    def skip(self, key: tuple[str, str]) -> None:
        self.remaining[key] = 0

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_benchmarks(*, paths: HostPaths, profile: Profile, workloads: tuple[str, ...], envs: tuple[str, ...],
                   run_dir: Path, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                   progress_stream=sys.stderr, seed: int | None = None) -> RunState:
    """Run everything into ``run_dir``; returns the state (also on partial runs via the exception)."""
    from bench import meta as metamod
    from bench.environments import images as imagesmod

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    wls = [load_workload(w) for w in workloads]
    needed = tuple(sorted({i for w in wls for i in w.images}))
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    log(f"[bench] building images {', '.join(needed)} (cached after the first run)")
    imgs: dict = {}
    image_errors: dict[str, str] = {}
    with open(run_dir / "logs" / "images.log", "w") as build_log:
        for name in needed:  # one image failing (e.g. no apt mirror) only fails the workloads that need it
            try:
                imgs.update(imagesmod.ensure(paths, (name,), log=lambda s: print(s, file=build_log, flush=True)))
            except IsobenchError as exc:
                image_errors[name] = f"building image {name} failed: {exc} (log: logs/images.log)"
                log(f"[bench] {image_errors[name]}")
    if not imgs:
        raise BenchError("; ".join(image_errors.values()))

    state = RunState(run_dir=run_dir, meta={})
    for w in list(wls):
        missing = [i for i in w.images if i in image_errors]
        if missing:
            wls.remove(w)
            state.failures.append({"benchmark": w.name, "environment": "*", "error": image_errors[missing[0]]})
    environments: dict[str, Environment] = {}
    for name in envs:
        try:
            environments[name] = make_environment(name, paths)
        except IsobenchError as exc:
            state.failures.append({"benchmark": "*", "environment": name, "error": str(exc)})
            log(f"[bench] environment {name} unavailable: {exc}")
    vm_env = next((environments[n] for n in ("vm", "vm-container", "vm-container-runc") if n in environments), None)
    accel = vm_env.accelerator() if vm_env is not None else ("none", "no vm environment in this run")
    state.meta = metamod.host_meta(accel, {k: v.manifest_digest for k, v in imgs.items()}, profile.name)
    state.meta.update(started_utc=started, finished_utc=None, environments=list(envs), workloads=list(workloads),
                      execution={n: e.describe() for n, e in environments.items()},
                      warmups_excluded=True, interleaved=True, interrupted=False,
                      order_seed=seed if seed is not None else new_seed(), idle_gap_s=profile.idle_gap_s,
                      round_orders={},
                      vm_batching=("one VM boot per value" if profile.vm_boot_per_value else
                                   "cpu, memory, syscalls and disk run all their iterations inside one VM boot "
                                   "(their VM values count as one independent value)"))
    facts: dict = {"platform": platform_facts(state.meta, environments)}
    from core import scratch

    # leased to this process (core.scratch): after a kill -9, `isobench gc` removes it
    ctx = Context(paths=paths, profile=profile, images=imgs, facts=facts, log=log,
                  work_dir=scratch.make_scratch(paths, "benchwork"))
    results.append_samples(run_dir, [])  # header: a valid (empty) table from the start
    state.save(facts)

    plan = {}
    for w in wls:
        warm, vals = w.iterations(profile)
        for e in environments:
            if e in w.environments:
                plan[(w.name, e)] = warm + vals
    prog = Progress(plan, progress_stream)
    try:
        for w in wls:
            t0 = time.monotonic()
            try:
                run_workload(w, environments, ctx, state, prog, log)
            finally:
                state.meta.setdefault("workload_seconds", {})[w.name] = round(time.monotonic() - t0, 1)
            state.save(facts)
        raise_if_interrupted()  # a Ctrl-C swallowed during the last step
    except KeyboardInterrupt:
        state.meta["interrupted"] = True
        raise
    finally:
        from bench.environments.base import stop_all_live

        for err in stop_all_live():  # anything a Ctrl-C or a crash cut off between create and stop
            state.failures.append({"benchmark": "*", "environment": "*", "error": f"cleanup: {err}"})
        prog.end()
        state.meta["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        state.meta["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
        state.meta["execution"] = {n: e.describe() for n, e in environments.items()}
        if vm_env is not None:
            a, r = vm_env.accelerator()
            state.meta.update(accelerator=a, accelerator_reason=r,
                              vm_machine=getattr(vm_env, "machine", None) or "not booted")
            facts["platform"] = platform_facts(state.meta, environments)
        state.save(facts)
        for env in environments.values():
            env.close()
        scratch.remove_scratch(ctx.work_dir)
    return state


def platform_facts(meta: dict, environments: dict[str, Environment]) -> dict:
    import platform

    vm = "not run"
    if "vm" in environments:
        vm = f"QEMU/libvirt, accelerator {meta.get('accelerator')} ({meta.get('accelerator_reason')})"
    facts = {"os": f"{platform.system()} ({_os_release()})", "kernel": meta.get("kernel", ""),
            "container_execution": "native on the host Linux kernel (namespaces + cgroups " +
                                   str(meta.get("cgroup_version", "?")) + ")",
            "vm_execution": vm}
    for name in ("vm-container", "vm-container-runc"):
        if name in environments:
            facts[f"{name.replace('-', '_')}_execution"] = environments[name].describe().get("execution", "")
    return facts


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def derived_ratios(w: Workload, round_values: dict[str, dict[str, tuple[float, str]]]) -> dict:
    """``w.ratio_metrics`` (ratio metric -> source metric) for every environment of a complete round:
    its value / native's value of the same round, with the environment's replicate."""
    native = round_values.get("native", {})
    out: dict[str, list[Measurement]] = {}
    for env, vals in round_values.items():
        if env == "native":
            continue
        for ratio_name, source in w.ratio_metrics.items():
            if source in vals and source in native and native[source][0]:
                value, rep = vals[source]
                out.setdefault(env, []).append(Measurement(ratio_name, value / native[source][0], rep))
    return out


def record(w: Workload, env: str, ms: list[Measurement], iteration: int, accel: str, date: str, step_s: float,
           state: RunState) -> None:
    """Append one step's values to samples.csv and to the environment's pyperf values."""
    rows = []
    for m in ms:
        md = w.metric(m.metric)
        rows.append(results.Sample(benchmark=w.name, environment=env, metric=m.metric, value=float(m.value),
                                   unit=md.unit, iteration=iteration, direction=md.direction,
                                   replicate=str(m.replicate), accelerator=accel))
        name = f"{w.name}.{m.metric}"
        state.values.setdefault(env, {}).setdefault(name, []).append(
            (float(m.value), date or None, round(step_s, 3) or None, str(m.replicate)))
        state.units[name] = md.unit
    results.append_samples(state.run_dir, rows)


def run_workload(w: Workload, environments: dict[str, Environment], ctx: Context, state: RunState,
                 prog: Progress, log: Callable[[str], None]) -> None:
    warm, vals = w.iterations(ctx.profile)
    total = warm + vals
    ctx.total_iterations = total
    ctx.cache.clear()
    by_name = {n: e for n, e in environments.items() if n in w.environments}
    # per workload its own stream from the run's seed: `--only x` replays x's orders of a full run
    seed = int(state.meta.get("order_seed") or 0)
    orders = round_orders(seed + (WORKLOAD_ORDER.index(w.name) if w.name in WORKLOAD_ORDER else 0), list(by_name),
                          total)
    state.meta.setdefault("round_orders", {})[w.name] = orders
    failed: set[str] = set()
    wlog = open(state.run_dir / "logs" / f"{w.name}.log", "a")

    def fail(env: str, exc: BaseException) -> None:
        failed.add(env)
        prog.skip((w.name, env))
        msg = str(exc) if isinstance(exc, IsobenchError) else f"{type(exc).__name__}: {exc}"
        state.failures.append({"benchmark": w.name, "environment": env, "error": msg})
        wlog.write(f"FAILED {env}: {msg}\n{traceback.format_exc()}\n")
        if getattr(exc, "output", None):
            wlog.write(f"--- output of the failed command ---\n{exc.output}\n---\n")
        log(f"\n[bench] {w.name} failed in {env}: {msg}")

    if w.noise_metrics:  # the report shows a value inside its floor as "< noise", not as a number
        ctx.facts.setdefault("noise_metrics", {}).update({f"{w.name}.{m}": n for m, n in w.noise_metrics.items()})
    try:
        try:
            w.setup(ctx)
        except IsobenchError as exc:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from exc
            for name in by_name:
                fail(name, exc)
            return
        for it in range(total):
            round_values: dict[str, dict[str, tuple[float, str]]] = {}
            for env in (by_name[n] for n in orders[it]):
                raise_if_interrupted()
                if env.name in failed:
                    continue
                prog.show(w.name, env.name, it, total)
                if ctx.profile.idle_gap_s:
                    time.sleep(ctx.profile.idle_gap_s)
                t0 = time.monotonic()
                ctx.step_replicate = None
                try:
                    ms = w.measure(env, ctx, it)
                except (IsobenchError, OSError, ValueError, TimeoutError) as exc:
                    # ValueError/OSError: a tool printed something unparsable or a host call failed;
                    # recorded with its message, the run goes on. Unless a Ctrl-C caused it: then the
                    # error is a symptom of the interrupt, not a result
                    if INTERRUPTED.is_set():
                        raise KeyboardInterrupt from exc
                    fail(env.name, exc)
                    continue
                finally:
                    state.failures.extend(ctx.failures)
                    ctx.failures.clear()
                step_s = time.monotonic() - t0
                prog.done((w.name, env.name), step_s)
                date = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
                wlog.write(f"{env.name} it={it}{' (warm-up)' if it < warm else ''}: "
                           + ", ".join(f"{m.metric}={m.value:.6g}" for m in ms) + "\n")
                wlog.flush()
                if it < warm:
                    continue
                accel = env.accelerator()[0]   # "none" for environments on the host kernel
                step_rep = ctx.step_replicate or f"{env.name}-{it - warm}"
                ms = [replace(m, replicate=m.replicate or step_rep) for m in ms]
                round_values[env.name] = {m.metric: (float(m.value), m.replicate) for m in ms}
                record(w, env.name, ms, it - warm, accel, date, step_s, state)
            if it >= warm:
                for env_name, ms in derived_ratios(w, round_values).items():
                    accel = environments[env_name].accelerator()[0]
                    record(w, env_name, ms, it - warm, accel, "", 0.0, state)
            state.save(ctx.facts)
        try:
            w.finish(ctx)
        except IsobenchError as exc:
            state.failures.append({"benchmark": w.name, "environment": "*", "error": str(exc)})
    finally:
        try:
            w.teardown(ctx)
        finally:
            wlog.close()
