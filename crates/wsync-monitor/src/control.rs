//! Control commands from stdin applied to the engine: attach, detach, pause, resume, resync and
//! flush (shutdown is handled by the loop itself).

use std::time::{Duration, Instant};

use wsync_core::monitor_proto::MonitorCommand;

use crate::engine::Engine;
use crate::status::PendingFlush;

impl Engine {
    pub(crate) fn on_command(&mut self, cmd: MonitorCommand) {
        tracing::debug!(?cmd, "command");
        match cmd {
            MonitorCommand::Start { .. } => {
                tracing::warn!("ignoring a second start message");
            }
            MonitorCommand::Attach { remote, progress } => self.add_remote(remote, progress),
            MonitorCommand::Detach { remote } => self.detach(&remote),
            MonitorCommand::Pause => {
                tracing::info!("paused");
                self.paused = true;
            }
            MonitorCommand::Resume => {
                tracing::info!("resumed");
                self.paused = false;
                self.lift_halt();
                self.retry_now();
            }
            MonitorCommand::Resync => {
                tracing::info!("full resync requested");
                self.lift_halt();
                self.mark_all_full();
                self.rescans += 1;
                self.retry_now();
            }
            MonitorCommand::Flush { id, timeout_ms } => self.start_flush(id, timeout_ms),
            MonitorCommand::Shutdown => {}
        }
    }

    fn detach(&mut self, name: &str) {
        let Some(index) = self.slots.iter().position(|(n, _)| n == name) else {
            tracing::warn!(remote = name, "detach ignored: no such remote");
            return;
        };
        let (_, mut slot) = self.slots.remove(index);
        slot.abort_all();
        tracing::info!(remote = name, "remote detached");
        let dest = slot.dest.clone();
        tokio::spawn(async move { dest.close_connection().await });
    }

    /// Retries remotes in backoff at once (the user asked for action).
    fn retry_now(&mut self) {
        for (_, slot) in &mut self.slots {
            if slot.retry_at.is_some() {
                slot.retry_at = Some(Instant::now());
            }
        }
    }

    fn start_flush(&mut self, id: u64, timeout_ms: u64) {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut flush = PendingFlush {
            id,
            deadline,
            cookie: None,
            target: None,
        };
        if self.watch_error.is_some() || self.watcher.is_none() {
            // Events cannot be trusted to be complete: only a full sync proves convergence.
            self.mark_all_full();
            flush.target = Some(self.seq);
        } else {
            let name = format!(
                "{}{}-{id}",
                wsync_core::rsync::COOKIE_PREFIX,
                std::process::id()
            );
            // create_new: never follow or reuse something already at that name.
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(self.root().join(&name))
            {
                Ok(_) => flush.cookie = Some(name),
                Err(e) => {
                    tracing::warn!("cannot create flush cookie in the workspace root: {e}; flushing what is known");
                    flush.target = Some(self.seq);
                }
            }
        }
        self.flushes.push(flush);
    }
}
