"""startup: how long from "create" until the workload has done something, per environment.

- ``create_to_exit_s``: create-to-exit of ``true`` (the whole life of a no-op instance: rootfs, namespaces,
  cgroups or boot, exec, teardown of nothing). The phases of these runs (container start phases, VM boot
  phases) go to facts.json as per-phase medians for the waterfall plot.
- ``create_to_http_s``: create-to-first-successful-HTTP-response of busybox httpd through the port
  mapping (natively: on loopback), as gVisor measures start-up. The client retries a refused
  connection after 2 ms: that wait is the only polling and it is outside the instance.
- ``cold_create_to_exit_s`` (vm-container only): the same ``true`` in a freshly booted guest, from the
  VM's create to the container's exit (boot, guest agent start, container); ``create_to_exit_s`` there is
  the guest already booted, as on a Docker Desktop machine whose VM is up.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import time

from bench.environments.base import Environment, Job
from bench.workloads.base import Context, Measurement, Metric, Workload, check_exit
from core.errors import BenchError

HTTP_PORT = 80
RETRY_S = 0.002


def first_response_s(host: str, port: int, since_ns: int, timeout_s: float) -> float:
    """Seconds from ``since_ns`` until GET / answers 200."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return (time.perf_counter_ns() - since_ns) / 1e9
            last = f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            last = type(exc).__name__
        finally:
            conn.close()
        time.sleep(RETRY_S)
    raise BenchError(f"no HTTP 200 from {host}:{port} within {timeout_s}s (last: {last})")


class Startup(Workload):
    name = "startup"
    images = ("busybox",)

    @property
    def environments(self) -> tuple[str, ...]:  # type: ignore[override]
        """The five, plus every other OCI runtime of this run (crun, --runtime NAME=PATH): a column each."""
        from bench.environments.ociruntimes import registered_names

        return ("native", "container", "runc", "vm", "vm-container", "vm-container-runc") + registered_names()

    metrics = {
        "create_to_exit_s": Metric("s", "lower", "create-to-exit of true"),
        "create_to_http_s": Metric("s", "lower", "create to first HTTP 200 through the port mapping"),
        "cold_create_to_exit_s": Metric("s", "lower", "vm-container: true in a freshly booted guest, boot included"),
        "teardown_s": Metric("s", "lower", "delete after the exit of true (not part of start-up)"),
    }

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        img = ctx.image("busybox")
        out = check_exit(env.run(Job(image=img, argv=("/bin/true",), timeout_s=120)), "true", env.name)
        ctx.cache.setdefault(("phases", env.name), []).append(out.phases)
        job = Job(image=img, argv=("httpd", "-f", "-p", "{port}", "-h", "/www"), port=HTTP_PORT, timeout_s=120)
        inst = env.start(job)
        try:
            host, port = inst.endpoint
            http_s = first_response_s(host, port, inst.created_ns, timeout_s=120)
            ctx.facts.setdefault("_port_mapping", {})[env.name] = {
                "environment": env.name, "host": f"{host}:{port}", "target": inst.target, "protocol": "tcp"}
        finally:
            inst.stop()
        got = [Measurement("create_to_exit_s", out.wall_s), Measurement("create_to_http_s", http_s)]
        if "teardown_s" in out.extra:  # every environment times its teardown apart (delete, chroot clean-up, VM destroy)
            got.append(Measurement("teardown_s", out.extra["teardown_s"]))
        if env.name == "vm-container":
            cold = check_exit(env.cold_run(Job(image=img, argv=("/bin/true",), timeout_s=120)), "true (cold)", env.name)
            ctx.cache.setdefault(("phases", "vm-container cold"), []).append(cold.phases)
            got.append(Measurement("cold_create_to_exit_s", cold.wall_s))
        return got

    def finish(self, ctx: Context) -> None:
        phases = ctx.facts.setdefault("phases", {})
        for key, runs in ctx.cache.items():
            if not (isinstance(key, tuple) and key[0] == "phases"):
                continue
            phases[key[1]] = median_phases(runs)
        pm = ctx.facts.pop("_port_mapping", {})
        if pm:
            ctx.facts["port_mapping"] = list(pm.values())


def median_phases(runs: list[dict[str, float]]) -> list[dict]:
    """Per-phase medians of phase timestamps (seconds since create), ordered, as start/end ms segments."""
    names: list[str] = []
    for r in runs:
        for k in r:
            if k not in names:
                names.append(k)
    med = {k: statistics.median([r[k] for r in runs if k in r]) for k in names}
    ordered = sorted(med.items(), key=lambda kv: kv[1])
    out, prev = [], 0.0
    for name, t in ordered:
        out.append({"phase": name, "start_ms": round(prev * 1000, 3), "end_ms": round(t * 1000, 3)})
        prev = t
    return out


WORKLOAD = Startup()
