"""Container networking cost (issue 4): ``python -m bench.micro.network``.

Two measurements, each next to its reference in the same run:

* **start**: the network's share of a container start, bridged with one port mapping vs
  ``--network none``. Through the runtime in-process (``runtime.api``) when it is available (whole
  container start, the headline target: bridged + 1 port under 25 ms median), and always the network
  layer alone (``prepare`` + ``attach`` on a process in a fresh network namespace).
* **http**: busybox httpd in a container's network namespace reached through the DNAT mapping on
  127.0.0.1:HOSTPORT, vs the same httpd binary run natively on 127.0.0.1, both driven by
  ``wrk -t1 -c8 -d5s --latency``: requests/s, p50, p99 and the ratios mapped/native.

Traffic goes only to loopback. Everything is created in a private state root and removed at the end
(the bridge too, if this run created it). Exit status 1 when the start target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

BUSYBOX = "/bin/busybox"
START_TARGET_MS = 25.0
SETTLE_S = 0.2
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_wrk(text: str) -> WrkResult:
    """Requests/sec and the 50%/99% lines of ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if not m:
            raise ValueError(f"wrk output has no {p}% latency line")
        return float(m.group(1)) * _UNITS_MS[m.group(2)]

    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = (sum(int(x) for x in err.groups()) if err else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return WrkResult(rps, pct("50"), pct("99"), errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def netns_process() -> Iterator[int]:
    """A stand-in container: a process in a fresh network namespace."""
    proc = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    try:
        me = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == me:
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not create a network namespace")
            time.sleep(0.005)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def bench_network_layer(paths, runs: int) -> dict[str, float]:
    """prepare + attach (+ detach) of the network alone, bridged with one port vs none."""
    from runtime import network
    from core import leases
    from core.paths import new_id
    from runtime.spec import NetworkSpec

    network.ensure_bridge(paths)  # the bridge persists between containers: not part of a start
    import pyroute2  # noqa: F401 - in-process harness: imported once, like the runtime's own modules

    out: dict[str, list[float]] = {"bridge_p1_start": [], "bridge_p1_detach": [], "none_start": [],
                                   "none_detach": []}
    for i in range(runs + 1):  # first round warms caches and is dropped
        for mode in ("bridge", "none"):
            spec = NetworkSpec(mode=mode, ports=(network.parse_port_spec(f"{free_port()}:80"),)
                               if mode == "bridge" else ())
            cid = new_id()
            with netns_process() as pid:
                leases.take(cid, pid=pid)
                try:
                    t0 = time.perf_counter()
                    network.attach(network.prepare(cid, spec, paths), pid)
                    t1 = time.perf_counter()
                finally:
                    t2 = time.perf_counter()
                    network.detach(cid, paths)
                    t3 = time.perf_counter()
                    leases.release(cid)
            # the kernel destroys a dead namespace asynchronously (cleanup_net holds the rtnl lock and
            # waits for RCU grace periods); let it finish so it is not billed to the next start
            time.sleep(SETTLE_S)
            if i:
                key = "bridge_p1" if mode == "bridge" else "none"
                out[f"{key}_start"].append(t1 - t0)
                out[f"{key}_detach"].append(t3 - t2)
    return {k: _median_ms(v) for k, v in out.items()}


def bench_runtime_start(paths, runs: int) -> dict[str, float] | None:
    """Whole container start in-process through ``runtime.api`` (create + start, until the workload has
    exec'd), bridged with one port mapping vs ``--network none``; None when the runtime is missing.
    Also the runtime's own "network" phase (on_ready: attach) for the bridged case."""
    try:
        from runtime import api
    except ImportError:
        return None
    from runtime.image.store import ImageStore
    from runtime.spec import ContainerConfig, NetworkSpec
    from runtime.network import parse_port_spec

    ImageStore(paths).layer_dirs(ImageStore(paths).resolve("busybox"))
    import pyroute2  # noqa: F401 - in-process harness: imported once, not part of a start

    out: dict[str, list[float]] = {"bridge_p1_start": [], "none_start": [], "bridge_p1_network_phase": []}
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for i in range(runs + 1):  # first round warms caches and is dropped
            for mode in ("bridge", "none"):
                net = NetworkSpec(mode=mode, ports=(parse_port_spec(f"{free_port()}:80"),) if mode == "bridge" else ())
                cfg = ContainerConfig(image="busybox", command=("sleep", "30"), network=net)
                t0 = time.perf_counter()
                c = api.create(cfg, paths, stdio=(devnull, devnull, devnull))
                try:
                    api.start(c)
                    t1 = time.perf_counter()
                    phases = dict(c.timings_ns)
                finally:
                    api.kill(c)
                    api.wait(c, timeout_s=10)
                    api.delete(c, force=True)
                time.sleep(SETTLE_S)
                if i:
                    key = "bridge_p1" if mode == "bridge" else "none"
                    out[f"{key}_start"].append(t1 - t0)
                    if mode == "bridge" and "network" in phases and "rootfs" in phases:
                        out["bridge_p1_network_phase"].append((phases["network"] - phases["rootfs"]) / 1e9)
    finally:
        os.close(devnull)
    return {k: _median_ms(v) for k, v in out.items() if v}


def run_wrk(url: str, duration_s: int) -> WrkResult:
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{duration_s}s", "--latency", url], capture_output=True,
                         text=True, timeout=duration_s + 30, check=True).stdout
    return parse_wrk(out)


def _wait_http(url: str, timeout_s: float = 5.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def bench_http(paths, www: Path, duration_s: int) -> dict[str, dict]:
    from runtime import network
    from core import leases
    from core.paths import new_id
    from runtime.spec import NetworkSpec

    results: dict[str, dict] = {}
    # native: the same busybox httpd on loopback
    port = free_port()
    native = subprocess.Popen([BUSYBOX, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)])
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        results["native"] = asdict(run_wrk(f"http://127.0.0.1:{port}/", duration_s))
    finally:
        native.kill()
        native.wait()
    # mapped: httpd inside a network namespace, reached via 127.0.0.1:HOSTPORT -> DNAT -> bridge
    cid, host_port = new_id(), free_port()
    with netns_process() as pid:
        leases.take(cid, pid=pid)
        httpd = None
        try:
            spec = NetworkSpec(ports=(network.parse_port_spec(f"{host_port}:80"),))
            network.attach(network.prepare(cid, spec, paths), pid)
            httpd = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", BUSYBOX, "httpd", "-f", "-p", "80",
                                      "-h", str(www)])
            _wait_http(f"http://127.0.0.1:{host_port}/")
            results["mapped"] = asdict(run_wrk(f"http://127.0.0.1:{host_port}/", duration_s))
        finally:
            if httpd is not None:
                httpd.kill()
                httpd.wait()
            network.detach(cid, paths)
            leases.release(cid)
    n, m = results["native"], results["mapped"]
    results["ratio"] = {"requests_per_s": m["requests_per_s"] / n["requests_per_s"],
                        "p50": m["p50_ms"] / n["p50_ms"], "p99": m["p99_ms"] / n["p99_ms"]}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="starts to time per mode (median reported)")
    ap.add_argument("--duration", type=int, default=5, help="wrk duration per server, seconds")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.micro.network: needs root (network namespaces, bridge, nftables)", file=sys.stderr)
        return 1
    from runtime.network import bridge
    from runtime.network.gc import prune
    from core.paths import HostPaths

    work = Path(tempfile.mkdtemp(prefix="isobench-bench-network-"))
    paths = HostPaths(root=work / "root").ensure()
    os.environ["ISOBENCH_ROOT"] = str(paths.root)
    bridge_existed = bridge.bridge_exists()
    report: dict[str, object] = {}
    try:
        report["network_layer_ms"] = bench_network_layer(paths, args.runs)
        report["runtime_start_ms"] = bench_runtime_start(paths, args.runs)
        www = work / "www"
        www.mkdir()
        (www / "index.html").write_text("x" * 612)  # the size of nginx's welcome page
        report["http"] = bench_http(paths, www, args.duration) if shutil.which("wrk") else None
    finally:
        if not bridge_existed:
            prune(paths)
        shutil.rmtree(work, ignore_errors=True)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    start = report["runtime_start_ms"] or {}
    headline = start.get("bridge_p1_start") if isinstance(start, dict) else None
    return 1 if headline is not None and headline > START_TARGET_MS else 0


