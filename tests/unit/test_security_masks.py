"""masks.apply's decisions with the mount syscall faked: directories get an empty read-only tmpfs,
files get /dev/null bound over them, read-only paths are bound onto themselves then remounted
read-only, absent paths are skipped (as runc does)."""

from __future__ import annotations

from core import syscalls as S
from runtime.security import masks


def test_apply_masks_and_readonly(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(masks.syscalls, "mount", lambda src, dst, fs, flags=0, data=None: calls.append(
        (src, dst, fs, flags, data)))
    d = tmp_path / "acpi"
    d.mkdir()
    f = tmp_path / "kcore"
    f.write_text("")
    ro = tmp_path / "sys"
    ro.mkdir()
    done = masks.apply(masked=(str(d), str(f), str(tmp_path / "absent")), readonly=(str(ro),))
    assert done == [str(ro), str(d), str(f)]
    bind_ro, remount, tmpfs, null = calls
    assert bind_ro[:3] == (str(ro), str(ro), None) and bind_ro[3] & S.MS_BIND
    assert remount[3] & S.MS_REMOUNT and remount[3] & S.MS_RDONLY and remount[3] & S.MS_BIND
    assert tmpfs[2] == "tmpfs" and tmpfs[1] == str(d) and tmpfs[3] & S.MS_RDONLY
    assert null[0] == "/dev/null" and null[1] == str(f) and null[3] & S.MS_BIND


def test_readonly_absent_path_is_skipped(monkeypatch):
    def mount(src, dst, fs, flags=0, data=None):
        raise FileNotFoundError(2, "no such file")

    monkeypatch.setattr(masks.syscalls, "mount", mount)
    assert masks.apply(masked=(), readonly=("/nonexistent/proc/irq",)) == []
