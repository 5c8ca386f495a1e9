"""isobench-runtime's command line (pure parts): runc's options as podman/conmon pass them, signal and
id checks, one-line usage errors, the log file formats."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from hypothesis import given, settings, strategies as st

from app import oci_cli, oci_verbs
from core.errors import UsageError


def test_conmon_style_command_lines_parse():
    p = oci_cli.build_parser()
    a = p.parse_args(["--systemd-cgroup", "--log-format=json", "--log", "/x/log", "create", "--bundle", "/b",
                      "--pid-file", "/p", "--console-socket", "/s", "--no-pivot", "--no-new-keyring", "id1"])
    assert (a.verb, a.bundle, a.pid_file, a.console_socket, a.id) == ("create", "/b", "/p", "/s", "id1")
    assert a.log_format == "json" and a.systemd_cgroup
    a = p.parse_args(["exec", "-d", "--pid-file", "/p", "--process", "/proc.json", "--console-socket", "/s", "-t", "c"])
    assert a.detach and a.tty and a.process == "/proc.json" and a.id == "c" and a.command == []
    a = p.parse_args(["exec", "c", "ps", "-ef"])
    assert a.command == ["ps", "-ef"]
    a = p.parse_args(["kill", "--all", "c", "9"])
    assert a.all and a.signal == "9"
    assert p.parse_args(["kill", "c"]).signal == "SIGTERM"
    assert p.parse_args(["delete", "--force", "c"]).force
    assert p.parse_args(["--root", "/r", "state", "c"]).root == "/r"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        oci_cli.main(["create"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("isobench-runtime: ") and err.count("\n") == 1


def test_signals_and_ids():
    assert oci_verbs._signal("TERM") == 15 and oci_verbs._signal("SIGKILL") == 9 and oci_verbs._signal("1") == 1
    for bad in ("NOPE", "0", "999"):
        with pytest.raises(UsageError, match="not a signal"):
            oci_verbs._signal(bad)
    assert oci_verbs._check_id("a" * 64) == "a" * 64
    for bad in ("", "../x", "a/b", ".hidden", "x" * 129):
        with pytest.raises(UsageError, match="container id"):
            oci_verbs._check_id(bad)


def test_errors_go_to_the_log_in_both_formats(tmp_path, capsys):
    for fmt in ("text", "json"):
        log = tmp_path / f"log.{fmt}"
        rc = oci_cli.main(["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", fmt, "start", "nope"])
        assert rc == 1
        line = log.read_text().splitlines()[-1]
        if fmt == "json":
            assert json.loads(line)["msg"] == "container nope does not exist"
        else:
            assert 'level=error msg="container nope does not exist"' in line
    assert capsys.readouterr().err.count("\n") == 2


def test_version_and_features(capsys):
    assert oci_cli.main(["--version"]) == 0
    assert "spec: 1.0.2" in capsys.readouterr().out
    assert oci_cli.main(["features"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["linux"]["cgroup"]["systemd"] is False and "SCMP_ACT_ERRNO" in f["linux"]["seccomp"]["actions"]


CONMON_LINES = [
    ["--root", "/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b",
     "--pid-file", "/p", "--console-socket", "/s", "--no-pivot", "--no-new-keyring", "id1"],
    ["--root=/r", "start", "id1"], ["--root", "/r", "state", "id1"], ["kill", "id1", "9"], ["kill", "--all", "id1"],
    ["delete", "--force", "id1"], ["delete", "id1"], ["run", "-d", "-b", "/b", "--keep", "x"],
    ["create", "--preserve-fds", "2", "-b", "/b", "x"], ["--debug", "--rootless", "false", "state", "x"],
]


def _argparse_or_exit(argv):
    with contextlib.redirect_stderr(io.StringIO()):  # argparse's own error line
        try:
            return vars(oci_cli.build_parser().parse_args(argv))
        except SystemExit:
            return None


@pytest.mark.parametrize("argv", CONMON_LINES)
def test_fast_parse_takes_conmon_lines_as_argparse_does(argv):
    fast = oci_cli.fast_parse(argv)
    assert fast is not None and vars(fast) == _argparse_or_exit(argv)


_TOKENS = ["--root", "/r", "--root=/x", "--log", "--log-format", "json", "xml", "--debug", "-v", "create", "start",
           "state", "kill", "delete", "run", "exec", "list", "-b", "--bundle", "--bundle=/b", "--pid-file", "-d",
           "--keep", "-a", "--all", "-f", "--force", "--preserve-fds", "3", "-x", "id1", "id2", "9", "-9", "--",
           "--bund", "-df", "--no-pivot", "--console-socket="]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=8))
def test_fast_parse_never_disagrees_with_argparse(argv):
    """Whatever fast_parse accepts, argparse parses the same way; the rest is argparse's to parse."""
    fast = oci_cli.fast_parse(argv)
    if fast is not None:
        assert vars(fast) == _argparse_or_exit(argv), argv
