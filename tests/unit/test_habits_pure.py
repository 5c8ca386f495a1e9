"""Pure pieces behind issue 17: registry references and skopeo error sentences, the CLI's one-line
usage errors, volume names, the signal-disposition reading of /proc/PID/status."""

from __future__ import annotations

import os

import pytest

from core.errors import UsageError
from runtime.image import registry as R


@pytest.mark.parametrize("ref, remote, local", [
    ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
    ("localhost:5000/team/app", "localhost:5000/team/app:latest", "localhost:5000/team/app:latest"),
    ("python:3.12-slim", "docker.io/library/python:3.12-slim", "python:3.12-slim"),
    ("team/app", "docker.io/team/app:latest", "team/app:latest"),
    ("quay.io/x/y:2", "quay.io/x/y:2", "quay.io/x/y:2"),
    ("127.0.0.1:5000/a@sha256:" + "0" * 64, "127.0.0.1:5000/a@sha256:" + "0" * 64, "127.0.0.1:5000/a:latest"),
])
def test_references(ref, remote, local):
    r = R.parse_ref(ref)
    assert (r.remote, r.local_name) == (remote, local)


@pytest.mark.parametrize("ref", ["Bad::Ref", "", "UPPER/x", "a b", "x:", "localhost:5000/"])
def test_bad_references(ref):
    with pytest.raises(UsageError, match="invalid image reference"):
        R.parse_ref(ref)


def test_tls_verified_except_on_loopback():
    assert R.Access().verify(R.parse_ref("localhost:5000/a")) is False
    assert R.Access().verify(R.parse_ref("127.0.0.1:5000/a")) is False
    assert R.Access().verify(R.parse_ref("quay.io/a/b")) is True
    assert R.Access(tls_verify=False).verify(R.parse_ref("reg.example:5000/a")) is False


def test_skopeo_errors_become_one_sentence():
    r = R.parse_ref("localhost:1/x:1")
    err = ('time="2026-12-06T01:00:00Z" level=fatal msg="initializing source docker://localhost:1/x:1: pinging '
           'container registry localhost:1: Get \\"https://localhost:1/v2/\\": dial tcp 127.0.0.1:1: connect: '
           'connection refused"\n')
    assert R.explain(err, r) == "cannot reach registry localhost:1 (connection refused)"
    err = 'time="x" level=fatal msg="reading manifest 1 in localhost:1/x: manifest unknown: manifest unknown"\n'
    assert R.explain(err, r) == "no such image in registry localhost:1"
    assert "\n" not in R.explain("line one\nline two\n", r)


def test_cli_usage_errors_have_one_prefix(capsys):
    from app.cli import build_parser

    parser = build_parser()
    for argv, want in ((["ps", "-it"], "isobench: unrecognized arguments: -it\n"),
                       (["nosuchverb"], "isobench: unknown command 'nosuchverb' (see `isobench --help`)\n"),
                       (["volume", "x"], "isobench volume: unknown command 'x' (see `isobench volume --help`)\n")):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2 and capsys.readouterr().err == want


def test_volume_names():
    from runtime.volumes import check_name

    assert check_name("data-1.x_y") == "data-1.x_y"
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(UsageError):
            check_name(bad)


def test_disposition_from_proc_status():
    import signal

    from runtime.monitor import _has_disposition

    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        assert _has_disposition(os.getpid(), signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, old)
    old = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
    try:
        assert not _has_disposition(os.getpid(), signal.SIGUSR2)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGUSR2, old)
