"""Block device path -> ``MAJ:MIN`` of the whole disk, as blkio/io throttling requires.

The kernel accepts throttle rules only for whole disks (a rule on a partition is rejected with
ENODEV/EINVAL), while users naturally name what they see mounted, e.g. ``/dev/vda1``. sysfs says
whether a device number is a partition (``/sys/dev/block/M:m/partition`` exists) and its parent
directory is the disk, whose ``dev`` file holds the disk's number.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import CgroupError


def whole_disk(major: int, minor: int, sysfs: Path = Path("/sys")) -> tuple[int, int]:
    """The disk a device number belongs to: itself when it is a disk, its parent when a partition."""
    node = sysfs / "dev" / "block" / f"{major}:{minor}"
    if not (node / "partition").exists():
        return major, minor
    try:
        text = (node.resolve().parent / "dev").read_text().strip()
    except OSError as exc:
        raise CgroupError(f"cannot find the disk of partition {major}:{minor} in {sysfs}: {exc.strerror}") from exc
    maj, _, mnr = text.partition(":")
    return int(maj), int(mnr)


def block_device_number(path: str, sysfs: Path = Path("/sys")) -> tuple[int, int]:
    """``/dev/vda1`` -> ``(254, 0)`` (its whole disk); ``"8:1"`` (an OCI bundle's major:minor) too.
    Raises CgroupError for a non-block path."""
    maj, sep, mnr = path.partition(":")
    if sep and maj.isdigit() and mnr.isdigit():
        return whole_disk(int(maj), int(mnr), sysfs)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CgroupError(f"throttle device {path!r}: {exc.strerror}") from exc
    if not stat.S_ISBLK(st.st_mode):
        raise CgroupError(f"throttle device {path!r} is not a block device")
    return whole_disk(os.major(st.st_rdev), os.minor(st.st_rdev), sysfs)


def device_of_path(path: str, sysfs: Path = Path("/sys")) -> tuple[int, int]:
    """The whole disk holding the file system of ``path`` (by ``st_dev``): what to throttle for a file."""
    st_dev = os.stat(path).st_dev
    return whole_disk(os.major(st_dev), os.minor(st_dev), sysfs)


def device_node(major: int, minor: int, sysfs: Path = Path("/sys")) -> str:
    """``(254, 0)`` -> ``/dev/vda`` (from the device's uevent DEVNAME), for messages and throttle specs."""
    uevent = sysfs / "dev" / "block" / f"{major}:{minor}" / "uevent"
    try:
        fields = dict(line.split("=", 1) for line in uevent.read_text().splitlines() if "=" in line)
    except OSError as exc:
        raise CgroupError(f"block device {major}:{minor} is unknown to {sysfs}: {exc.strerror}") from exc
    return f"/dev/{fields['DEVNAME']}"
