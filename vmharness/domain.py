"""libvirt domain XML from a typed, frozen config.

The XML is a pure function of :class:`DomainConfig`, so every knob the benchmark turns (vCPUs, memory,
CPU quota and pinning, accelerator, network kind) is unit tested without libvirt. Machine type:
``microvm`` (no PCI, no firmware tables to walk: ~5 s to the workload under TCG here) — libvirt 9.0
accepts it as long as every device sits on the virtio-mmio bus and the implicit USB controller is
turned off; ``q35``/``pc`` remain selectable for libvirt/QEMU builds that reject microvm.
Transient domains only: they vanish when QEMU exits, so nothing is left defined on the host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

DomainType = Literal["kvm", "qemu"]
Machine = Literal["microvm", "q35", "pc"]
NetKind = Literal["bridge", "user", "none"]
ACCEL_TO_DOMAIN_TYPE: dict[str, DomainType] = {"kvm": "kvm", "tcg": "qemu"}
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class PortForward:
    """A user-mode network forward host_ip:host_port -> guest guest_port."""

    host_port: int
    guest_port: int
    protocol: str = "tcp"
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class NetConfig:
    kind: NetKind = "none"
    bridge: str = "isobench0"
    tap: str = ""                 # host tap name (isobench-<6hex>) for bridge networking
    mac: str = ""
    forwards: tuple[PortForward, ...] = ()   # user-mode only (bridge uses the DNAT path)


@dataclass(frozen=True)
class DomainConfig:
    name: str
    kernel: str
    initrd: str
    cmdline: str
    disk_path: str
    console_path: str
    disk_format: str = "qcow2"
    # host page cache bypassed (O_DIRECT, io_uring-free native AIO): guest I/O reaches the disk as a
    # container's direct I/O does, so disk figures compare like with like (IBM ISPASS'15 setup)
    disk_cache: Literal["none", "writeback", "directsync"] = "none"
    accel: Literal["kvm", "tcg"] = "tcg"
    machine: Machine = "microvm"
    memory_mib: int = 512
    vcpus: int = 1
    cpu_quota_us: int | None = None       # whole-domain quota per period (like a container's --cpus)
    cpu_period_us: int = 100_000
    vcpupin: tuple[str, ...] = ()         # cpuset per vCPU index, e.g. ("1",) pins vCPU 0 to host CPU 1
    net: NetConfig = field(default_factory=NetConfig)
    emulator: str = "/usr/bin/qemu-system-x86_64"
    kvm_cpu_passthrough: bool = True      # host-passthrough under KVM (False: QEMU's default model)

    @property
    def domain_type(self) -> DomainType:
        return ACCEL_TO_DOMAIN_TYPE[self.accel]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _mmio(dev: ET.Element, cfg: DomainConfig) -> None:
    if cfg.machine == "microvm":
        _sub(dev, "address", type="virtio-mmio")


def to_xml(cfg: DomainConfig) -> str:
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", {"type": cfg.domain_type})
    _sub(dom, "name", cfg.name)
    _sub(dom, "memory", str(cfg.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(cfg.vcpus), placement="static")
    if cfg.cpu_quota_us is not None or cfg.vcpupin:
        tune = _sub(dom, "cputune")
        for i, cpuset in enumerate(cfg.vcpupin):
            _sub(tune, "vcpupin", vcpu=str(i), cpuset=cpuset)
        if cfg.cpu_quota_us is not None:
            # global_* bounds the whole domain (all vCPUs and the emulator threads), as a container's
            # cgroup quota bounds all of its processes
            _sub(tune, "global_period", str(cfg.cpu_period_us))
            _sub(tune, "global_quota", str(cfg.cpu_quota_us))
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=cfg.machine)
    _sub(os_, "kernel", cfg.kernel)
    _sub(os_, "initrd", cfg.initrd)
    _sub(os_, "cmdline", cfg.cmdline)
    feats = _sub(dom, "features")
    _sub(feats, "acpi")
    if cfg.accel == "kvm" and cfg.kvm_cpu_passthrough:
        _sub(dom, "cpu", mode="host-passthrough", check="none", migratable="off")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy")   # panic=-1 in the guest reboots on panic: treat as the end
    _sub(dom, "on_crash", "destroy")
    devs = _sub(dom, "devices")
    _sub(devs, "emulator", cfg.emulator)
    disk = _sub(devs, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=cfg.disk_format, cache=cfg.disk_cache,
         **({"io": "native"} if cfg.disk_cache in ("none", "directsync") else {}))
    _sub(disk, "source", file=cfg.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    _mmio(disk, cfg)
    if cfg.net.kind == "bridge":
        iface = _sub(devs, "interface", type="bridge")
        _sub(iface, "source", bridge=cfg.net.bridge)
        if cfg.net.tap:
            _sub(iface, "target", dev=cfg.net.tap)
        if cfg.net.mac:
            _sub(iface, "mac", address=cfg.net.mac)
        _sub(iface, "model", type="virtio")
        _mmio(iface, cfg)
    serial = _sub(devs, "serial", type="file")
    _sub(serial, "source", path=cfg.console_path)
    _sub(serial, "target", port="0")
    if cfg.machine == "microvm":
        _sub(devs, "controller", type="usb", model="none")
    _sub(devs, "memballoon", model="none")
    # QEMU runs as root for these domains (DAC label 0:0, no relabelling): state roots live in
    # root-only directories (e.g. pytest's 0700 tmp dirs) that libvirt-qemu could not traverse, and
    # nothing on the host is chowned behind the harness's back
    seclabel = _sub(dom, "seclabel", type="static", model="dac", relabel="no")
    _sub(seclabel, "label", "+0:+0")
    if cfg.net.kind == "user":
        # libvirt 9.0 forwards ports on user networking only with the passt backend (not installed
        # here), so the user-mode NIC is passed to QEMU directly with its hostfwd rules
        qcmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        fwd = "".join(f",hostfwd={f.protocol}:{f.host_ip}:{f.host_port}-:{f.guest_port}" for f in cfg.net.forwards)
        # on PCI machines, a fixed slot libvirt's own address assignment does not use
        dev = {"microvm": "virtio-net-device", "q35": "virtio-net-pci,bus=pcie.0,addr=0x10",
               "pc": "virtio-net-pci,bus=pci.0,addr=0x10"}[cfg.machine]
        mac = f",mac={cfg.net.mac}" if cfg.net.mac else ""
        for arg in ("-netdev", f"user,id=usernet0{fwd}", "-device", f"{dev},netdev=usernet0{mac}"):
            ET.SubElement(qcmd, f"{{{QEMU_NS}}}arg", {"value": arg})
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def bare_qemu_argv(cfg: DomainConfig) -> list[str]:
    """The same guest as a bare ``qemu-system-x86_64`` command (the harness-overhead baseline)."""
    argv = [cfg.emulator, "-machine", cfg.machine, "-accel", "kvm" if cfg.accel == "kvm" else "tcg",
            "-m", str(cfg.memory_mib), "-smp", str(cfg.vcpus), "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-kernel", cfg.kernel, "-initrd", cfg.initrd, "-append", cfg.cmdline,
            "-drive", f"id=d0,file={cfg.disk_path},format={cfg.disk_format},if=none,cache={cfg.disk_cache}"
                      + (",aio=native" if cfg.disk_cache in ("none", "directsync") else ""),
            "-device", "virtio-blk-device,drive=d0" if cfg.machine == "microvm" else "virtio-blk-pci,drive=d0",
            "-serial", f"file:{cfg.console_path}"]
    if cfg.accel == "kvm" and cfg.kvm_cpu_passthrough:
        argv += ["-cpu", "host"]
    return argv


def mac_for(obj_id: str) -> str:
    """A stable locally administered MAC from an id."""
    h = (obj_id.removeprefix("isobench-") + "000000")[:6]
    return f"52:54:00:{h[0:2]}:{h[2:4]}:{h[4:6]}"
