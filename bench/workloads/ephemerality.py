"""ephemerality: a file written without a volume is gone once the instance is removed; written to a
volume it survives into the next instance of the same image. Containers and VMs (natively the harness's
throw-away overlay would make the answer an artefact of the harness, so native is not asked).
"""

from __future__ import annotations

import secrets
import shutil

from bench.environments.base import Environment, Job, Volume
from bench.workloads.base import Context, Measurement, Workload, check_exit

WRITE = 'echo {t} > /isobench-ephemeral.txt && mkdir -p {d} && echo {t} > {d}/isobench-ephemeral.txt && sync; true'
WRITE_NOVOL = 'echo {t} > /isobench-ephemeral.txt && sync; true'
READ = 'echo "ROOT $(cat /isobench-ephemeral.txt 2>/dev/null)"; echo "VOL $(cat {d}/isobench-ephemeral.txt 2>/dev/null)"'


def survived(output: str, key: str, token: str) -> bool:
    for line in output.splitlines():
        if line.startswith(key + " "):
            return token in line
    return False


class Ephemerality(Workload):
    name = "ephemerality"
    images = ("busybox",)
    metrics = {}
    environments = ("container", "runc", "vm")

    def iterations(self, profile) -> tuple[int, int]:
        return 0, 1

    def measure(self, env: Environment, ctx: Context, iteration: int) -> list[Measurement]:
        token = secrets.token_hex(8)
        img = ctx.image("busybox")
        supports_volume = env.name != "vm"
        vol = None
        if supports_volume:
            host_dir = (ctx.work_dir or ctx.paths.tmp) / f"ephemeral-{env.name}-{token}"
            vol = Volume(host_dir=host_dir, destination="/data")
        try:
            write = (WRITE if vol else WRITE_NOVOL).format(t=token, d="/data")
            check_exit(env.run(Job(image=img, argv=("/bin/sh", "-c", write), volume=vol, timeout_s=120)),
                       "ephemerality write", env.name)
            out = check_exit(env.run(Job(image=img, argv=("/bin/sh", "-c", READ.format(d="/data")), volume=vol,
                                         timeout_s=120)), "ephemerality read", env.name).output
        finally:
            if vol is not None:
                shutil.rmtree(vol.host_dir, ignore_errors=True)
        root = survived(out, "ROOT", token)
        with_vol = survived(out, "VOL", token) if vol else None
        ev = (f"wrote token {token} to /isobench-ephemeral.txt"
              + (" and to a volume at /data" if vol else " (this environment has no volumes: not asked)")
              + f"; removed the instance; a new instance of the same image read: {out.strip().replace(chr(10), '; ')}")
        ctx.facts.setdefault("ephemerality", {})[env.name] = {
            "without_volume_survived": root, "with_volume_survived": with_vol, "evidence": ev}
        return []


WORKLOAD = Ephemerality()
