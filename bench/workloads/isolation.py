"""isolation: for each namespace kind of the course notes (PID, hostname, network, user IDs, IPC,
filesystem), is the host's visible from inside? One probe script per environment, evidence kept.

Host-side bait, removed afterwards: the security area's host context (a marker process named
``hostmarker-secprobe`` and a 127.0.0.1 listener answering a token), a SysV shared-memory segment
(``ipcmk``), and a marker file in the host's /tmp. A probe that finds the bait marks that namespace as
not isolated. Natively, /proc is the host's, so ``/proc/<host pid>/root`` reaches the host's filesystem even
from the chroot. A VM runs its own kernel (its boot_id differs from the host's): an identity uid_map
there is the guest's own, not the host's.

Then the security area's breakout probes (:data:`runtime.security.probes.PROBES`, the same ones
tests/security/ expects the runtime and runc to block) run in each environment, all probes of one
capability set in one instance (one start per environment instead of sixteen), with the static probe
helper bind-mounted at ``/isoprobe``. Each lands in ``facts["isolation"][env]["breakout:<probe>"]``.
Natively most are expected *not* blocked -- that is the comparison. Three would write host state
natively (the hostname, the harness's own cgroup files, a node in the host's /dev) and are skipped
there. In the VM only the shell probes run (no host dir for the helper), packed into as few boots as the
guest kernel command line allows; what they reach there is the guest's own kernel, which counts as blocked.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import socket
import subprocess
from pathlib import Path

from bench.environments.base import Environment, Job
from bench.workloads.base import Context, Measurement, Workload
from core.errors import BenchError, IsobenchError

KINDS = ("pid", "hostname", "network", "user", "ipc", "filesystem")
BREAKOUT = "breakout:"
PROBE_MARK = "==ISOBENCH-PROBE"
# probes that, when not blocked, change the host natively (chroot runs as host root on host /dev, /sys)
NATIVE_SKIP = {
    "set_hostname": "would call sethostname on the host",
    "cgroup_write": "would write the harness's own (host) cgroup limit files",
    "device_node": "would create a device node in the host's /dev",
}
VM_NOT_RUN = ("not run in the VM: the VM harness mounts no host directory, so the static probe helper cannot "
              "reach the guest")
VM_CMDLINE_BUDGET = 1700   # encoded bytes of one probe group on the guest kernel command line (limit 2000)


def vm_groups(argvs: dict[str, list[str]], budget: int = VM_CMDLINE_BUDGET) -> list[dict[str, list[str]]]:
    """Pack probes into as few VM boots as the guest kernel command line allows (the VM harness passes the
    command there, base64-encoded and shell-quoted)."""
    import base64

    def size(group: dict[str, list[str]]) -> int:
        return len(base64.b64encode(shlex.join(["/bin/sh", "-c", breakout_script(group)]).encode()))

    groups: list[dict[str, list[str]]] = []
    for name, argv in argvs.items():
        if groups and size({**groups[-1], name: argv}) <= budget:
            groups[-1][name] = argv
        else:
            groups.append({name: argv})
    return groups


def probe_script(marker: str, loopback_port: int, token: str, shm_key: int, marker_file: str, host_pid: int) -> str:
    return "; ".join([
        'echo "BOOT $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"',
        'echo "PIDS $(ls -d /proc/[0-9]* 2>/dev/null | wc -l)"',
        f"echo \"MARKER $(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c '{marker[:-1]}[{marker[-1]}]')\"",
        'echo "HOSTNAME $(hostname)"',
        "echo \"IFACES $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\"",
        f'echo "LOOPBACK $(timeout 3 nc 127.0.0.1 {loopback_port} </dev/null 2>/dev/null | grep -c {token})"',
        "echo \"UIDMAP $(tr -s ' ' < /proc/self/uid_map | tr '\\n' ';')\"",
        f"echo \"SHM $(awk -v k={shm_key} '$1==k {{n++}} END {{print n+0}}' /proc/sysvipc/shm 2>/dev/null)\"",
        f'if [ -e {marker_file} ] || [ -e /proc/{host_pid}/root{marker_file} ]; then echo "FILE visible"; '
        'else echo "FILE hidden"; fi',
        "true",
    ])


def parse(output: str) -> dict[str, str]:
    """``KEY value`` lines of the probe script."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        m = re.match(r"^(BOOT|PIDS|MARKER|HOSTNAME|IFACES|LOOPBACK|UIDMAP|SHM|FILE)\b ?(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _int(v: str | None) -> int:
    try:
        return int((v or "0").split()[0])
    except ValueError:
        return 0


def judge(p: dict[str, str], host: dict[str, str]) -> dict[str, dict]:
    """The matrix row of one environment from its probe output and the host's own readings."""
    own_kernel = bool(p.get("BOOT")) and p.get("BOOT") != host["boot_id"]
    kern = "own kernel (guest boot_id differs from the host's); " if own_kernel else ""
    ifaces = [i for i in p.get("IFACES", "").split(",") if i]
    host_ifaces = [i for i in host["ifaces"].split(",") if i and i != "lo"]
    seen_ifaces = sorted(set(ifaces) & set(host_ifaces))
    uidmap = p.get("UIDMAP", "")
    identity = bool(re.match(r"^0 0 4294967295;?$", uidmap))
    rows = {
        "pid": (_int(p.get("MARKER")) == 0,
                f"host marker process visible {_int(p.get('MARKER'))}x; {p.get('PIDS', '?')} processes in /proc "
                f"(host: {host['pids']})"),
        "hostname": (p.get("HOSTNAME") != host["hostname"],
                     f"hostname inside {p.get('HOSTNAME', '?')!r}, host {host['hostname']!r}"),
        "network": (_int(p.get("LOOPBACK")) == 0 and not seen_ifaces,
                    f"host-only 127.0.0.1 listener {'reached' if _int(p.get('LOOPBACK')) else 'not reached'}; "
                    f"interfaces {','.join(ifaces) or '-'}"
                    + (f" (host's: {','.join(seen_ifaces)})" if seen_ifaces else "")),
        "user": (own_kernel or not identity,
                 f"uid_map {uidmap.rstrip(';') or '?'}" + (" (identity: uid 0 inside is uid 0 on the host)"
                                                          if identity and not own_kernel else "")),
        "ipc": (_int(p.get("SHM")) == 0,
                f"host SysV shm key {host['shm_key']} {'visible' if _int(p.get('SHM')) else 'not visible'} "
                "in /proc/sysvipc/shm"),
        "filesystem": (p.get("FILE") == "hidden",
                       f"host marker file {host['marker_file']} {p.get('FILE', '?')} (also via /proc/<host marker pid>/root)"),
    }
    return {k: {"isolated": bool(own_kernel or ok), "evidence": kern + ev} for k, (ok, ev) in rows.items()}


def breakout_script(probes: dict[str, tuple[str, ...] | list[str]]) -> str:
    """One shell script running each probe's rendered argv in a subshell between marker lines."""
    parts = []
    for name, argv in probes.items():
        cmd = " ".join(shlex.quote(a) for a in argv)
        parts.append(f"echo '{PROBE_MARK} {name}'; ( {cmd} ) 2>&1; echo \"{PROBE_MARK}-RC {name} $?\"")
    return "\n".join(parts + ["true"])


def parse_breakout(output: str) -> dict[str, tuple[int | None, str]]:
    """name -> (exit code or None when the probe never finished, its output)."""
    out: dict[str, tuple[int | None, str]] = {}
    name, buf = None, []
    for line in output.splitlines():
        if line.startswith(PROBE_MARK + "-RC "):
            f = line.split()
            if name is not None and len(f) >= 3 and f[1] == name:
                out[name] = (int(f[2]) if f[2].lstrip("-").isdigit() else None, "\n".join(buf))
                name, buf = None, []
        elif line.startswith(PROBE_MARK + " "):
            if name is not None:
                out[name] = (None, "\n".join(buf))
            name, buf = line.split(None, 1)[1].strip(), []
        elif name is not None:
            buf.append(line)
    if name is not None:
        out[name] = (None, "\n".join(buf))
    return out


def _short(text: str, limit: int = 160) -> str:
    one = " | ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())
    return one if len(one) <= limit else one[:limit - 3] + "..."


def judge_breakout(env: str, results: dict[str, tuple[int | None, str]], cap_drop: dict[str, tuple[str, ...]],
                   description: dict[str, str], blocked_if) -> dict[str, dict]:
    """``breakout:<probe>`` cells of one environment. ``blocked_if(name, code, out)`` is the probe's verdict."""
    cells = {}
    for name, (code, text) in results.items():
        if code is None:
            cells[BREAKOUT + name] = {"isolated": None, "description": description[name],
                                      "evidence": f"not run to the end: {_short(text) or '-'}"}
            continue
        blocked = bool(blocked_if(name, code, text))
        drop = f" (with --cap-drop {','.join(cap_drop[name])})" if cap_drop.get(name) and env != "native" else ""
        # ENOSYS counts as blocked, but then it is the host kernel (e.g. no module support), not the wall
        kernel = " (ENOSYS: this kernel lacks the call, blocked everywhere)" if "Function not implemented" in text else ""
        cells[BREAKOUT + name] = {
            "isolated": blocked, "description": description[name],
            "evidence": f"{'blocked' if blocked else 'NOT blocked'}{drop}{kernel}: exit {code}: "
                        f"{_short(text) or '(no output)'}"}
    return cells


class Isolation(Workload):
    name = "isolation"
    images = ("busybox",)
    metrics = {}

    def iterations(self, profile) -> tuple[int, int]:
        return 0, 1

    def setup(self, ctx: Context) -> None:
        from runtime.security import probes

        self._stack = contextlib.ExitStack()
        hc = self._stack.enter_context(probes.host_context(str(ctx.paths.root)))
        token = probes.LOOPBACK_TOKEN
        res = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True)
        m = re.search(r"(\d+)", res.stdout)
        if res.returncode != 0 or not m:
            self._stack.close()
            raise BenchError(f"ipcmk -M 4096 failed: {res.stderr.strip() or res.stdout.strip()}")
        shmid = int(m.group(1))
        self._stack.callback(subprocess.run, ["ipcrm", "-m", str(shmid)], capture_output=True)
        shm_key = 0
        for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1]) == shmid:
                shm_key = int(f[0])
        marker_file = Path(f"/tmp/isobench-hostmarker-{secrets.token_hex(4)}")
        marker_file.write_text("host\n")
        self._stack.callback(marker_file.unlink, missing_ok=True)
        self.hc = hc
        self.helper_dir, self.helper_error = None, ""
        try:
            self.helper_dir = (ctx.work_dir or ctx.paths.tmp) / "probe-helper"
            probes.build_helper(self.helper_dir)
        except (IsobenchError, OSError) as exc:
            self.helper_dir, self.helper_error = None, str(exc)
        self.script = probe_script(probes.MARKER, hc["loopback_port"], token.split("-")[-1], shm_key,
                                   str(marker_file), int(hc["host_pid"]))
        self.host = {"boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                     "hostname": socket.gethostname(), "shm_key": str(shm_key), "marker_file": str(marker_file),
                     "pids": str(sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())),
                     "ifaces": ",".join(sorted(p.name for p in Path("/sys/class/net").iterdir()))}

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        out = env.run(Job(image=ctx.image("busybox"), argv=("/bin/sh", "-c", self.script), timeout_s=120))
        p = parse(out.output)
        if "FILE" not in p:
            raise BenchError(f"isolation probe in {env.name} printed no results (exit {out.exit_code}): "
                             f"{out.output.strip()[-200:]!r}")
        row = judge(p, self.host)
        own_kernel = bool(p.get("BOOT")) and p.get("BOOT") != self.host["boot_id"]
        row.update(self._breakout(env, ctx, own_kernel))
        ctx.facts.setdefault("isolation", {})[env.name] = row
        return []

    def _breakout(self, env: Environment, ctx: Context, own_kernel: bool = False) -> dict[str, dict]:
        from runtime.security import probes

        cells: dict[str, dict] = {}
        groups: dict[tuple[str, ...], dict[str, list[str]]] = {}
        pctx = {**self.hc, "state_root": str(ctx.paths.root)}
        for name, probe in probes.PROBES.items():
            if env.name == "native" and name in NATIVE_SKIP:
                cells[BREAKOUT + name] = {"isolated": None, "description": probe.description,
                                          "evidence": f"skipped natively: would change the host ({NATIVE_SKIP[name]})"}
            elif probe.needs_helper and env.name == "vm":
                cells[BREAKOUT + name] = {"isolated": None, "description": probe.description, "evidence": VM_NOT_RUN}
            elif probe.needs_helper and self.helper_dir is None:
                cells[BREAKOUT + name] = {"isolated": None, "description": probe.description,
                                          "evidence": f"not run: no probe helper ({self.helper_error})"}
            else:
                groups.setdefault(tuple(probe.cap_drop), {})[name] = probes.render(probe.argv, pctx)
        from bench.environments.base import Volume

        vol = Volume(host_dir=self.helper_dir, destination=probes.HELPER_DIR) if self.helper_dir else None
        if env.name == "vm":  # shell probes only, as few boots as the kernel command line allows
            runs = [((), g) for argvs in groups.values() for g in vm_groups(argvs)]
            vol = None
        else:
            runs = list(groups.items())
        for cap_drop, argvs in runs:
            job = Job(image=ctx.image("busybox"), argv=("/bin/sh", "-c", breakout_script(argvs)), timeout_s=180,
                      volume=vol, cap_drop=cap_drop)
            try:
                out = env.run(job)
            except IsobenchError as exc:  # one failed boot must not lose the namespace rows
                for name in argvs:
                    cells[BREAKOUT + name] = {"isolated": None, "description": probes.PROBES[name].description,
                                              "evidence": f"not run: {exc}"}
                continue
            results = parse_breakout(out.output)
            for name in argvs:
                results.setdefault(name, (None, f"no output (instance exit {out.exit_code}: "
                                                f"{_short(out.output, 120)})"))
            cells.update(judge_breakout(env.name, results, {n: probes.PROBES[n].cap_drop for n in argvs},
                                        {n: probes.PROBES[n].description for n in argvs},
                                        lambda n, c, t: probes.PROBES[n].blocked_if(c, t)))
        if own_kernel:  # what a probe reaches in a guest is the guest's kernel, not the host's
            for cell in cells.values():
                if cell["isolated"] is False:
                    cell["isolated"] = True
                    cell["evidence"] = ("blocked (own kernel: the guest's boot_id differs from the host's; the probe "
                                        "reached only the guest) -- in the guest: " + cell["evidence"])
        return {k: cells[k] for k in (BREAKOUT + n for n in probes.PROBES) if k in cells}

    def teardown(self, ctx: Context) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()


WORKLOAD = Isolation()
