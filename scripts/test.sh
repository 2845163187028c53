#!/usr/bin/env bash
# Runs wsync's whole test suite: formatting, lints, and every unit and end-to-end test.
# Installs rsync, openssh-server, graphviz (and fuse3 and neovim, as root) with apt when they are missing and
# this runs as root.
# Arguments go to `cargo test`; the end-to-end tests are one binary, e2e, with tests named
# <module>::<test>: e.g. scripts/test.sh --test e2e -- monitor_basic::
# Without arguments the watcher-dependent end-to-end modules then run twice more, under
# WatchMode=notify and WatchMode=poll (the list is below, watch_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
{ command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || need_pkgs+=(openssh-server)
command -v dot >/dev/null 2>&1 || need_pkgs+=(graphviz)  # the diagram-is-current test renders it
# The hung-mount test's FUSE server; without it (and not root) that test skips, saying why.
if [ "$(id -u)" -eq 0 ]; then command -v fusermount3 >/dev/null 2>&1 || need_pkgs+=(fuse3); fi
# The editor plugin's test runs nvim --headless; without it (and not root) that test skips.
if [ "$(id -u)" -eq 0 ]; then command -v nvim >/dev/null 2>&1 || need_pkgs+=(neovim); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "error: missing ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]}) and re-run" >&2
    exit 1
  fi
fi

# The Debian package test (packaging::the_debian_package_installs_and_removes_cleanly) needs
# cargo-deb and root; without them it skips, saying why. Building cargo-deb (95 crates) takes
# minutes once; WSYNC_TEST_NO_CARGO_DEB=1 skips installing it (and so the test).
if [ "$(id -u)" -eq 0 ] && [ -z "${WSYNC_TEST_NO_CARGO_DEB:-}" ] && ! command -v cargo-deb >/dev/null 2>&1; then
  echo "==> cargo install --locked cargo-deb (for the Debian package test)"
  cargo install --locked cargo-deb || echo "warning: cargo-deb did not install; the Debian package test will skip" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# macOS is a source platform: the product crates must build and lint clean for both Mac
# targets. A check, not a run: no macOS SDK is needed for pure Rust + libc, and nothing is
# linked. The test package (tests/support: FUSE, mounts, Linux users) is Linux only.
mac_crates=(-p wsync-core -p wsyncd -p wsync-monitor -p wsync-cli)
mac_targets=(x86_64-apple-darwin aarch64-apple-darwin)
if command -v rustup >/dev/null 2>&1 && rustup target add "${mac_targets[@]}" >/dev/null 2>&1; then
  for target in "${mac_targets[@]}"; do
    echo "==> cargo check + clippy --target $target"
    cargo check "${mac_crates[@]}" --all-targets --locked --target "$target"
    cargo clippy "${mac_crates[@]}" --all-targets --locked --target "$target" -- -D warnings
  done
else
  echo "SKIPPED: macOS check (target not installable here)"
fi
echo "==> cargo build (the end-to-end tests run these binaries)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked "$@"

# The end-to-end modules whose outcome depends on how a workspace is watched: run again with
# each other watch backend (tests/support/watch_mode.rs writes WSYNC_TEST_WATCH_MODE into every
# test's config and monitor start). The one list of them.
watch_modules=(
  monitor_basic:: growing:: monitor_stress::
  engine_checksum:: engine_content:: engine_excludes:: engine_hardlinks::
  engine_names:: engine_protect:: engine_renames:: engine_safety::
)
if [ $# -gt 0 ]; then
  echo "SKIPPED: the notify and poll passes (arguments given: only the run asked for)"
else
  for mode in notify poll; do
    echo "==> cargo test --test e2e, WSYNC_TEST_WATCH_MODE=$mode: ${watch_modules[*]}"
    start=$(date +%s)
    skips=$(mktemp)
    WSYNC_TEST_WATCH_MODE=$mode WSYNC_TEST_SKIP_LOG=$skips \
      cargo test --locked --test e2e -- "${watch_modules[@]}" || { cat "$skips"; rm -f "$skips"; exit 1; }
    cat "$skips"  # the tests that cannot work under this backend, and why
    rm -f "$skips"
    echo "==> the $mode pass took $(( $(date +%s) - start )) s"
  done
fi
