"""report.html opens in headless Chromium (Debian's) offline: it renders, takes a screenshot, logs
no console errors and makes no network request."""

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.report.render import render_report

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "results" / "fixtures" / "quick-tcg"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    try:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or "CONSOLE" in line or "net::ERR" in line or "Failed to load" in line]


@pytest.mark.requires("chromium")
@pytest.mark.timeout(300)
def test_report_in_headless_chromium(tmp_path, leak_check):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    page = render_report(run)
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 100_000  # a blank page is a few KB
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not _console_errors(res.stderr), _console_errors(res.stderr)

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="tcg-warning"' in dom.stdout and "Weight &amp; performance" in dom.stdout
    assert dom.stdout.count("<table") >= 10
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)


@pytest.mark.requires("chromium")
@pytest.mark.timeout(120)
def test_console_error_detector_is_not_vacuous(tmp_path, leak_check):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>throw new Error("boom")</script></body></html>')
    res = _chromium(tmp_path, "--dump-dom", bad.as_uri())
    assert any("boom" in line for line in _console_errors(res.stderr)), res.stderr[-2000:]
