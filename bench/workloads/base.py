"""What a workload is: named metrics (unit, which direction is better), a ``measure`` step called once per
environment per iteration by the runner, and facts gathered at the end.

Also here: :func:`run_tool`, which runs a tool job in an environment and, in the VM, runs all iterations
of the job inside one boot (a TCG boot costs seconds; a throughput number must not be a boot number),
splitting the console output per iteration by a marker line.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

from bench.environments.base import Environment, Job, Outcome
from bench.profiles import Profile
from core.errors import BenchError
from core.paths import HostPaths

Direction = Literal["lower", "higher"]
ITER_MARKER = "==ISOBENCH-ITER"


@dataclass(frozen=True)
class Metric:
    unit: str
    direction: Direction
    description: str = ""


@dataclass(frozen=True)
class Measurement:
    metric: str
    value: float
    # the instance/boot the value came from when values of several iterations share one (None: this
    # step's own instance, the default); shared values count as one independent value
    replicate: str | None = None


@dataclass
class Context:
    """Shared state of one benchmark run, handed to every workload."""

    paths: HostPaths
    profile: Profile
    images: dict                                   # short name -> ImageRecord
    facts: dict = field(default_factory=dict)
    log: Callable[[str], None] = lambda s: None
    work_dir: Path | None = None                   # scratch dir for volumes etc. (under the run's state)
    cache: dict = field(default_factory=dict)
    total_iterations: int = 1
    failures: list = field(default_factory=list)   # partial failures inside one measure() step
    # set by a measure() step whose values came from an instance shared with other iterations (the VM
    # batch of run_tool); the runner stamps it on the step's values as their replicate and resets it
    step_replicate: str | None = None

    def partial_failure(self, benchmark: str, env: str, error: str) -> None:
        """Record a failed part (e.g. one limit of enforcement) without failing the whole step."""
        self.failures.append({"benchmark": benchmark, "environment": env, "error": error})
        self.log(f"\n[bench] {benchmark} in {env}: {error}")

    def image(self, short: str) -> str:
        rec = self.images.get(short)
        if rec is None:
            raise BenchError(f"image {short!r} was not built for this run")
        return rec.manifest_digest


class Workload(abc.ABC):
    name: str = ""
    images: tuple[str, ...] = ("busybox",)
    metrics: dict[str, Metric] = {}
    environments: tuple[str, ...] = ("native", "container", "runc", "vm")
    # ratio metric -> source metric: the runner adds value / native's value of the same round
    ratio_metrics: dict[str, str] = {}
    # metric -> its noise-floor metric (same unit): the report shows "< noise (+-x)" inside the floor
    noise_metrics: dict[str, str] = {}

    def iterations(self, profile: Profile) -> tuple[int, int]:
        """(warm-ups, measured values) per environment."""
        return profile.warmups, profile.values

    def metric(self, name: str) -> Metric:
        """The Metric for a (possibly parameterised) name: exact match, else the longest prefix."""
        if name in self.metrics:
            return self.metrics[name]
        for key in sorted(self.metrics, key=len, reverse=True):
            if name.startswith(key):
                return self.metrics[key]
        raise BenchError(f"{self.name}: metric {name!r} is not declared")

    def setup(self, ctx: Context) -> None:
        """Before the first iteration (host-side fixtures)."""

    @abc.abstractmethod
    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        """One value of each metric in ``env``."""

    def finish(self, ctx: Context) -> None:
        """After the last iteration: facts into ctx.facts."""

    def teardown(self, ctx: Context) -> None:
        """Always called (also on failure and Ctrl-C)."""


def check_exit(out: Outcome, what: str, env: str) -> Outcome:
    if out.exit_code != 0:
        lines = out.output.strip().splitlines()
        errs = [ln.strip() for ln in lines if ln.strip().startswith(("fio:", "error", "Error")) or "err=" in ln]
        tail = (errs or lines)[-3:]
        exc = BenchError(f"{what} in {env} exited {out.exit_code}: {' | '.join(tail) or '(no output)'}")
        exc.output = out.output  # the runner writes it to the benchmark's log
        raise exc
    return out


def batch_argv(argv: tuple[str, ...], count: int) -> tuple[str, ...]:
    """``argv`` repeated ``count`` times in one shell, each run preceded by a marker line."""
    import shlex

    cmd = " ".join(shlex.quote(a) for a in argv)
    script = f"i=0; while [ $i -lt {count} ]; do echo {ITER_MARKER} $i; {cmd} 2>&1 || echo {ITER_MARKER}-FAILED $?; i=$((i+1)); done"
    return ("/bin/sh", "-c", script)


def split_batch(output: str) -> list[str]:
    parts: list[str] = []
    for line in output.splitlines(keepends=True):
        if line.startswith(ITER_MARKER + " "):
            parts.append("")
        elif parts:
            parts[-1] += line
    return parts


def run_tool(env: Environment, ctx: Context, job: Job, iteration: int, key: str) -> str:
    """The output of ``job`` for this iteration. In the VM all iterations run in one boot (first call)
    unless the profile asks for a boot per value; batched values share a replicate (count as one)."""
    if env.name != "vm" or ctx.profile.vm_boot_per_value:
        return check_exit(env.run(job), key, env.name).output
    ctx.step_replicate = f"vm-boot-{key}"
    cache_key = ("vm-batch", key)
    if cache_key not in ctx.cache:
        out = check_exit(env.run(replace(job, argv=batch_argv(job.argv, ctx.total_iterations),
                                         timeout_s=job.timeout_s * ctx.total_iterations + 120)), key, env.name)
        ctx.cache[cache_key] = split_batch(out.output)
    parts = ctx.cache[cache_key]
    if iteration >= len(parts):
        raise BenchError(f"{key} in vm: the batched run produced {len(parts)} outputs, iteration {iteration} missing")
    if f"{ITER_MARKER}-FAILED" in parts[iteration]:
        raise BenchError(f"{key} in vm failed in iteration {iteration}: {parts[iteration].strip()[-200:]}")
    return parts[iteration]
