//! A workspace's own monitor tunables (`watch_mode`, `poll_interval_ms`, `settle_ms`,
//! `max_latency_ms`): each unset one follows the daemon's config (`WatchMode`, `SettleMs`, ...);
//! a set one overrides it for this workspace's monitor. Their ranges are checked here, once, for
//! `wsync set`, `.wsync.toml`, the `update` request and the registry's load.

use serde::{Deserialize, Serialize};

use crate::monitor_proto::{MonitorTunables, WatchMode};

/// `settle_ms`: the range `SettleMs` allows in the config.
pub const SETTLE_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=10_000;
/// `max_latency_ms`: the range `MaxLatencyMs` allows in the config.
pub const MAX_LATENCY_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=60_000;
/// `poll_interval_ms`: a tenth of a second to an hour.
pub const POLL_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// The per-workspace overrides of the monitor's tunables; `None`: the config's value.
/// Flattened into the workspace's registry entry, each omitted when unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceTuning {
    /// Which watch backend the monitor runs (overrides `WatchMode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_mode: Option<WatchMode>,
    /// How often the poll backend walks the tree, in milliseconds (overrides
    /// `PollIntervalMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// Quiet time after the last change before a batch is synced (overrides `SettleMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// Longest a change waits under continuous churn (overrides `MaxLatencyMs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u64>,
}

/// A tunable outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} must be between {} and {}, found {value}", range.start(), range.end())]
pub struct OutOfRange {
    pub key: &'static str,
    pub value: u64,
    pub range: std::ops::RangeInclusive<u64>,
}

/// Checks `value` of `key` against `range`.
pub fn check_range(
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, OutOfRange> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange { key, value, range })
    }
}

impl WorkspaceTuning {
    /// Every value within its range.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        if let Some(v) = self.poll_interval_ms {
            check_range("poll_interval_ms", v, POLL_INTERVAL_MS_RANGE)?;
        }
        if let Some(v) = self.settle_ms {
            check_range("settle_ms", v, SETTLE_MS_RANGE)?;
        }
        if let Some(v) = self.max_latency_ms {
            check_range("max_latency_ms", v, MAX_LATENCY_MS_RANGE)?;
        }
        Ok(())
    }

    /// The daemon's tunables (`global`, from its config) with this workspace's overrides.
    pub fn apply(&self, global: &MonitorTunables) -> MonitorTunables {
        let mut out = global.clone();
        if let Some(mode) = self.watch_mode {
            out.watch_mode = mode;
        }
        if let Some(v) = self.settle_ms {
            out.settle_ms = v;
        }
        if let Some(v) = self.max_latency_ms {
            out.max_latency_ms = v;
        }
        if let Some(v) = self.poll_interval_ms {
            out.poll_interval_ms = v;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_is_set() {
        let global = MonitorTunables {
            settle_ms: 7,
            max_latency_ms: 90,
            ..MonitorTunables::default()
        };
        assert_eq!(WorkspaceTuning::default().apply(&global), global);
        let tuning = WorkspaceTuning {
            watch_mode: Some(WatchMode::Poll),
            settle_ms: Some(50),
            poll_interval_ms: Some(500),
            ..WorkspaceTuning::default()
        };
        let applied = tuning.apply(&global);
        assert_eq!(applied.watch_mode, WatchMode::Poll);
        assert_eq!(applied.settle_ms, 50);
        assert_eq!(applied.poll_interval_ms, 500);
        assert_eq!(applied.max_latency_ms, 90);
    }

    #[test]
    fn ranges_name_the_key() {
        let bad = WorkspaceTuning {
            poll_interval_ms: Some(5),
            ..WorkspaceTuning::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "poll_interval_ms must be between 100 and 3600000, found 5"
        );
        let bad = WorkspaceTuning {
            max_latency_ms: Some(0),
            ..WorkspaceTuning::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("max_latency_ms"));
    }

    #[test]
    fn unset_values_are_left_out_of_the_registry() {
        let json = serde_json::to_string(&WorkspaceTuning::default()).unwrap();
        assert_eq!(json, "{}");
        let t: WorkspaceTuning =
            serde_json::from_str(r#"{"watch_mode":"poll","poll_interval_ms":500}"#).unwrap();
        assert_eq!(t.watch_mode, Some(WatchMode::Poll));
        assert_eq!(t.poll_interval_ms, Some(500));
    }
}
