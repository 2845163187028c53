//! Changing the settings of a registered workspace (the `update` request, `wsync set`, `wsync
//! up`): [`WorkspaceChanges`] says what to change — a key left out stays as it is, `null` resets
//! it to its default, unknown keys are refused — and [`apply`] validates every change as `add`
//! and `attach` would and applies them all or none, saying which keys actually changed and
//! whether the monitor must be restarted for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::tuning::{
    check_range, OutOfRange, MAX_LATENCY_MS_RANGE, POLL_INTERVAL_MS_RANGE, SETTLE_MS_RANGE,
};
use super::{Remote, Transport, Workspace, MAX_DELETE_LIMIT};
use crate::monitor_proto::WatchMode;
use crate::names::{reject_control_chars, ControlCharError};

/// One setting's change: `None` (the key absent) keeps it, `Some(None)` (`null`) resets it to
/// its default, `Some(Some(v))` sets it.
pub type Change<T> = Option<Option<T>>;

/// What to change on a workspace; every key optional. Unknown keys are refused (with serde's
/// "unknown field `key`" naming it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceChanges {
    /// gitignore-syntax patterns (default: none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub excludes: Change<Vec<String>>,
    /// Default: true.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub respect_gitignore: Change<bool>,
    /// Default: the built-in cap.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub max_delete: Change<u64>,
    /// Default: off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub checksum_every_secs: Change<u64>,
    /// Default: the config's `WatchMode`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub watch_mode: Change<WatchMode>,
    /// Default: the config's poll interval.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub poll_interval_ms: Change<u64>,
    /// Default: the config's `SettleMs`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub settle_ms: Change<u64>,
    /// Default: the config's `MaxLatencyMs`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub max_latency_ms: Change<u64>,
    /// Changes to attached remotes, by remote name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remotes: BTreeMap<String, RemoteChanges>,
}

/// What to change on one attached remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteChanges {
    /// Default: 0 (nothing kept).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub keep_deleted_days: Change<u32>,
    /// Default: `auto`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub transport: Change<Transport>,
}

/// A present key is `Some`, whether its value is `null` (`Some(None)`) or not; an absent key
/// is `None` through `#[serde(default)]`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl WorkspaceChanges {
    /// Nothing asked.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Why [`apply`] refused the changes (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    ControlChar(#[from] ControlCharError),
    #[error("excludes: a pattern is empty")]
    EmptyExclude,
    #[error("max_delete must be at most {MAX_DELETE_LIMIT} (rsync's --max-delete limit)")]
    MaxDeleteTooLarge,
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("workspace {workspace:?} has no remote named {remote:?}; see `wsync list`")]
    NoSuchRemote { workspace: String, remote: String },
    #[error(
        "keep_deleted_days must be at most {}",
        crate::trash::MAX_KEEP_DELETED_DAYS
    )]
    KeepDeletedTooLong,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The keys whose value changed, in request order ("excludes", "remote box transport").
    pub changed: Vec<String>,
    /// Something the monitor reads only at start changed: it must be restarted.
    pub restart: bool,
    /// Remotes whose only change is one a running monitor takes as an `update` command
    /// (`keep_deleted_days`); their new settings.
    pub remote_updates: Vec<Remote>,
}

/// Sets `slot` to `change` (or to `default` on a reset) and records `key` when it changed.
fn set<T: PartialEq + Clone>(
    slot: &mut T,
    change: &Change<T>,
    default: T,
    key: &str,
    changed: &mut Vec<String>,
) {
    let Some(change) = change else { return };
    let next = change.clone().unwrap_or(default);
    if *slot != next {
        *slot = next;
        changed.push(key.to_owned());
    }
}

/// A change to an optional setting whose default is "unset".
fn set_opt<T: PartialEq + Clone>(
    slot: &mut Option<T>,
    change: &Change<T>,
    key: &str,
    changed: &mut Vec<String>,
) {
    let Some(change) = change else { return };
    if slot != change {
        slot.clone_from(change);
        changed.push(key.to_owned());
    }
}

