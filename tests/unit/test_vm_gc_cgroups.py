"""Which libvirt machine cgroups the VM gc may consider (names only; removal is done for real)."""

from vmharness.gc import _MACHINE_CGROUP


def test_only_isobench_domains_machine_cgroups_match():
    m = _MACHINE_CGROUP.match("qemu-69-isobench-79db2e3797f7.libvirt-qemu")
    assert m and m.group(1) == "isobench-79db2e3797f7"
    assert not _MACHINE_CGROUP.match("qemu-3-otherdomain.libvirt-qemu")
    assert not _MACHINE_CGROUP.match("qemu-3-isobench-79db.libvirt-qemu-x")
    assert not _MACHINE_CGROUP.match("isobench-79db2e3797f7")
