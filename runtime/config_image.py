"""The container's process as Docker computes it: image config (Env, Cmd, Entrypoint, WorkingDir, User)
merged with the command line.

Pure functions so the precedence rules are unit tested: ``--entrypoint`` replaces the image's
Entrypoint *and* drops its Cmd; a command replaces Cmd; ``-e`` overrides the image's Env by key;
``-w``/``-u`` override WorkingDir/User.

The image config is JSON from an image someone else built or imported, so each field's JSON type is
checked here (:func:`image_fields`) and a wrong one is one :class:`ImageError` line naming the image
and the field, not a ``TypeError`` deep in the start path.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ContainerError, ImageError
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


def _config_member(image_config: object, image: str) -> dict:
    """The image config's ``config`` object ({} when absent or null)."""
    if not isinstance(image_config, dict):
        raise ImageError(f"image {image!r}: config is a JSON {_json_type(image_config)}, not an object")
    cfg = image_config.get("config")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ImageError(f"image {image!r}: config field 'config' is a JSON {_json_type(cfg)}, not an object")
    return cfg


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _str_list(cfg: dict, field: str, image: str) -> tuple[str, ...]:
    value = cfg.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ImageError(f"image {image!r}: config field {field!r} is not an array of strings "
                         f"(got a JSON {_json_type(value)})")
    return tuple(value)


def _str(cfg: dict, field: str, image: str) -> str:
    value = cfg.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImageError(f"image {image!r}: config field {field!r} is not a string (got a JSON {_json_type(value)})")
    return value


def command_of(config: ContainerConfig, image_cfg: dict) -> tuple[str, ...]:
    if config.entrypoint is not None:
        entry = tuple(a for a in config.entrypoint if a != "") if config.entrypoint != ("",) else ()
        cmd = tuple(config.command or ())
    else:
        entry = _str_list(image_cfg, "Entrypoint", config.image)
        cmd = tuple(config.command) if config.command is not None else _str_list(image_cfg, "Cmd", config.image)
    argv = entry + cmd
    if not argv:
        raise ContainerError(f"image {config.image!r} has no Cmd or Entrypoint and no command was given")
    return argv


def process_spec(config: ContainerConfig, image_config: dict, hostname: str) -> ProcessSpec:
    """Merge ``image_config`` (the full OCI image config; its ``config`` member) with ``config``.
    Raises ImageError when a field of the image config has the wrong JSON type."""
    cfg = _config_member(image_config, config.image)
    env = merge_env(_str_list(cfg, "Env", config.image), config.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    workdir = config.workdir or _str(cfg, "WorkingDir", config.image) or "/"
    user = config.user or _str(cfg, "User", config.image) or "0"
    return ProcessSpec(argv=command_of(config, cfg), env=tuple(f"{k}={v}" for k, v in env.items()),
                       workdir=workdir, user=user)


def exposed_ports(image_config: dict, image: str = "?") -> tuple[str, ...]:
    """``ExposedPorts`` keys (``"80/tcp"``) for ``-P``."""
    ports = _config_member(image_config, image).get("ExposedPorts")
    if ports is None:
        return ()
    if not isinstance(ports, dict):
        raise ImageError(f"image {image!r}: config field 'ExposedPorts' is not an object "
                         f"(got a JSON {_json_type(ports)})")
    return tuple(sorted(ports))
