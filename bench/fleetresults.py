"""The on-disk format of a fleet run (``isobench fleet run``), beside :mod:`bench.results`.

A fleet directory ``results/fleet-<UTC time>/`` holds:

- ``fleet.json``: the inventory, the bench arguments, the controller, and per host its status
  (``ok``, ``failed``, ``unreachable``, ``interrupted``), the reason when not ok, the task it failed
  in, its duration, project directory and state root.
- ``<host>/``: that host's own run directory, exactly as ``isobench bench`` wrote it there (pyperf
  suites per environment, samples.csv, meta.json, facts.json, failures.json, logs/) plus
  ``fleet-host.log``; ``isobench report``/``compare``/``check`` read it like any run.
- ``samples.csv``: every host's samples in one table, :data:`FLEET_SAMPLE_COLUMNS` (a ``host`` column
  in front of :data:`bench.results.SAMPLE_COLUMNS`); header only when no host returned a run.
- ``logs/<host>.ansible.log``: the controller's view of each host's play (one JSON event a line).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import SAMPLE_COLUMNS, Run, load_run
from core.errors import BenchError

FLEET_FILE = "fleet.json"
FLEET_SAMPLE_COLUMNS = ("host", *SAMPLE_COLUMNS)


@dataclass
class Fleet:
    """A loaded fleet: ``info`` is fleet.json, ``runs`` the hosts that returned a run (inventory order),
    ``samples`` the merged DataFrame with :data:`FLEET_SAMPLE_COLUMNS`."""

    path: Path
    info: dict
    runs: dict[str, Run]
    samples: Any

    @property
    def hosts(self) -> list[dict]:
        return list(self.info.get("hosts") or [])


def is_fleet(path: str | Path) -> bool:
    return (Path(path) / FLEET_FILE).is_file()


def unpack_host_run(tarball: Path, target: Path) -> Path:
    """Extract a host's fetched run (tar of its run directory) into ``target`` (data filter: no
    absolute paths, ``..``, devices or links out of the tree); a run without samples.csv is an error."""
    if not tarball.is_file():
        raise BenchError(f"{tarball}: the host's run was not fetched")
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError(f"{tarball}: cannot unpack the host's run ({exc})") from exc
    if not (tmp / "samples.csv").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError(f"{tarball}: the host's run has no samples.csv")
    tmp.rename(target)
    return target


def read_info(path: Path) -> dict:
    p = path / FLEET_FILE
    try:
        info = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"{p}: cannot read the fleet record ({exc})") from exc
    if not isinstance(info, dict) or not isinstance(info.get("hosts"), list):
        raise BenchError(f"{p}: not a fleet record (no hosts list)")
    return info


def host_runs(path: Path, info: dict) -> dict[str, Run]:
    """The run of every host marked ok, loaded with :func:`bench.results.load_run`."""
    runs = {}
    for h in info["hosts"]:
        name = str(h.get("name", ""))
        if h.get("status") == "ok" and (path / name / "samples.csv").is_file():
            runs[name] = load_run(path / name)
    return runs


def merged_samples(runs: dict[str, Run]):
    import pandas as pd

    frames = [r.samples.assign(host=name)[list(FLEET_SAMPLE_COLUMNS)] for name, r in runs.items()]
    if not frames:
        return pd.DataFrame(columns=list(FLEET_SAMPLE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def merge(path: str | Path) -> Path:
    """Write ``samples.csv`` of the fleet directory from its hosts' runs; returns its path."""
    path = Path(path)
    df = merged_samples(host_runs(path, read_info(path)))
    out = path / "samples.csv"
    tmp = path / ".samples.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def load_fleet(path: str | Path) -> Fleet:
    path = Path(path).resolve()
    info = read_info(path)
    runs = host_runs(path, info)
    return Fleet(path=path, info=info, runs=runs, samples=merged_samples(runs))
