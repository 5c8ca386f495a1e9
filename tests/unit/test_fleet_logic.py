"""Fleet logic without hosts: inventory checks (Ansible's own parser), folding callback events into
host outcomes, the project tarball, merging host runs and the fleet report page."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from bench import fleetresults
from bench.fleet import inventory, orchestrate
from bench.fleet.inventory import FleetHost
from core.errors import BenchError, UsageError

FIXTURE = Path(__file__).resolve().parents[2] / "results" / "fixtures" / "quick-tcg"
H = FleetHost(name="a", address="10.0.0.1", port=22, project_dir="/opt/isobench", state_root="/var/lib/isobench")


def _inv(tmp_path: Path, text: str) -> str:
    p = tmp_path / "inv.ini"
    p.write_text(text)
    return str(p)


def test_inventory_hosts_vars_and_order(tmp_path):
    inv = _inv(tmp_path, "[kvm]\nbig ansible_host=192.0.2.10 ansible_port=2222 isobench_root=/srv/ib\n"
                         "[v2]\nsmall ansible_host=192.0.2.11 isobench_dir=/opt/ib\n")
    hosts = inventory.load(inv)
    assert [h.name for h in hosts] == ["big", "small"]
    assert hosts[0] == FleetHost("big", "192.0.2.10", 2222, "/opt/isobench", "/srv/ib")
    assert hosts[1].project_dir == "/opt/ib" and hosts[1].state_root == "/var/lib/isobench"
    assert [h.name for h in inventory.load(inv, "small")] == ["small"]


@pytest.mark.parametrize("text, needle", [
    ("", "no hosts"),
    ("[x\nfoo\n", "Ansible cannot read it"),
    ("a ansible_host=192.0.2.1\nb ansible_host=192.0.2.1\n", "hosts a and b are the same host"),
    ("a ansible_port=99999\n", "ansible_port 99999 is out of range"),
    ("a ansible_port=ssh\n", "ansible_port 'ssh' is not a number"),
    ("a isobench_dir=/usr\n", "isobench_dir /usr is a system directory"),
    ("a isobench_dir=relative/dir\n", "must be an absolute path"),
    ("a isobench_root=/\n", "isobench_root '/' must be an absolute, non-system path"),
    ("a isobench_dir=/srv/x isobench_root=/srv/x/state\n", "must not contain each other"),
    ("a isobench_env=proxy\n", "isobench_env must be a mapping"),
    ("a isobench_env='{\"ISOBENCH_ROOT\": \"/x\"}'\n", "'ISOBENCH_ROOT' is not a settable variable name"),
    ("a isobench_env='{\"A\": [1]}'\n", "isobench_env: A must be a string"),
])
def test_inventory_bad_input_one_clear_error(tmp_path, text, needle):
    with pytest.raises(UsageError, match=needle):
        inventory.load(_inv(tmp_path, text))


def test_inventory_missing_file_and_unknown_limit(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        inventory.load(str(tmp_path / "nope.ini"))
    with pytest.raises(UsageError, match=r"--limit c: not in the inventory: c \(hosts: a\)"):
        inventory.load(_inv(tmp_path, "a\n"), "c")


def test_same_address_other_state_root_is_another_host():
    b = FleetHost("b", "10.0.0.1", 22, "/opt/isobench2", "/var/lib/isobench2")
    inventory.check_fleet([H, b], "inv")


def test_outcome_ok_needs_the_fetch():
    events = [{"event": "task", "task": "copy the project"}, {"event": "ok", "host": "a", "task": "copy the project"},
              {"event": "task", "task": "fetch the run"}, {"event": "ok", "host": "a", "task": "fetch the run"}]
    assert orchestrate.outcome_from_events(H, events, 0, "").status == "ok"
    out = orchestrate.outcome_from_events(H, events[:2], 0, "")
    assert out.status == "failed" and out.reason.startswith("the play ended without fetching the run")


def test_outcome_first_failure_wins_over_rescue_tasks():
    ev = [{"event": "failed", "host": "a", "task": "set up and bench", "stderr": "make setup failed: no pip"},
          {"event": "failed", "host": "a", "task": "fetch the host log", "msg": "not found", "ignore_errors": True},
          {"event": "failed", "host": "a", "task": "end the failed run", "msg": "non-zero return code"}]
    out = orchestrate.outcome_from_events(H, ev, 2, "")
    assert (out.task, out.reason) == ("set up and bench", "make setup failed: no pip")


def test_outcome_unreachable_and_failed_reasons():
    ev = [{"event": "task", "task": "set up and bench"},
          {"event": "unreachable", "host": "a", "task": "set up and bench",
           "msg": "Failed to connect to the host via ssh: Connection timed out during banner exchange"}]
    out = orchestrate.outcome_from_events(H, ev, 4, "")
    assert (out.status, out.task) == ("unreachable", "set up and bench")
    assert "banner exchange" in out.reason
    ev = [{"event": "failed", "host": "a", "task": "set up and bench", "rc": 1, "msg": "non-zero return code",
           "stderr": "log line\nmake setup failed in /opt/isobench (log on the host: /x/host.log)"}]
    out = orchestrate.outcome_from_events(H, ev, 2, "")
    assert out.status == "failed" and out.reason.startswith("make setup failed in /opt/isobench")
    out = orchestrate.outcome_from_events(H, [], 1, "ERROR! the playbook could not be read\n")
    assert out.status == "failed" and "playbook could not be read" in out.reason
    assert orchestrate.outcome_from_events(H, [], -2, "").status == "interrupted"


def test_project_tarball_has_sources_not_venv(tmp_path):
    tar = orchestrate.pack_project(tmp_path / "p.tar.gz")
    names = set(tarfile.open(tar).getnames())
    assert {"Makefile", "pyproject.toml", "scripts/setup.sh", "bench/fleet/host_run.sh"} <= names
    assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)


def _fleet_dir(tmp_path: Path, statuses: dict[str, str]) -> Path:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    hosts = []
    for name, status in statuses.items():
        if status == "ok":
            shutil.copytree(FIXTURE, fleet / name)
        hosts.append({"name": name, "address": f"{name}:22", "status": status, "task": "" if status == "ok"
                      else "set up and bench", "reason": "" if status == "ok" else "ssh: Connection timed out",
                      "seconds": 12.5})
    (fleet / fleetresults.FLEET_FILE).write_text(json.dumps({"fleet": 1, "hosts": hosts, "bench_args": []}))
    return fleet


def test_merge_adds_host_column(tmp_path):
    fleet = _fleet_dir(tmp_path, {"kvm1": "ok", "v2box": "ok", "gone": "unreachable"})
    fleetresults.merge(fleet)
    merged = pd.read_csv(fleet / "samples.csv")
    assert tuple(merged.columns) == fleetresults.FLEET_SAMPLE_COLUMNS
    n = len(pd.read_csv(FIXTURE / "samples.csv"))
    assert len(merged) == 2 * n and set(merged["host"]) == {"kvm1", "v2box"}
    loaded = fleetresults.load_fleet(fleet)
    assert list(loaded.runs) == ["kvm1", "v2box"]


def test_merge_with_no_host_back_writes_header_only(tmp_path):
    fleet = _fleet_dir(tmp_path, {"gone": "unreachable"})
    fleetresults.merge(fleet)
    assert (fleet / "samples.csv").read_text().strip() == ",".join(fleetresults.FLEET_SAMPLE_COLUMNS)


def test_unpack_refuses_a_run_without_samples(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "meta.json").write_text("{}")
    tb = tmp_path / "r.tar.gz"
    with tarfile.open(tb, "w:gz") as t:
        t.add(src, arcname=".")
    with pytest.raises(BenchError, match="no samples.csv"):
        fleetresults.unpack_host_run(tb, tmp_path / "host")
    assert not (tmp_path / "host").exists()


def test_fleet_report_names_every_host_side_by_side(tmp_path):
    from bench.report.fleet import ratios_table, render_fleet_report, summaries, systems_table

    fleet = _fleet_dir(tmp_path, {"kvm1": "ok", "v2box": "ok", "gone": "unreachable"})
    fleetresults.merge(fleet)
    loaded = fleetresults.load_fleet(fleet)
    sys_df = systems_table(loaded)
    assert list(sys_df.columns) == ["", "kvm1", "v2box", "gone"]
    aspects = list(sys_df[""])
    for row in ("kernel", "cgroup layout", "VM accelerator", "status"):
        assert row in aspects
    status = sys_df.set_index("").loc["status"]
    assert status["kvm1"] == "ok" and status["gone"].startswith("UNREACHABLE in 'set up and bench'")
    ratios = ratios_table(summaries(loaded))
    row = ratios[(ratios["benchmark"] == "startup") & (ratios["environment"] == "vm")].iloc[0]
    assert "(×" in row["kvm1"] and row["hosts max ÷ min"] == "×1.00"
    page = render_fleet_report(fleet).read_text()
    assert "Running across systems" in page and "UNREACHABLE" in page
    for name in ("kvm1", "v2box", "gone"):
        assert f">{name}<" in page
    assert (fleet / "kvm1" / "report.html").is_file() and 'href="kvm1/report.html"' in page
    assert "http://" not in page and "https://" not in page


def test_fleet_cli_refuses_compare_on_fleet_dir(tmp_path, capsys):
    from app import cli

    fleet = _fleet_dir(tmp_path, {"kvm1": "ok"})
    fleetresults.merge(fleet)
    assert cli.main(["compare", str(fleet), str(fleet / "kvm1")]) == 2
    assert "is a fleet result; pass one host's run" in capsys.readouterr().err


def test_fleet_run_bad_input_before_any_host(tmp_path, capsys):
    from app import cli

    inv = _inv(tmp_path, "a ansible_host=192.0.2.1\n")
    assert cli.main(["fleet", "run", "-i", inv, "--env", "docker"]) == 2
    assert "--env docker" in capsys.readouterr().err
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    assert cli.main(["fleet", "run", "-i", inv, "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
