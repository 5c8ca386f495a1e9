"""One exception family for the whole project.

The CLI prints ``str(error)`` as one line and exits 1 (usage errors exit 2), so every message must name
what was wrong, where, and which value. Subclasses exist per area so callers can catch narrowly.
"""


class IsobenchError(Exception):
    """Base of every error isobench reports to a user."""

    exit_code = 1


class UsageError(IsobenchError):
    """Bad command-line input (exit 2, like argparse)."""

    exit_code = 2


class ImageError(IsobenchError):
    """Image store, image reference or layer problems."""


class BuildError(IsobenchError):
    """Dockerfile parse or build-step failures (message names file and line)."""


class RuntimeError_(IsobenchError):
    """Container create/start/stop failures."""


ContainerError = RuntimeError_


class CgroupError(IsobenchError):
    """cgroup controller missing or a value the kernel rejected."""


class NetworkError(IsobenchError):
    """Bridge, veth, IPAM or port-mapping failures."""


class VMError(IsobenchError):
    """VM harness failures: artifacts, libvirt, boot."""


class BenchError(IsobenchError):
    """Benchmark harness, results, report, compare and check failures."""


class SecurityError(IsobenchError):
    """Capabilities, seccomp or masked-path configuration problems."""


class ServerError(IsobenchError):
    """The isobench fork server: start/stop/status problems and malformed client requests."""
