"""The one OCI bundle every environment runs: (job, image) -> ``config.json`` via the runtime's converter.

Why: the suite's promise is that only the isolation technology differs between two numbers of one
workload. Docker's process rules (Entrypoint + command, image Env under the job's, WorkingDir, User
looked up in the image's /etc/passwd) and the job's limits are applied once, here, by
:func:`runtime.oci.bundle.image_spec` (the converter ``isobench run`` uses), and every environment takes
its process from the result:

- container: ``runtime.api.create`` makes the same spec from the same :func:`job_config`;
- runc and every other OCI runtime: this ``config.json``, changed only where the environment must
  (root.path on its overlay, cgroupsPath, the network namespace of a published port);
- native: chroot into the bundle's rootfs, then the bundle's args, env, cwd, uid/gid (no namespaces,
  no cgroups);
- vm: the guest runs the bundle's process (``VMRunConfig.process``) on the image's flat rootfs.

Each run records :func:`digest` of the process it ran (``Outcome.extra["process_sha256"]``, and per
environment in ``describe()["bundles"]``, in meta.json): equal digests, identical workload. A
published port's number differs per environment (the container port, or natively a free host port),
so the digest is taken with the job's ``{port}`` placeholder in place; ``HOSTNAME`` is the instance's
own and is left out (:func:`runtime.oci.bundle.process_identity`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.environments.base import Job, fill_port
from core.paths import HostPaths


def job_config(job: Job, paths: HostPaths, publish_ip: str = "127.0.0.1", *, port: int | None = None,
               throttle_dir: Path | None = None):
    """The :class:`runtime.spec.ContainerConfig` of a job (pure apart from the disk lookup of a write
    throttle). ``port``: the number ``{port}`` becomes in the command (default: the job's container
    port). A port is published on ``publish_ip`` ("" = every address: the vm-container guest, reached
    through its eth0). An empty ``job.argv`` runs the image's Cmd."""
    from runtime.spec import (ContainerConfig, MountSpec, NetworkSpec, PortMapping, Resources, SecuritySpec,
                              ThrottleDevice)

    lim = job.limits
    throttles = ()
    if lim.write_bps is not None:
        from runtime.cgroups.devices import device_node, device_of_path

        where = throttle_dir or paths.containers
        where.mkdir(parents=True, exist_ok=True)
        major, minor = device_of_path(str(where))  # the whole disk holding it: throttles apply to disks
        throttles = (ThrottleDevice(path=device_node(major, minor), rate_bytes_per_s=lim.write_bps),)
    res = Resources(cpu_quota_us=Resources.quota_for_cpus(lim.cpus) if lim.cpus is not None else None,
                    cpu_shares=lim.cpu_shares, cpuset_cpus=lim.cpuset_cpus, memory_bytes=lim.memory_bytes,
                    memory_swap_bytes=lim.memory_bytes, pids_max=lim.pids_max, device_write_bps=throttles)
    if job.port is not None:
        net = NetworkSpec(mode="bridge", ports=(PortMapping(host_port=0, container_port=job.port,
                                                            host_ip=publish_ip),))
    else:
        net = NetworkSpec(mode="none")
    mounts = ()
    if job.volume is not None:
        job.volume.host_dir.mkdir(parents=True, exist_ok=True)
        mounts = (MountSpec(destination=job.volume.destination, source=str(job.volume.host_dir), type="bind"),)
    command = tuple(fill_port(job.argv, job.port if port is None else port)) if job.argv else None
    return ContainerConfig(image=job.image, command=command, env=job.env, workdir=job.workdir, mounts=mounts,
                           resources=res, network=net, security=SecuritySpec(cap_drop=tuple(job.cap_drop)))


def digest(process: dict[str, Any], job: Job) -> str:
    """The workload's identity: :func:`runtime.oci.bundle.process_digest` of ``process`` with the job's
    own arguments (``{port}`` unfilled) at the end of args, where the converter put them."""
    from runtime.oci.bundle import process_digest

    args = list(process.get("args") or ())
    if job.argv and len(args) >= len(job.argv):
        args = args[:len(args) - len(job.argv)] + list(job.argv)
    return process_digest(dict(process, args=args))


@dataclass(frozen=True)
class JobBundle:
    """A job's bundle in memory: ``spec`` is its config.json (the caller's copy to change), ``process``
    that spec's process object, ``image`` the store's ImageRecord it came from."""

    spec: dict[str, Any] = field(repr=False)
    image: Any
    process_sha256: str

    @property
    def process(self) -> dict[str, Any]:
        return self.spec["process"]

    @property
    def image_digest(self) -> str:
        return self.image.manifest_digest


def job_bundle(job: Job, paths: HostPaths, *, hostname: str, rootfs: str = "rootfs", port: int | None = None,
               cgroups_path: str = "", throttle_dir: Path | None = None) -> JobBundle:
    """The bundle of ``job``: :func:`runtime.oci.bundle.image_spec` of :func:`job_config` (the single
    source of args, env, cwd, user and limits). ``rootfs``: root.path (an environment may set it
    later); ``port``: what ``{port}`` becomes (default the job's container port)."""
    from runtime.oci import bundle

    made = bundle.image_spec(paths, job_config(job, paths, port=port, throttle_dir=throttle_dir),
                             hostname=hostname, rootfs=rootfs, cgroups_path=cgroups_path)
    return JobBundle(spec=made.spec, image=made.image, process_sha256=digest(made.spec["process"], job))


def flat_rootfs(paths: HostPaths, image: Any) -> Path:
    """The image's cached flat rootfs (read-only: environments mount an overlay over it)."""
    from runtime.image.store import ImageStore

    return ImageStore(paths).flat_rootfs(image)


class Ledger:
    """The processes an environment ran, for ``describe()["bundles"]``: process digest -> the image
    digest and the args (with ``{port}`` unfilled). Thread-safe (the runner may start instances from
    threads)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def note(self, process_sha256: str, image_digest: str, job: Job, process: dict[str, Any]) -> dict[str, str]:
        """Record one run; returns the Outcome.extra entries naming it."""
        from runtime.oci.bundle import process_identity

        ident = process_identity(process)
        with self._lock:
            if process_sha256 not in self._seen:
                args = list(ident["args"])
                if job.argv and len(args) >= len(job.argv):
                    args = args[:len(args) - len(job.argv)] + list(job.argv)
                self._seen[process_sha256] = {"image_digest": image_digest, "args": args, "cwd": ident["cwd"],
                                              "uid": ident["user"]["uid"], "gid": ident["user"]["gid"]}
        return {"process_sha256": process_sha256, "image_digest": image_digest}

    def describe(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in sorted(self._seen.items())}
