"""The verbs of ``isobench-runtime`` (see :mod:`app.oci_cli` for the command line): each one is a few
calls into :mod:`runtime.api` on a container whose state lives under ``--root``.

Lifecycle rules are the runtime spec's: ``start`` only from ``created``; ``delete`` of a running
container only with ``--force``; ``kill`` of a stopped one is an error; an unknown id is an error.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from core.errors import ContainerError, UsageError

TYPE_CHECKING = False  # typing's import is a few ms of every verb (a Python process each)
if TYPE_CHECKING:
    from typing import Any, Callable

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def _paths(args):
    from core.paths import HostPaths

    paths = HostPaths(root=Path(args.root).absolute())
    paths.containers.mkdir(parents=True, exist_ok=True)
    return paths


def _check_id(cid: str) -> str:
    if not ID_RE.match(cid):
        raise UsageError(f"container id {cid!r} must be 1-128 letters, digits, '_', '.', '+' or '-'")
    return cid


def _load(args):
    from runtime import api

    paths = _paths(args)
    cid = _check_id(args.id)
    if not (paths.containers / cid / "state.json").is_file():
        raise ContainerError(f"container {cid} does not exist")
    return paths, api.load(paths, cid)


def _write_pid_file(path: str | None, pid: int) -> None:
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _console(args) -> int:
    if not getattr(args, "console_socket", None):
        return -1
    from runtime import console

    return console.connect(args.console_socket)


def _signal(text: str) -> int:
    t = text.upper()
    if t.isdigit():
        n = int(t)
        if 0 < n < signal.NSIG:
            return n
    else:
        name = t if t.startswith("SIG") else f"SIG{t}"
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise UsageError(f"signal {text!r} is not a signal name or number")


# ----------------------------------------------------------------------------- create / start / run

def _create(args, hold: bool, console_fd: int):
    from core import leases
    from runtime import api

    paths = _paths(args)
    cid = _check_id(args.id)
    if (paths.containers / cid).exists():
        raise ContainerError(f"container {cid} already exists")
    c = api.create_from_bundle(args.bundle, paths, cid, stdio=(0, 1, 2), console_fd=console_fd, hold=hold,
                               extra_state={"oci_runtime": True})
    try:
        api.start(c)
    except BaseException:
        api.delete(c, force=True)
        raise
    # the container's process owns its host objects from now on (we exit; conmon or init reaps it)
    leases.take(c.id, pid=c.pid, kind="oci-container", root=str(paths.root))
    c.state.update(monitor_pid=c.pid, monitor_start=c.pid_start)
    from runtime.lifecycle import state as S

    S.write_state(c.dir, c.state)
    _write_pid_file(args.pid_file, c.pid)
    return c


def create(args) -> int:
    fd = _console(args)
    try:
        _create(args, hold=True, console_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
    return 0


def start(args) -> int:
    from runtime import api

    _, c = _load(args)
    status = api.status_of(c)
    if status != "created":
        raise ContainerError(f"container {c.id} is {status}: only a created container can be started")
    api.resume(c)
    return 0


def run(args) -> int:
    """create + start; without --detach also wait, relay a terminal if there is no console socket,
    and delete (unless --keep). Exit code: the container's."""
    import socket

    from runtime import api

    fd = _console(args)
    ours = -1
    if fd < 0 and not args.detach:
        from runtime.oci import bundle

        if bundle.load(args.bundle).process.terminal:  # relay the pty to our own terminal
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours, fd = a.detach(), b.detach()
    try:
        c = _create(args, hold=False, console_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
    if args.detach:
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda s, _f: _kill_quietly(c.pid, s))
    if ours >= 0:
        from runtime import console

        sock = socket.socket(fileno=ours)
        master = console.receive_master(sock)
        sock.close()
        try:
            console.relay(master)
        finally:
            os.close(master)
    code = api.wait(c)  # our child: records the exit, frees the cgroup
    if not args.keep:
        api.delete(c, force=True)
    return code


def _kill_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------- queries

def oci_state(c) -> dict[str, Any]:
    from runtime import api

    status = api.status_of(c)
    st = c.state
    return {"ociVersion": "1.0.2", "id": c.id, "status": status,
            "pid": c.pid if status in ("created", "running") and c.pid else 0,
            "bundle": st.get("bundle", ""), "rootfs": _rootfs_of(st), "created": st.get("created_at", ""),
            "owner": "", "annotations": st.get("annotations") or {}}


