"""Image builder speed and reproducibility (issue 2): ``python -m bench.micro.build``.

Measures, in private throw-away state roots:
* cold build of a busybox Dockerfile with ENV/COPY/RUN/CMD (base image creation, unpack, RUN),
* warm rebuild of the unchanged Dockerfile, in-process and through the ``isobench`` CLI (the target:
  under 0.5 s), and ``resolve`` + ``layer_dirs`` of the built image (the container start path),
* reproducibility: the same Dockerfile built from scratch in a second state root must give the same
  layer digests (and the same image digest).
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCKERFILE = """\
FROM busybox
ENV APP_HOME=/app GREETING="hello from isobench"
COPY app/ /app/
RUN echo "$GREETING" > /app/greeting && chmod 0755 /app/run.sh
CMD ["/app/run.sh"]
"""
REBUILD_TARGET_S = 0.5


def _context(base: Path) -> Path:
    ctx = base / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app" / "run.sh").write_text("#!/bin/sh\ncat /app/greeting\n")
    for i in range(20):
        (ctx / "app" / f"data{i}.txt").write_text(f"line {i}\n" * 200)
    return ctx


def _build(root: Path, ctx: Path, tag: str, no_cache: bool = False):
    from runtime.image.builder import BuildOptions, build
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    store = ImageStore(HostPaths(root=root).ensure())
    opts = BuildOptions(context_dir=ctx, dockerfile=ctx / "Dockerfile", tag=tag, no_cache=no_cache)
    t0 = time.perf_counter()
    rec = build(store, opts, log=lambda s: None)
    return rec, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="warm rebuilds to time (median reported)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.micro.build: needs root (RUN steps use namespaces and overlayfs)", file=sys.stderr)
        return 1
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    work = Path(tempfile.mkdtemp(prefix="isobench-bench-build-"))
    try:
        ctx = _context(work)
        root_a, root_b = work / "root-a", work / "root-b"
        rec_a, cold_s = _build(root_a, ctx, "bench-build:1")
        warm = [_build(root_a, ctx, "bench-build:1")[1] for _ in range(args.runs)]
        isobench = Path(sys.executable).with_name("isobench")
        cli = []
        env = dict(os.environ, ISOBENCH_ROOT=str(root_a))
        for _ in range(max(3, args.runs // 2)):
            t0 = time.perf_counter()
            subprocess.run([str(isobench), "image", "build", "-q", "-t", "bench-build:1", str(ctx)], check=True,
                           env=env, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t0)
        start_path = []
        for _ in range(args.runs):
            ImageStore._record_cache.clear()
            t0 = time.perf_counter()
            store = ImageStore(HostPaths(root=root_a))
            store.layer_dirs(store.resolve("bench-build:1"))
            start_path.append(time.perf_counter() - t0)
        rec_b, cold_b_s = _build(root_b, ctx, "bench-build:1")
        same_layers = [lr.digest for lr in rec_a.layers] == [lr.digest for lr in rec_b.layers]
        same_image = rec_a.manifest_digest == rec_b.manifest_digest

        warm_med, cli_med = statistics.median(warm), statistics.median(cli)
        print(f"cold build (fresh state root, incl. busybox base + RUN): {cold_s:.3f} s "
              f"(second fresh root: {cold_b_s:.3f} s)")
        print(f"warm rebuild, unchanged Dockerfile, in-process: median {warm_med * 1000:.1f} ms "
              f"(min {min(warm) * 1000:.1f}, max {max(warm) * 1000:.1f}, n={len(warm)})")
        print(f"warm rebuild via `isobench image build` CLI (incl. Python start): median {cli_med * 1000:.1f} ms "
              f"(n={len(cli)})")
        print(f"resolve + layer_dirs of the built image (start path, cold per-process cache): "
              f"median {statistics.median(start_path) * 1000:.2f} ms")
        print(f"reproducibility: layer digests {'IDENTICAL' if same_layers else 'DIFFERENT'}, "
              f"image digest {'IDENTICAL' if same_image else 'DIFFERENT'} ({rec_a.manifest_digest[:19]}...)")
        ok = cli_med < REBUILD_TARGET_S and same_layers
        print(f"target: warm rebuild < {REBUILD_TARGET_S} s and identical layers: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
