//! Shared fixtures for the end-to-end tests (`tests/e2e/`, one binary): isolated environments
//! running the real binaries, an sshd on 127.0.0.1, and tree comparison.

pub mod env;
pub mod faults;
pub mod fuse;
pub mod hang_fs;
pub mod monitor;
pub mod other_user;
pub mod poll;
pub mod sshd;
pub mod transports;
pub mod tree;
pub mod users;
pub mod watch_mode;
