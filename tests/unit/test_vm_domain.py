"""Domain XML is a pure function of DomainConfig: accelerator, machine, cputune, pinning, network kinds."""

import xml.etree.ElementTree as ET

from vmharness.domain import QEMU_NS, DomainConfig, NetConfig, PortForward, bare_qemu_argv, mac_for, to_xml


def cfg(**kw) -> DomainConfig:
    base = dict(name="isobench-abc123", kernel="/k", initrd="/i", cmdline="console=ttyS0", disk_path="/d.qcow2",
                console_path="/c.log")
    base.update(kw)
    return DomainConfig(**base)


def parse(c: DomainConfig) -> ET.Element:
    return ET.fromstring(to_xml(c))


def test_tcg_domain_is_type_qemu_without_host_cpu():
    d = parse(cfg(accel="tcg"))
    assert d.get("type") == "qemu"
    assert d.find("cpu") is None
    assert d.findtext("name") == "isobench-abc123"


def test_kvm_domain_passes_host_cpu_through():
    d = parse(cfg(accel="kvm"))
    assert d.get("type") == "kvm"
    assert d.find("cpu").get("mode") == "host-passthrough"


def test_memory_vcpus_kernel_and_lifecycle():
    d = parse(cfg(memory_mib=256, vcpus=2))
    assert d.findtext("memory") == "256" and d.find("memory").get("unit") == "MiB"
    assert d.findtext("vcpu") == "2"
    assert d.findtext("os/kernel") == "/k" and d.findtext("os/initrd") == "/i"
    assert d.findtext("os/cmdline") == "console=ttyS0"
    assert d.findtext("on_poweroff") == "destroy" and d.findtext("on_reboot") == "destroy"
    assert d.find("features/acpi") is not None
    assert d.find("devices/serial/source").get("path") == "/c.log"


def test_microvm_puts_devices_on_virtio_mmio_and_disables_usb():
    d = parse(cfg(machine="microvm", net=NetConfig(kind="bridge", tap="isobench-abc123")))
    assert d.find("os/type").get("machine") == "microvm"
    assert d.find("devices/disk/address").get("type") == "virtio-mmio"
    assert d.find("devices/interface/address").get("type") == "virtio-mmio"
    assert d.find("devices/controller[@type='usb']").get("model") == "none"


def test_q35_uses_default_buses():
    d = parse(cfg(machine="q35"))
    assert d.find("os/type").get("machine") == "q35"
    assert d.find("devices/disk/address") is None
    assert d.find("devices/controller[@type='usb']") is None


def test_cputune_quota_and_vcpupin():
    d = parse(cfg(vcpus=2, cpu_quota_us=50_000, vcpupin=("0", "1")))
    tune = d.find("cputune")
    assert tune.findtext("global_quota") == "50000" and tune.findtext("global_period") == "100000"
    pins = {p.get("vcpu"): p.get("cpuset") for p in tune.findall("vcpupin")}
    assert pins == {"0": "0", "1": "1"}


def test_no_cputune_without_limits():
    assert parse(cfg()).find("cputune") is None


def test_bridge_network_names_tap_and_bridge():
    d = parse(cfg(net=NetConfig(kind="bridge", bridge="isobench0", tap="isobench-abc123", mac="52:54:00:ab:c1:23")))
    iface = d.find("devices/interface")
    assert iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "isobench0"
    assert iface.find("target").get("dev") == "isobench-abc123"
    assert iface.find("model").get("type") == "virtio"
    assert iface.find("mac").get("address") == "52:54:00:ab:c1:23"


def test_user_network_passes_hostfwd_to_qemu():
    net = NetConfig(kind="user", forwards=(PortForward(18080, 80),))
    d = parse(cfg(net=net))
    assert d.find("devices/interface") is None
    args = [a.get("value") for a in d.find(f"{{{QEMU_NS}}}commandline")]
    assert args[0] == "-netdev" and "hostfwd=tcp:127.0.0.1:18080-:80" in args[1]
    assert args[3].startswith("virtio-net-device,")


def test_no_network_has_no_nic():
    d = parse(cfg(net=NetConfig(kind="none")))
    assert d.find("devices/interface") is None
    assert d.find(f"{{{QEMU_NS}}}commandline") is None


def test_bare_qemu_argv_boots_the_same_guest():
    argv = bare_qemu_argv(cfg(memory_mib=256))
    assert argv[argv.index("-machine") + 1] == "microvm"
    assert argv[argv.index("-kernel") + 1] == "/k" and argv[argv.index("-initrd") + 1] == "/i"
    assert argv[argv.index("-m") + 1] == "256"
    assert "file:/c.log" in argv and "tcg" in argv


def test_mac_is_stable_and_local():
    assert mac_for("isobench-abcdef123456") == mac_for("abcdef123456") == "52:54:00:ab:cd:ef"
