"""The guest's serial console, read on the host with host-side monotonic timestamps.

Boot time is measured the way Firecracker's boot timer does it: the guest announces events (initrd
up, init shim started, workload ready, workload exited) as marker lines, and the *host* stamps the
moment it sees them, so guest clocks never enter the numbers. The console is a plain file written by
QEMU (the same for a libvirt domain and for the bare-QEMU baseline); a thread polls it every couple of
milliseconds, which bounds the timestamp error and costs next to nothing.
"""

from __future__ import annotations

import codecs
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vmharness.artifacts import MARK_EXIT, MARK_INIT, MARK_INITRD, MARK_PANIC, MARK_READY

POLL_S = 0.002
POLL_SLOW_S = 0.05
SLOW_AFTER_READY_S = 2.0

# phase names, in boot order; values in results are seconds since the create call
PHASES: tuple[str, ...] = ("create", "qemu_up", "first_output", "initrd", "init_started", "ready", "exited",
                           "gone")

MARKER_RE = re.compile(
    rf"({MARK_INITRD}|{MARK_INIT}|{MARK_READY}|{MARK_EXIT}|{MARK_PANIC})(?:[ \t]+([^\r\n]*))?\r?\n")
KERNEL_PANIC_RE = re.compile(r"Kernel panic - not syncing[^\r\n]*")

MARKER_PHASE = {MARK_INITRD: "initrd", MARK_INIT: "init_started", MARK_READY: "ready", MARK_EXIT: "exited"}


@dataclass(frozen=True)
class Marker:
    name: str        # one of the MARK_* strings
    arg: str         # text after the marker on its line
    start: int       # offset of the marker in the console text
    end: int         # offset just after its line


def scan_markers(text: str) -> list[Marker]:
    """Every complete marker line in ``text`` (a marker may follow output that lacked a newline)."""
    return [Marker(m.group(1), (m.group(2) or "").strip(), m.start(), m.end()) for m in MARKER_RE.finditer(text)]


def normalize(text: str) -> str:
    """Serial consoles end lines with CRLF; workloads print LF."""
    return text.replace("\r\n", "\n")


def workload_output(text: str) -> str:
    """The workload's output: what the console shows between the READY line and the EXIT marker."""
    marks = scan_markers(text)
    ready = next((m for m in marks if m.name == MARK_READY), None)
    if ready is None:
        return ""
    exit_ = next((m for m in marks if m.name == MARK_EXIT and m.start >= ready.end), None)
    return normalize(text[ready.end: exit_.start if exit_ else len(text)])


def exit_code(text: str) -> int | None:
    for m in scan_markers(text):
        if m.name == MARK_EXIT:
            try:
                return int(m.arg.split()[0])
            except (ValueError, IndexError):
                return None
    return None


def panic_reason(text: str) -> str | None:
    """A kernel panic or an init-shim failure the guest reported, as one line."""
    m = KERNEL_PANIC_RE.search(text)
    if m:
        return m.group(0).strip()
    for mk in scan_markers(text):
        if mk.name == MARK_PANIC:
            return mk.arg or "guest init failed"
    return None


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(normalize(text).rstrip("\n").splitlines()[-lines:])


@dataclass
class ConsoleWatcher:
    """Polls a console file in a thread; records when bytes and markers first appear."""

    path: Path
    t0: float                                   # monotonic time of the create call
    echo: "callable | None" = None              # called with workload output chunks as they arrive
    events: dict[str, float] = field(default_factory=dict)   # phase -> monotonic seconds (absolute)
    text: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    markers: list[Marker] = field(default_factory=list)
    _echoed: int = 0
    _offset: int = 0
    _scan_from: int = 0
    _file: object = None
    _decoder: object = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    def start(self) -> "ConsoleWatcher":
        self._thread = threading.Thread(target=self._run, name=f"console-{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._poll_once()  # whatever the guest wrote last
        with self._changed:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._poll_once()
                ready_at = self.events.get("ready")
                # fast while booting; a long-running server's console is then polled gently so the
                # harness does not steal CPU from the benchmark
                slow = ready_at is not None and time.monotonic() - ready_at > SLOW_AFTER_READY_S
                self._stop.wait(POLL_SLOW_S if slow else POLL_S)
        finally:
            with self._changed:
                if self._file is not None:
                    self._file.close()
                    self._file = None

    def _poll_once(self) -> None:
        with self._changed:  # an RLock: wait_for() polls too, from the caller's thread
            if self._file is None:
                try:
                    self._file = open(self.path, "rb")
                except FileNotFoundError:
                    return
                self._file.seek(self._offset)
            chunk = self._file.read()
            if not chunk:
                return
            now = time.monotonic()
            self._offset += len(chunk)
            self.text += self._decoder.decode(chunk)
            self.events.setdefault("first_output", now)
            # scan only from the start of the last incomplete line: markers end with a newline
            base = self._scan_from
            for m in scan_markers(self.text[base:]):
                m = Marker(m.name, m.arg, m.start + base, m.end + base)
                self.markers.append(m)
                phase = MARKER_PHASE.get(m.name)
                if phase:
                    self.events.setdefault(phase, now)
                if m.name == MARK_PANIC:
                    self.events.setdefault("panic", now)
            if "panic" not in self.events and KERNEL_PANIC_RE.search(self.text, max(0, base - 200)):
                self.events["panic"] = now
            self._scan_from = self.text.rfind("\n") + 1
            self._echo()
            self._changed.notify_all()

    def _echo(self) -> None:
        """Pass new workload output to ``echo``: complete lines as they come, the rest at exit."""
        if self.echo is None:
            return
        ready = next((m for m in self.markers if m.name == MARK_READY), None)
        if ready is None:
            return
        start = max(self._echoed, ready.end)
        exit_ = next((m for m in self.markers if m.name == MARK_EXIT and m.start >= ready.end), None)
        end = exit_.start if exit_ is not None else self._scan_from
        if end > start:
            self.echo(normalize(self.text[start:end]))
            self._echoed = end

    def wait_for(self, *phases: str, timeout_s: float, alive=None) -> str | None:
        """Block until one of ``phases`` (or a panic) is seen; return its name, or None on timeout or
        when ``alive()`` says the domain is gone (checked every 50 ms)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for p in (*phases, "panic"):
                    if p in self.events:
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if alive is not None and not alive():
                    self._poll_once()
                    for p in (*phases, "panic"):
                        if p in self.events:
                            return p
                    return None
                self._changed.wait(min(left, 0.05))

    def phases(self) -> dict[str, float]:
        """Seconds since the create call for every phase seen so far."""
        return {k: v - self.t0 for k, v in self.events.items()}


def read_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
