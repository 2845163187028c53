#!/usr/bin/env bash
# Installs wsync for the current user from this checkout: builds the release binaries, installs
# wsync, wsyncd and wsync-monitor into a directory on PATH, writes ~/.wsync/wsync.config and an
# empty registry when they are missing (never overwriting), and starts the daemon (systemd user
# service when available, a launchd agent on macOS, otherwise in the background). Prerequisites
# come from apt on Linux (as root) and Homebrew on macOS. Safe to re-run. See --help.
set -euo pipefail

readonly BINS=(wsync wsyncd wsync-monitor)
readonly EMPTY_REGISTRY='{"version":1,"workspaces":[]}'
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir=$repo/$target_dir ;; esac

usage() {
  cat <<'EOF'
Usage: scripts/setup.sh [OPTIONS]

Builds wsync in release mode, installs wsync, wsyncd and wsync-monitor, writes the config
(~/.wsync/wsync.config, or $WSYNC_CONFIG_PATH) and an empty registry when they are missing,
and starts the daemon: as the systemd user service `wsync` when systemd user services work,
as the launchd agent `dev.wsync` on macOS, otherwise in the background with
`wsync daemon start`. On macOS a missing or too old rsync (openrsync, 2.6.9) is replaced by
Homebrew's (`brew install rsync`). Re-running it is safe: existing config
and registry files are never overwritten, and a running daemon is restarted only when its
binaries changed.

Options:
  --prefix DIR      install into DIR/bin (default: cargo's bin directory,
                    ${CARGO_HOME:-~/.cargo}/bin, which rustup already put on PATH)
  --no-service      do not install the systemd user unit (launchd agent on macOS);
                    start wsyncd in the background
  --no-start        install only: start neither the service nor the daemon
  --prebuilt DIR    install the binaries already built in DIR (e.g. target/debug)
                    instead of running `cargo build --release`
  --print-unit      print the systemd user unit setup.sh would install, and exit
  --print-plist     print the launchd agent setup.sh would install on macOS, and exit
  --uninstall       stop the daemon, remove the binaries and the systemd unit (or
                    launchd agent);
                    keeps the config, the registry and the logs
  --purge           with --uninstall: also remove the config, the registry and the
                    default log directory
  -h, --help        show this help

Examples:
  scripts/setup.sh                      # build, install to ~/.cargo/bin, start the service
  scripts/setup.sh --prefix ~/.local    # install to ~/.local/bin instead
  scripts/setup.sh --uninstall --purge  # remove everything setup.sh created
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# --- arguments -----------------------------------------------------------------------------------
prefix="" prebuilt="" no_service=0 no_start=0 uninstall=0 purge=0 print_unit=0 print_plist=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    --prebuilt) [ $# -ge 2 ] || die "--prebuilt needs a directory"; prebuilt=$2; shift ;;
    --prebuilt=*) prebuilt=${1#--prebuilt=} ;;
    --no-service) no_service=1 ;;
    --no-start) no_start=1 ;;
    --print-unit) print_unit=1 ;;
    --print-plist) print_plist=1 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'error: unknown option %q (see scripts/setup.sh --help)\n' "$1" >&2; exit 2 ;;
  esac
  shift
done
[ "$purge" -eq 0 ] || [ "$uninstall" -eq 1 ] || die "--purge only goes with --uninstall"
[ -n "${HOME:-}" ] || die "HOME is not set"