def _rootfs_of(st: dict) -> str:
    try:
        with open(f"{st.get('bundle', '')}/config.json", encoding="utf-8") as f:
            root = (json.load(f).get("root") or {}).get("path", "")
    except (OSError, ValueError):
        return ""
    return root if root.startswith("/") else f"{st.get('bundle', '')}/{root}"


def state(args) -> int:
    _, c = _load(args)
    print(json.dumps(oci_state(c), indent=2))
    return 0


def list_(args) -> int:
    from runtime import api
    from runtime.lifecycle import state as S

    paths = _paths(args)
    rows = [oci_state(api.load(paths, st["id"])) for st in S.iter_states(paths)]
    if args.quiet:
        print("\n".join(r["id"] for r in rows))
    elif args.format == "json":
        print(json.dumps(rows))
    else:
        header = ("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")
        table = [header] + [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], "root") for r in rows]
        widths = [max(len(x) for x in col) for col in zip(*table)]
        for row in table:
            print("   ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    return 0


def features(args) -> int:
    from runtime.oci import RUNTIME_VERSION
    from runtime.oci.bundle import NAMESPACE_TYPES
    from runtime.rootfs.ocimounts import FLAG_OPTIONS, PROPAGATION
    from runtime.security.caps import CAPS, cap_last_cap
    from runtime.security.seccomp import _ACTIONS, _OPS

    last = cap_last_cap()
    doc = {
        "ociVersionMin": "1.0.0", "ociVersionMax": "1.0.2", "hooks": [],
        "mountOptions": sorted(set(FLAG_OPTIONS) | set(PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": sorted(f"CAP_{n}" for n, v in CAPS.items() if v <= last),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": sorted(_ACTIONS), "operators": sorted(_OPS),
                        "archs": ["SCMP_ARCH_X86_64"]},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False},
        },
        "annotations": {"org.isobench.runtime.version": RUNTIME_VERSION},
    }
    print(json.dumps(doc, indent=2))
    return 0


# ----------------------------------------------------------------------------- kill / delete / exec

def kill(args) -> int:
    from runtime import api

    sig = _signal(args.signal)
    _, c = _load(args)
    status = api.status_of(c)
    if status not in ("created", "running"):
        raise ContainerError(f"container {c.id} is not running")
    if args.all:
        api.open_cgroup_of(c).kill_all(sig)
    else:
        _kill_quietly(c.pid, sig)
    return 0


def delete(args) -> int:
    from runtime import api

    paths = _paths(args)
    cid = _check_id(args.id)
    if not (paths.containers / cid / "state.json").is_file():
        if args.force:  # runc: delete --force of an unknown container succeeds
            return 0
        raise ContainerError(f"container {cid} does not exist")
    c = api.load(paths, cid)
    status = api.status_of(c)
    if status == "running" and not args.force:
        raise ContainerError(f"container {cid} is running: stop it (kill) first or use delete --force")
    api.delete(c, force=True)
    return 0


def exec_(args) -> int:
    from runtime import api
    from runtime.exec import exec_in
    from runtime.oci import bundle

    paths, c = _load(args)
    if api.status_of(c) != "running":
        raise ContainerError(f"container {c.id} is not running")
    process = None
    if args.process:
        try:
            with open(args.process, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--process {args.process}: {exc}") from exc
        process = bundle.parse_process(doc, f"--process {args.process}")
    elif not args.command:
        raise UsageError("exec: give --process FILE or a command")
    fd = _console(args)
    try:
        return exec_in(paths, c.id, list(args.command), env=tuple(args.env), workdir=args.cwd, user=args.user,
                       process=process, tty=args.tty and fd < 0 and not args.detach, console_fd=fd,
                       detach=args.detach, pid_file=args.pid_file)
    finally:
        if fd >= 0:
            os.close(fd)


VERBS: dict[str, Callable[[Any], int]] = {
    "create": create, "start": start, "run": run, "state": state, "list": list_, "features": features,
    "kill": kill, "delete": delete, "exec": exec_,
}
