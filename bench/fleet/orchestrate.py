"""Drives a fleet run: pack the project, run ``playbook.yml`` once per host, fetch, merge.

Each host gets its own ``ansible-playbook --limit HOST`` process, so a host that fails or goes
unreachable stops only its own play (Ansible aborts a ``serial`` play when a whole batch fails) and
each host has its own log. ``--serial`` runs them one after another, ``--parallel`` all at once;
either way a host never runs two benches at once (``host_run.sh`` holds a lock on the host, and the
inventory check refuses two names for one host and state root). Progress and reasons come from the
``isobench_events`` callback (one JSON object per line), never from Ansible's human output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.fleet.inventory import FleetHost, ansible_bin
from core.errors import BenchError, UsageError
from core.fsutil import atomic_write_json

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
PLAYBOOK = HERE / "playbook.yml"
HOST_SCRIPT = HERE / "host_run.sh"
CALLBACKS = HERE / "ansible_plugins"
# SSH keepalives: a host whose link or sshd dies mid-task is reported unreachable after ~15 s instead
# of hanging on TCP's timeouts; no ControlPersist master is left running after the play.
SSH_ARGS = ("-o ControlMaster=no -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 "
            "-o ServerAliveCountMax=3")
# what never goes into the project copy (the host builds its own .venv; results stay on the controller)
_SKIP_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "results", "build"}
STATUSES = ("ok", "failed", "unreachable", "interrupted")


@dataclass(frozen=True)
class FleetOptions:
    bench_args: tuple[str, ...]   # passed to `isobench bench` on every host (--out is added there)
    parallel: bool


@dataclass
class HostOutcome:
    """What happened on one host; ``reason`` is the one line a user reads when it is not ok."""

    name: str
    address: str
    status: str = "failed"
    reason: str = ""
    task: str = ""                # the task that failed or was running last
    seconds: float = 0.0
    log: str = ""                 # the controller-side log of this host's ansible-playbook
    events: list = field(default_factory=list, repr=False)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_fleet_dir(base: Path = Path("results")) -> Path:
    return base / f"fleet-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def project_files(root: Path = PROJECT_ROOT) -> list[str]:
    """The project's files as git sees them (tracked and untracked-not-ignored), else a directory walk."""
    if (root / ".git").exists():
        res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
                             capture_output=True, timeout=60)
        if res.returncode == 0:
            return sorted(p for p in res.stdout.decode().split("\0") if p and (root / p).is_file())
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        rel = Path(dirpath).relative_to(root)
        out += [str(rel / f) for f in filenames if not f.endswith(".pyc")]
    return sorted(out)