/// Validates `changes` and applies them to `ws`, all or none.
pub fn apply(ws: &mut Workspace, changes: &WorkspaceChanges) -> Result<Applied, UpdateError> {
    validate(ws, changes)?;
    let mut next = ws.clone();
    let mut changed = Vec::new();
    set(
        &mut next.excludes,
        &changes.excludes,
        Vec::new(),
        "excludes",
        &mut changed,
    );
    set(
        &mut next.respect_gitignore,
        &changes.respect_gitignore,
        true,
        "respect_gitignore",
        &mut changed,
    );
    set_opt(
        &mut next.max_delete,
        &changes.max_delete,
        "max_delete",
        &mut changed,
    );
    set_opt(
        &mut next.checksum_every_secs,
        &changes.checksum_every_secs,
        "checksum_every_secs",
        &mut changed,
    );
    let t = &mut next.tuning;
    set_opt(
        &mut t.watch_mode,
        &changes.watch_mode,
        "watch_mode",
        &mut changed,
    );
    set_opt(
        &mut t.poll_interval_ms,
        &changes.poll_interval_ms,
        "poll_interval_ms",
        &mut changed,
    );
    set_opt(
        &mut t.settle_ms,
        &changes.settle_ms,
        "settle_ms",
        &mut changed,
    );
    set_opt(
        &mut t.max_latency_ms,
        &changes.max_latency_ms,
        "max_latency_ms",
        &mut changed,
    );
    // Every workspace-level setting is read by the monitor at start.
    let mut restart = !changed.is_empty();
    let mut remote_updates = Vec::new();
    for (name, rc) in &changes.remotes {
        let Some(remote) = next.remotes.iter_mut().find(|r| &r.name == name) else {
            continue; // validated above
        };
        let mut keep = Vec::new();
        set(
            &mut remote.keep_deleted_days,
            &rc.keep_deleted_days,
            0,
            &format!("remote {name} keep_deleted_days"),
            &mut keep,
        );
        let mut transport = Vec::new();
        set(
            &mut remote.transport,
            &rc.transport,
            Transport::Auto,
            &format!("remote {name} transport"),
            &mut transport,
        );
        // A running monitor takes a new trash setting as an update; a new transport changes
        // how its batches are sent, so the monitor starts again with it.
        restart |= !transport.is_empty();
        if !keep.is_empty() && transport.is_empty() {
            remote_updates.push(remote.clone());
        }
        changed.extend(keep);
        changed.extend(transport);
    }
    *ws = next;
    Ok(Applied {
        changed,
        restart,
        remote_updates,
    })
}

/// The checks `add` and `attach` apply to the same values.
fn validate(ws: &Workspace, changes: &WorkspaceChanges) -> Result<(), UpdateError> {
    if let Some(Some(patterns)) = &changes.excludes {
        for pattern in patterns {
            reject_control_chars("exclude pattern", pattern)?;
            if pattern.trim().is_empty() {
                return Err(UpdateError::EmptyExclude);
            }
        }
    }
    if let Some(Some(n)) = changes.max_delete {
        if n > MAX_DELETE_LIMIT {
            return Err(UpdateError::MaxDeleteTooLarge);
        }
    }
    let ranged = [
        (
            "poll_interval_ms",
            changes.poll_interval_ms,
            POLL_INTERVAL_MS_RANGE,
        ),
        ("settle_ms", changes.settle_ms, SETTLE_MS_RANGE),
        (
            "max_latency_ms",
            changes.max_latency_ms,
            MAX_LATENCY_MS_RANGE,
        ),
    ];
    for (key, change, range) in ranged {
        if let Some(Some(v)) = change {
            check_range(key, v, range)?;
        }
    }
    for (name, rc) in &changes.remotes {
        if !ws.remotes.iter().any(|r| &r.name == name) {
            return Err(UpdateError::NoSuchRemote {
                workspace: ws.name.clone(),
                remote: name.clone(),
            });
        }
        if let Some(Some(days)) = rc.keep_deleted_days {
            if days > crate::trash::MAX_KEEP_DELETED_DAYS {
                return Err(UpdateError::KeepDeletedTooLong);
            }
        }
    }
    Ok(())
}

/// The keys of [`WorkspaceChanges`] `wsync set` takes, as written there and in `.wsync.toml`.
pub const KEYS: &[&str] = &[
    "excludes",
    "respect_gitignore",
    "max_delete",
    "checksum_every_secs",
    "watch_mode",
    "poll_interval_ms",
    "settle_ms",
    "max_latency_ms",
];

/// The per-remote keys (`remote.NAME.KEY` for `wsync set`).
pub const REMOTE_KEYS: &[&str] = &["keep_deleted_days", "transport"];

/// Why a `KEY=VALUE` of `wsync set` was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("{given:?} is not KEY=VALUE")]
    NoEquals { given: String },
    #[error("unknown setting {key:?}; the settings are {}, and remote.NAME.{{{}}}", KEYS.join(", "), REMOTE_KEYS.join(","))]
    UnknownKey { key: String },
    #[error("{key}={value:?}: {problem}")]
    BadValue {
        key: String,
        value: String,
        problem: String,
    },
    #[error("{key} is given twice")]
    Twice { key: String },
}

