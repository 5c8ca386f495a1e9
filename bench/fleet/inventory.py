"""The fleet's hosts, read from an Ansible inventory by Ansible itself (``ansible-inventory --list``).

Any inventory format Ansible reads (INI, YAML, a directory) works; isobench only checks what its
playbook depends on, each as a small named check whose error names the host and the value: a host
name usable as a directory name, an absolute project directory that is not a system directory, an
absolute state root, and no two inventory names pointing at the same host and state root (two benches
on one host at once would measure each other).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import UsageError

DEFAULT_PROJECT_DIR = "/opt/isobench"
DEFAULT_STATE_ROOT = "/var/lib/isobench"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# directories a project copy must never replace (the host script swaps the whole directory)
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/lib", "/var/tmp"}
INVENTORY_TIMEOUT_S = 60


@dataclass(frozen=True)
class FleetHost:
    """One inventory host as the playbook will reach and use it."""

    name: str            # inventory name; also the host's directory in the fleet result
    address: str         # ansible_host (the name itself when unset)
    port: int            # ansible_port (22 when unset)
    project_dir: str     # isobench_dir: where the project is copied and `make setup` runs
    state_root: str      # isobench_root: ISOBENCH_ROOT of the bench (images, caches, the fleet lock)

    @property
    def identity(self) -> tuple[str, int, str]:
        return (self.address, self.port, self.state_root)


def ansible_bin(tool: str) -> str:
    """``ansible-playbook`` & co. from this interpreter's venv (``make setup`` installs ansible-core)."""
    here = Path(sys.executable).parent / tool
    if here.exists():
        return str(here)
    raise UsageError(f"{tool} not found beside {sys.executable} (run `make setup`: it installs ansible-core)")


