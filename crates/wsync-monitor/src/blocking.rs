//! Blocking filesystem calls on source and target paths, kept off the event loop. A call runs
//! on tokio's blocking pool behind its [`Gate`] — one outstanding call per gate (one gate per
//! remote, one for the workspace root), so a mount that never answers (a hung NFS, sshfs or
//! FUSE server) holds one thread, never more. Once a call passes its deadline it is reported
//! stalled, naming the call and its path; the caller keeps waiting for it, and its return is
//! reported too, so the remote recovers by itself when the mount comes back.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a filesystem call may take before its remote is reported `stalled`.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Test switch: `WSYNC_TEST_CALL_DEADLINE_MS=<N>` sets the deadline of every blocking call (the
/// hung-mount tests use a short one).
pub const CALL_DEADLINE_ENV: &str = "WSYNC_TEST_CALL_DEADLINE_MS";

/// The deadline in effect ([`DEFAULT_CALL_DEADLINE`] unless [`CALL_DEADLINE_ENV`] says).
pub fn call_deadline() -> Duration {
    static DEADLINE: OnceLock<Duration> = OnceLock::new();
    *DEADLINE.get_or_init(|| {
        let Ok(value) = std::env::var(CALL_DEADLINE_ENV) else {
            return DEFAULT_CALL_DEADLINE;
        };
        match value.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => {
                tracing::warn!(
                    "{CALL_DEADLINE_ENV}={ms}: blocking calls stall after {ms} ms (test switch)"
                );
                Duration::from_millis(ms)
            }
            _ => {
                tracing::warn!("ignoring {CALL_DEADLINE_ENV}={value:?}: not a positive number");
                DEFAULT_CALL_DEADLINE
            }
        }
    })
}

/// The message a stalled call is reported with (status `last_error`, the hook's `WSYNC_ERROR`).
pub fn stalled_message(call: &str, deadline: Duration) -> String {
    format!(
        "{call} has not returned within {} (a hung mount?); waiting for it, the other remotes keep syncing",
        describe(deadline)
    )
}

fn describe(deadline: Duration) -> String {
    if deadline.subsec_millis() == 0 {
        format!("{} s", deadline.as_secs())
    } else {
        format!("{} ms", deadline.as_millis())
    }
}

/// Where stalls are reported: `Some(message)` when a call passes its deadline, `None` when it
/// returns after all.
pub type StallReport<'a> = &'a (dyn Fn(Option<String>) + Sync);

/// One call at a time, with a deadline (see the module header). Clones share the gate.
#[derive(Debug, Clone)]
pub struct Gate {
    deadline: Duration,
    /// Held by the blocking closure itself, so a caller abandoned mid-call (its batch aborted)
    /// leaves the gate closed until the call really returns.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// What the outstanding call is, for the report of a caller waiting behind it.
    current: Arc<Mutex<String>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(call_deadline())
    }
}

impl Gate {
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            turn: Arc::default(),
            current: Arc::default(),
        }
    }

    /// Runs `f` (described by `call`, e.g. "reading the target marker /srv/m/.wsync-target")
    /// off the loop and waits for it, reporting a stall to `report` past the deadline (also
    /// while waiting for an earlier call still outstanding) and the recovery when it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        call: String,
        report: StallReport<'_>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let deadline = self.deadline;
        let turn = match tokio::time::timeout(deadline, self.turn.clone().lock_owned()).await {
            Ok(turn) => turn,
            Err(_) => {
                let outstanding = self.current().clone();
                report(Some(stalled_message(&outstanding, deadline)));
                let turn = self.turn.clone().lock_owned().await;
                report(None);
                turn
            }
        };
        *self.current() = call.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let result = f();
            drop(turn);
            result
        });
        let joined = match tokio::time::timeout(deadline, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!("{}", stalled_message(&call, deadline));
                report(Some(stalled_message(&call, deadline)));
                let joined = handle.await;
                tracing::info!("{call} returned after all");
                report(None);
                joined
            }
        };
        match joined {
            Ok(result) => result,
            // Only a panic in `f` gets here (blocking tasks are never cancelled): pass it on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Waits until no call is outstanding (a call whose caller was abandoned runs on).
    pub async fn idle(&self) {
        drop(self.turn.lock().await);
    }

    fn current(&self) -> std::sync::MutexGuard<'_, String> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_its_deadline_is_reported_and_holds_the_gate_until_it_returns() {
        let deadline = Duration::from_millis(50);
        let gate = Gate::new(deadline);
        let reports = Mutex::new(Vec::new());
        let report = |r: Option<String>| reports.lock().unwrap().push(r);
        let behind = Mutex::new(Vec::new());
        let report_behind = |r: Option<String>| behind.lock().unwrap().push(r);
        let (release, wait) = mpsc::channel::<()>();
        let hung = gate.run("statting /hung".into(), &report, move || {
            let _ = wait.recv();
            7
        });
        let second_gate = gate.clone();
        let second = async {
            // Queued behind the hung call: it must not start a second thread on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
            second_gate
                .run("listing /hung".into(), &report_behind, || 8)
                .await
        };
        let releaser = async {
            tokio::time::sleep(deadline * 4).await;
            let _ = release.send(());
        };
        let (first, second, ()) = tokio::join!(hung, second, releaser);
        assert_eq!((first, second), (7, 8));
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(
            reports[0]
                .as_deref()
                .is_some_and(|m| m.starts_with("statting /hung has not returned within")),
            "{reports:?}"
        );
        assert_eq!(reports[1], None, "recovered");
        // The call queued behind it names the call it waits for.
        let behind = behind.lock().unwrap();
        assert_eq!(behind.len(), 2, "{behind:?}");
        assert!(
            behind[0]
                .as_deref()
                .is_some_and(|m| m.starts_with("statting /hung has not returned within 50 ms")),
            "{behind:?}"
        );
    }
}
