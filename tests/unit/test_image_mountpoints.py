"""The mountpoints layer (runtime.image.mountpoints): only what the image lacks, its parents' attributes
copied, shared and made atomically. Fake layer dirs; whiteouts need root (mknod)."""

from __future__ import annotations

import os
import stat

import pytest

from runtime.image import mountpoints as M


def _layer(root, *dirs, files=()):
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    return str(root)


def test_only_missing_entries_under_existing_dirs(tmp_path):
    low = _layer(tmp_path / "l1", "proc", "etc", files=("etc/hosts",))
    os.chmod(tmp_path / "l1" / "etc", 0o750)
    top = _layer(tmp_path / "l2", "dev", files=("etc/hostname",))  # its etc shadows l1's as the merged dir
    os.chmod(tmp_path / "l2" / "etc", 0o711)
    M.missing_entries.cache_clear()
    entries = M.missing_entries((low, top))
    by_path = {e[0]: e for e in entries}
    assert set(by_path) == {"sys", "etc/resolv.conf"}
    assert by_path["etc/resolv.conf"][1] is False and by_path["etc/resolv.conf"][2] == 0o711  # the topmost etc
    assert by_path["sys"][1] is True


def test_a_symlink_or_a_missing_parent_is_left_to_the_image(tmp_path):
    layer = tmp_path / "l"
    _layer(layer, "proc", "dev", "sys", "etc", files=("etc/hostname", "etc/hosts"))
    os.symlink("../run/resolv.conf", layer / "etc" / "resolv.conf")  # dangling: the image's choice
    M.missing_entries.cache_clear()
    assert M.missing_entries((str(layer),)) == ()
    assert M.layer_for((str(layer),), tmp_path / "store") is None
    bare = tmp_path / "bare"
    _layer(bare, "proc", "dev", "sys")  # no /etc at all: the start helper makes it as before
    M.missing_entries.cache_clear()
    assert M.missing_entries((str(bare),)) == ()


def test_layer_is_made_once_with_modes_and_parent_attributes(tmp_path):
    img = tmp_path / "img"
    _layer(img, "proc", "etc", files=("etc/hosts",))
    os.chmod(img / "etc", 0o701)
    os.utime(img / "etc", ns=(1_000_000_000, 1_000_000_000))
    M.missing_entries.cache_clear()
    made = M.layer_for((str(img),), tmp_path / "store")
    assert made and os.path.dirname(made) == str(tmp_path / "store" / "mountpoints")
    for rel, is_dir in (("dev", True), ("sys", True), ("etc/hostname", False), ("etc/resolv.conf", False)):
        st = os.lstat(os.path.join(made, rel))
        assert stat.S_ISDIR(st.st_mode) == is_dir
        assert stat.S_IMODE(st.st_mode) == (M.DIR_MODE if is_dir else M.FILE_MODE)
    etc = os.lstat(os.path.join(made, "etc"))
    assert stat.S_IMODE(etc.st_mode) == 0o701 and etc.st_mtime_ns == 1_000_000_000
    assert not os.path.exists(os.path.join(made, "proc"))  # the image has it
    assert M.layer_for((str(img),), tmp_path / "store") == made  # shared, not remade
    assert [p for p in os.listdir(tmp_path / "store" / "mountpoints") if p.startswith(".")] == []


@pytest.mark.requires("root")  # a whiteout is a 0:0 character device
def test_a_whited_out_entry_counts_as_missing(tmp_path):
    low = _layer(tmp_path / "l1", "proc", "dev", "sys", "etc", files=("etc/hostname", "etc/hosts", "etc/resolv.conf"))
    top = tmp_path / "l2"
    _layer(top, "etc")
    os.mknod(top / "etc" / "resolv.conf", stat.S_IFCHR, os.makedev(0, 0))
    M.missing_entries.cache_clear()
    assert [e[0] for e in M.missing_entries((low, str(top)))] == ["etc/resolv.conf"]
