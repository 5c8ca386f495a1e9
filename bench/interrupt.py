"""Ctrl-C during ``isobench bench``: stop at once where that is safe, a moment later where it is not.

Why this module: the issue asks that Ctrl-C leave a valid partial run and nothing running. Raising
KeyboardInterrupt from the SIGINT handler (Python's default) breaks that in two ways:

- It can land between making a host object and recording it: after ``subprocess.Popen`` started
  ``runc run`` but before the instance holds the Popen, or after mount(2) but before the mount is in
  the instance's list. The clean-up then does not know the object, and runc goes on creating a
  container (and its cgroups) nobody will delete. Such sections run inside :func:`deferred`: a Ctrl-C
  there is held and raised when the section ends, when the object is recorded.
- CPython swallows an exception a signal handler raises while it runs an at-fork hook, a destructor or
  a weakref callback ("Exception ignored in ..."), and a clean-up that fails on the interrupted state
  can replace the KeyboardInterrupt with its own error. :data:`INTERRUPTED` stays set, so the runner
  still stops at the next step (:func:`raise_if_interrupted`) and does not record the error as a result.

Only the first Ctrl-C interrupts; later ones are ignored so they cannot cut the clean-up short.
Without :func:`install` (library use, tests) :func:`deferred` costs a counter and changes nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

INTERRUPTED = threading.Event()
_depth = 0          # nesting of deferred() sections (main thread: the only one signal handlers run in)
_pending = False    # a Ctrl-C arrived inside a deferred() section and is still to be raised


def on_sigint(signum: int, frame) -> None:
    """SIGINT handler: mark the run interrupted; raise now unless a deferred section is running."""
    global _pending
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    INTERRUPTED.set()
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block has made *and recorded* its host object; raise it afterwards.

    Keep the block short (a Popen, a mount): the user waits for it. If the block raises, its own
    exception propagates and the held interrupt is noticed at the runner's next step.
    """
    global _depth, _pending
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        if _depth == 0:
            _pending = False  # the block's own error propagates; INTERRUPTED still stops the run
        raise
    _depth -= 1
    if _depth == 0 and _pending:
        _pending = False
        raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came in (also one CPython swallowed)."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def install() -> None:
    """Take over SIGINT for a bench run, and keep swallowed interrupts off stderr (acted on anyway)."""
    default_hook = sys.unraisablehook

    def quiet_swallowed_interrupt(unraisable) -> None:
        if not (unraisable.exc_type is KeyboardInterrupt and INTERRUPTED.is_set()):
            default_hook(unraisable)

    sys.unraisablehook = quiet_swallowed_interrupt
    signal.signal(signal.SIGINT, on_sigint)


def reset() -> None:
    """Forget an interrupt (tests; a second run in the same process)."""
    global _depth, _pending
    INTERRUPTED.clear()
    _depth = 0
    _pending = False
