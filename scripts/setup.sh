#!/usr/bin/env bash
# One idempotent set-up for `make setup`: Debian packages the project drives, then .venv.
# Seconds when already done: dpkg-query finds nothing missing and the venv stamp matches pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  python3 python3-venv python3-dev gcc libc6-dev libseccomp2 pkg-config make git
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev dnsmasq-base
  busybox-static linux-image-amd64 runc crun iptables nftables iproute2 procps util-linux psmisc
  e2fsprogs debootstrap skopeo umoci ca-certificates podman conmon docker-registry
  sysbench fio iperf3 wrk stress-ng chromium
  openssh-client openssh-server
)

missing_host=""
[ -r /etc/debian_version ] || missing_host+=" a Debian-like host (/etc/debian_version not found)"
command -v apt-get >/dev/null 2>&1 || missing_host+=" apt-get"
command -v dpkg-query >/dev/null 2>&1 || missing_host+=" dpkg-query"
[ "$(id -u)" = 0 ] || missing_host+=" root (run as root: isobench creates namespaces, cgroups, bridges and libvirt domains)"
if [ -n "$missing_host" ]; then
  echo "isobench setup: cannot continue, missing:$missing_host" >&2
  echo "isobench setup: packages it would install: ${PKGS[*]}" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "isobench setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Update once per machine (or when the lists are gone); apt-get install needs them.
  if [ ! -e /var/lib/apt/periodic/isobench-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    apt-get update -q
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/isobench-updated
  fi
  # Packages must not start their daemons (sshd, libvirtd, ...): isobench and its tests start what
  # they need themselves. Debian's policy-rc.d convention (exit 101 = "not allowed"), unless one exists.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

PY=${PYTHON:-python3}
stamp_want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $($PY -c 'import sys;print(sys.version.split()[0])')"
first_line() { local l=""; [ -e "$1" ] && { IFS= read -r -n 64 l < "$1" || true; }; printf "%s" "$l"; }
# pip's console script, as bin/isobench or (moved aside for the C client, below) bin/isobench-py
# (any "#!" script: the C client is an ELF binary; the shebang itself is cut at 64 bytes, and for a
# long venv path pip writes "#!/bin/sh" plus an exec line, so "python" may not be in it)
py_entry() { [[ "$(first_line .venv/bin/isobench)" == '#!'* || "$(first_line .venv/bin/isobench-py)" == '#!'* ]]; }
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.isobench-stamp 2>/dev/null)" != "$stamp_want" ] || ! py_entry; then
  echo "isobench setup: creating .venv"
  $PY -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # compat mode = a plain path entry in a .pth file; the default finder-based editable install costs
  # ~28 ms of import time on every `isobench` command (CLI start-up is measured against `runc run`)
  .venv/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat
  echo "$stamp_want" > .venv/.isobench-stamp
fi

# The C helpers (csrc/: container init, monitor shim, probe helper, guest USER helper, the isobench
# client), compiled once into .venv/libexec/isobench; a failed compile stops set-up (nothing at run time
# compiles or falls back to a Python stand-in). Only changed sources are recompiled.
.venv/bin/python -m core.cbin build

# The `isobench` command: the C client of the isobench server (csrc/client.c) in front of pip's
# Python console script, which moves to isobench-py (the client execs it when no server runs). pip
# rewrites bin/isobench as the Python script on every install, so both orders are handled.
bin=.venv/bin
if [[ "$(first_line "$bin/isobench")" == '#!'* ]]; then
  mv -f "$bin/isobench" "$bin/isobench-py"
fi
if ! cmp -s .venv/libexec/isobench/isobench-client "$bin/isobench"; then
  cp -f .venv/libexec/isobench/isobench-client "$bin/.isobench.tmp"
  mv -f "$bin/.isobench.tmp" "$bin/isobench"   # rename: atomic for a command running right now
  echo "isobench setup: installed the isobench client (.venv/bin/isobench; \`isobench server start\` makes it fast)"
fi
# `isobench-runtime` (the OCI runtime CLI: conmon runs one process per verb, so start-up is its cost):
# the same C client, built with -DOCI_RUNTIME, served by the isobench server (see csrc/client.c: the
# worker does create's work, the client spawns the container's process as its own child). Its
# fallback without a server, isobench-runtime-py, replaces pip's console script: Python with -I -S
# (no site: no .pth files, no setuptools' distutils hack, no user site; ~3 ms of every verb), the
# project, then the venv's site-packages, on sys.path by hand. A shebang longer than the kernel takes
# gets pip's sh-then-python form. Both are rewritten whenever pip has put its own script back.
.venv/bin/python - "$(pwd)" <<'EOF'
import os, sys, sysconfig
project = sys.argv[1]
py = f"{project}/.venv/bin/python3"
if len(py) < 200:
    head = f"#!{py} -IS"
else:
    head = "#!/bin/sh\n'''exec' " + repr(py) + ' -IS "$0" "$@"\n' + "' '''"
text = (f"{head}\n# isobench-runtime, written by scripts/setup.sh (lean start-up: see there)\nimport sys\n"
        f"sys.prefix = sys.exec_prefix = {project + '/.venv'!r}  # what site would set (C helpers: libexec)\n"
        f"sys.path[:0] = [{project!r}, {sysconfig.get_paths()['purelib']!r}]\n"
        "from app.oci_cli import entry\nsys.exit(entry())\n")
dest = f"{project}/.venv/bin/isobench-runtime-py"
try:
    with open(dest) as f:
        same = f.read() == text
except (OSError, UnicodeDecodeError):
    same = False
if not same:
    with open(dest + ".tmp", "w") as f:
        f.write(text)
    os.chmod(dest + ".tmp", 0o755)
    os.replace(dest + ".tmp", dest)  # rename: atomic for a verb running right now
EOF
if ! cmp -s .venv/libexec/isobench/isobench-runtime-client "$bin/isobench-runtime"; then
  cp -f .venv/libexec/isobench/isobench-runtime-client "$bin/.isobench-runtime.tmp"
  mv -f "$bin/.isobench-runtime.tmp" "$bin/isobench-runtime"
fi
# Byte-compile the project: where PYTHONDONTWRITEBYTECODE is set (as on these machines) Python never
# writes .pyc files, and every CLI run and lazy import on the start path would compile its sources
# again (~2x the CLI's start-up). compileall writes them regardless and skips up-to-date ones.
.venv/bin/python -m compileall -q -j 0 core runtime vmharness bench app tests >/dev/null
echo "isobench setup: ok (.venv/bin/isobench)"