# Makes a path absolute without requiring it to exist; expands a leading ~ like wsync does.
absolute() {
  local p=$1
  # shellcheck disable=SC2088 # a literal "~/" is what is being matched
  case "$p" in
    "~") p=$HOME ;;
    "~/"*) p=$HOME/${p#"~/"} ;;
  esac
  p=${p//\$\{HOME\}/$HOME}
  p=${p//\$HOME/$HOME}
  case "$p" in
    /*) printf '%s\n' "$p" ;;
    *) printf '%s\n' "$PWD/$p" ;;
  esac
}

if [ -n "$prefix" ]; then
  bin_dir=$(absolute "$prefix")/bin
else
  bin_dir=$(absolute "${CARGO_HOME:-$HOME/.cargo}")/bin
fi

if [ -n "${WSYNC_CONFIG_PATH:-}" ]; then
  config_file=$(absolute "$WSYNC_CONFIG_PATH")
else
  config_file=$HOME/.wsync/wsync.config
fi
# These paths end up in the config file and the systemd unit, which cannot quote everything.
for p in "$bin_dir" "$config_file"; do
  case "$p" in *$'\n'* | *'"'* | *\\*) die "path $p contains a newline, a double quote or a backslash; pick another" ;; esac
done

# The path NAME (registry, log_directory, monitor_executable, ...) as wsync resolves it from the
# config file: `wsync config --path NAME` (empty when unset), so that setup.sh never parses the
# config itself. A config file that does not exist yet means every default, as on a fresh install.
# Asks the installed wsync; when it is gone (--purge after --uninstall), one built in this
# checkout, else one built now.
config_path() {
  local name=$1 empty rc=0 candidate
  local -a cli=()
  for candidate in "$bin_dir/wsync" "$target_dir/release/wsync" "$target_dir/debug/wsync"; do
    if [ -x "$candidate" ]; then
      cli=("$candidate")
      break
    fi
  done
  if [ ${#cli[@]} -eq 0 ]; then
    command -v cargo >/dev/null 2>&1 ||
      die "no wsync in $bin_dir or $target_dir and no cargo to build one: cannot resolve the config's paths"
    cli=(cargo run --quiet --locked --manifest-path "$repo/Cargo.toml" -p wsync-cli --bin wsync --)
  fi
  if [ -e "$config_file" ] || [ -L "$config_file" ]; then
    WSYNC_CONFIG_PATH=$config_file "${cli[@]}" config --path "$name" || rc=$?
  else
    empty=$(mktemp)
    WSYNC_CONFIG_PATH=$empty "${cli[@]}" config --path "$name" || rc=$?
    rm -f -- "$empty"
  fi
  [ "$rc" -eq 0 ] || die "could not read $name from $config_file (see the error above); fix the config and re-run"
}

systemd_user_works() {
  command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1
}

unit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
unit_file=$unit_dir/wsync.service
wsync_cli=$bin_dir/wsync

# 0 = the daemon answers, 3 = not running (wsync's DAEMON_NOT_RUNNING), anything else = unknown.
daemon_status() {
  local rc=0
  "$wsync_cli" daemon status >/dev/null 2>&1 || rc=$?
  return "$rc"
}

# Quotes a value for a unit file line (values never hold ", \ or newlines: checked above).
# Specifiers (%) are expanded everywhere; $VARIABLES are not expanded in the executable's path.
systemd_quote() {
  local p=${1//%/%%}
  printf '"%s"' "$p"
}

# The unit from config-examples with ExecStart pointing at the installed wsyncd (and the config
# file passed on when WSYNC_CONFIG_PATH is set).
render_unit() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      ExecStart=*)
        printf 'ExecStart=%s\n' "$(systemd_quote "$bin_dir/wsyncd")"
        if [ -n "${WSYNC_CONFIG_PATH:-}" ]; then
          printf 'Environment=%s\n' "$(systemd_quote "WSYNC_CONFIG_PATH=$config_file")"
        fi
        ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <"$repo/config-examples/wsync.service"
}

# launchd (macOS): the agent from config-examples with the installed wsyncd, the log path and
# WSYNC_CONFIG_PATH filled in (launchd expands neither ~ nor variables).
is_macos() { [ "$(uname -s)" = Darwin ]; }
agent_label=dev.wsync
agent_file=$HOME/Library/LaunchAgents/$agent_label.plist
launchd_domain=gui/$(id -u)

xml_escape() {
  printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'
}

render_plist() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      *"<string>/Users/YOU/.cargo/bin/wsyncd</string>"*)
        printf '\t\t<string>%s</string>\n' "$(xml_escape "$bin_dir/wsyncd")" ;;
      *"<string>/Users/YOU/.wsync/launchd.log</string>"*)
        printf '\t<string>%s</string>\n' "$(xml_escape "$HOME/.wsync/launchd.log")" ;;
      *"<string>/opt/homebrew/bin:"*)
        printf '%s\n' "$line"
        if [ -n "${WSYNC_CONFIG_PATH:-}" ]; then
          printf '\t\t<key>WSYNC_CONFIG_PATH</key>\n\t\t<string>%s</string>\n' "$(xml_escape "$config_file")"
        fi
        ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <"$repo/config-examples/dev.wsync.plist"
}

launchd_loaded() { launchctl print "$launchd_domain/$agent_label" >/dev/null 2>&1; }

if [ "$print_unit" -eq 1 ]; then
  render_unit
  exit 0
fi
if [ "$print_plist" -eq 1 ]; then
  render_plist
  exit 0
fi

# --- uninstall -----------------------------------------------------------------------------------
if [ "$uninstall" -eq 1 ]; then
  if is_macos && [ -e "$agent_file" ]; then
    say "stopping and removing the launchd agent $agent_label"
    launchctl bootout "$launchd_domain/$agent_label" 2>/dev/null || true
    rm -f -- "$agent_file"
    say "removed $agent_file"
  fi
  if [ -e "$unit_file" ] && systemd_user_works; then
    say "stopping and disabling the systemd user service"
    systemctl --user disable --now wsync.service || warn "could not stop wsync.service"
  fi
  if [ -x "$wsync_cli" ] && daemon_status; then
    say "stopping the daemon"
    "$wsync_cli" daemon stop || warn "could not stop the daemon; stop wsyncd yourself"
  fi
  if [ -e "$unit_file" ]; then
    rm -f -- "$unit_file"
    say "removed $unit_file"
    if systemd_user_works; then systemctl --user daemon-reload || true; fi
  fi
  if [ "$purge" -eq 1 ]; then
    # Asked before the binaries go: the installed wsync answers.
    registry=$(config_path registry)
    log_dir=$(config_path log_directory)
  fi
  for b in "${BINS[@]}"; do
    if [ -e "$bin_dir/$b" ]; then
      rm -f -- "$bin_dir/$b"
      say "removed $bin_dir/$b"
    fi
  done
  if [ "$purge" -eq 1 ]; then
    for f in "$registry" "$config_file"; do
      if [ -e "$f" ] || [ -L "$f" ]; then rm -f -- "$f" && say "removed $f"; fi
    done
    # Only the default log directory is deleted wholesale: a configured one may be shared.
    if [ "$log_dir" = "$HOME/.wsync/log" ]; then
      if [ -d "$log_dir" ]; then rm -rf -- "$log_dir" && say "removed $log_dir"; fi
    elif [ -d "$log_dir" ]; then
      say "left the configured LogDirectory $log_dir in place"
    fi
    if rmdir -- "$HOME/.wsync" 2>/dev/null; then say "removed $HOME/.wsync"; fi
  else
    say "kept $config_file and the registry (add --purge to remove them)"
  fi
  say "wsync is uninstalled"
  exit 0
fi

# --- prerequisites -------------------------------------------------------------------------------
if [ -z "$prebuilt" ] && ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    die "cargo is installed but not on PATH: run 'source \"\$HOME/.cargo/env\"' (or open a new shell) and re-run"
  fi
  die "cargo not found: install Rust with rustup (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), then re-run"
fi
# macOS ships openrsync (15.4 and later) or rsync 2.6.9 as /usr/bin/rsync; wsync needs 3.x.
rsync_is_3() { rsync --version 2>/dev/null | head -n 1 | grep -Eq 'rsync +version v?3\.'; }
if is_macos; then
  if ! rsync_is_3; then
    command -v brew >/dev/null 2>&1 ||
      die "wsync needs rsync 3.x, and macOS ships openrsync or 2.6.9: install Homebrew (https://brew.sh), then re-run (setup.sh runs 'brew install rsync')"
    say "installing rsync 3 with Homebrew (brew install rsync)"
    brew install rsync
    PATH=$(brew --prefix)/bin:$PATH
    rsync_is_3 || die "rsync 3 is still not first on PATH; put $(brew --prefix)/bin before /usr/bin and re-run"
  fi
elif ! command -v rsync >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing rsync"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
  else
    die "rsync not found: install it (e.g. sudo apt-get install rsync) and re-run"
  fi
fi
command -v ssh >/dev/null 2>&1 || warn "ssh not found: local remotes work, SSH remotes need openssh-client"

# --- build and install ---------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  src_dir=$(absolute "$prebuilt")
else
  say "building release binaries (cargo build --release --locked --workspace --bins)"
  (cd "$repo" && cargo build --release --locked --workspace --bins)
  src_dir=$target_dir/release
fi
for b in "${BINS[@]}"; do
  [ -x "$src_dir/$b" ] || die "$src_dir/$b is missing or not executable"
done

mkdir -p -- "$bin_dir"
changed=0
for b in "${BINS[@]}"; do
  if cmp -s -- "$src_dir/$b" "$bin_dir/$b"; then
    continue
  fi
  # Copy then rename: replacing a running binary in place fails with "text file busy".
  tmp=$bin_dir/.$b.setup-$$
  cp -- "$src_dir/$b" "$tmp"
  chmod 0755 -- "$tmp"
  mv -f -- "$tmp" "$bin_dir/$b"
  changed=1
  say "installed $bin_dir/$b"
done
[ "$changed" -eq 1 ] || say "binaries in $bin_dir are up to date"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) warn "$bin_dir is not on PATH; add it (e.g. export PATH=\"$bin_dir:\$PATH\" in ~/.profile)" ;;
esac

# --- config, registry, logs ----------------------------------------------------------------------
# Creates FILE with the content on stdin unless it exists; a hard link makes "unless it exists"
# atomic, so two concurrent runs cannot both write it and an existing file is never touched.
create_if_missing() {
  local file=$1 tmp
  if [ -e "$file" ] || [ -L "$file" ]; then
    cat >/dev/null
    return 1
  fi
  case "$file" in "$HOME/.wsync/"*) [ -d "$HOME/.wsync" ] || mkdir -m 0700 -- "$HOME/.wsync" ;; esac
  mkdir -p -- "$(dirname -- "$file")"
  tmp=$(mktemp "$(dirname -- "$file")/.wsync-setup.XXXXXX")
  cat >"$tmp"
  chmod 0600 -- "$tmp"
  if ln -- "$tmp" "$file" 2>/dev/null; then
    rm -f -- "$tmp"
    return 0
  fi
  rm -f -- "$tmp"
  return 1
}

monitor=$bin_dir/wsync-monitor
if {
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      "# MonitorExecutablePath="*) printf 'MonitorExecutablePath=%s\n' "$monitor" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <"$repo/config-examples/wsync.config"
} | create_if_missing "$config_file"; then
  say "wrote $config_file"
else
  say "kept existing $config_file"
  configured=$(config_path monitor_executable)
  [ -z "$configured" ] || [ "$configured" = "$monitor" ] ||
    warn "$config_file sets MonitorExecutablePath=$configured, not the monitor just installed ($monitor)"
fi

registry=$(config_path registry)
if printf '%s\n' "$EMPTY_REGISTRY" | create_if_missing "$registry"; then
  say "wrote an empty registry $registry"
else
  say "kept existing registry $registry"
fi
log_dir=$(config_path log_directory)
mkdir -p -- "$log_dir"

# --- start the daemon ----------------------------------------------------------------------------
wait_for_daemon() {
  local _
  for _ in $(seq 1 100); do
    daemon_status && return 0
    sleep 0.1
  done
  return 1
}

if [ "$no_start" -eq 1 ]; then
  say "not starting the daemon (--no-start); start it with: wsync daemon start"
elif [ "$no_service" -eq 0 ] && is_macos; then
  agent_text=$(render_plist)
  agent_changed=0
  if [ ! -f "$agent_file" ] || [ "$(cat -- "$agent_file")" != "$agent_text" ]; then
    mkdir -p -- "$(dirname -- "$agent_file")"
    printf '%s\n' "$agent_text" >"$agent_file.tmp"
    if command -v plutil >/dev/null 2>&1; then
      plutil -lint -s "$agent_file.tmp" || die "the rendered $agent_file does not parse (see above)"
    fi
    mv -f -- "$agent_file.tmp" "$agent_file"
    agent_changed=1
    say "installed $agent_file"
  fi
  [ -d "$HOME/.wsync" ] || mkdir -m 0700 -- "$HOME/.wsync"
  if ! launchd_loaded && daemon_status; then
    say "stopping the background daemon so that launchd can run it"
    "$wsync_cli" daemon stop
  fi
  if launchd_loaded && [ "$agent_changed" -eq 1 ]; then
    # A changed agent is only read at bootstrap.
    launchctl bootout "$launchd_domain/$agent_label" || true
  fi
  if launchd_loaded; then
    if [ "$changed" -eq 1 ]; then
      say "restarting $agent_label to pick up the new binaries"
      launchctl kickstart -k "$launchd_domain/$agent_label"
    fi
  else
    launchctl bootstrap "$launchd_domain" "$agent_file" ||
      die "launchctl bootstrap $launchd_domain $agent_file failed"
  fi
  wait_for_daemon || die "$agent_label did not come up; see: launchctl print $launchd_domain/$agent_label; $HOME/.wsync/launchd.log"
  say "$agent_label is loaded and running (logs: $log_dir)"
elif [ "$no_service" -eq 0 ] && systemd_user_works; then
  unit_text=$(render_unit)
  unit_changed=0
  if [ ! -f "$unit_file" ] || [ "$(cat -- "$unit_file")" != "$unit_text" ]; then
    mkdir -p -- "$unit_dir"
    printf '%s\n' "$unit_text" >"$unit_file.tmp"
    mv -f -- "$unit_file.tmp" "$unit_file"
    unit_changed=1
    say "installed $unit_file"
  fi
  systemctl --user daemon-reload
  if ! systemctl --user is-active --quiet wsync.service && daemon_status; then
    # A daemon started by an earlier --no-service run holds the pidfile; hand over to systemd.
    say "stopping the background daemon so that systemd can run it"
    "$wsync_cli" daemon stop
  fi
  if systemctl --user is-active --quiet wsync.service && [ $((changed + unit_changed)) -gt 0 ]; then
    say "restarting wsync.service to pick up the new binaries or unit"
    systemctl --user restart wsync.service
  fi
  systemctl --user enable --now wsync.service
  wait_for_daemon || die "wsync.service did not come up; see: systemctl --user status wsync; journalctl --user -u wsync"
  say "wsync.service is enabled and running (logs: $log_dir)"
else
  [ "$no_service" -eq 1 ] || say "systemd user services are not available here; running wsyncd in the background"
  status=0
  daemon_status || status=$?
  if [ "$status" -eq 0 ] && [ "$changed" -eq 1 ]; then
    say "restarting the daemon to pick up the new binaries"
    "$wsync_cli" daemon stop || die "could not stop the running daemon; stop it and re-run"
    status=3
  fi
  case "$status" in
    0) say "the daemon is already running" ;;
    3)
      "$wsync_cli" daemon start || die "wsync daemon start failed; see the logs in $log_dir"
      say "the daemon is running (logs: $log_dir); it does not start at boot without systemd"
      ;;
    *) die "could not tell whether the daemon runs ('wsync daemon status' exited with $status)" ;;
  esac
fi

cat <<EOF

wsync is installed. Next steps:
  wsync add ~/project                 # register a workspace (named "project")
  wsync attach project /srv/mirror    # mirror it to a local directory (or user@host:path)
  wsync status                        # see every workspace and remote
Config:   $config_file
Registry: $registry
Logs:     $log_dir
EOF
