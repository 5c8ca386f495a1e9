"""The vm-container guest agent: isobench's runtime (or runc) driven from the host, inside a Linux VM.

Docker on macOS and Windows runs containers inside a Linux VM and talks to its daemon over a socket.
This is the same arrangement: the VM harness boots the ``vmct`` guest image, whose workload is this
agent; the host's :mod:`bench.environments.vm_container` sends it jobs over TCP on the VM's bridge
address, and the agent runs each one with the *same* environment classes the host uses
(:class:`~bench.environments.container.ContainerEnvironment`, :class:`~bench.environments.runc.RuncEnvironment`),
so the only thing that changes is the extra layer. Published ports are bound on every guest address
(the VM's eth0 included), so the host reaches a container through host DNAT -> VM -> guest DNAT.

Protocol: one JSON object per line, one request and one reply per TCP connection (``run`` and ``wait``
block, so each request has its own connection and thread). Replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": "one line"}``. The wire forms of Job/Outcome/Usage are pure functions below,
shared with the host side and unit tested.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import socketserver
import sys
import threading
import time
from dataclasses import asdict

from bench.environments.base import Environment, Instance, Job, Limits, Outcome, Usage
from core.errors import BenchError, IsobenchError

AGENT_PORT = 7070
AGENT_READY = "ISOBENCH-AGENT-READY"
RUNTIMES = ("isobench", "runc")
# the guest's own bridge must not overlap the VM's address on the host bridge: first free of these
GUEST_SUBNETS = ("10.89.0.0/16", "10.90.0.0/16", "172.30.0.0/16")
MAX_REQUEST_BYTES = 1 << 20


# ------------------------------------------------------------------------------------- wire format

def job_to_wire(job: Job) -> dict:
    """A Job as JSON (volumes are host paths and do not cross into the guest)."""
    if job.volume is not None:
        raise BenchError("vm-container: volumes are not supported (a host directory is not visible in the guest)")
    d = asdict(job)
    d.pop("volume")
    d["argv"], d["env"], d["cap_drop"] = list(job.argv), list(job.env), list(job.cap_drop)
    return d


def job_from_wire(d: dict) -> Job:
    d = dict(d)
    limits = Limits(**d.pop("limits", {}))
    for key in ("argv", "env", "cap_drop"):
        d[key] = tuple(d.get(key) or ())
    return Job(limits=limits, **d)


def outcome_to_wire(o: Outcome) -> dict:
    return {"exit_code": o.exit_code, "output": o.output, "wall_s": o.wall_s, "phases": dict(o.phases),
            "extra": {k: v for k, v in o.extra.items() if isinstance(v, (int, float, str, bool, type(None)))}}


def outcome_from_wire(d: dict) -> Outcome:
    return Outcome(exit_code=int(d["exit_code"]), output=str(d["output"]), wall_s=float(d["wall_s"]),
                   phases={k: float(v) for k, v in d.get("phases", {}).items()}, extra=dict(d.get("extra", {})))


def usage_to_wire(u: Usage) -> dict:
    return asdict(u)


def usage_from_wire(d: dict) -> Usage:
    return Usage(**d)


def pick_subnet(vm_networks: list[ipaddress.IPv4Network]) -> str:
    """The first of GUEST_SUBNETS that overlaps none of the guest's own networks (its eth0's)."""
    for cand in GUEST_SUBNETS:
        net = ipaddress.IPv4Network(cand)
        if not any(net.overlaps(n) for n in vm_networks):
            return cand
    raise BenchError(f"no guest bridge subnet free: {', '.join(GUEST_SUBNETS)} all overlap {vm_networks}")


# ------------------------------------------------------------------------------------------- agent

class Agent:
    """Instances by id, and one environment per runtime (made on first use)."""

    def __init__(self, paths) -> None:
        self.paths = paths
        self.envs: dict[str, Environment] = {}
        self.instances: dict[int, Instance] = {}
        self.next_id = 1
        self.lock = threading.Lock()

    def env(self, runtime: str) -> Environment:
        if runtime not in RUNTIMES:
            raise BenchError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        with self.lock:
            if runtime not in self.envs:
                if runtime == "runc":
                    from bench.environments.runc import RuncEnvironment

                    # the image's flat rootfs is on the guest disk (vmharness.guestroot); ports on every address
                    self.envs[runtime] = RuncEnvironment(self.paths, publish_ip="")
                else:
                    from bench.environments.container import ContainerEnvironment

                    # published ports on every guest address: the host reaches them through eth0
                    self.envs[runtime] = ContainerEnvironment(self.paths, publish_ip="")
            return self.envs[runtime]

    def instance(self, req: dict) -> Instance:
        try:
            return self.instances[int(req["id"])]
        except (KeyError, ValueError, TypeError):
            raise BenchError(f"no instance {req.get('id')!r} in the guest") from None

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            from runtime.cgroups import cgroup_namespace_supported, detect

            layout = detect()
            return {"cgroup": layout.version, "controllers": sorted(layout.unified_controllers),
                    "cgroupns": cgroup_namespace_supported(), "kernel": os.uname().release,
                    "cpus": os.cpu_count(), "instances": len(self.instances)}
        if op == "images":  # what the guest's store holds: the same digests as the host's, flat rootfs included
            from runtime.image.store import ImageStore

            flat = self.paths.flat
            return {"images": {r.name: r.manifest_digest for r in ImageStore(self.paths).list()},
                    "flat": sorted(p.name for p in flat.iterdir()) if flat.is_dir() else []}
        if op == "run":
            env = self.env(req.get("runtime", "isobench"))
            t0 = time.perf_counter_ns()
            out = env.run(job_from_wire(req["job"]))
            return {"outcome": outcome_to_wire(out), "agent_s": (time.perf_counter_ns() - t0) / 1e9}
        if op == "start":
            env = self.env(req.get("runtime", "isobench"))
            inst = env.start(job_from_wire(req["job"]))
            with self.lock:
                iid = self.next_id
                self.next_id += 1
                self.instances[iid] = inst
            return {"id": iid, "endpoint": list(inst.endpoint) if inst.endpoint else None, "target": inst.target}
        if op == "wait_ready":
            return {"ready_s": self.instance(req).wait_ready(float(req.get("timeout_s", 60.0)))}
        if op == "usage":
            return {"usage": usage_to_wire(self.instance(req).usage())}
        if op == "pids":
            return {"pids": self.instance(req).workload_pids()}
        if op == "wait":
            return {"outcome": outcome_to_wire(self.instance(req).wait(req.get("timeout_s")))}
        if op == "stop":
            with self.lock:
                inst = self.instances.pop(int(req["id"]), None)
            if inst is not None:
                inst.stop()
            return {}
        raise BenchError(f"unknown request {op!r}")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            req = json.loads(line)
            reply = {"ok": True, **self.server.agent.handle(req)}
        except IsobenchError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError, OSError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _eth_networks() -> list[ipaddress.IPv4Network]:
    import subprocess

    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    nets = []
    for line in out.split("\n"):
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vm_container_guest", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=AGENT_PORT)
    args = ap.parse_args(argv)
    from core.paths import HostPaths
    from runtime.network import bridge

    paths = HostPaths.from_env().ensure()
    if not bridge.config_path(paths).exists():
        bridge.set_subnet(paths, pick_subnet(_eth_networks()))
    agent = Agent(paths)
    server = _Server(("0.0.0.0", args.port), _Handler)
    server.agent = agent
    print(f"{AGENT_READY} {args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        for inst in list(agent.instances.values()):
            inst.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
