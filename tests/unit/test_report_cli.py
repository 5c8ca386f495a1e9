"""`isobench report`: writes RUN_DIR/report.html; a missing run is one line and exit 2."""

import shutil
from pathlib import Path

from app.cli import main

FIXTURE = Path(__file__).resolve().parents[2] / "results" / "fixtures" / "quick-tcg"


def test_report_cli_writes_page(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert str(run / "report.html") in capsys.readouterr().out


def test_report_cli_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and len(err.strip().splitlines()) == 1
