"""`isobench bench --runtime NAME=PATH` and the OCI runtimes found on the host: names, paths, duplicates."""

from __future__ import annotations

import os

import pytest

from bench.environments import ociruntimes as O
from core.errors import UsageError


@pytest.fixture
def exe(tmp_path):
    p = tmp_path / "myrt"
    p.write_text("#!/bin/sh\n")
    os.chmod(p, 0o755)
    return str(p)


def test_parse_runtime(exe):
    assert O.parse_runtime(f"myrt={exe}") == O.OciRuntime("myrt", exe)


@pytest.mark.parametrize("text, says", [
    ("crun", "expected NAME=PATH"), ("=x", "expected NAME=PATH"), ("Bad Name=/bin/true", "NAME must be"),
    ("vm=/bin/true", "name of another environment"), ("x=/nonexistent/rt", "not an executable file"),
])
def test_bad_runtime_is_one_line(text, says):
    with pytest.raises(UsageError) as e:
        O.parse_runtime(text)
    assert says in str(e.value) and "\n" not in str(e.value) and repr(text) in str(e.value)


def test_not_executable(tmp_path):
    p = tmp_path / "plain"
    p.write_text("")
    with pytest.raises(UsageError, match="not an executable file"):
        O.parse_runtime(f"plain={p}")


def test_environments_add_replace_and_refuse_duplicates(exe, monkeypatch):
    monkeypatch.setattr(O.shutil, "which", lambda n: {"runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}.get(n))
    assert [r.name for r in O.environments()] == ["runc", "crun"]
    got = O.environments((f"crun={exe}", f"mine={exe}"))
    assert [(r.name, r.path) for r in got] == [("runc", "/usr/sbin/runc"), ("crun", exe), ("mine", exe)]
    with pytest.raises(UsageError, match="given twice"):
        O.environments((f"mine={exe}", f"mine={exe}"))
