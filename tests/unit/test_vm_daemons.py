"""libvirtd reachability: a dead socket is not "running", and failures say how to start the daemon."""

import socket

import pytest

from core.errors import VMError
from vmharness import daemons


def test_socket_alive_needs_a_listener(tmp_path):
    path = tmp_path / "sock"
    assert not daemons.socket_alive(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    assert not daemons.socket_alive(path)  # stale socket file, nobody listening
    srv.listen()
    try:
        assert daemons.socket_alive(path)
    finally:
        srv.close()


def test_unreachable_libvirtd_as_non_root_says_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setattr(daemons, "LIBVIRT_SOCK", tmp_path / "libvirt-sock")
    monkeypatch.setattr(daemons, "VIRTLOGD_SOCK", tmp_path / "virtlogd-sock")
    monkeypatch.setattr(daemons.os, "geteuid", lambda: 1000)
    with pytest.raises(VMError, match=r"libvirtd is not reachable at qemu:///system.*libvirtd -d"):
        daemons.ensure_libvirtd()


def test_missing_daemon_binary_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(daemons.shutil, "which", lambda _b: None)
    monkeypatch.setattr(daemons.os.path, "exists", lambda _p: False)
    with pytest.raises(VMError, match="libvirt-daemon-system"):
        daemons._start("libvirtd", tmp_path / "sock")