impl WorkspaceChanges {
    /// Adds one `KEY=VALUE` of `wsync set`: `KEY=` (empty) or `KEY=null` resets to the default;
    /// `excludes` takes a comma-separated list. The values are range-checked by [`apply`]
    /// too; types and spellings are checked here.
    pub fn set_from_text(&mut self, given: &str) -> Result<(), SetError> {
        let Some((key, value)) = given.split_once('=') else {
            return Err(SetError::NoEquals {
                given: given.to_owned(),
            });
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = |problem: String| SetError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
        };
        let reset = value.is_empty() || value == "null";
        fn put<T>(slot: &mut Change<T>, key: &str, v: Option<T>) -> Result<(), SetError> {
            if slot.is_some() {
                return Err(SetError::Twice {
                    key: key.to_owned(),
                });
            }
            *slot = Some(v);
            Ok(())
        }
        let number =
            |range: Option<std::ops::RangeInclusive<u64>>| -> Result<Option<u64>, SetError> {
                if reset {
                    return Ok(None);
                }
                let n: u64 = value
                    .parse()
                    .map_err(|_| bad("not a whole number".to_owned()))?;
                if let Some(range) = range {
                    if !range.contains(&n) {
                        return Err(bad(format!(
                            "must be between {} and {}",
                            range.start(),
                            range.end()
                        )));
                    }
                }
                Ok(Some(n))
            };
        let boolean = || -> Result<Option<bool>, SetError> {
            match value {
                _ if reset => Ok(None),
                "true" | "yes" | "on" => Ok(Some(true)),
                "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(bad("use true or false".to_owned())),
            }
        };
        match key {
            "excludes" => {
                let list = (!reset).then(|| {
                    value
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                });
                put(&mut self.excludes, key, list)
            }
            "respect_gitignore" => put(&mut self.respect_gitignore, key, boolean()?),
            "max_delete" => put(
                &mut self.max_delete,
                key,
                number(Some(0..=MAX_DELETE_LIMIT))?,
            ),
            "checksum_every_secs" => put(&mut self.checksum_every_secs, key, number(None)?),
            "watch_mode" => {
                let mode = if reset {
                    None
                } else {
                    Some(WatchMode::parse(value).ok_or_else(|| {
                        bad(format!("use one of {}", WatchMode::NAMES.join(", ")))
                    })?)
                };
                put(&mut self.watch_mode, key, mode)
            }
            "poll_interval_ms" => put(
                &mut self.poll_interval_ms,
                key,
                number(Some(POLL_INTERVAL_MS_RANGE))?,
            ),
            "settle_ms" => put(&mut self.settle_ms, key, number(Some(SETTLE_MS_RANGE))?),
            "max_latency_ms" => put(
                &mut self.max_latency_ms,
                key,
                number(Some(MAX_LATENCY_MS_RANGE))?,
            ),
            _ => {
                let remote_key = key
                    .strip_prefix("remote.")
                    .and_then(|rest| rest.rsplit_once('.'))
                    .filter(|(name, _)| !name.is_empty());
                let Some((name, field)) = remote_key else {
                    return Err(SetError::UnknownKey {
                        key: key.to_owned(),
                    });
                };
                let days_max = u64::from(crate::trash::MAX_KEEP_DELETED_DAYS);
                match field {
                    "keep_deleted_days" => {
                        let days = number(Some(0..=days_max))?.map(|d| d as u32);
                        let rc = self.remotes.entry(name.to_owned()).or_default();
                        put(&mut rc.keep_deleted_days, key, days)
                    }
                    "transport" => {
                        let t = if reset {
                            None
                        } else {
                            Some(value.parse::<Transport>().map_err(bad)?)
                        };
                        let rc = self.remotes.entry(name.to_owned()).or_default();
                        put(&mut rc.transport, key, t)
                    }
                    _ => Err(SetError::UnknownKey {
                        key: key.to_owned(),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteTarget;

    fn ws() -> Workspace {
        Workspace {
            name: "p".into(),
            id: String::new(),
            path: "/p".into(),
            remotes: vec![Remote::new(
                "m",
                RemoteTarget::Local {
                    path: "/srv/m".into(),
                },
            )],
            paused: false,
            excludes: vec!["old/".into()],
            respect_gitignore: true,
            max_delete: None,
            checksum_every_secs: None,
            tuning: Default::default(),
            root_id: None,
        }
    }

    fn changes(json: &str) -> WorkspaceChanges {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn absent_keeps_null_resets_a_value_sets() {
        let mut w = ws();
        w.tuning.settle_ms = Some(30);
        let applied = apply(
            &mut w,
            &changes(r#"{"watch_mode":"poll","excludes":null,"settle_ms":null}"#),
        )
        .unwrap();
        assert_eq!(applied.changed, ["excludes", "watch_mode", "settle_ms"]);
        assert!(applied.restart);
        assert_eq!(w.tuning.watch_mode, Some(WatchMode::Poll));
        assert!(w.excludes.is_empty());
        assert_eq!(w.tuning.settle_ms, None);
        assert!(w.respect_gitignore, "absent: kept");
    }

    #[test]
    fn the_same_values_again_change_nothing() {
        let mut w = ws();
        let c = changes(r#"{"excludes":["old/"],"respect_gitignore":true,"max_delete":null}"#);
        let applied = apply(&mut w, &c).unwrap();
        assert_eq!(applied, Applied::default());
        assert_eq!(w, ws());
        let c = changes(r#"{"poll_interval_ms":500,"remotes":{"m":{"transport":"rsync"}}}"#);
        assert_eq!(
            apply(&mut w, &c).unwrap().changed,
            ["poll_interval_ms", "remote m transport"]
        );
        assert_eq!(apply(&mut w, &c).unwrap(), Applied::default());
    }

    #[test]
    fn a_trash_setting_alone_is_an_update_without_restart() {
        let mut w = ws();
        let applied = apply(
            &mut w,
            &changes(r#"{"remotes":{"m":{"keep_deleted_days":3}}}"#),
        )
        .unwrap();
        assert!(!applied.restart);
        assert_eq!(applied.remote_updates.len(), 1);
        assert_eq!(applied.remote_updates[0].keep_deleted_days, 3);
        let applied = apply(
            &mut w,
            &changes(r#"{"remotes":{"m":{"transport":"rsync"}}}"#),
        )
        .unwrap();
        assert!(applied.restart);
        assert!(applied.remote_updates.is_empty());
    }

    #[test]
    fn bad_values_change_nothing_and_name_the_problem() {
        let mut w = ws();
        let cases = [
            (
                r#"{"settle_ms":1,"poll_interval_ms":10}"#,
                "poll_interval_ms must be between 100",
            ),
            (r#"{"excludes":["a"," "]}"#, "excludes: a pattern is empty"),
            (
                r#"{"max_delete":99999999999}"#,
                "max_delete must be at most",
            ),
            (
                r#"{"remotes":{"nope":{"transport":"rsync"}}}"#,
                "no remote named \"nope\"",
            ),
            (r#"{"excludes":["a\nb"]}"#, "exclude pattern"),
        ];
        for (json, wanted) in cases {
            let err = apply(&mut w, &changes(json)).unwrap_err().to_string();
            assert!(err.contains(wanted), "{json}: {err}");
            assert_eq!(w, ws(), "{json} changed the entry");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = serde_json::from_str::<WorkspaceChanges>(r#"{"watchmode":"poll"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `watchmode`"),
            "{err}"
        );
        let err = serde_json::from_str::<WorkspaceChanges>(r#"{"remotes":{"m":{"port":2}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn null_and_absent_round_trip_distinctly() {
        let c = changes(r#"{"excludes":null,"watch_mode":"inotify"}"#);
        assert_eq!(c.excludes, Some(None));
        assert_eq!(c.max_delete, None);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"excludes":null,"watch_mode":"inotify"}"#
        );
        assert!(WorkspaceChanges::default().is_empty());
    }

    #[test]
    fn set_parses_key_value_and_names_what_is_wrong() {
        let mut c = WorkspaceChanges::default();
        for kv in [
            "watch_mode=poll",
            "poll_interval_ms=500",
            "excludes=target/, *.log",
            "settle_ms=",
            "remote.m.transport=rsync",
            "respect_gitignore=false",
        ] {
            c.set_from_text(kv).unwrap();
        }
        assert_eq!(c.watch_mode, Some(Some(WatchMode::Poll)));
        assert_eq!(c.poll_interval_ms, Some(Some(500)));
        assert_eq!(
            c.excludes,
            Some(Some(vec!["target/".into(), "*.log".into()]))
        );
        assert_eq!(c.settle_ms, Some(None));
        assert_eq!(c.remotes["m"].transport, Some(Some(Transport::Rsync)));
        assert_eq!(c.respect_gitignore, Some(Some(false)));
        let err = |kv: &str| {
            WorkspaceChanges::default()
                .set_from_text(kv)
                .unwrap_err()
                .to_string()
        };
        assert!(err("colour=red").starts_with("unknown setting \"colour\""));
        assert!(err("remote.m.port=2").starts_with("unknown setting \"remote.m.port\""));
        assert!(err("watch_mode=fast").contains("use one of auto, inotify, notify, poll"));
        assert!(err("poll_interval_ms=5").contains("must be between 100 and 3600000"));
        assert!(err("settle_ms=soon").contains("not a whole number"));
        assert!(err("watch_mode").contains("is not KEY=VALUE"));
        let mut c = WorkspaceChanges::default();
        c.set_from_text("settle_ms=1").unwrap();
        assert_eq!(
            c.set_from_text("settle_ms=2").unwrap_err().to_string(),
            "settle_ms is given twice"
        );
    }
}
