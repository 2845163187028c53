#!/usr/bin/env bash
# Renders images/architecture.dot to images/architecture.svg and images/architecture.png with
# Graphviz `dot`. Run it after editing the .dot file and commit all three; tests/e2e/packaging.rs
# fails when the committed SVG or PNG no longer matches its source.
#   scripts/diagram.sh            # write into images/
#   scripts/diagram.sh OUT_DIR    # write into OUT_DIR instead (used by the staleness test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out_dir=${1:-images}
case "${out_dir}" in -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
command -v dot >/dev/null 2>&1 || {
  echo "error: Graphviz 'dot' not found; install graphviz (e.g. sudo apt-get install graphviz)" >&2
  exit 1
}
mkdir -p -- "$out_dir"
dot -Tsvg images/architecture.dot -o "$out_dir/architecture.svg"
dot -Tpng -Gdpi=110 images/architecture.dot -o "$out_dir/architecture.png"
echo "wrote $out_dir/architecture.svg and $out_dir/architecture.png"
