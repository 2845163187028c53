//! The end-to-end tests: one test binary (so one build and one link), a module per component.
//! Every test drives the real `wsyncd`, `wsync-monitor` and `wsync` binaries (built first:
//! `cargo build --workspace --bins`), real rsync and, for SSH, a private sshd on 127.0.0.1;
//! the fixtures live in `tests/support` (the `wsync_tests` library).
//!
//! Tests of every module run on parallel threads of this one process, so a test keeps all of
//! its state in its own fixture (temp dir, config, sshd port): no `std::env::set_var`, no
//! process-wide statics. Test names are `<module>::<test>`: run one module with
//! `cargo test --test e2e -- monitor_basic::`, one test with
//! `cargo test --test e2e -- supervisor::a_killed_monitor_is_restarted_and_catches_up --exact`.

mod agent;
mod attach_safety;
mod cli;
mod cli_ux;
mod daemon_lifecycle;
mod daemon_protocol;
mod deletion_gate;
mod detach;
mod editor_nvim;
mod engine_checksum;
mod engine_content;
mod engine_excludes;
mod engine_hardlinks;
mod engine_names;
mod engine_protect;
mod engine_renames;
mod engine_safety;
mod events;
mod faults;
mod faults_network;
mod growing;
mod hardening_beneath;
mod hardening_files;
mod hardening_input;
mod hardening_socket;
mod hung_mount;
mod isolation;
mod liveness;
mod many_workspaces;
mod monitor_basic;
mod monitor_ssh;
mod monitor_stress;
mod one_path;
mod packaging;
mod poll_mode;
mod progress;
mod project_file;
mod proof_of_sync;
mod rsync_versions;
mod supervisor;
mod target_identity;
mod trash;
mod update;
mod watch_backends;
