"""The container's root filesystem: overlayfs over the image's shared read-only layers, the special
filesystems a process expects (/proc, /dev, /sys), volumes, and ``pivot_root`` into it.

Everything here runs in the container's child process, inside its own mount namespace, so nothing is
ever mounted in the host's mount table: when the container's last process exits, the kernel tears the
mounts down with the namespace (no unmount step, nothing for ``gc`` to find). Only the per-container
``upper``/``work`` directories under ``paths.containers/<id>`` remain until ``rm``.
"""
