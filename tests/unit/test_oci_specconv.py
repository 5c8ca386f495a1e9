"""The spec converter and the bundle reader: options -> config.json -> the runtime's types, and bad
bundles as one line naming the field."""

from __future__ import annotations

import json

import pytest

from runtime.oci import bundle, specconv
from runtime.rootfs import ocimounts
from runtime.spec import (ContainerConfig, MountSpec, NetworkSpec, Resources, SecuritySpec, ThrottleDevice)
from core import syscalls as S

IMAGE = {"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": ["/entry"], "WorkingDir": "/w",
                    "User": "7"}}


def _spec(config: ContainerConfig, **host) -> dict:
    proc = specconv.process_spec(config, IMAGE, "h")
    kw = dict(rootfs="/r", hostname="h", resolve_device=lambda p: (8, 0))
    kw.update(host)
    return specconv.to_spec(config, proc, specconv.SpecHost(**kw))


def test_process_rules_and_user():
    s = _spec(ContainerConfig(image="img", command=("x",), env=("A=2", "B")), uid=7, gid=8, home="/home/u")
    p = s["process"]
    assert p["args"] == ["/entry", "x"]
    assert "A=2" in p["env"] and "B=" in p["env"] and "HOME=/home/u" in p["env"]
    assert p["cwd"] == "/w" and p["user"] == {"uid": 7, "gid": 8, "additionalGids": [8]}
    assert p["capabilities"]["effective"] == [] and "CAP_CHOWN" in p["capabilities"]["bounding"]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]


def test_entrypoint_override_drops_cmd():
    s = _spec(ContainerConfig(image="img", entrypoint=("/bin/echo",)))
    assert s["process"]["args"] == ["/bin/echo"]


