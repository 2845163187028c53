#!/usr/bin/env bash
# Builds the Debian package of wsync with cargo-deb (metadata: crates/wsync-cli/Cargo.toml):
# wsync, wsyncd and wsync-monitor in /usr/bin, man pages, completions, and the systemd user unit
# in /usr/lib/systemd/user/. Prints the .deb's path. Needs `cargo install cargo-deb --locked`.
# Usage: scripts/deb.sh [--profile PROFILE]   (default release; the tests use dev to reuse
# their build)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
profile=release
case "${1:-}" in
  --profile) [ $# -ge 2 ] || { echo "error: --profile needs a name" >&2; exit 2; }; profile=$2 ;;
  "") ;;
  *) echo "error: unknown option $1 (usage: scripts/deb.sh [--profile PROFILE])" >&2; exit 2 ;;
esac
command -v cargo-deb >/dev/null 2>&1 ||
  { echo "error: cargo-deb not found: cargo install cargo-deb --locked" >&2; exit 1; }
# The packaged unit runs /usr/bin/wsyncd; setup.sh owns how the unit is rendered.
mkdir -p target/deb-assets
env -u WSYNC_CONFIG_PATH scripts/setup.sh --prefix /usr --print-unit >target/deb-assets/wsync.service
cargo build --locked --profile "$profile" --workspace --bins >&2
cargo deb --locked -p wsync-cli --no-build --profile "$profile"
