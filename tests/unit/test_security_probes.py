"""The probe library's pure parts: verdicts from sample outputs, placeholder rendering, the table."""

from __future__ import annotations

from runtime.security import probes
from runtime.security.probes import PROBES


def test_every_probe_has_argv_verdict_and_description():
    for name, p in PROBES.items():
        assert p.argv and callable(p.blocked_if) and p.description, name
        if p.needs_helper:
            assert p.argv[0] == probes.HELPER


def test_issue_probe_list_is_covered():
    for name in ("see_host_pids", "read_kcore", "host_devices", "mount_fs", "load_module", "write_proc_sys",
                 "write_sysrq", "set_hostname", "set_time", "raw_socket", "host_loopback", "cgroup_write",
                 "ptrace_host", "device_node", "keyctl", "bpf", "host_runtime_exe"):
        assert name in PROBES


def test_helper_verdicts():
    v = PROBES["keyctl"].blocked_if
    assert v(1, "DENIED keyctl: Operation not permitted\n")
    assert not v(0, "OK keyctl\n")
    assert not PROBES["load_module"].blocked_if(0, "REACHED init_module: Exec format error\n")
    assert not v(126, "exec: /isoprobe/isoprobe: not found")  # a helper that did not run proves nothing


def test_shell_verdicts():
    assert PROBES["see_host_pids"].blocked_if(1, "0\n")
    assert not PROBES["see_host_pids"].blocked_if(0, "1\n")
    assert PROBES["read_kcore"].blocked_if(0, "0\n") and not PROBES["read_kcore"].blocked_if(0, "4559\n")
    assert PROBES["host_devices"].blocked_if(0, "null\nzero\nfull\nrandom\nurandom\ntty\npts\nshm\n")
    assert not PROBES["host_devices"].blocked_if(0, "null\nzero\nvda\nkmsg\n")
    assert not PROBES["mount_fs"].blocked_if(0, "MOUNTED\n")
    assert PROBES["host_loopback"].blocked_if(0, "nc: can't connect to remote host (127.0.0.1): Connection refused")
    assert not PROBES["host_loopback"].blocked_if(0, probes.LOOPBACK_TOKEN + "\n")
    assert not PROBES["cgroup_write"].blocked_if(0, "WROTE /sys/fs/cgroup/pids/pids.max\nTRIED 1\n")
    assert not PROBES["host_runtime_exe"].blocked_if(0, "HOSTEXE /proc/7 /usr/bin/python3.11\n")
    assert not PROBES["host_runtime_exe"].blocked_if(0, "STATE /var/lib/isobench\n")


def test_render_fills_placeholders_but_not_shell_expansions():
    argv = probes.render(PROBES["host_loopback"].argv, {"loopback_port": 4242})
    assert "4242" in argv[-1]
    cg = probes.render(PROBES["cgroup_write"].argv, {"loopback_port": 1})
    assert "${l#*:}" in cg[-1]


def test_run_all_and_table():
    def execute(name, probe, argv):
        return (0, "OK") if name == "keyctl" else (1, "DENIED")

    res = probes.run_all(execute, {"host_pid": 1, "loopback_port": 1, "state_root": "/x"},
                         names=["keyctl", "bpf"])
    assert res == {"keyctl": False, "bpf": True}
    table = probes.format_table({"runc": res, "isobench": {"bpf": True}})
    assert "NOT BLOCKED" in table and "1/2" in table and "1/1" in table
