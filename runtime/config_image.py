"""The container's process as Docker computes it: image config (Env, Cmd, Entrypoint, WorkingDir, User)
merged with the command line.

Pure functions so the precedence rules are unit tested: ``--entrypoint`` replaces the image's
Entrypoint *and* drops its Cmd; a command replaces Cmd; ``-e`` overrides the image's Env by key;
``-w``/``-u`` override WorkingDir/User.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import ContainerError
from runtime.spec import ContainerConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ProcessSpec:
    """What the container's first process runs: argv, environment (K=V), cwd and user spec."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str


def merge_env(image_env: list[str] | tuple[str, ...], overrides: tuple[str, ...]) -> dict[str, str]:
    """Image Env first, then ``-e`` entries by key (``-e K`` without ``=`` sets K to empty)."""
    env: dict[str, str] = {}
    for item in list(image_env or ()) + list(overrides):
        key, sep, value = item.partition("=")
        if key:
            env[key] = value
    return env


def command_of(config: ContainerConfig, image_cfg: dict) -> tuple[str, ...]:
    if config.entrypoint is not None:
        entry = tuple(a for a in config.entrypoint if a != "") if config.entrypoint != ("",) else ()
        cmd = tuple(config.command or ())
    else:
        entry = tuple(image_cfg.get("Entrypoint") or ())
        cmd = tuple(config.command) if config.command is not None else tuple(image_cfg.get("Cmd") or ())
    argv = entry + cmd
    if not argv:
        raise ContainerError(f"image {config.image!r} has no Cmd or Entrypoint and no command was given")
    return argv


def process_spec(config: ContainerConfig, image_config: dict, hostname: str) -> ProcessSpec:
    """Merge ``image_config`` (the full OCI image config; its ``config`` member) with ``config``."""
    cfg = image_config.get("config") or {}
    env = merge_env(cfg.get("Env") or (), config.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    workdir = config.workdir or cfg.get("WorkingDir") or "/"
    user = config.user or cfg.get("User") or "0"
    return ProcessSpec(argv=command_of(config, cfg), env=tuple(f"{k}={v}" for k, v in env.items()),
                       workdir=workdir, user=user)


def exposed_ports(image_config: dict) -> tuple[str, ...]:
    """``ExposedPorts`` keys (``"80/tcp"``) for ``-P``."""
    return tuple(sorted((image_config.get("config") or {}).get("ExposedPorts") or {}))
