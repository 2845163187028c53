#!/usr/bin/env bash
# Regenerates the shell completions (completions/) and man pages (man/) from the CLI's clap
# definition with the hidden `wsync generate-docs` command. Run it after changing any command,
# option or help text, and commit the result; tests/e2e/cli_ux.rs fails when they are stale.
#   scripts/gen-docs.sh            # write into completions/ and man/
#   scripts/gen-docs.sh OUT_DIR    # write into OUT_DIR/completions and OUT_DIR/man instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out_dir=${1:-.}
case "${out_dir}" in -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cargo run --quiet --locked -p wsync-cli --bin wsync -- generate-docs "$out_dir"
