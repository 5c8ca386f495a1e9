"""Pure rules of the container runtime: image config merging, validation checks, namespace flags, path
resolution inside a rootfs, overlay options, exit codes and the `isobench run` option parser."""

from __future__ import annotations

import os
import signal

import pytest

from app.cli import build_parser
from runtime import namespaces
from core import syscalls
from app.commands.container import config_from_args, parse_signal, parse_volume
from runtime.config_image import command_of, merge_env, process_spec
from core.errors import ContainerError, UsageError
from runtime.lifecycle.process import exit_code_of
from runtime.rootfs.mounts import overlay_options, secure_join
from runtime.spec import ContainerConfig, MountSpec, NetworkSpec, Resources
from runtime.validate import validate

IMG = {"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": None, "WorkingDir": "/srv",
                  "User": "nobody"}}


def cfg(**kw) -> ContainerConfig:
    return ContainerConfig(image="busybox", **kw)


def test_image_defaults_apply():
    p = process_spec(cfg(), IMG, "h1")
    assert p.argv == ("sh",) and p.workdir == "/srv" and p.user == "nobody"
    assert "PATH=/bin" in p.env and "A=1" in p.env and "HOSTNAME=h1" in p.env


def test_command_and_env_override_image():
    p = process_spec(cfg(command=("echo", "x"), env=("A=2", "B"), workdir="/tmp", user="0"), IMG, "h")
    assert p.argv == ("echo", "x") and p.workdir == "/tmp" and p.user == "0"
    assert "A=2" in p.env and "B=" in p.env and "A=1" not in p.env


def test_entrypoint_override_drops_image_cmd():
    img = {"config": {"Entrypoint": ["/init"], "Cmd": ["--serve"]}}
    assert command_of(cfg(), img["config"]) == ("/init", "--serve")
    assert command_of(cfg(entrypoint=("env",)), img["config"]) == ("env",)
    assert command_of(cfg(command=("a",)), img["config"]) == ("/init", "a")


def test_no_command_is_an_error():
    with pytest.raises(ContainerError, match="no Cmd or Entrypoint"):
        command_of(cfg(), {})


def test_merge_env_default_path_kept_order():
    assert merge_env(["A=1", "B=2"], ("A=3",)) == {"A": "3", "B": "2"}


@pytest.mark.parametrize("config,match", [
    (cfg(mounts=(MountSpec(destination="data", source="/tmp"),)), "absolute container path"),
    (cfg(mounts=(MountSpec(destination="/d", source="/no/such/dir/x"),)), "does not exist"),
    (cfg(mounts=(MountSpec(destination="/d", source="bad name!", type="volume"),)), "volume name"),
    (cfg(workdir="rel"), "--workdir"),
    (cfg(name="-bad"), "--name"),
    (cfg(resources=Resources(cpu_quota_us=100_000 * (os.cpu_count() or 1) * 4)), "exceeds the"),
    (cfg(resources=Resources(cpu_quota_us=-5)), "greater than 0"),
    (cfg(resources=Resources(cpu_shares=1)), "--cpu-shares"),
    (cfg(resources=Resources(cpuset_cpus="0-999")), "--cpuset-cpus"),
    (cfg(resources=Resources(memory_bytes=1024)), "--memory"),
    (cfg(resources=Resources(memory_bytes=64 << 20, memory_swap_bytes=1 << 20)), "--memory-swap"),
    (cfg(resources=Resources(pids_max=0)), "--pids-limit"),
    (cfg(network=NetworkSpec(mode="weird")), "--network"),
])
def test_validation_rejects_with_one_line(config, match):
    with pytest.raises(UsageError, match=match) as exc:
        validate(config)
    assert "\n" not in str(exc.value)


def test_validation_accepts_sane_config(tmp_path):
    validate(cfg(name="web-1", workdir="/w", mounts=(MountSpec(destination="/d", source=str(tmp_path)),
                                                      MountSpec(destination="/v", source="vol1", type="volume")),
                 resources=Resources(cpu_quota_us=50_000, memory_bytes=32 << 20, pids_max=20)))


