"""The skeleton's pure pieces: units, paths, CLI error handling."""

import pytest

from app.cli import build_parser, main
from core.errors import UsageError
from core.paths import HostPaths, host_name
from core.units import parse_cpus, parse_size_bytes


@pytest.mark.parametrize("text,expected", [("512", 512), ("64k", 65536), ("256m", 256 << 20),
                                           ("1g", 1 << 30), ("1.5G", 3 << 29), ("32MiB", 32 << 20)])
def test_parse_size(text, expected):
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["1x", "", "m", "-5m", "0"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="--memory"):
        parse_size_bytes(text, "--memory")


def test_parse_cpus_bounds():
    assert parse_cpus("0.5", max_cpus=2) == 0.5
    with pytest.raises(UsageError, match="exceeds the 2 CPUs"):
        parse_cpus("3", max_cpus=2)
    with pytest.raises(UsageError, match="greater than 0"):
        parse_cpus("-1", max_cpus=2)


def test_paths_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ISOBENCH_ROOT", str(tmp_path))
    p = HostPaths.from_env()
    assert p.images == tmp_path / "images"
    assert host_name("abc") == "isobench-abc" and host_name("isobench-abc") == "isobench-abc"


def test_cli_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 2
    assert "isobench" in capsys.readouterr().err


def test_parser_builds():
    assert build_parser().prog == "isobench"


def test_test_module_basenames_are_unique():
    """pytest's default (rootdir) import mode keys test modules by basename outside packages:
    two test_x.py in tests/unit and tests/integration break collection of the whole suite."""
    from collections import Counter
    from pathlib import Path
    tests_root = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests_root.rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []
