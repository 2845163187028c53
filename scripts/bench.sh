#!/usr/bin/env bash
# Benchmarks wsync-monitor against plain rsync on the same data, in one run, on a tmpfs: the
# issue-3 scenarios locally and over SSH to a private sshd on 127.0.0.1 (tests/support/sshd.rs),
# with the issue's targets beside the figures. See docs/BENCHMARKS.md.
# Then (unless --no-peers) the same changes beside lsyncd, the strongest peer that runs here:
# `default.direct` locally, `default.rsyncssh` with an ssh ControlMaster over SSH, and both SSH
# setups through a relay adding 25 ms each way (`wsync-bench peers`; installs lsyncd as root).
# Usage: scripts/bench.sh [--quick] [--no-ssh] [--no-peers] [--only NAME,...]   (progress on stderr, tables on stdout)
# As root it mounts a private tmpfs; otherwise it uses /dev/shm. Disk noise (this machine's root
# ext4 has no journal) would swamp the comparison, so it never runs on the root filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsync >/dev/null || { echo "error: rsync is required (apt-get install rsync)" >&2; exit 1; }
case " $* " in
  *" --no-ssh "*) ;;
  *) [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || {
       echo "error: the SSH rows need sshd, ssh and ssh-keygen (apt-get install openssh-server openssh-client), or pass --no-ssh" >&2
       exit 1
     } ;;
esac
peers=yes
args=()
for a in "$@"; do
  if [ "$a" = --no-peers ]; then peers=no; else args+=("$a"); fi
done
if [ "$peers" = yes ] && ! command -v lsyncd >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing lsyncd" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lsyncd >/dev/null
  else
    echo "error: the peer rows need lsyncd (apt-get install lsyncd), or pass --no-peers" >&2
    exit 1
  fi
fi
cargo build --release --locked --bins -p wsync-monitor -p wsync-bench >&2

dir=/dev/shm
cleanup() { :; }
if [ "$(id -u)" -eq 0 ]; then
  dir=$(mktemp -d /tmp/wsync-bench.XXXXXX)
  mount -t tmpfs -o size=4g tmpfs "$dir"
  cleanup() { umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true; rmdir "$dir" 2>/dev/null || true; }
fi
trap cleanup EXIT
echo "bench: running on $(stat -f -c %T "$dir") at $dir, rsync $(rsync --version | head -1 | awk '{print $3}'), $(ssh -V 2>&1 | cut -d, -f1), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')" >&2
target/release/wsync-bench --dir "$dir" ${args[@]+"${args[@]}"}
if [ "$peers" = yes ]; then
  echo
  target/release/wsync-bench peers --dir "$dir" ${args[@]+"${args[@]}"}
fi
