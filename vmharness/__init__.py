"""The same image as a KVM/QEMU (TCG fallback) virtual machine through libvirt."""
