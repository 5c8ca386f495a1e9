#!/bin/sh
# Runs on a fleet host (copied there by bench/fleet/playbook.yml) as root:
#   host_run.sh RUN_ID PROJECT_DIR STATE_ROOT PROJECT_TARBALL BENCH_ARGS...
# Under the host's fleet lock ($STATE_ROOT/fleet.lock: two benches on one host would measure each
# other) it replaces the project copy with the tarball (keeping .venv, so `make setup` stays
# incremental), runs `make setup`, runs `isobench bench` with this state root and packs the run
# directory as $STATE_ROOT/fleet/$RUN_ID/run.tar.gz for the controller to fetch. On failure the last
# line on stderr is the reason the controller reports.
set -eu
run_id=$1 project=$2 root=$3 tarball=$4
shift 4
work="$root/fleet/$run_id"
log="$work/host.log"
mkdir -p "$work"

exec 9>>"$root/fleet.lock"
if ! flock -n 9; then
  echo "another isobench fleet bench holds $root/fleet.lock on this host (run $(cat "$root/fleet.lock.owner" 2>/dev/null || echo unknown)); never two at once" >&2
  exit 75
fi
echo "$run_id" > "$root/fleet.lock.owner"
# the owner file names the holder only while it holds the lock; a half-unpacked copy never stays
new=""
trap 'rm -f "$root/fleet.lock.owner"; if [ -n "$new" ]; then rm -rf "$new"; fi' EXIT

# The project directory is replaced whole, so only a directory this script made (marker) is touched.
if [ -e "$project" ] && [ ! -e "$project/.isobench-fleet" ] && [ -n "$(ls -A "$project" 2>/dev/null)" ]; then
  echo "isobench_dir $project exists and was not made by isobench fleet (no .isobench-fleet in it); not replacing it" >&2
  exit 1
fi
new="$project.new-$run_id"
old="$project.old-$run_id"
rm -rf "$new" "$old"
mkdir -p "$new"
tar -xzf "$tarball" -C "$new"
rm -f "$tarball"  # a failed run keeps only its logs in $work
touch "$new/.isobench-fleet"
if [ -d "$project/.venv" ]; then mv "$project/.venv" "$new/.venv"; fi
if [ -e "$project" ]; then mv "$project" "$old"; fi
mv "$new" "$project"
rm -rf "$old"

echo "[host] make setup in $project" | tee -a "$log"
# the last non-empty line of a file: a failure's own words become the reason the controller shows
# (make's own "*** [Makefile:N: setup] Error 1" says nothing: the line before it does)
last_line() { grep -v -e '^[[:space:]]*$' -e '^make: \*\*\*' "$1" 2>/dev/null | tail -n 1; }

if ! (cd "$project" && make setup) >>"$log" 2>&1; then
  echo "make setup failed in $project: $(last_line "$log") (log on the host: $log)" >&2
  exit 1
fi

# isobench-py, the Python CLI: the C client would hand the bench to an isobench server if one runs,
# whose namespaces and environment are not this session's.
cli="$project/.venv/bin/isobench-py"
[ -x "$cli" ] || cli="$project/.venv/bin/isobench"
out="$work/run"
echo "[host] isobench bench $* --out $out" | tee -a "$log"
rc=0
ISOBENCH_ROOT="$root" "$cli" bench "$@" --out "$out" >>"$log" 2>"$work/bench.err" || rc=$?
cat "$work/bench.err" >>"$log"
if [ "$rc" != 0 ]; then
  echo "isobench bench exited with $rc: $(last_line "$work/bench.err") (log on the host: $log)" >&2
  exit 1
fi
cp "$log" "$out/fleet-host.log"
tar -czf "$work/run.tar.gz" -C "$out" .
echo "[host] packed $work/run.tar.gz"
