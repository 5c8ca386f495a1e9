"""Ansible stdout callback: one JSON object per line for every task start and host result.

The fleet orchestrator (:mod:`bench.fleet.orchestrate`) reads these lines while ``ansible-playbook``
runs: progress per host, and for a host that failed or went unreachable the task and Ansible's reason,
without scraping Ansible's human-oriented output.
"""

from __future__ import annotations

import json
import sys

from ansible.plugins.callback import CallbackBase

TAIL_LINES = 5  # lines of a failed command's stderr kept as its reason


def _tail(text, n: int = TAIL_LINES) -> str:
    lines = [ln.rstrip() for ln in str(text or "").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "isobench_events"

    def _emit(self, event: str, **fields) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit("task", task=task.get_name())

    def v2_runner_on_ok(self, result):
        res = result._result
        self._emit("ok", host=result._host.get_name(), task=result._task.get_name(),
                   stdout=_tail(res.get("stdout"), 20))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        res = result._result
        self._emit("failed", host=result._host.get_name(), task=result._task.get_name(),
                   msg=str(res.get("msg") or ""), rc=res.get("rc"), stderr=_tail(res.get("stderr")),
                   stdout=_tail(res.get("stdout")), ignore_errors=bool(ignore_errors))

    def v2_runner_on_unreachable(self, result):
        res = result._result
        self._emit("unreachable", host=result._host.get_name(), task=result._task.get_name(),
                   msg=str(res.get("msg") or "unreachable"))

    def v2_runner_on_skipped(self, result):
        self._emit("skipped", host=result._host.get_name(), task=result._task.get_name())

    def v2_playbook_on_stats(self, stats):
        self._emit("stats", hosts={h: stats.summarize(h) for h in sorted(stats.processed)})
