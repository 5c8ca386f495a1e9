"""The benchmark runner: workloads x environments x iterations, interleaved, into a run directory.

Order: for each workload, for each iteration, every environment once (A B C D A B C D), so slow drift
of the host (other tenants, thermal state, page cache) hits all environments alike. The first
``warmups`` iterations are measured and thrown away. After every iteration the samples are appended and
the pyperf suites, facts and failures rewritten atomically, so Ctrl-C (or a crash) leaves a valid partial
run; instances are stopped by the workloads' ``finally`` blocks before the interrupt propagates.

A failing (workload, environment) is recorded in failures.json with its one-line error, skipped for the
rest of that workload, and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import results
from bench.environments.base import Environment
from bench.interrupt import INTERRUPTED, raise_if_interrupted
from bench.profiles import Profile
from bench.workloads.base import Context, Workload
from core.errors import BenchError, IsobenchError, UsageError
from core.fsutil import atomic_write_json
from core.paths import HostPaths

WORKLOAD_ORDER = ("startup", "cpu", "memory", "disk", "network", "footprint", "enforcement", "isolation",
                  "ephemerality")
ENV_ORDER = ("native", "container", "runc", "vm")
# rough seconds per (workload, environment) value before anything was measured: only for the first ETA
DEFAULT_STEP_S = {"vm": 12.0, "native": 2.0, "container": 2.0, "runc": 2.0}


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
    mod = {"native": ("bench.environments.native", "NativeEnvironment"),
           "container": ("bench.environments.container", "ContainerEnvironment"),
           "runc": ("bench.environments.runc", "RuncEnvironment"),
           "vm": ("bench.environments.vm", "VMEnvironment")}[name]
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
                   progress_stream=sys.stderr) -> RunState:
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
    accel = environments["vm"].accelerator() if "vm" in environments else ("none", "no vm environment in this run")
    state.meta = metamod.host_meta(accel, {k: v.manifest_digest for k, v in imgs.items()}, profile.name)
    state.meta.update(started_utc=started, finished_utc=None, environments=list(envs), workloads=list(workloads),
                      execution={n: e.describe() for n, e in environments.items()},
                      warmups_excluded=True, interleaved=True, interrupted=False,
                      vm_batching="cpu, memory and disk run all their iterations inside one VM boot")
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
        if "vm" in environments:
            a, r = environments["vm"].accelerator()
            state.meta.update(accelerator=a, accelerator_reason=r)
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
    return {"os": f"{platform.system()} ({_os_release()})", "kernel": meta.get("kernel", ""),
            "container_execution": "native on the host Linux kernel (namespaces + cgroups " +
                                   str(meta.get("cgroup_version", "?")) + ")",
            "vm_execution": vm}


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def run_workload(w: Workload, environments: dict[str, Environment], ctx: Context, state: RunState,
                 prog: Progress, log: Callable[[str], None]) -> None:
    warm, vals = w.iterations(ctx.profile)
    total = warm + vals
    ctx.total_iterations = total
    ctx.cache.clear()
    envs = [e for n, e in environments.items() if n in w.environments]
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

    try:
        try:
            w.setup(ctx)
        except IsobenchError as exc:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from exc
            for e in envs:
                fail(e.name, exc)
            return
        for it in range(total):
            for env in envs:
                raise_if_interrupted()
                if env.name in failed:
                    continue
                prog.show(w.name, env.name, it, total)
                t0 = time.monotonic()
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
                rows = []
                for m in ms:
                    md = w.metric(m.metric)
                    rows.append(results.Sample(benchmark=w.name, environment=env.name, metric=m.metric,
                                               value=float(m.value), unit=md.unit, iteration=it - warm,
                                               direction=md.direction))
                    name = f"{w.name}.{m.metric}"
                    state.values.setdefault(env.name, {}).setdefault(name, []).append(
                        (float(m.value), date, round(step_s, 3)))
                    state.units[name] = md.unit
                results.append_samples(state.run_dir, rows)
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
