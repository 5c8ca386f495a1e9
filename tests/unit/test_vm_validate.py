"""Bad input for `vm run` is caught by small named checks with one-line messages."""

import pytest

from core.errors import UsageError
from runtime.spec import PortMapping
from vmharness import api
from vmharness.api import VMRunConfig


def test_memory_below_minimum_names_the_minimum():
    with pytest.raises(UsageError, match=r"--memory 64m is below .*minimum 128m"):
        api.check_memory(VMRunConfig(memory_mib=64))


def test_too_many_vcpus():
    with pytest.raises(UsageError, match="--vcpus 3 exceeds the 2 CPUs of this host"):
        api.check_vcpus(VMRunConfig(vcpus=3), host_cpus=2)
    api.check_vcpus(VMRunConfig(vcpus=2), host_cpus=2)


def test_cpus_quota_bounds():
    with pytest.raises(UsageError, match="exceeds the 2 CPUs"):
        api.check_cpus(VMRunConfig(cpus=3.0), host_cpus=2)
    api.check_cpus(VMRunConfig(cpus=0.5), host_cpus=2)


def test_vcpupin_must_be_host_cpus():
    with pytest.raises(UsageError, match="not a cpuset"):
        api.check_vcpupin(VMRunConfig(vcpupin=("5",)), host_cpus=2)
    with pytest.raises(UsageError, match="2 vCPU pins given for 1"):
        api.check_vcpupin(VMRunConfig(vcpupin=("0", "1")), host_cpus=2)
    api.check_vcpupin(VMRunConfig(vcpus=2, vcpupin=("0", "0-1")), host_cpus=2)


def test_ports_need_a_network_and_are_unique():
    with pytest.raises(UsageError, match="-p needs a network"):
        api.check_network(VMRunConfig(network="none", ports=(PortMapping(8080, 80),)))
    with pytest.raises(UsageError, match="given twice"):
        api.check_network(VMRunConfig(network="user", ports=(PortMapping(8080, 80), PortMapping(8080, 81))))
    with pytest.raises(UsageError, match="1-65535"):
        api.check_network(VMRunConfig(network="user", ports=(PortMapping(8080, 0),)))


def test_accel_values():
    with pytest.raises(UsageError, match="--accel 'hvf'"):
        api.check_accel(VMRunConfig(accel="hvf"))


def test_cli_parses_publish_and_memory():
    from app.commands import vm as cli

    m = cli.parse_publish("127.0.0.1:18080:80")
    assert (m.host_ip, m.host_port, m.container_port) == ("127.0.0.1", 18080, 80)
    assert cli._memory_mib("512m") == 512 and cli._memory_mib("1g") == 1024 and cli._memory_mib("256") == 256


def test_cgroup_layout_detects_hybrid(tmp_path):
    from app.commands.vm import cgroup_layout

    for d in ("cpu", "memory", "unified"):
        (tmp_path / d).mkdir()
    assert cgroup_layout(str(tmp_path)).startswith("hybrid")
    (tmp_path / "cgroup.controllers").write_text("cpu memory")
    assert cgroup_layout(str(tmp_path)) == "v2 (unified)"


def test_usage_splits_guest_ram_from_overhead():
    from vmharness.usage import smaps_split

    smaps = ("7f0000000000-7f0020000000 rw-p 00000000 00:00 0 \nPss: 100000 kB\n"
             "55d000000000-55d000100000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64\nPss: 2000 kB\n"
             "7f1000000000-7f1000200000 rw-p 00000000 00:00 0 \nPss: 500 kB\n")
    inside, outside = smaps_split(smaps, 512 * 2**20)
    assert inside == 100000 * 1024 and outside == 2500 * 1024
