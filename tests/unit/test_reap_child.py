"""reap_child: a wait status that survives a Ctrl-C between ``waitpid`` returning and its result being
stored (CI once saw ``ChildProcessError`` from the second wait when a bench was interrupted mid-stop)."""

from __future__ import annotations

import os
import signal

from runtime.lifecycle.process import STATUS_LOST, exit_code_of, reap_child


def _child(code: int | None = None, sig: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        if sig is not None:
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    return pid


def test_exit_code_and_signal_statuses_match_waitpid():
    assert exit_code_of(reap_child(_child(code=3), {})) == 3
    assert exit_code_of(reap_child(_child(sig=signal.SIGKILL), {})) == 128 + signal.SIGKILL  # uncatchable: pytest's handlers do not matter


def test_a_retry_after_the_reap_gets_the_status_from_the_memo():
    memo: dict[int, int] = {}
    pid = _child(code=7)
    first = reap_child(pid, memo)
    assert reap_child(pid, memo) == first and exit_code_of(first) == 7  # no ECHILD


def test_a_status_taken_by_another_waiter_is_reported_lost_not_raised():
    pid = _child(code=0)
    os.waitpid(pid, 0)
    assert reap_child(pid, {}) == STATUS_LOST and exit_code_of(STATUS_LOST) == 255