def pack_project(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """``target``: a gzip tar of the project (what every host installs with `make setup`)."""
    with tarfile.open(target, "w:gz", compresslevel=1) as tar:
        for rel in project_files(root):
            tar.add(root / rel, arcname=rel, recursive=False)
    return target


def ansible_cfg(private: Path) -> Path:
    cfg = private / "ansible.cfg"
    cfg.write_text("\n".join([
        "[defaults]",
        f"callback_plugins = {CALLBACKS}",
        "stdout_callback = isobench_events",
        "retry_files_enabled = False",
        # Debian-like hosts have /usr/bin/python3; discovery could pick a user-local shim (pyenv) that
        # fails in a non-interactive session. ansible_python_interpreter in the inventory overrides it.
        "interpreter_python = /usr/bin/python3",
        "timeout = 15",
        f"local_tmp = {private / 'tmp'}",
        "deprecation_warnings = False",
        "[ssh_connection]",
        f"ssh_args = {SSH_ARGS}",
        "pipelining = True",
        "",
    ]))
    return cfg


def outcome_from_events(host: FleetHost, events: list[dict], rc: int | None, stderr_tail: str) -> HostOutcome:
    """Fold one host's callback events (and ansible-playbook's exit) into its outcome."""
    out = HostOutcome(name=host.name, address=f"{host.address}:{host.port}", events=events)
    last_task = ""
    for ev in events:
        if ev.get("event") == "task":
            last_task = ev.get("task", "")
        if ev.get("host") not in (None, host.name):
            continue
        kind = ev.get("event")
        if out.reason or ev.get("ignore_errors"):
            continue  # the first failure is the reason; what the rescue tasks did is not
        if kind == "unreachable":
            out.status, out.task = "unreachable", ev.get("task", last_task)
            out.reason = one_line(ev.get("msg") or "unreachable")
        elif kind == "failed":
            out.status, out.task = "failed", ev.get("task", last_task)
            out.reason = one_line(last_line(ev.get("stderr")) or ev.get("msg") or last_line(ev.get("stdout"))
                                  or f"exit {ev.get('rc')}")
    if out.reason:
        return out
    out.task = last_task
    if rc == 0 and events and any(e.get("event") == "ok" and e.get("task") == "fetch the run" for e in events):
        out.status = "ok"
    elif rc in (-2, 130) or rc is None:
        out.status, out.reason = "interrupted", "interrupted (Ctrl-C) before the host finished"
    elif rc == 0:
        out.reason = f"the play ended without fetching the run (last task: {last_task or 'none'})"
    else:
        out.reason = one_line(last_line(stderr_tail) or f"ansible-playbook exited with {rc} and reported nothing")
    return out


def last_line(text) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HostRun:
    """One ``ansible-playbook --limit HOST`` process and the events it reports."""

    def __init__(self, host: FleetHost, inventory: str, private: Path, extra: dict, log: Path,
                 progress) -> None:
        self.host, self.inventory, self.private, self.extra, self.log = host, inventory, private, extra, log
        self.progress = progress
        self.proc: subprocess.Popen | None = None
        self.outcome: HostOutcome | None = None

    def run(self) -> HostOutcome:
        t0 = time.monotonic()
        vars_file = self.private / f"vars-{self.host.name}.json"
        vars_file.write_text(json.dumps({**self.extra, "fleet_project_dir": self.host.project_dir,
                                         "fleet_state_root": self.host.state_root}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.private / "ansible.cfg"), PYTHONWARNINGS="ignore",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOME=str(self.private / "home"))
        argv = [ansible_bin("ansible-playbook"), "-i", self.inventory, "--limit", self.host.name,
                "-e", f"@{vars_file}", str(PLAYBOOK)]
        events: list[dict] = []
        stderr_path = self.log.with_suffix(".stderr")
        with open(self.log, "w") as logf, open(stderr_path, "w+") as errf:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                                         text=True, env=env, cwd=str(self.private))
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                logf.write(line)
                logf.flush()
                ev = _parse(line)
                if ev is None:
                    continue
                events.append(ev)
                self._show(ev)
            rc = self.proc.wait()
            errf.seek(0)
            stderr_tail = "\n".join(errf.read().splitlines()[-20:])
        out = outcome_from_events(self.host, events, rc, stderr_tail)
        out.seconds = round(time.monotonic() - t0, 1)
        out.log = str(self.log)
        self.outcome = out
        return out

    def _show(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "task":
            self.progress(f"{self.host.name}: {ev.get('task')}")
        elif kind in ("failed", "unreachable"):
            self.progress(f"{self.host.name}: {kind.upper()} in '{ev.get('task')}'")


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) and "event" in ev else None