def list_inventory(inventory: str, env: dict[str, str] | None = None) -> dict:
    """Ansible's own reading of the inventory, as the JSON of ``ansible-inventory --list``."""
    path = Path(inventory)
    if not path.exists():
        raise UsageError(f"inventory {inventory}: no such file or directory")
    run_env = dict(env or os.environ)
    # an inventory no plugin can parse is an error, not an empty fleet with a warning
    run_env.update(ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
                   PYTHONWARNINGS="ignore", ANSIBLE_NOCOLOR="1")
    try:
        res = subprocess.run([ansible_bin("ansible-inventory"), "-i", str(path), "--list"], capture_output=True,
                             text=True, timeout=INVENTORY_TIMEOUT_S, env=run_env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UsageError(f"inventory {inventory}: ansible-inventory took over {INVENTORY_TIMEOUT_S}s") from None
    if res.returncode != 0:
        raise UsageError(f"inventory {inventory}: Ansible cannot read it: {_last_error(res.stderr)}")
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise UsageError(f"inventory {inventory}: unexpected ansible-inventory output ({exc})") from None


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
    text = (errors or lines or ["no message"])[0]
    return re.sub(r"^\[?ERROR\]?:?\s*", "", text)


def hosts_from_listing(listing: dict, inventory: str) -> list[FleetHost]:
    """Every host of the ``--list`` JSON, in inventory order, checked."""
    names: list[str] = []

    def walk(group: str, seen: set[str]) -> None:
        if group in seen:
            return
        seen.add(group)
        node = listing.get(group) or {}
        for h in node.get("hosts", []):
            if h not in names:
                names.append(h)
        for child in node.get("children", []):
            walk(child, seen)

    walk("all", set())
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    hosts = [_host(name, hostvars.get(name) or {}, inventory) for name in names]
    check_fleet(hosts, inventory)
    return hosts


def _host(name: str, hv: dict, inventory: str) -> FleetHost:
    where = f"inventory {inventory}, host {name}"
    if not _NAME.match(name):
        raise UsageError(f"{where}: the name must be letters, digits, '.', '_' or '-' (it names the host's "
                         "result directory)")
    port = hv.get("ansible_port", 22)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: ansible_port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise UsageError(f"{where}: ansible_port {port} is out of range 1-65535")
    host = FleetHost(name=name, address=str(hv.get("ansible_host") or name), port=port,
                     project_dir=str(hv.get("isobench_dir", DEFAULT_PROJECT_DIR)),
                     state_root=str(hv.get("isobench_root", DEFAULT_STATE_ROOT)))
    for check in HOST_CHECKS:
        check(host, where)
    _env_is_a_mapping(hv.get("isobench_env"), where)
    return host


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_OWNED = {"ISOBENCH_ROOT"}  # set by the host script from isobench_root


def _env_is_a_mapping(env, where: str) -> None:
    """``isobench_env``: extra environment for every task on the host (a pip mirror, a proxy)."""
    if env is None:
        return
    if not isinstance(env, dict):
        raise UsageError(f"{where}: isobench_env must be a mapping of variable names to values, "
                         f"not {type(env).__name__}")
    for key, value in env.items():
        if not _ENV_NAME.match(str(key)) or str(key) in _ENV_OWNED:
            raise UsageError(f"{where}: isobench_env: {key!r} is not a settable variable name"
                             + (" (isobench_root sets it)" if str(key) in _ENV_OWNED else ""))
        if isinstance(value, (dict, list)):
            raise UsageError(f"{where}: isobench_env: {key} must be a string, not {type(value).__name__}")


def _project_dir_is_safe(host: FleetHost, where: str) -> None:
    p = PurePosixPath(host.project_dir)
    if not p.is_absolute() or ".." in p.parts:
        raise UsageError(f"{where}: isobench_dir {host.project_dir!r} must be an absolute path without '..'")
    if str(p) in _SYSTEM_DIRS:
        raise UsageError(f"{where}: isobench_dir {host.project_dir} is a system directory (the project copy "
                         "replaces the whole directory); use e.g. /opt/isobench")


def _state_root_is_absolute(host: FleetHost, where: str) -> None:
    p = PurePosixPath(host.state_root)
    if not p.is_absolute() or ".." in p.parts or str(p) in _SYSTEM_DIRS:
        raise UsageError(f"{where}: isobench_root {host.state_root!r} must be an absolute, non-system path")


def _dirs_do_not_nest(host: FleetHost, where: str) -> None:
    a, b = PurePosixPath(host.project_dir), PurePosixPath(host.state_root)
    if a == b or a in b.parents or b in a.parents:
        raise UsageError(f"{where}: isobench_dir {a} and isobench_root {b} must not contain each other")


HOST_CHECKS = (_project_dir_is_safe, _state_root_is_absolute, _dirs_do_not_nest)


def check_fleet(hosts: list[FleetHost], inventory: str) -> None:
    if not hosts:
        raise UsageError(f"inventory {inventory}: no hosts in it")
    by_identity: dict[tuple[str, int, str], str] = {}
    for h in hosts:
        other = by_identity.setdefault(h.identity, h.name)
        if other != h.name:
            raise UsageError(f"inventory {inventory}: hosts {other} and {h.name} are the same host "
                             f"({h.address}:{h.port}, isobench_root {h.state_root}); two benches on one "
                             "host would measure each other")


def select(hosts: list[FleetHost], limit: str | None) -> list[FleetHost]:
    """``--limit a,b``: a subset by inventory name (unknown names are an error, not ignored)."""
    if not limit:
        return hosts
    wanted = [n.strip() for n in limit.split(",") if n.strip()]
    known = {h.name for h in hosts}
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise UsageError(f"--limit {limit}: not in the inventory: {', '.join(unknown) or '(empty)'} "
                         f"(hosts: {', '.join(sorted(known))})")
    return [h for h in hosts if h.name in wanted]


def load(inventory: str, limit: str | None = None) -> list[FleetHost]:
    return select(hosts_from_listing(list_inventory(inventory), inventory), limit)
