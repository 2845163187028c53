//! The one shutdown path: SIGINT, SIGTERM and `Request::Shutdown {}` all [`Shutdown::trigger`] the
//! same event, which the accept loop waits on.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A cloneable, one-way "shut down now" flag.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Option<&'static str>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Starts the shutdown; `reason` is logged once. Later triggers are ignored.
    pub fn trigger(&self, reason: &'static str) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                tracing::info!("shutdown requested: {reason}");
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once the shutdown has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Turns SIGINT and SIGTERM into [`Shutdown::trigger`]; call inside the runtime.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let this = self.clone();
        tokio::spawn(async move {
            let reason = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            this.trigger(reason);
        });
        Ok(())
    }
}