def test_limits_table():
    r = Resources(cpu_quota_us=50_000, cpu_shares=512, cpuset_cpus="0", memory_bytes=64 << 20,
                  memory_swap_bytes=128 << 20, pids_max=10,
                  device_write_bps=(ThrottleDevice("/dev/vda", 1_000_000),))
    res = _spec(ContainerConfig(image="img", resources=r))["linux"]["resources"]
    assert res["cpu"] == {"quota": 50_000, "period": 100_000, "shares": 512, "cpus": "0"}
    assert res["memory"] == {"limit": 64 << 20, "swap": 128 << 20} and res["pids"] == {"limit": 10}
    assert res["blockIO"] == {"throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1_000_000}]}
    assert _spec(ContainerConfig(image="img"))["linux"]["resources"] == {}


def test_limits_round_trip_through_the_bundle(tmp_path):
    r = Resources(cpu_quota_us=50_000, memory_bytes=64 << 20, pids_max=10,
                  device_read_bps=(ThrottleDevice("/dev/vda", 5),))
    b = bundle.parse(_spec(ContainerConfig(image="img", resources=r)), tmp_path)
    assert b.resources == Resources(cpu_quota_us=50_000, memory_bytes=64 << 20, pids_max=10,
                                    device_read_bps=(ThrottleDevice("8:0", 5),))


def test_namespaces_by_option():
    def kinds(**kw):
        return [n["type"] for n in _spec(ContainerConfig(image="img", **kw))["linux"]["namespaces"]]
    assert kinds() == ["pid", "network", "ipc", "uts", "mount"]
    assert "network" not in kinds(network=NetworkSpec(mode="host"))
    s = _spec(ContainerConfig(image="img", userns="remap"))
    assert s["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100_000, "size": 65_536}]
    assert "cgroup" in [n["type"] for n in _spec(ContainerConfig(image="img"), cgroupns=True)["linux"]["namespaces"]]


def test_security_default_privileged_and_unconfined():
    s = _spec(ContainerConfig(image="img"))
    assert s["process"]["noNewPrivileges"] is True
    sec = s["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO" and all("includes" not in x for x in sec["syscalls"])
    assert "/proc/kcore" in s["linux"]["maskedPaths"] and "/proc/sys" in s["linux"]["readonlyPaths"]
    p = _spec(ContainerConfig(image="img", security=SecuritySpec(privileged=True)))
    assert "seccomp" not in p["linux"] and "maskedPaths" not in p["linux"]
    assert "CAP_SYS_ADMIN" in p["process"]["capabilities"]["bounding"]
    u = _spec(ContainerConfig(image="img", security=SecuritySpec(seccomp="unconfined")))
    assert "seccomp" not in u["linux"]
    assert "CAP_NET_ADMIN" in _spec(ContainerConfig(image="img", security=SecuritySpec(cap_add=("NET_ADMIN",))))[
        "process"]["capabilities"]["bounding"]


def test_seccomp_includes_follow_caps():
    """Docker's profile allows e.g. the mount family only with CAP_SYS_ADMIN: resolved per cap set."""
    def allowed(caps):
        doc = specconv.seccomp_json(SecuritySpec(), frozenset(caps))
        return {n for x in doc["syscalls"] if x["action"] == "SCMP_ACT_ALLOW" and not x.get("args") for n in x["names"]}
    assert "read" in allowed({"CHOWN"})
    assert len(allowed({"SYS_ADMIN", "CHOWN"})) > len(allowed({"CHOWN"}))


def test_mounts_volumes_init_and_etc():
    cfg = ContainerConfig(image="img", read_only_rootfs=True,
                          mounts=(MountSpec("/data", "/host", "bind", True), MountSpec("/v", "vol", "volume"),
                                  MountSpec("/t", type="tmpfs")))
    s = _spec(cfg, init_binary="/x/init", etc_files=(("/etc/hosts", "/c/hosts"),), volumes_dir="/vols")
    by_dest = {m["destination"]: m for m in s["mounts"]}
    assert [m["destination"] for m in s["mounts"]][:6] == [m["destination"] for m in specconv.DEFAULT_MOUNTS]
    assert by_dest["/data"] == {"destination": "/data", "type": "bind", "source": "/host", "options": ["rbind", "ro"]}
    assert by_dest["/v"]["source"] == "/vols/vol/_data" and by_dest["/t"]["type"] == "tmpfs"
    assert by_dest["/dev/init"]["source"] == "/x/init" and by_dest["/etc/hosts"]["source"] == "/c/hosts"
    assert s["process"]["args"][:2] == ["/dev/init", "--"] and s["root"] == {"path": "/r", "readonly": True}


def test_overlay_annotations_round_trip(tmp_path):
    s = _spec(ContainerConfig(image="img"), overlay=(("/l1", "/l2"), "/u", "/w"), image_digest="sha256:x")
    b = bundle.parse(json.loads(json.dumps(s)), tmp_path)
    assert b.overlay == (("/l1", "/l2"), "/u", "/w")
    assert dict(b.annotations)[specconv.ANN_IMAGE_DIGEST] == "sha256:x"
    assert b.namespace("pid") == "" and b.namespace("user") is None


def test_bundle_write_load_and_relative_root(tmp_path):
    s = _spec(ContainerConfig(image="img"), rootfs="rootfs")
    bundle.make(tmp_path / "b", s)
    b = bundle.load(tmp_path / "b")
    assert b.root_path == str(tmp_path / "b" / "rootfs") and b.process.args == ("/entry", "sh")
    assert b.process.bounding and b.process.no_new_privileges


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("ociVersion"), "ociVersion"),
    (lambda s: s["process"].update(args=[]), "process: args must be a non-empty array"),
    (lambda s: s["process"].update(cwd="rel"), "cwd must be an absolute path"),
    (lambda s: s["process"]["user"].update(uid="0"), "uid and gid must be integers"),
    (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]), "unknown rlimit"),
    (lambda s: s["root"].pop("path"), "root.path is missing"),
    (lambda s: s["mounts"].append({"destination": "rel", "type": "tmpfs"}), "destination must be an absolute"),
    (lambda s: s["linux"]["namespaces"].append({"type": "time"}), "type must be one of"),
    (lambda s: s["linux"]["namespaces"].append({"type": "pid"}), "listed twice"),
    (lambda s: s["linux"]["resources"].update(memory={"limit": "1g"}), "limit must be an integer"),
])
def test_bad_bundles_are_one_line(tmp_path, mutate, message):
    s = json.loads(json.dumps(_spec(ContainerConfig(image="img"))))
    mutate(s)
    with pytest.raises(bundle.BundleError) as info:
        bundle.parse(s, tmp_path).resources
    assert message in str(info.value) and "\n" not in str(info.value) and "config.json" in str(info.value)


def test_missing_and_corrupt_config(tmp_path):
    with pytest.raises(bundle.BundleError, match="no config.json"):
        bundle.load(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(bundle.BundleError, match="not valid JSON"):
        bundle.load(tmp_path)


def test_mount_option_table():
    flags, prop, data = ocimounts.parse_options(("nosuid", "noexec", "ro", "rw", "mode=755", "rprivate", "size=1k"))
    assert flags == S.MS_NOSUID | S.MS_NOEXEC and prop == S.MS_PRIVATE | S.MS_REC and data == "mode=755,size=1k"
    mounts, devs = ocimounts.plan((bundle.OciMount("/x", "bind", "/h", ("ro",)),),
                                  (bundle.OciDevice("/dev/fuse", "c", 10, 229, 0o600),))
    assert mounts[0].is_bind and mounts[0].flags & S.MS_RDONLY
    assert devs[0].rdev == __import__("os").makedev(10, 229) and devs[0].mode & 0o777 == 0o600
