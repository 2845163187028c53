#!/usr/bin/env bash
# Soak/load run of issue 6 against one real wsyncd (not part of the test suite): 50 workspaces
# with a local remote each under concurrent churn (all must converge; the daemon's CPU and
# memory are recorded), then a 200,000-file workspace (initial sync, single-edit latency).
# Usage: scripts/soak.sh [--quick] [wsync-bench soak options, see --help]
#        scripts/soak.sh many [--steps 1,50,300] (issue 13: 300 workspaces on one wsyncd; the
#        daemon's threads, fds and RSS and the time of `wsync status` at each step)
#        scripts/soak.sh huge [soak options] (issue 13: one workspace of 1,000,000 files in 100,000
#        dirs: setup time against plain rsync (3 alternating rounds, medians), monitor RSS, single-edit p50/p95, recovery from an
#        overflow of 100,000 files created while the monitor is SIGSTOPped; 25 minutes at most)
# Progress on stderr, a markdown summary on stdout. Bounded: the run stops itself after
# --max-secs (540 by default) and this script kills it at 10 minutes in any case. First, the
# beneath-resolver's randomized test runs 500 rounds (100 with --quick; about a minute). As root it
# mounts a private tmpfs (8 GiB max); otherwise it works in a directory on /dev/shm. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsync >/dev/null || { echo "error: rsync is required (apt-get install rsync)" >&2; exit 1; }
cargo build --release --locked --bins -p wsyncd -p wsync-monitor -p wsync-cli -p wsync-bench >&2
subcommand=soak
huge=""
limit=600
if [ "${1:-}" = many ]; then
  subcommand=soak-many
  shift
elif [ "${1:-}" = huge ]; then
  huge=1
  limit=1560
  shift
  set -- --huge "$@"
fi

# The randomized test of the beneath-resolver (issue 12: nothing outside a target is touched),
# run far longer than in the normal suite. WSYNC_BENEATH_FUZZ_ROUNDS overrides the count.
rounds=${WSYNC_BENEATH_FUZZ_ROUNDS:-500}
case " $* " in *" --quick "*) rounds=${WSYNC_BENEATH_FUZZ_ROUNDS:-100} ;; esac
if [ -z "$huge" ]; then
  echo "soak: beneath fuzz, $rounds rounds" >&2
  WSYNC_BENEATH_FUZZ_ROUNDS=$rounds cargo test --release --locked -q -p wsync-core \
    beneath::tests::fuzz_nothing_outside_the_target_is_ever_touched -- --nocapture >&2
fi

mounted=""
keep=""
case " $* " in *" --keep "*) keep=1 ;; esac
if [ "$(id -u)" -eq 0 ]; then
  dir=$(mktemp -d /tmp/wsync-soak.XXXXXX)
  # The huge tree takes a page per file on tmpfs: about 4.5 GiB per copy, two copies at a time.
  size=8g
  [ -z "$huge" ] || size=14g
  mount -t tmpfs -o "size=$size" tmpfs "$dir"
  mounted=1
else
  dir=$(mktemp -d /dev/shm/wsync-soak.XXXXXX)
fi
cleanup() {
  # If the run was killed, stop its daemon (the monitors exit with it).
  for pidfile in "$dir"/wsync-soak-*/wsyncd.pid "$dir"/wsync-many-*/wsyncd.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    grep -qa wsyncd "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null || true
  done
  if [ -n "$keep" ]; then
    echo "soak: kept $dir${mounted:+ (a tmpfs: umount it when done)}" >&2
    return
  fi
  if [ -n "$mounted" ]; then
    sleep 1
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
  fi
  rm -rf "$dir" 2>/dev/null || true
}
trap cleanup EXIT
echo "soak: running on $(stat -f -c %T "$dir") at $dir, rsync $(rsync --version | head -1 | awk '{print $3}'), $(nproc) cores, inotify max_user_watches $(cat /proc/sys/fs/inotify/max_user_watches)" >&2
echo "soak: inotify max_user_instances $(cat /proc/sys/fs/inotify/max_user_instances)" >&2
timeout --kill-after=10 "$limit" target/release/wsync-bench "$subcommand" --dir "$dir" "$@"
