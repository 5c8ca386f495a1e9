"""``isobench vm run/ps/stop/rm/logs/inspect`` and ``isobench doctor``.

Thin wrappers over :mod:`vmharness.api`; the parser imports nothing heavy (it is built on every
``isobench`` start, whose latency is measured), handlers import inside.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.commands.common import host_paths, print_table, verb, verb_group


def register(sub) -> None:
    """Add ``vm ...`` and ``doctor`` to the `isobench` parser."""
    verbs = verb_group(sub, "vm", "run an image in a KVM/QEMU (TCG) virtual machine through libvirt", dest="vm_cmd")

    r = verb(verbs, "run", _run, help="run the image's command (or CMD) in a VM, stream output, exit with its code")
    r.add_argument("--rm", action="store_true", help="remove the VM record when it exits")
    r.add_argument("-d", "--detach", action="store_true", help="boot, wait until the workload starts, print the id")
    r.add_argument("--name", default="", help="a name for `vm ps/stop/rm/logs/inspect`")
    r.add_argument("-m", "--memory", default="512m", help="guest RAM (default 512m)")
    r.add_argument("--vcpus", type=int, default=1, help="virtual CPUs (default 1)")
    r.add_argument("--cpus", default=None, help="CPU quota for the whole VM, e.g. 0.5 (like a container's --cpus)")
    r.add_argument("--vcpu-pin", action="append", default=[], metavar="CPUSET",
                   help="host cpuset for vCPU 0, 1, ... (repeat per vCPU)")
    r.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    r.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOSTPORT:GUESTPORT[/PROTO]")
    r.add_argument("--network", choices=("bridge", "user", "none"), default="bridge",
                   help="bridge: tap on isobench0 like containers (default); user: QEMU user-mode; none")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    r.add_argument("--machine", choices=("microvm", "q35", "pc"), default="microvm")
    r.add_argument("--boot-timeout", type=float, default=60.0, metavar="SECONDS")
    r.add_argument("-w", "--workdir", default=None)
    r.add_argument("-u", "--user", default=None)
    r.add_argument("--console", action="store_true", help="stream the whole serial console, not only the workload")
    r.add_argument("--phases", action="store_true", help="print boot phases (seconds since create) to stderr")
    r.add_argument("image", metavar="IMAGE")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")

    ps = verb(verbs, "ps", _ps, help="list VMs")
    ps.add_argument("-a", "--all", action="store_true", help="include exited VMs")
    ps.add_argument("-q", "--quiet", action="store_true", help="only ids")

    st = verb(verbs, "stop", _stop, help="stop VMs (SIGTERM to QEMU, then destroy) and free their resources")
    st.add_argument("vms", nargs="+", metavar="VM")
    st.add_argument("-t", "--time", type=float, default=5.0, help="grace seconds before destroy")

    rm = verb(verbs, "rm", _rm, help="remove VMs")
    rm.add_argument("-f", "--force", action="store_true", help="destroy running VMs first")
    rm.add_argument("vms", nargs="+", metavar="VM")

    lg = verb(verbs, "logs", _logs, help="print a VM's serial console log")
    lg.add_argument("--output", action="store_true", help="only the workload's output")
    lg.add_argument("vm", metavar="VM")

    ins = verb(verbs, "inspect", _inspect, help="a VM's record, status and (if running) resource usage as JSON")
    ins.add_argument("vms", nargs="+", metavar="VM")

    doc = verb(sub, "doctor", _doctor, help="accelerator probe, libvirt, kernel, cgroups and tool versions")
    doc.add_argument("--reprobe", action="store_true", help="run the KVM probe again instead of using the cache")


# ---------------------------------------------------------------------------- helpers

def _paths():
    return host_paths().ensure()


def parse_publish(spec: str):
    """``[IP:]HOSTPORT:GUESTPORT[/PROTO]`` -> PortMapping (the networking area's parser when present)."""
    from core.errors import UsageError
    from runtime.spec import PortMapping

    try:
        from runtime.network import parse_port_spec  # type: ignore[attr-defined]
    except ImportError:
        parse_port_spec = None
    if parse_port_spec is not None:
        got = parse_port_spec(spec)
        return got[0] if isinstance(got, (list, tuple)) else got
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    parts = body.rsplit(":", 2)
    try:
        if len(parts) == 3:
            return PortMapping(int(parts[1]), int(parts[2]), proto, parts[0])
        if len(parts) == 2:
            return PortMapping(int(parts[0]), int(parts[1]), proto)
    except ValueError:
        pass
    raise UsageError(f"-p {spec!r} is not [IP:]HOSTPORT:GUESTPORT[/tcp|udp]")


def _memory_mib(text: str) -> int:
    from core.units import parse_size_bytes

    return parse_size_bytes(text if text[-1:].isalpha() else text + "m", "--memory") // 2**20


def _config(args):
    from core.units import parse_cpus
    from vmharness.api import VMRunConfig

    return VMRunConfig(
        memory_mib=_memory_mib(args.memory), vcpus=args.vcpus,
        cpus=None if args.cpus is None else parse_cpus(args.cpus),
        vcpupin=tuple(args.vcpu_pin), env=tuple(args.env), ports=tuple(parse_publish(p) for p in args.publish),
        accel=args.accel, network=args.network, boot_timeout_s=args.boot_timeout, machine=args.machine,
        workdir=args.workdir, user=args.user, name=args.name)


def _sigterm_as_interrupt() -> None:
    """`kill` of the CLI cleans up like Ctrl-C does (the domain is destroyed in a finally)."""
    import signal

    def handler(_signo, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _check_name_free(paths, name: str) -> None:
    from core.errors import UsageError
    from vmharness.vm import list_records

    if name and any(r.get("user_name") == name for r in list_records(paths)):
        raise UsageError(f"--name {name!r} is already used by another VM (isobench vm rm {name})")


# ---------------------------------------------------------------------------- verbs

def _run(args) -> int:
    from vmharness import api
    from vmharness import console as con

    paths = _paths()
    cfg = _config(args)
    _check_name_free(paths, args.name)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    _sigterm_as_interrupt()
    if args.detach:
        vm = api.start(args.image, cmd or None, cfg, paths, detached=True)
        try:
            vm.wait_ready()
        except BaseException:
            vm.close()
            raise
        vm.watcher.stop()
        print(vm.id)
        return 0

    def echo(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    if args.console:
        # the whole console as it arrives (kernel, init shim and workload)
        vm = api.start(args.image, cmd or None, cfg, paths)
        try:
            printed = 0

            def pump() -> None:
                nonlocal printed
                text = con.normalize(vm.watcher.text)
                echo(text[printed:])
                printed = len(text)

            import threading

            done = threading.Event()

            def loop() -> None:
                while not done.wait(0.05):
                    pump()

            t = threading.Thread(target=loop, daemon=True)
            t.start()
            try:
                code = vm.wait_exit(cfg.run_timeout_s)
            finally:
                done.set()
                t.join()
                pump()
            phases = vm.phases()
        finally:
            vm.close()
            if args.rm:
                import shutil

                shutil.rmtree(vm.dir, ignore_errors=True)
    else:
        res = api.run(args.image, cmd or None, cfg, paths, echo=echo, keep_record=not args.rm)
        code, phases = res.exit_code, res.phases
    if args.phases:
        print("phases: " + " ".join(f"{k}={v:.3f}s" for k, v in phases.items()), file=sys.stderr)
    return code


def _ps(args) -> int:
    from vmharness.vm import list_records, status_of

    paths = _paths()
    rows = []
    for rec in list_records(paths):
        status, code = status_of(rec)
        if status != "running" and not args.all:
            continue
        rows.append((rec["id"], rec.get("user_name") or "-", rec.get("image", "?"),
                     status if code is None else f"{status} ({code})", rec.get("accel", "?"), rec.get("ip") or "-",
                     " ".join(rec.get("command", []))[:40]))
    print_table(("VM ID", "NAME", "IMAGE", "STATUS", "ACCEL", "IP", "COMMAND"), rows, quiet=args.quiet)
    return 0


def _stop(args) -> int:
    from vmharness.vm import load_record, release_record

    paths = _paths()
    for ref in args.vms:
        rec = load_record(paths, ref)
        release_record(paths, rec, graceful_s=args.time)
        print(rec["id"])
    return 0


def _rm(args) -> int:
    import shutil

    from core.errors import VMError
    from vmharness.vm import load_record, release_record, status_of

    paths = _paths()
    recs = [load_record(paths, ref) for ref in args.vms]
    for rec in recs:
        if status_of(rec)[0] == "running" and not args.force:
            raise VMError(f"VM {rec['id']} is running; stop it first or use vm rm -f")
    for rec in recs:
        release_record(paths, rec)
        shutil.rmtree(paths.vms / rec["id"], ignore_errors=True)
        print(rec["id"])
    return 0


def _logs(args) -> int:
    from pathlib import Path

    from core.errors import VMError
    from vmharness import console as con
    from vmharness.vm import load_record

    rec = load_record(_paths(), args.vm)
    try:
        text = Path(rec["console_log"]).read_text(errors="replace")
    except OSError as exc:
        raise VMError(f"console log {rec['console_log']} of VM {rec['id']} is gone") from exc
    sys.stdout.write(con.workload_output(text) if args.output else con.normalize(text))
    return 0


def _inspect(args) -> int:
    from dataclasses import asdict

    from core.errors import VMError
    from vmharness.usage import read_usage
    from vmharness.vm import load_record, qemu_pid, status_of

    paths = _paths()
    out = []
    for ref in args.vms:
        rec = load_record(paths, ref)
        status, code = status_of(rec)
        rec = {**rec, "status": status, "exit_code": code}
        pid = qemu_pid(rec["name"]) if status == "running" else None
        if pid:
            try:
                rec["usage"] = asdict(read_usage(pid, rec["memory_mib"]))
            except VMError as exc:
                rec["usage"] = {"error": str(exc)}
        out.append(rec)
    print(json.dumps(out, indent=2))
    return 0


def _tool_version(argv: list[str]) -> str:
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0].strip() if text else f"exit {res.returncode}"


DOCTOR_TOOLS: dict[str, list[str]] = {
    "qemu": ["qemu-system-x86_64", "--version"],
    "qemu-img": ["qemu-img", "--version"],
    "libvirtd": ["libvirtd", "--version"],
    "runc": ["runc", "--version"],
    "sysbench": ["sysbench", "--version"],
    "fio": ["fio", "--version"],
    "iperf3": ["iperf3", "--version"],
    "wrk": ["wrk", "--version"],
    "stress-ng": ["stress-ng", "--version"],
    "mkfs.ext4": ["mkfs.ext4", "-V"],
    "busybox": ["busybox"],
}


def cgroup_layout(root: str = "/sys/fs/cgroup") -> str:
    from pathlib import Path

    base = Path(root)
    if (base / "cgroup.controllers").exists():
        return "v2 (unified)"
    v1 = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in ("unified", "systemd")) \
        if base.is_dir() else []
    if (base / "unified").is_dir():
        return f"hybrid: v1 controllers ({', '.join(v1)}) + v2 at {root}/unified"
    return f"v1 ({', '.join(v1)})" if v1 else "none"


def _doctor(args) -> int:
    import os
    import platform

    from core.errors import IsobenchError

    rows: list[tuple[str, str]] = []
    rows.append(("host kernel", f"{platform.release()} ({platform.machine()})"))
    rows.append(("cgroups", cgroup_layout()))
    rows.append(("/dev/kvm", "present" if os.path.exists("/dev/kvm") else "missing"))
    try:
        from vmharness import hypervisor

        qemu = hypervisor.hypervisor_version()
        rows.append(("libvirt", f"{hypervisor.libvirt_version()} reachable at {hypervisor.URI} "
                               f"(hypervisor QEMU {qemu})"))
    except IsobenchError as exc:
        rows.append(("libvirt", f"NOT reachable: {exc}"))
    try:
        from vmharness.artifacts import find_kernel, kernel_supports_pvh

        k = find_kernel()
        rows.append(("guest kernel", f"{k.vmlinuz} ({'PVH direct boot' if kernel_supports_pvh(k) else 'bzImage'})"))
    except IsobenchError as exc:
        rows.append(("guest kernel", f"MISSING: {exc}"))
    try:
        from vmharness.accel import probe_cached

        res = probe_cached(refresh=args.reprobe)
        rows.append(("accelerator", f"{res.accel.upper()}: {res.reason} (probed {res.probe_s:.1f} s, cached)"))
    except IsobenchError as exc:
        rows.append(("accelerator", f"probe failed: {exc}"))
    for name, argv in DOCTOR_TOOLS.items():
        rows.append((name, _tool_version(argv)))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")
    return 0
