"""The one module that talks to libvirt.

Every libvirt call of the project goes through here (import-linter forbids ``libvirt`` elsewhere), so the
rest of the VM harness deals in domain names, XML and one error type, and a newcomer finds every
hypervisor effect in one file. The connection is process-wide and reused (opening one costs
milliseconds); the daemons are started by :mod:`vmharness.daemons` when they are not running.
"""

from __future__ import annotations

import contextlib
from typing import Any

from core.errors import VMError
from vmharness.daemons import HOW_TO_START, LIBVIRT_SOCK, URI, ensure_libvirtd, socket_alive

_conn = None


class HypervisorError(VMError):
    """A libvirt call failed; ``text`` is libvirt's own message, ``no_domain`` when the name is unknown."""

    def __init__(self, text: str, no_domain: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.no_domain = no_domain


def _error(exc: Exception) -> HypervisorError:
    import libvirt

    text = (exc.get_error_message() if hasattr(exc, "get_error_message") else None) or str(exc)
    no_domain = getattr(exc, "get_error_code", lambda: None)() == libvirt.VIR_ERR_NO_DOMAIN
    return HypervisorError(" ".join(text.split()), no_domain=no_domain)


def connect():
    """A (process-wide, reused) libvirt connection to qemu:///system, starting the daemons if needed."""
    global _conn
    import libvirt

    if _conn is not None:
        try:
            if _conn.isAlive():
                return _conn
        except libvirt.libvirtError:
            pass
        _conn = None
    ensure_libvirtd()
    # libvirt prints every error to stderr by default; we raise them as one-line VMErrors instead
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        _conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        raise VMError(f"libvirtd is not reachable at {URI}: {exc.get_error_message()}; {HOW_TO_START}") from exc
    import atexit

    # close while the libvirt module still exists: a connection left to interpreter shutdown makes
    # virConnect.__del__ print a TypeError traceback after everything else
    atexit.register(_close_at_exit)
    return _conn


def _close_at_exit() -> None:
    global _conn
    conn, _conn = _conn, None
    if conn is not None:
        import libvirt

        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # the daemon went away first: nothing left to close


def libvirt_version() -> str:
    """libvirt library version as text (e.g. 9.0.0)."""
    import libvirt

    v = libvirt.getVersion()
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def hypervisor_version() -> str:
    """The QEMU version libvirtd drives (e.g. 7.2.0)."""
    hv = connect().getVersion()
    return f"{hv // 1_000_000}.{hv // 1000 % 1000}.{hv % 1000}"


def create_transient(xml: str) -> Any:
    """Start a transient domain from ``xml`` (gone when QEMU exits); raises HypervisorError."""
    import libvirt

    conn = connect()
    try:
        return conn.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise _error(exc) from exc


def domain_state(name: str) -> bool | None:
    """True when the domain runs, False when defined but not running, None when there is none.
    Raises HypervisorError for any other libvirt failure."""
    import libvirt

    try:
        return bool(connect().lookupByName(name).isActive())
    except libvirt.libvirtError as exc:
        err = _error(exc)
        if err.no_domain:
            return None
        raise err from exc


def domain_active(name: str) -> bool:
    """True when a domain of that name runs; any libvirt failure counts as not running."""
    import libvirt

    try:
        return bool(connect().lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def destroy(name: str, graceful: bool = False) -> bool:
    """Destroy the domain ``name`` (SIGTERM to QEMU first when ``graceful``); False when there was none
    or it vanished meanwhile (transient domains go with their QEMU)."""
    import libvirt

    try:
        dom = connect().lookupByName(name)
    except libvirt.libvirtError:
        return False
    try:
        dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL) if graceful else dom.destroy()
    except libvirt.libvirtError:
        return False
    return True


def domain_names() -> list[str]:
    """Names of every domain libvirtd knows; empty when libvirtd does not run (then none can exist)."""
    if not socket_alive(LIBVIRT_SOCK):
        return []
    return [d.name() for d in connect().listAllDomains()]


def domain_xmls() -> dict[str, str]:
    """name -> live XML of every domain (skipping any that vanish while listed)."""
    import libvirt

    out = {}
    if not socket_alive(LIBVIRT_SOCK):
        return out
    for d in connect().listAllDomains():
        try:
            out[d.name()] = d.XMLDesc()
        except libvirt.libvirtError:
            continue
    return out


def suppress_errors():
    """A context manager that ignores HypervisorError (best-effort teardown paths)."""
    return contextlib.suppress(HypervisorError)
