"""Property test of ``isobench run`` option handling through the real entry point ``app.cli.main``:
any mix of option values ends in argparse's exit 2, an IsobenchError's exit 1/2 with one line on
stderr, or a valid config handed to the launcher -- never another exception (a traceback).

The launcher is replaced by a fake that only prepares the security settings (pure: cap names, seccomp
profile) and stops, so no container is started: this is a unit test."""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import cli


class Launched(Exception):
    """The fake launcher was reached: the options formed a valid config."""


def _splittable(text: str) -> bool:
    import shlex

    try:
        shlex.split(text)
    except ValueError:
        return False
    return True


_text = st.text(st.sampled_from(list(string.printable[:-5]) + ["é", "\x00"]), max_size=16)
sizes = st.one_of(_text, st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,3})?[bkmgKMG]?", fullmatch=True))
numbers = st.one_of(_text, st.integers(-5, 10**12).map(str), st.floats(allow_nan=True).map(str))
ports = st.one_of(_text, st.from_regex(r"([0-9.]{0,15}:)?[0-9]{0,6}(:[0-9]{0,6})?(/[a-z]{0,4})?", fullmatch=True))
volumes = st.one_of(_text, st.from_regex(r"(/[a-z]{0,5}|[a-z]{0,5})(:/[a-z]{0,5})?(:r[ow])?", fullmatch=True))
caps = st.one_of(_text, st.sampled_from(["NET_RAW", "cap_sys_admin", "ALL", "all", "NOPE", ""]))
secopts = st.one_of(_text, st.sampled_from(["seccomp=unconfined", "seccomp=/nonexistent.json", "seccomp=default",
                                            "no-new-privileges", "no-new-privileges=false", "seccomp=", "apparmor=x"]))
OPTIONS = {
    "--memory": sizes, "--memory-swap": sizes, "--cpus": numbers, "--cpu-shares": numbers,
    "--cpuset-cpus": _text, "--pids-limit": numbers, "-p": ports, "-v": volumes, "--tmpfs": _text,
    "--device-read-bps": st.builds(lambda a, b: f"{a}:{b}", _text, sizes), "--cap-add": caps, "--cap-drop": caps,
    "--security-opt": secopts, "--network": st.one_of(_text, st.sampled_from(["bridge", "none", "host"])),
    "--userns": st.one_of(_text, st.sampled_from(["host", "remap"])), "-u": _text, "-e": _text, "-w": _text,
    "--entrypoint": _text.filter(_splittable), "--name": _text,  # unbalanced quotes: known bug below
}
FLAGS = ["--rm", "--privileged", "--init", "--read-only", "-P", "-d"]


@st.composite
def run_argv(draw) -> list[str]:
    argv = ["run"]
    for opt in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5)):
        argv += [opt, draw(OPTIONS[opt])]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    if draw(st.booleans()):
        argv += [draw(st.sampled_from(["busybox", "nope:latest", "", "-x"])), "true"]
    return argv


@pytest.fixture
def fake_launcher(monkeypatch, tmp_path):
    from runtime import monitor

    def launch(config, paths, **_kw):
        from runtime import security

        security.prepare(config.security)
        raise Launched

    monkeypatch.setattr(monitor, "launch", launch)
    monkeypatch.setenv("ISOBENCH_ROOT", str(tmp_path / "root"))


@settings(max_examples=int(os.environ.get("ISOBENCH_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(run_argv())
def test_run_options_never_traceback(fake_launcher, capsys, argv):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: usage errors
        assert exc.code == 2, (argv, exc.code)
        return
    except Launched:
        return
    finally:
        err = capsys.readouterr().err
    assert code in (1, 2), (argv, code)
    assert err.startswith("isobench: ") and err.count("\n") == 1, (argv, err)


def test_entrypoint_unbalanced_quote_is_a_usage_error(fake_launcher, capsys):
    assert cli.main(["run", "--entrypoint", "'", "busybox", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("isobench: --entrypoint") and err.count("\n") == 1, err