def _print(report: dict) -> None:
    layer = report["network_layer_ms"]
    print("network layer alone (prepare+attach / detach, median ms):")
    print(f"  bridge + 1 port : start {layer['bridge_p1_start']:7.2f}   detach {layer['bridge_p1_detach']:7.2f}")
    print(f"  none            : start {layer['none_start']:7.2f}   detach {layer['none_detach']:7.2f}")
    rt = report.get("runtime_start_ms")
    if rt:
        print("container start in-process via runtime.api (median ms):")
        print(f"  bridge + 1 port : {rt['bridge_p1_start']:7.2f}  (target < {START_TARGET_MS:.0f})")
        print(f"  none            : {rt['none_start']:7.2f}")
        print(f"  network share   : {rt['bridge_p1_start'] - rt['none_start']:7.2f}")
        if "bridge_p1_network_phase" in rt:
            print(f"  runtime's network phase (attach) in the bridged start: {rt['bridge_p1_network_phase']:7.2f}")
    else:
        print("container start via runtime.api: runtime not available, network layer only")
    http = report.get("http")
    if http:
        print("HTTP, busybox httpd, wrk -t1 -c8 --latency:")
        for k in ("native", "mapped"):
            r = http[k]
            print(f"  {k:<7}: {r['requests_per_s']:9.0f} req/s  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.3f} ms"
                  f"  errors {r['errors']}")
        q = http["ratio"]
        print(f"  mapped/native: req/s x{q['requests_per_s']:.3f}  p50 x{q['p50']:.3f}  p99 x{q['p99']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
