"""Docker-like container verbs: run, ps, stop, kill, rm, logs, exec, inspect, stats, wait.

Thin on purpose: parsing turns options into a :class:`~runtime.spec.ContainerConfig`, everything else
is :mod:`runtime.api` (the same code the benchmark harness calls). Only ``argparse`` is imported at
module level -- ``isobench run --rm busybox true`` is timed end to end against ``runc run``, so every
runtime import happens inside the handler that needs it.
"""

from __future__ import annotations

import argparse

from app.commands.common import for_each, host_paths, print_table, verb


def register(sub) -> None:
    p = verb(sub, "run", _run, help="run a command in a new container", add_help=False,
             description="Run a command in a new container.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the id")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached to the container")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal (relayed to ours)")
    p.add_argument("--name", help="container name")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE", help="read K=V lines from FILE")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="UID[:GID] or name")
    p.add_argument("-h", "--hostname", help="container host name")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="bind mount (absolute SRC) or named volume (SRC a name)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH", help="mount a tmpfs at PATH")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--memory", "-m", help="memory limit (e.g. 256m)")
    p.add_argument("--memory-swap", help="memory+swap limit (-1: unlimited swap)")
    p.add_argument("--cpus", help="CPU quota in CPUs (e.g. 0.5)")
    p.add_argument("--cpu-shares", "-c", type=_int("--cpu-shares"), help="relative CPU weight (default 1024)")
    p.add_argument("--cpuset-cpus", help="CPUs allowed (e.g. 0-1, 0,2)")
    p.add_argument("--pids-limit", type=_int("--pids-limit"), help="maximum number of processes")
    p.add_argument("--device-read-bps", action="append", default=[], metavar="DEV:RATE")
    p.add_argument("--device-write-bps", action="append", default=[], metavar="DEV:RATE")
    p.add_argument("--userns", default="host", help="host or remap (root in the container is unprivileged)")
    p.add_argument("--network", "--net", default="bridge", help="bridge (default), none or host")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR[/PROTO]")
    p.add_argument("-P", "--publish-all", action="store_true", help="publish the image's exposed ports")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--init", action="store_true", help="run a tiny init as PID 1 (reaps zombies)")
    p.add_argument("--privileged", action="store_true", help="no capability, seccomp or path restrictions")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[], metavar="seccomp=PROFILE|no-new-privileges")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = verb(sub, "ps", _ps, help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")

    p = verb(sub, "stop", _stop, help="stop containers (SIGTERM, then SIGKILL)")
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+")

    p = verb(sub, "kill", _kill, help="send a signal to containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+")

    p = verb(sub, "rm", _rm, help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill running containers first")
    p.add_argument("containers", nargs="+")

    p = verb(sub, "logs", _logs, help="print a detached container's output")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("container")

    p = verb(sub, "exec", _exec, help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="stdin attached (always: accepted for docker)")
    p.add_argument("-t", "--tty", action="store_true", help="give the process a terminal (relayed to ours)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = verb(sub, "inspect", _inspect, help="show a container's state and configuration as JSON")
    p.add_argument("containers", nargs="+")

    p = verb(sub, "stats", _stats, help="CPU, memory, pids and I/O of running containers")
    p.add_argument("--no-stream", action="store_true", help="print once and exit")
    p.add_argument("containers", nargs="*")

    p = verb(sub, "wait", _wait, help="wait for containers to exit, print their exit codes")
    p.add_argument("containers", nargs="+")


def _int(option: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r} is not an integer") from None
    return parse


# ----------------------------------------------------------------------------- run

def _read_env_file(path: str) -> list[str]:
    from core.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"--env-file {path}: {exc.strerror}") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def parse_volume(text: str):
    """``SRC:DST[:ro|rw]`` -> MountSpec (bind when SRC is absolute, else a named volume)."""
    from core.errors import UsageError
    from runtime.spec import MountSpec

    parts = text.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        src, dst, ro = parts[0], parts[1], parts[2] == "ro"
    elif len(parts) == 2:
        src, dst, ro = parts[0], parts[1], False
    else:
        raise UsageError(f"-v {text!r} is not SRC:DST[:ro]")
    if not src or not dst:
        raise UsageError(f"-v {text!r} is not SRC:DST[:ro]")
    if src.startswith(("/", ".", "~")):
        if not src.startswith("/"):
            raise UsageError(f"-v {text!r}: host path {src!r} must be absolute")
        return MountSpec(destination=dst, source=src, type="bind", read_only=ro)
    from runtime.volumes import NAME_RE

    if not NAME_RE.fullmatch(src):  # a name, never a path: "a/../../x" must not leave the volumes dir
        raise UsageError(f"-v {text!r}: volume name {src!r} is not valid (letters, digits, then also _ . -)")
    return MountSpec(destination=dst, source=src, type="volume", read_only=ro)


def _throttles(items: list[str], option: str):
    from core.errors import UsageError
    from runtime.spec import ThrottleDevice
    from core.units import parse_size_bytes

    out = []
    for item in items:
        dev, sep, rate = item.rpartition(":")
        if not sep or not dev:
            raise UsageError(f"{option} {item!r} is not DEVICE:RATE (e.g. /dev/vda:1mb)")
        out.append(ThrottleDevice(path=dev, rate_bytes_per_s=parse_size_bytes(rate, option)))
    return tuple(out)


def config_from_args(args) -> "object":
    """The ContainerConfig for ``isobench run`` options (pure: raises UsageError on bad values)."""
    from core.errors import UsageError
    from runtime.spec import ContainerConfig, MountSpec, NetworkSpec, Resources, SecuritySpec
    from core.units import parse_cpus, parse_size_bytes

    env: list[str] = []
    for path in args.env_file:
        env += _read_env_file(path)
    env += args.env
    mounts = [parse_volume(v) for v in args.volume]
    mounts += [MountSpec(destination=t.split(":", 1)[0], type="tmpfs") for t in args.tmpfs]
    quota = None
    if args.cpus is not None:
        quota = Resources.quota_for_cpus(parse_cpus(args.cpus, "--cpus"))
    memory = parse_size_bytes(args.memory, "--memory") if args.memory is not None else None
    swap = None
    if args.memory_swap is not None:
        swap = -1 if args.memory_swap.strip() == "-1" else parse_size_bytes(args.memory_swap, "--memory-swap")
    resources = Resources(cpu_quota_us=quota, cpu_shares=args.cpu_shares, cpuset_cpus=args.cpuset_cpus,
                          memory_bytes=memory, memory_swap_bytes=swap, pids_max=args.pids_limit,
                          device_read_bps=_throttles(args.device_read_bps, "--device-read-bps"),
                          device_write_bps=_throttles(args.device_write_bps, "--device-write-bps"))
    ports = ()
    if args.publish:
        from runtime.network.portspec import parse_port_spec

        ports = tuple(m for spec in args.publish for m in _as_tuple(parse_port_spec(spec)))
    seccomp, nnp = "default", True
    for opt in args.security_opt:
        key, _, value = opt.partition("=")
        if key == "seccomp" and value:
            seccomp = value
        elif key == "no-new-privileges":
            nnp = value in ("", "true")
        else:
            raise UsageError(f"--security-opt {opt!r} is not seccomp=PROFILE or no-new-privileges[=true|false]")
    if args.userns not in ("host", "remap"):
        raise UsageError(f"--userns {args.userns!r} is not one of host, remap")
    if args.network not in ("bridge", "none", "host"):
        raise UsageError(f"--network {args.network!r} is not one of bridge, none, host")
    entrypoint = None
    if args.entrypoint is not None:
        import shlex

        try:
            entrypoint = tuple(shlex.split(args.entrypoint)) or ("",)
        except ValueError as exc:  # unbalanced quote: shlex says "No closing quotation"
            raise UsageError(f"--entrypoint {args.entrypoint!r}: {exc}") from exc
    return ContainerConfig(
        image=args.image, command=tuple(args.command) if args.command else None, entrypoint=entrypoint,
        env=tuple(env), workdir=args.workdir, user=args.user, hostname=args.hostname, name=args.name,
        mounts=tuple(mounts), read_only_rootfs=args.read_only, resources=resources,
        network=NetworkSpec(mode=args.network, ports=ports, publish_all=args.publish_all),
        userns=args.userns, init=args.init,
        security=SecuritySpec(privileged=args.privileged, cap_add=tuple(args.cap_add),
                              cap_drop=tuple(args.cap_drop), seccomp=seccomp, no_new_privileges=nnp))


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _run(args) -> int:
    import signal

    from runtime import monitor
    from runtime.monitor import launch
    from core.paths import HostPaths

    if args.detach and args.rm:
        pass  # allowed, as in Docker: removed when it exits
    config = config_from_args(args)
    paths = HostPaths.from_env().ensure()
    if args.detach and (args.tty or args.interactive):
        from core.errors import UsageError

        raise UsageError("-d with -i/-t is not supported: nothing would stay attached to the terminal")
    if (monitor.WORKER_IS_MONITOR or args.tty or args.interactive) and not args.detach:
        # an isobench server's worker needs no fork; with -i/-t we relay our own terminal, as docker does
        _exit_now(monitor.run_here(config, paths, auto_remove=args.rm, interactive=args.interactive,
                                   tty=args.tty))
    if args.detach:
        print(launch(config, paths, detach=True, auto_remove=args.rm).container_id)
        return 0
    # Ctrl-C / SIGTERM go to the monitor, which delivers them to the container (monitor.deliver);
    # caught from the start, so one that arrives while the container is created is not lost
    pending: list[int] = []
    monitor_pid: list[int] = []

    def forward(sig, _frame):
        if not monitor_pid:
            pending.append(sig)
            return
        try:
            import os

            os.kill(monitor_pid[0], sig)
        except ProcessLookupError:
            pass

    for sig in monitor.FORWARDED:
        signal.signal(sig, forward)
    handle = launch(config, paths, detach=False, auto_remove=args.rm)
    monitor_pid.append(handle.monitor_pid)
    for sig in pending:
        forward(sig, None)
    _exit_now(handle.exit_code())


def _exit_now(code: int) -> None:
    """Done: skip the interpreter's teardown (module GC), milliseconds of ``run --rm`` wall time."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ----------------------------------------------------------------------------- other verbs

def _age(iso: str | None) -> str:
    import calendar
    import time

    if not iso:
        return ""
    try:
        t = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return iso
    s = max(0, int(time.time() - t))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} seconds ago"


def status_text(st: dict) -> str:
    from runtime.lifecycle.state import alive

    if st.get("status") == "running":
        if alive(st.get("pid"), st.get("pid_start")):
            return f"Up since {st.get('started_at', '')[:19]}"
        if not alive(st.get("monitor_pid"), st.get("monitor_start")):
            return "Dead (monitor gone; run isobench gc)"
        return "Exiting"
    if st.get("status") == "exited":
        return f"Exited ({st.get('exit_code')}) {_age(st.get('finished_at'))}".strip()
    return st.get("status", "unknown").capitalize()


def _ps(args) -> int:
    from runtime.lifecycle.state import iter_states

    rows = []
    for st in iter_states(host_paths()):
        status = status_text(st)
        if not args.all and not status.startswith("Up"):
            continue
        rows.append((st["id"][:12], st.get("image", ""), _short(" ".join(st.get("argv", [])), 24),
                     _age(st.get("created_at")), status, ports_text(st), st.get("name") or ""))
    print_table(("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"), rows, gap="   ",
                quiet=args.quiet)
    return 0


def ports_text(st: dict) -> str:
    """Docker's PORTS column (``0.0.0.0:18080->80/tcp, ...``) from the state's published mappings,
    which :func:`runtime.api.start` records as ``[host_ip, host_port, container_port, protocol]``."""
    from runtime.network.portspec import short_mapping
    from runtime.spec import PortMapping

    out = []
    for item in st.get("ports") or ():
        try:
            host_ip, host_port, ctr_port, proto = item
            out.append(short_mapping(PortMapping(host_port=int(host_port), container_port=int(ctr_port),
                                                 protocol=proto, host_ip=host_ip or "")))
        except (TypeError, ValueError):
            continue  # a hand-edited or foreign state entry: show the others rather than fail `ps`
    return ", ".join(out)


def _short(text: str, n: int) -> str:
    return '"' + (text if len(text) <= n else text[: n - 3] + "...") + '"'


def _stop(args) -> int:
    from runtime import api

    def stop(ref):
        c = api.load(host_paths(), ref)
        api.stop(c, timeout_s=args.time)
        return ref
    return for_each(args.containers, stop)


def parse_signal(text: str) -> int:
    import signal

    from core.errors import UsageError

    t = text.upper().removeprefix("SIG")
    if t.isdigit():
        return int(t)
    try:
        return int(signal.Signals["SIG" + t])
    except KeyError:
        raise UsageError(f"--signal {text!r} is not a signal name or number") from None


def _kill(args) -> int:
    from runtime import api

    sig = parse_signal(args.signal)

    def kill(ref):
        api.kill(api.load(host_paths(), ref), sig)
        return ref
    return for_each(args.containers, kill)


def _rm(args) -> int:
    from runtime import api

    def rm(ref):
        api.delete(api.load(host_paths(), ref), force=args.force)
        return ref
    return for_each(args.containers, rm)


def _logs(args) -> int:
    import os
    import sys
    import time

    from runtime import api

    c = api.load(host_paths(), args.container)
    if not c.state.get("detached", True):
        print(f"isobench: container {c.id} ran in the foreground: its output went to the terminal, "
              "not to a log", file=sys.stderr)
    files = [(c.dir / "stdout.log", sys.stdout.buffer), (c.dir / "stderr.log", sys.stderr.buffer)]
    offsets = [0, 0]
    while True:
        for i, (path, out) in enumerate(files):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                offsets[i] += len(data)
                out.write(data)
                out.flush()
        if not args.follow or not api.is_running(c) or not os.path.isdir(c.dir):
            return 0
        time.sleep(0.2)


def _exec(args) -> int:
    from core.errors import UsageError
    from runtime.exec import exec_in

    if not args.command:
        raise UsageError("exec: give a command to run in the container")
    return exec_in(host_paths(), args.container, list(args.command), env=tuple(args.env), workdir=args.workdir,
                   user=args.user, tty=args.tty)


def inspect_doc(st: dict) -> dict:
    """Docker-shaped ``inspect`` document from a state record."""
    from runtime.lifecycle.state import alive

    running = st.get("status") == "running" and alive(st.get("pid"), st.get("pid_start"))
    return {
        "Id": st["id"], "Name": st.get("name"), "Image": st.get("image"), "ImageDigest": st.get("image_digest"),
        "Created": st.get("created_at"), "Path": (st.get("argv") or [""])[0], "Args": (st.get("argv") or [])[1:],
        "State": {"Status": "running" if running else st.get("status"), "Running": running,
                  "Pid": st.get("pid") if running else 0, "ExitCode": st.get("exit_code"),
                  "OOMKilled": bool(st.get("oom_killed")), "StartedAt": st.get("started_at"),
                  "FinishedAt": st.get("finished_at")},
        "Config": {"Hostname": st.get("hostname"), "Env": st.get("env"), "Cmd": st.get("argv"),
                   "WorkingDir": st.get("workdir"), "User": st.get("user")},
        "HostConfig": st.get("config", {}),
        "NetworkSettings": {"Mode": st.get("network_mode"), "IPAddress": st.get("ip") or "",
                            "Ports": st.get("ports", [])},
        "UsernsRemap": st.get("userns_remap", False),
        "MonitorPid": st.get("monitor_pid"),
    }


def _inspect(args) -> int:
    import json

    from core.errors import IsobenchError
    from runtime.lifecycle.state import lookup

    docs, rc = [], 0
    for ref in args.containers:
        try:
            docs.append(inspect_doc(lookup(host_paths(), ref)))
        except IsobenchError as exc:
            import sys

            print(f"isobench: {exc}", file=sys.stderr)
            rc = 1
    print(json.dumps(docs, indent=2))
    return rc


def _stats(args) -> int:
    import time

    from runtime import api
    from core.errors import IsobenchError
    from runtime.lifecycle.state import iter_states
    from core.units import format_bytes

    paths = host_paths()
    refs = args.containers or [st["id"] for st in iter_states(paths) if st.get("status") == "running"]
    prev: dict[str, tuple[float, int]] = {}
    while True:
        rows = []
        for ref in refs:
            try:
                c = api.load(paths, ref)
                u = api.usage(c) if api.is_running(c) else None
            except IsobenchError:
                u = None
                c = None
            if c is None or u is None:
                continue
            now = time.monotonic()
            t0, cpu0 = prev.get(c.id, (now, u.cpu_usage_ns))
            prev[c.id] = (now, u.cpu_usage_ns)
            pct = 100.0 * (u.cpu_usage_ns - cpu0) / 1e9 / (now - t0) if now > t0 else 0.0
            rows.append((c.id[:12], c.name or "", f"{pct:.1f}%" if now > t0 else "-",
                         f"{u.cpu_usage_ns / 1e9:.2f}s", format_bytes(u.memory_current_bytes),
                         format_bytes(u.memory_peak_bytes), str(u.pids_current),
                         f"{format_bytes(u.io_read_bytes)} / {format_bytes(u.io_write_bytes)}"))
        print_table(("CONTAINER ID", "NAME", "CPU %", "CPU TIME", "MEM", "MEM PEAK", "PIDS", "BLOCK I/O"), rows,
                    gap="   ")
        if args.no_stream:
            return 0
        time.sleep(1.0)
        print()


def _wait(args) -> int:
    from runtime import api

    def wait(ref):
        return api.wait(api.load(host_paths(), ref))
    return for_each(args.containers, wait)
