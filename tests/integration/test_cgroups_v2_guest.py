"""The cgroup v2 suite, run for real inside the vm-container guest.

This host's controllers are on v1, so ``test_cgroups_v2.py`` skips here. The vm-container guest's init
mounts a pure cgroup v2 hierarchy; this test boots that guest (the ``vmct`` image built by the project's
builder: Debian, python3, pytest, the project) with ``python3 -m pytest tests/integration/test_cgroups_v2.py``
as its workload, streams the guest's output through the serial console, and fails when any test fails,
errors or skips, or when none ran.
"""

from __future__ import annotations

import re
import sys

import pytest

from bench.environments import vm_container

pytestmark = pytest.mark.requires("root", "libvirt", "qemu")
GUEST_SUITE = "tests/integration/test_cgroups_v2.py"
RUN_TIMEOUT_S = 900


def summary_counts(output: str) -> dict[str, int]:
    """pytest's last summary line (``== 7 passed, 1 skipped in 9.1s ==``) -> {"passed": 7, "skipped": 1}."""
    lines = [ln for ln in output.splitlines() if re.search(r"\b(passed|failed|error|errors|skipped|no tests ran)\b", ln)
             and " in " in ln]
    if not lines:
        return {}
    return {kind.rstrip("s") if kind == "errors" else kind: int(n)
            for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", lines[-1])}


def test_cgroup_v2_suite_passes_inside_the_guest(leak_check, paths):
    image = vm_container.guest_image(paths, images=())
    argv = ["/opt/isobench/guest-start.sh", "python3", "-m", "pytest", "-q", "-rA", "--color=no", "-p", "no:cacheprovider",
            GUEST_SUITE]
    guest = vm_container.GuestVM(paths, image, vcpus=2, command=argv,
                                 echo=lambda text: print(text, end="", file=sys.stderr, flush=True))
    try:
        code = guest.vm.wait_exit(RUN_TIMEOUT_S)
        output, console = guest.vm.output(), guest.vm.console_log
    finally:
        guest.close()
    counts = summary_counts(output)
    print(f"\ncgroup v2 suite in the guest ({guest.accel}): exit {code}, {counts}; console log {console}")
    assert counts.get("passed", 0) > 0, f"no test passed in the guest: {output[-2000:]}"
    assert not counts.get("failed") and not counts.get("error"), f"failures in the guest:\n{output[-4000:]}"
    assert not counts.get("skipped"), f"tests skipped in the guest (all must run on v2):\n{output[-4000:]}"
    assert code == 0