def run_fleet(hosts: list[FleetHost], inventory: str, fleet_dir: Path, opts: FleetOptions,
              stream=sys.stderr) -> list[HostOutcome]:
    """Run the bench on every host; write ``fleet.json``, the hosts' runs and the merged samples."""
    from bench import fleetresults

    if fleet_dir.exists() and any(fleet_dir.iterdir()):
        raise UsageError(f"--out {fleet_dir}: directory exists and is not empty")
    fleet_dir.mkdir(parents=True, exist_ok=True)
    (fleet_dir / "logs").mkdir(exist_ok=True)
    incoming = fleet_dir / ".incoming"
    incoming.mkdir(exist_ok=True)
    run_id = f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
    lock = threading.Lock()

    def progress(text: str) -> None:
        with lock:
            print(f"[fleet] {text}", file=stream, flush=True)

    info = {"fleet": 1, "run_id": run_id, "inventory": str(Path(inventory).resolve()),
            "mode": "parallel" if opts.parallel else "serial", "bench_args": list(opts.bench_args),
            "started_utc": utc_now(), "controller": _controller(), "hosts": []}
    private = Path(tempfile.mkdtemp(prefix="isobench-fleet-"))
    runs: list[HostRun] = []
    interrupted = False
    try:
        ansible_cfg(private)
        tarball = pack_project(private / "project.tar.gz")
        progress(f"{len(hosts)} host(s), {info['mode']}: packed the project "
                 f"({tarball.stat().st_size / 1e6:.1f} MB); isobench bench {' '.join(opts.bench_args)}")
        extra = {"fleet_run_id": run_id, "fleet_tarball": str(tarball), "fleet_host_script": str(HOST_SCRIPT),
                 "fleet_bench_args": list(opts.bench_args), "fleet_incoming": str(incoming.resolve()),
                 "fleet_logs": str((fleet_dir / "logs").resolve())}
        runs = [HostRun(h, inventory, private, extra, fleet_dir / "logs" / f"{h.name}.ansible.log", progress)
                for h in hosts]
        try:
            _run_all(runs, opts.parallel)
        except KeyboardInterrupt:
            interrupted = True
            _stop(runs)
    finally:
        import shutil

        shutil.rmtree(private, ignore_errors=True)
    outcomes = []
    for r in runs:
        out = r.outcome or HostOutcome(name=r.host.name, address=f"{r.host.address}:{r.host.port}",
                                       status="interrupted" if interrupted else "failed",
                                       reason="interrupted (Ctrl-C) before the host finished" if interrupted
                                       else "did not run")
        if out.status == "ok":
            try:
                fleetresults.unpack_host_run(incoming / f"{r.host.name}.tar.gz", fleet_dir / r.host.name)
            except BenchError as exc:
                out.status, out.reason = "failed", one_line(str(exc))
        outcomes.append(out)
        progress(f"{out.name}: {out.status}" + (f" ({out.reason})" if out.reason else "")
                 + f" after {out.seconds:.0f}s")
    import shutil

    shutil.rmtree(incoming, ignore_errors=True)
    info["finished_utc"] = utc_now()
    info["interrupted"] = interrupted
    info["hosts"] = [{**{k: v for k, v in asdict(o).items() if k != "events"},
                      "project_dir": r.host.project_dir, "state_root": r.host.state_root,
                      **_host_log(fleet_dir, o.name)}
                     for o, r in zip(outcomes, runs)]
    atomic_write_json(fleet_dir / fleetresults.FLEET_FILE, info)
    fleetresults.merge(fleet_dir)
    return outcomes


def _host_log(fleet_dir: Path, name: str) -> dict:
    """A failed host's own log (make setup and bench output), fetched by the playbook's rescue."""
    p = fleet_dir / "logs" / f"{name}.host.log"
    return {"host_log": str(p)} if p.is_file() else {}


def _run_all(runs: list[HostRun], parallel: bool) -> None:
    if not parallel:
        for r in runs:
            r.run()
        return
    errors: list[BaseException] = []

    def target(r: HostRun) -> None:
        try:
            r.run()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(r,), name=f"fleet-{r.host.name}") for r in runs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        _stop(runs)
        for t in threads:
            t.join(30)
        raise
    if errors:
        raise errors[0]


def _stop(runs: list[HostRun]) -> None:
    """Ctrl-C: the terminal already sent SIGINT to every ansible-playbook (same process group);
    wait for them to end, then terminate any that did not (by pid, only our own children)."""
    deadline = time.monotonic() + 10
    for r in runs:
        if r.proc is None:
            continue
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.terminate()
            r.proc.wait(timeout=10)


def _controller() -> dict:
    import platform
    import socket

    version = ""
    try:
        res = subprocess.run([ansible_bin("ansible-playbook"), "--version"], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        version = res.stdout.splitlines()[0].strip() if res.stdout else ""
    except (OSError, subprocess.TimeoutExpired, UsageError) as exc:
        version = f"unknown ({exc})"
    return {"hostname": socket.gethostname(), "kernel": platform.release(), "ansible": version}
