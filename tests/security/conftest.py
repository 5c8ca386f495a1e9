"""Fixtures of the breakout suite: the probe helper, a busybox rootfs, a runc bundle, the host context
(marker process + host-only listener), and the per-runtime table printed at the end of the session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.security import probes

# runtime -> probe -> blocked?  (filled by the tests, printed by pytest_terminal_summary)
RESULTS: dict[str, dict[str, bool | None]] = {}


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("breakout")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def helper(probe_dir: Path) -> Path:
    return probes.build_helper(probe_dir / "helper")


@pytest.fixture(scope="session")
def host_ctx(isobench_root: Path):
    with probes.host_context(state_root=str(isobench_root)) as ctx:
        yield ctx


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if RESULTS:
        terminalreporter.write_sep("=", "breakout probes: blocked per runtime")
        terminalreporter.write_line(probes.format_table(RESULTS))
