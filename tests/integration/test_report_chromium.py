"""report.html in real Chromium (Debian's, headless, driven over the DevTools protocol): it renders
offline without console errors, and at 1280 and 1920 px every table and figure fits the window and
every environment column is visible (issue 14: the namespace matrix used to hide all but native)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.report.render import render_report
from tests.integration.chromium_cdp import Chromium

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "results" / "fixtures" / "quick-tcg"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
WIDTHS = (1280, 1920)
ENVIRONMENTS = ("native", "container", "runc", "vm")

# Everything that can stick out of the window, measured in the page: the document wider than the
# window, a table/figure/image whose box ends right of the window or of its own container, a scroll
# box whose content is wider than the box (its columns are hidden until scrolled), an environment
# column header with no width or cut off by a clipping ancestor.
LAYOUT_JS = r"""
(() => {
  const envs = %s;
  const W = document.documentElement.clientWidth;
  const out = {width: window.innerWidth, docWidth: document.documentElement.scrollWidth, problems: [], tables: 0, envHeaders: 0};
  const name = (el) => {
    const t = el.closest('table'); const sec = el.closest('section, figure, div.scroll');
    return (t && t.id ? '#' + t.id : el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')) +
           (sec && sec.previousElementSibling ? ' after "' + sec.previousElementSibling.textContent.trim().slice(0, 40) + '"' : '');
  };
  if (out.docWidth > W + 1) out.problems.push(`page is ${out.docWidth}px wide in a ${W}px window`);
  for (const el of document.querySelectorAll('table, figure, img, pre, .scroll')) {
    const r = el.getBoundingClientRect();
    if (r.right > W + 1) out.problems.push(`${name(el)} ends at ${Math.round(r.right)}px > ${W}px`);
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
      out.problems.push(`${name(el)} scrolls: content ${el.scrollWidth}px in ${el.clientWidth}px`);
    const parent = el.parentElement.getBoundingClientRect();
    if (el.tagName !== 'DIV' && r.right > parent.right + 1)
      out.problems.push(`${name(el)} overflows its container by ${Math.round(r.right - parent.right)}px`);
  }
  for (const t of document.querySelectorAll('table')) {
    out.tables += 1;
    for (const th of t.querySelectorAll('thead th')) {
      const text = th.textContent.trim().toLowerCase();
      if (!envs.some(e => text === e || text.startsWith(e + ' '))) continue;
      out.envHeaders += 1;
      const r = th.getBoundingClientRect();
      if (r.width < 20) out.problems.push(`${name(th)}: column "${text}" is ${Math.round(r.width)}px wide`);
      for (let a = th.parentElement; a && a !== document.body; a = a.parentElement) {
        const s = getComputedStyle(a);
        if (s.overflowX === 'visible' && s.overflow === 'visible') continue;
        const ar = a.getBoundingClientRect();
        if (r.right > ar.right + 1 || r.left < ar.left - 1)
          out.problems.push(`${name(th)}: column "${text}" is cut off (ends ${Math.round(r.right)}px, box ${Math.round(ar.right)}px)`);
      }
      if (r.right > W + 1) out.problems.push(`${name(th)}: column "${text}" is right of the window`);
    }
  }
  return out;
})()
""" % json.dumps(ENVIRONMENTS)


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


def layout(page: Path, width: int, shot: Path | None = None) -> dict:
    """The layout report of ``page`` at ``width`` px (and a full-page screenshot when asked)."""
    with Chromium() as browser:
        browser.open(page.as_uri(), width, 900)
        res = browser.evaluate(LAYOUT_JS)
        res["console_errors"] = browser.console_errors()
        if shot is not None:
            browser.screenshot(shot)
    return res


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(FIXTURE, run)
    return render_report(run)


@pytest.mark.requires("chromium")
@pytest.mark.timeout(300)
def test_report_in_headless_chromium(tmp_path, fixture_report, leak_check):
    page = fixture_report
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
@pytest.mark.timeout(300)
@pytest.mark.parametrize("width", WIDTHS)
def test_every_table_fits_and_every_environment_column_shows(tmp_path, fixture_report, width, leak_check):
    shot = tmp_path / f"report-{width}.png"
    res = layout(fixture_report, width, shot)
    assert res["width"] == width
    assert res["tables"] >= 10 and res["envHeaders"] >= 8, res
    assert not res["problems"], "\n".join(res["problems"])
    assert not res["console_errors"], res["console_errors"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 100_000


@pytest.mark.requires("chromium")
@pytest.mark.timeout(300)
def test_layout_check_is_not_vacuous(tmp_path, leak_check):
    """A page with the old failure (a wide matrix in a scroll box that hides the vm column, an image
    wider than the window) is caught, column and all."""
    wide = "x" * 400
    page = tmp_path / "wide.html"
    page.write_text(
        "<html><body><div class='scroll' style='overflow-x:auto'><table id='T_m'><thead><tr><th>namespace</th>"
        "<th>native</th><th>container</th><th>runc</th><th>vm</th></tr></thead><tbody><tr><td>pid</td>"
        f"<td style='white-space:nowrap'>{wide}</td><td>{wide}</td><td>{wide}</td><td>ok</td></tr></tbody></table>"
        "</div><figure><img style='width:2600px;height:10px'></figure></body></html>")
    res = layout(page, 1280)
    text = "\n".join(res["problems"])
    assert 'column "vm" is cut off' in text, text
    assert "#T_m" in text and "scrolls" in text and "img" in text, text


@pytest.mark.requires("chromium")
@pytest.mark.timeout(120)
def test_console_error_detector_is_not_vacuous(tmp_path, leak_check):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>throw new Error("boom")</script></body></html>')
    res = _chromium(tmp_path, "--dump-dom", bad.as_uri())
    assert any("boom" in line for line in _console_errors(res.stderr)), res.stderr[-2000:]
    with Chromium() as browser:
        browser.open(bad.as_uri(), 800, 600)
        assert any("boom" in e for e in browser.console_errors())