def test_namespace_flags():
    f = namespaces.child_flags(cfg(network=NetworkSpec(mode="none")), cgroupns=False)
    assert f & syscalls.CLONE_NEWNET and f & syscalls.CLONE_NEWNS and not f & syscalls.CLONE_NEWCGROUP
    assert not namespaces.child_flags(cfg(network=NetworkSpec(mode="host")), cgroupns=True) & syscalls.CLONE_NEWNET
    assert namespaces.child_flags(cfg(), cgroupns=True) & syscalls.CLONE_NEWCGROUP
    assert namespaces.id_map_line() == "0 100000 65536\n"
    assert namespaces.joined_namespaces("none", True, False)[-1] == "user"
    assert namespaces.joined_namespaces("host", False, False)[-1] == "mnt"
    assert "net" not in namespaces.joined_namespaces("host", False, False)


def test_secure_join_never_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")           # absolute: resolved inside root
    os.symlink("../../..", root / "etc/up")    # climbs: clamped at root
    assert secure_join(str(root), "/abs/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/etc/up/x") == f"{root}/x"
    assert secure_join(str(root), "/../../x") == f"{root}/x"
    assert secure_join(str(root), "/") == str(root)


def test_overlay_options_topmost_first():
    assert overlay_options(("/l0", "/l1"), "/u", "/w") == "lowerdir=/l1:/l0,upperdir=/u,workdir=/w"


def test_exit_codes():
    assert exit_code_of(3 << 8) == 3
    assert exit_code_of(signal.SIGKILL) == 137
    assert exit_code_of(signal.SIGTERM) == 143


def test_parse_volume_kinds():
    assert parse_volume("/h:/c:ro") == MountSpec(destination="/c", source="/h", type="bind", read_only=True)
    assert parse_volume("data:/c").type == "volume"
    with pytest.raises(UsageError):
        parse_volume("./rel:/c")
    with pytest.raises(UsageError):
        parse_volume("justone")


def test_parse_signal():
    assert parse_signal("TERM") == signal.SIGTERM and parse_signal("SIGKILL") == 9 and parse_signal("10") == 10
    with pytest.raises(UsageError):
        parse_signal("NOPE")


def _args(*argv):
    return build_parser().parse_args(["run", *argv])


def test_run_options_to_config():
    c = config_from_args(_args("--rm", "--name", "x", "-e", "A=1", "-w", "/w", "-u", "1:2", "-h", "hn",
                               "--memory", "64m", "--cpus", "0.5", "--pids-limit", "20", "--tmpfs", "/t",
                               "--network", "none", "--userns", "remap", "--init", "--read-only",
                               "busybox", "sh", "-c", "exit 3"))
    assert c.command == ("sh", "-c", "exit 3") and c.name == "x" and c.hostname == "hn"
    assert c.resources.memory_bytes == 64 << 20 and c.resources.cpu_quota_us == 50_000
    assert c.resources.pids_max == 20 and c.userns == "remap" and c.init and c.read_only_rootfs
    assert c.mounts == (MountSpec(destination="/t", type="tmpfs"),)


@pytest.mark.parametrize("argv,match", [
    (("--memory", "1x"), "--memory"),
    (("--cpus", "-1"), "--cpus"),
    (("--cpus", "999"), "exceeds"),
    (("--network", "nope"), "--network"),
    (("--userns", "x"), "--userns"),
])
def test_run_bad_options(argv, match):
    with pytest.raises(UsageError, match=match):
        config_from_args(_args(*argv, "busybox"))


@pytest.mark.parametrize("bad, field", [
    ({"config": {"Env": "A=1"}}, "Env"), ({"config": {"Env": [1]}}, "Env"),
    ({"config": {"Cmd": 3}}, "Cmd"), ({"config": {"Entrypoint": {"a": 1}}}, "Entrypoint"),
    ({"config": {"WorkingDir": 7}}, "WorkingDir"), ({"config": {"User": ["root"]}}, "User"),
    ({"config": []}, "config"),
])
def test_image_config_with_wrong_json_type_is_one_image_error(bad, field):
    from core.errors import ImageError

    with pytest.raises(ImageError) as exc:
        process_spec(cfg(), bad, "h")
    msg = str(exc.value)
    assert "'busybox'" in msg and repr(field) in msg and "\n" not in msg


def test_exposed_ports_wrong_type_is_an_image_error():
    from runtime.config_image import exposed_ports
    from core.errors import ImageError

    assert exposed_ports({"config": {"ExposedPorts": {"80/tcp": {}}}}) == ("80/tcp",)
    assert exposed_ports({"config": None}) == ()
    with pytest.raises(ImageError, match="'web'.*ExposedPorts"):
        exposed_ports({"config": {"ExposedPorts": ["80/tcp"]}}, "web")
