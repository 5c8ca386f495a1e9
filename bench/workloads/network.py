"""network: HTTP requests/s and p50/p99 latency with wrk (on the host) against busybox httpd in the
instance, and TCP throughput with iperf3 (client on the host, server in the instance), through the port
mapping (127.0.0.1:<host port> -> DNAT -> bridge -> instance); natively the servers listen on loopback.

The servers start once per environment (first iteration) and stay up across iterations, so a VM boot
is not part of any number; they are stopped in ``teardown`` (also on failure or Ctrl-C).
Course-notes claim: port mapping keeps isolation while allowing access; the price is measured here.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

from bench.environments.base import Environment, Instance, Job
from bench.workloads.base import Context, Measurement, Metric, Workload
from bench.workloads.startup import first_response_s
from core.errors import BenchError, IsobenchError

HTTP_PORT = 80
IPERF_PORT = 5201
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise BenchError(f"wrk: unparsable latency {text!r}")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def parse_wrk(output: str) -> dict[str, float]:
    """requests/s, p50 and p99 latency (ms) from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", output)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise BenchError(f"wrk: no Requests/sec or latency distribution in output: {output.strip()[-200:]!r}")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if errors and int(errors.group(1)) > 0:
        raise BenchError(f"wrk: {errors.group(1)} non-2xx responses")
    return {"http_requests_per_s": float(rps.group(1)), "http_p50_ms": _duration_s(p50.group(1)) * 1e3,
            "http_p99_ms": _duration_s(p99.group(1)) * 1e3}


def parse_iperf3(output: str) -> float:
    """Received TCP throughput in Gbit/s from ``iperf3 -J`` output."""
    try:
        data = json.loads(output[output.find("{"):])
    except (json.JSONDecodeError, ValueError) as exc:
        raise BenchError(f"iperf3: unparsable JSON output ({exc})") from exc
    if "error" in data:
        raise BenchError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def wait_tcp(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise BenchError(f"nothing accepts connections on {host}:{port} after {timeout_s}s")


def run_host(argv: list[str], timeout_s: float) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s}s") from exc
    except FileNotFoundError as exc:
        raise BenchError(f"{argv[0]} is not installed on the host (make setup)") from exc
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} exited {res.returncode}: {(res.stderr or res.stdout).strip()[-200:]}")
    return res.stdout


class Network(Workload):
    name = "network"
    images = ("busybox", "tools")
    environments = ("native", "container", "runc", "vm", "vm-container")
    metrics = {
        "http_requests_per_s": Metric("req/s", "higher", "wrk, 1 thread, 8 connections"),
        "http_p50_ms": Metric("ms", "lower", "wrk median latency"),
        "http_p99_ms": Metric("ms", "lower", "wrk 99th percentile latency"),
        "tcp_gbit_s": Metric("Gbit/s", "higher", "iperf3 single TCP stream, host -> instance"),
    }

    def setup(self, ctx: Context) -> None:
        self.servers: dict[str, tuple[Instance, Instance]] = {}

    def _servers(self, env: Environment, ctx: Context) -> tuple[Instance, Instance]:
        if env.name in self.servers:
            return self.servers[env.name]
        try:
            return self._start_servers(env, ctx)
        except IsobenchError as exc:
            # one retry: a shared host's bridge or libvirt connection can be reset under us by others
            ctx.log(f"\n[bench] network: starting servers in {env.name} failed ({exc}); retrying once")
            time.sleep(1.0)
            return self._start_servers(env, ctx)

    def _start_servers(self, env: Environment, ctx: Context) -> tuple[Instance, Instance]:
        http = env.start(Job(image=ctx.image("busybox"), argv=("httpd", "-f", "-p", "{port}", "-h", "/www"),
                             port=HTTP_PORT, timeout_s=3600))
        try:
            first_response_s(*http.endpoint, http.created_ns, timeout_s=120)
            iperf = env.start(Job(image=ctx.image("tools"), argv=("iperf3", "-s", "-p", "{port}"), port=IPERF_PORT,
                                  timeout_s=3600, memory_mib=ctx.profile.vm_memory_mib))
        except BaseException:
            http.stop()
            raise
        self.servers[env.name] = (http, iperf)
        try:
            wait_tcp(*iperf.endpoint, timeout_s=120)
            time.sleep(0.2)  # iperf3 logs the probe connection as a failed test and starts listening again
        except BaseException:
            self._stop(env.name)
            raise
        return http, iperf

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        http, iperf = self._servers(env, ctx)
        d = max(1, int(round(ctx.profile.tool_duration_s)))
        host, port = http.endpoint
        w = parse_wrk(run_host(["wrk", "-t1", "-c8", f"-d{d}s", "--latency", f"http://{host}:{port}/"], 60 + d))
        host, port = iperf.endpoint
        gbit = None
        for attempt in range(3):  # the server may still be resetting from the previous test
            try:
                gbit = parse_iperf3(run_host(["iperf3", "-c", host, "-p", str(port), "-t", str(d), "-J"], 60 + d))
                break
            except BenchError:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        return [Measurement(k, v) for k, v in w.items()] + [Measurement("tcp_gbit_s", gbit)]

    def _stop(self, env_name: str) -> None:
        for inst in self.servers.pop(env_name, ()):
            inst.stop()

    def teardown(self, ctx: Context) -> None:
        for name in list(getattr(self, "servers", {})):
            self._stop(name)


WORKLOAD = Network()
