//! Running one batch for one remote, start to finish: the per-batch safety checks (a local
//! target without this workspace's `.wsync-target` marker, an empty root against a non-empty remote, the dry run against the
//! `--max-delete` cap after a halt), replaying renames, the files still being written in a pass
//! of their own ([`Destination::send_growing`]), then one rsync with the argv built by
//! `wsync_core::rsync`. The engine decides what to run ([`BatchOptions`]); this module only
//! carries it out and returns an [`Outcome`]. It never sees the engine's state.

mod agent;
mod destination;
mod hardlinks;
mod in_process;
pub mod progress;
mod renames;
mod rsync_run;
mod trash;

use trash::Backup;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsync_core::remote::RemoteTarget;
use wsync_core::rsync::{
    deletion_rules, dry_run_argv, failed_paths, files_from, guard_refusal, max_delete_skipped,
    parse_itemized, rsync_argv, sent_lengths, vanished_paths, ExitClass, PathFailure, RsyncMode,
    RsyncRequest, RsyncStats, COOKIE_PREFIX, DEFAULT_TIMEOUT_SECS,
};
use wsync_core::rsync_version::{delete_missing_args_broken_in, RsyncEnds};

pub use destination::Destination;
pub use renames::fallback_paths;
use rsync_run::{run, run_reporting};

use crate::blocking::StallReport;
use crate::queue::{collapse, transfer_list, Batch, Rename};

/// How many paths a halt's message names.
pub const FIRST_PATHS: usize = 10;

/// The first [`FIRST_PATHS`] of `paths` (of `total`), quoted, for a halt's message.
pub fn first_paths(paths: &[impl std::fmt::Display], total: u64) -> String {
    let first: Vec<String> = paths
        .iter()
        .take(FIRST_PATHS)
        .map(|p| format!("{:?}", p.to_string()))
        .collect();
    let more = if total > first.len() as u64 {
        ", ..."
    } else {
        ""
    };
    format!("{}{more}", first.join(", "))
}

/// How a full sync may delete on the remote, decided by the engine's safety rails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletePolicy {
    /// `--max-delete` caps full syncs (the workspace's `max_delete`).
    #[default]
    Capped,
    /// A halt for a missing or replaced root was lifted: the next full sync is dry-run first
    /// and halts, deleting nothing, past the cap.
    DryRunFirst,
    /// The user confirmed (with resume) the deletions a rail stopped: no cap, and an empty
    /// root may empty the remote.
    Confirmed,
}

/// Where the protect rules come from when the batch has no rules file (which carries them):
/// they keep excluded remote paths from being deleted (`Excludes::protect_rules`).
#[derive(Debug, Clone, Default)]
pub struct ProtectSource {
    /// The workspace's registry exclude patterns.
    pub registry: Vec<String>,
    pub respect_gitignore: bool,
}

/// How one batch is to be run, decided by the engine.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub delete_policy: DeletePolicy,
    /// `--max-delete` for the batch, whatever its kind: what is left of the remote's deletion
    /// budget (`None`: the user confirmed, no cap).
    pub max_delete: Option<u64>,
    /// Renames queued as plain paths (a failed batch's, one racing a transfer). When rsync
    /// (not a replayed rename) moves a directory, it deletes the whole old subtree and
    /// re-creates it under the new name: a move, not a loss. A batch with such renames, or
    /// with renames whose replay falls back to rsync, is dry-run first while it is capped
    /// (see [`Destination::precheck_paths`]): the deletions below a moved name whose new
    /// name exists are added to its `--max-delete`, every other deletion counts.
    pub moved: Vec<crate::queue::Rename>,
    /// A deleted directory's contents were not reported with it (a directory moved out of
    /// the workspace): what rsync deletes below it is known only from a dry run, which a
    /// capped batch runs first.
    pub deletes_unknown_contents: bool,
    /// Count the batch as synced as soon as rsync reports the transfer complete, before its
    /// exit handshake. Off for a capped batch that deletes: rsync reports the transfer complete
    /// even when `--max-delete` stopped deletions, which only its exit status tells.
    pub report_transfer_done: bool,
    /// rsync filter rules for the excludes.
    pub exclude_from: Option<PathBuf>,
    pub protect: ProtectSource,
    /// Report a full sync's progress (`--info=progress2`); someone waits for it. Costs ~10%
    /// on many small files, so every other sync runs without it.
    pub progress: bool,
    /// Files of the batch still being written (or closed since they were sent so), with the
    /// length of their remote copy when the last batch that sent them reported it. They go
    /// in a pass of their own before the rest (see [`Destination::send_growing`]).
    pub growing: Vec<(PathBuf, Option<u64>)>,
    /// Paths known to have changed that the batch's entries cover (below a listed directory;
    /// anywhere for a full sync whose dirty set collapsed, or that an earlier monitor
    /// persisted): the files among them are sent first, by content (`--ignore-times`), so a
    /// same-size rewrite with its old mtime is not skipped by the recursion's size+mtime.
    pub by_content: Arc<Vec<PathBuf>>,
    /// A full sync comparing every file by checksum (`--checksum`).
    pub checksum: bool,
}

impl BatchOptions {
    /// These options for the rest of a batch once an earlier pass deleted `deleted` paths:
    /// what is left of the `--max-delete` budget.
    fn less_deleted(&self, deleted: u64) -> Self {
        Self {
            max_delete: self.max_delete.map(|m| m.saturating_sub(deleted)),
            ..self.clone()
        }
    }
}

/// Result of one batch.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub class: ExitClass,
    pub stats: RsyncStats,
    /// The tail of rsync's stderr (or why it could not start), for status.
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Set when a safety rail stopped the batch: the workspace must halt with this reason.
    pub halt: Option<String>,
    /// On exit 24: the files that vanished mid-transfer (`None`: unknown, retry the batch).
    pub vanished: Option<Vec<PathBuf>>,
    /// On exit 23: the paths that failed, when every error line named one (`None`: unknown,
    /// the whole batch failed).
    pub failed_paths: Option<Vec<PathFailure>>,
    /// The growing files (see [`BatchOptions::growing`]) that landed, and the length rsync
    /// sent of each: what their remote copy holds.
    pub sent_lengths: Vec<(PathBuf, u64)>,
    /// Deletions that were the old side of a move (see [`BatchOptions::moved`]): not counted
    /// against the deletion budget.
    pub moved: u64,
    /// Both ends' rsync as this remote's check found them (for status); `None` until checked.
    pub rsync: Option<RsyncEnds>,
}

impl Outcome {
    /// A batch that did its work.
    pub fn success(stats: RsyncStats, elapsed: Duration) -> Self {
        Self {
            class: ExitClass::Success,
            stats,
            error: None,
            elapsed,
            halt: None,
            vanished: None,
            failed_paths: None,
            sent_lengths: Vec::new(),
            moved: 0,
            rsync: None,
        }
    }

    pub fn failed(class: ExitClass, error: String, started: Instant) -> Self {
        Self {
            class,
            stats: RsyncStats::default(),
            error: Some(error),
            elapsed: started.elapsed(),
            halt: None,
            vanished: None,
            failed_paths: None,
            sent_lengths: Vec::new(),
            moved: 0,
            rsync: None,
        }
    }
}

impl Destination {
    /// The rsync request every transfer of this destination starts from: its target,
    /// connection, marker and remote rsync, the batch's rules and deletion cap, and nothing
    /// extra; each caller sets what it needs beyond that.
    fn rsync_request<'a>(
        &'a self,
        root: &'a Path,
        mode: RsyncMode,
        opts: &'a BatchOptions,
        protect: &'a [Vec<u8>],
    ) -> RsyncRequest<'a> {
        RsyncRequest {
            source_root: root,
            target: &self.remote.target,
            control_path: self.control_path.as_deref(),
            mode,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            excludes: &[],
            protect,
            max_delete: opts.max_delete,
            exclude_from: opts.exclude_from.as_deref(),
            report_transfer_done: false,
            progress: false,
            marker_id: Some(&self.workspace_id),
            backup_dir: None,
            checksum: false,
            remote_rsync: self.remote.rsync_path.as_deref(),
            no_delete_missing_args: self.deletion_fallback(),
            deletion_rules: None,
        }
    }
    /// Runs one batch to this destination; `transferred` is called as soon as rsync reports
    /// the transfer complete without any message (before its slow exit handshake),
    /// `progress` with a full sync's progress (see [`progress`]), and `stall` when one of its
    /// filesystem calls (all made off the event loop) passes its deadline or returns after all.
    pub async fn sync(
        &self,
        root: &Path,
        batch: &Batch,
        opts: &BatchOptions,
        transferred: impl FnOnce() + Send,
        progress: impl FnMut(wsync_core::monitor_proto::SyncProgress) + Send,
        stall: StallReport<'_>,
    ) -> Outcome {
        // Both ends' rsync before the first transfer (see `Destination::check_rsync`).
        let mut outcome = match self.check_rsync().await {
            Ok(()) => {
                self.transfer(root, batch, opts, transferred, progress, stall)
                    .await
            }
            Err(refused) => refused,
        };
        if outcome.class != ExitClass::Success
            && outcome
                .error
                .as_deref()
                .is_some_and(delete_missing_args_broken_in)
        {
            // A backport of 3.4.3's bug under an older number: the retry (with backoff, the
            // batch's paths kept) deletes by the fallback; not a fatal error.
            self.use_deletion_fallback();
            outcome.class = ExitClass::Other;
        }
        outcome.rsync = self.rsync_ends();
        outcome
    }

    /// [`Destination::sync`] once both ends' rsync are known to be usable.
    async fn transfer(
        &self,
        root: &Path,
        batch: &Batch,
        opts: &BatchOptions,
        transferred: impl FnOnce() + Send,
        progress: impl FnMut(wsync_core::monitor_proto::SyncProgress) + Send,
        stall: StallReport<'_>,
    ) -> Outcome {
        let started = Instant::now();
        // Before every transfer: nothing is written to a target that is not provably ours
        // (SSH targets: the guard in rsync's --rsync-path and in the rename script).
        if !self.local_target_is_ours(stall).await {
            let error = not_ours(&self.remote.target);
            return Outcome::failed(ExitClass::Fatal, error, started);
        }
        // One trash snapshot per batch (its passes share it), when the remote keeps deletions;
        // a local one held open, so a trash swapped for a link redirects nothing (SSH
        // targets: the guard checks it).
        let backup = match self.backup(stall).await {
            Ok(backup) => backup,
            Err(error) => return Outcome::failed(ExitClass::Fatal, error, started),
        };
        let outcome = self
            .sync_into(
                root,
                batch,
                opts,
                backup.as_ref(),
                transferred,
                progress,
                stall,
                started,
            )
            .await;
        self.release(backup, stall).await;
        outcome
    }

    /// [`Destination::sync`] once the target proved ours, keeping what it deletes or
    /// overwrites in `backup`.
    #[allow(clippy::too_many_arguments)]
    async fn sync_into(
        &self,
        root: &Path,
        batch: &Batch,
        opts: &BatchOptions,
        backup: Option<&Backup>,
        transferred: impl FnOnce() + Send,
        mut progress: impl FnMut(wsync_core::monitor_proto::SyncProgress) + Send,
        stall: StallReport<'_>,
        started: Instant,
    ) -> Outcome {
        let backup_dir = backup.map(Backup::dir);

        let keep = backup.and_then(Backup::descriptor);
        let confirmed = opts.delete_policy == DeletePolicy::Confirmed;
        // The watcher's rules file carries the protect rules, current before any batch runs;
        // without one, read every ignore file now (slow on a big tree).
        let protect = match opts.exclude_from {
            Some(_) => Vec::new(),
            None => {
                let (owned, source) = (root.to_path_buf(), opts.protect.clone());
                let call = format!("reading the ignore files below {}", root.display());
                self.blocking(call, stall, move || {
                    wsync_core::excludes::protect_rules_for_tree(
                        &owned,
                        &source.registry,
                        source.respect_gitignore,
                    )
                })
                .await
            }
        };
        let root_empty = || {
            let owned = root.to_path_buf();
            let call = format!("listing the workspace root {}", root.display());
            self.blocking(call, stall, move || root_is_empty(&owned))
        };
        if !confirmed && root_empty().await {
            match self.target_is_empty(stall).await {
                Ok(true) => {}
                Ok(false) => {
                    let mut outcome = Outcome::failed(
                        ExitClass::Fatal,
                        "workspace root is empty but the remote is not".into(),
                        started,
                    );
                    outcome.halt = Some(format!(
                        "workspace root {} is empty but remote {} is not (a mount went away, or everything was deleted); nothing is deleted until `wsync resume` confirms it",
                        root.display(),
                        self.remote.name
                    ));
                    return outcome;
                }
                Err(e) => {
                    if let Some(refused) = guard_refusal(&e.to_string(), &self.remote.target) {
                        return Outcome::failed(ExitClass::Fatal, refused, started);
                    }
                    return Outcome::failed(
                        ExitClass::Connection,
                        format!(
                            "the workspace root is empty and the remote cannot be checked: {e}"
                        ),
                        started,
                    );
                }
            }
        }
        if opts.delete_policy == DeletePolicy::DryRunFirst && *batch == Batch::Full {
            if let Some(outcome) = self.precheck_deletions(root, opts, &protect, started).await {
                return outcome;
            }
        }
        // The files-first pass's outcome, when it ran (it is merged into the batch's).
        let mut files_pass: Option<Outcome> = None;
        // The growing files' pass's outcome, when it ran (merged likewise).
        let mut growing_pass: Option<Outcome> = None;
        // The in-process pass's outcome, when it ran (merged likewise), and the options for
        // what it left to rsync.
        let mut in_process_pass: Option<Outcome> = None;
        let rest_opts: BatchOptions;
        let capped_opts: BatchOptions;
        // Deletions below moved names the dry run found (see `BatchOptions::moved`).
        let mut moved_deletions = 0;
        // The deletion fallback's pass, when it ran (merged likewise), and the options for
        // what it left.
        let mut deletion_pass: Option<Outcome> = None;
        let deletions_opts: BatchOptions;
        // The options for what a combined agent exchange left, when its replay stopped early.
        let combined_opts: BatchOptions;
        let mut opts = opts;
        let (mode, list) = match batch {
            // A checksum full sync compares the known files by content anyway.
            Batch::Full if opts.checksum || opts.by_content.is_empty() => (RsyncMode::Full, None),
            Batch::Full => {
                let known = opts.by_content.clone();
                let owned = root.to_path_buf();
                // Up to a million stats: off the event loop, behind the remote's gate.
                let call = format!("looking up the known changed files in {}", root.display());
                let files = self
                    .blocking(call, stall, move || {
                        split_files(&owned, known.as_ref().clone()).0
                    })
                    .await;
                tracing::debug!(remote = %self.remote.name, known = opts.by_content.len(), files = files.len(), "full sync: known changed files go by content first");
                match self
                    .files_first(root, files, opts, &protect, backup, stall)
                    .await
                {
                    Ok(first) => files_pass = first,
                    Err(failed) => return failed,
                }
                (RsyncMode::Full, None)
            }
            Batch::Paths { renames, paths } => {
                // Over an agent, renames and the other changes may go in one round trip.
                let combined = if self.may_combine(renames, paths, opts, backup_dir.is_some()) {
                    let (rules, max_delete) = (has_rules(opts), opts.max_delete);
                    self.replay_and_apply_by_agent(root, renames, paths, rules, max_delete, stall)
                        .await
                } else {
                    None
                };
                let (replayed, combined_pass) = match combined {
                    Some((replayed, pass)) => (replayed, Some(pass)),
                    None => (
                        renames::replay(self, renames, backup_dir.is_some(), stall).await,
                        None,
                    ),
                };
                // A replay that stopped early leaves the batch to the usual course (the
                // changes already written are sent again where rsync finds them different),
                // and what the exchange deleted counts against what the rest may delete.
                let combined_pass = match combined_pass {
                    Some(pass @ in_process::Pass::Stop(_)) => Some(pass),
                    Some(pass) if replayed.done == renames.len() => Some(pass),
                    Some(in_process::Pass::Done { outcome, .. })
                        if outcome.stats.files_deleted > 0 =>
                    {
                        combined_opts = opts.less_deleted(outcome.stats.files_deleted);
                        opts = &combined_opts;
                        None
                    }
                    _ => None,
                };
                if let Some(error) = replayed.refused {
                    return Outcome::failed(ExitClass::Fatal, error, started);
                }
                if let Some(why) = &replayed.stopped {
                    tracing::info!(
                        remote = %self.remote.name,
                        replayed = replayed.done,
                        "renames fall back to rsync: {why}"
                    );
                }
                if replayed.done > 0 {
                    tracing::debug!(remote = %self.remote.name, renames = replayed.done, "renames replayed");
                }
                // A directory the replay found replaced on the remote goes whole.
                let fallback =
                    fallback_paths(&renames[replayed.done..]).chain(replayed.diverged.as_ref());
                let all = collapse(paths.iter().chain(fallback));
                // rsync moves what the replay did not: a capped batch learns from a dry run
                // how much of what it deletes is the old side of a move.
                let moved: Vec<Rename> = opts
                    .moved
                    .iter()
                    .chain(&renames[replayed.done..])
                    .cloned()
                    .collect();
                let precheck = opts.max_delete.is_some()
                    && (!moved.is_empty() || opts.deletes_unknown_contents);
                if precheck {
                    match self
                        .precheck_paths(root, &all, &moved, opts, &protect, started, stall)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => {
                            moved_deletions = n;
                            capped_opts = BatchOptions {
                                max_delete: opts.max_delete.map(|m| m.saturating_add(n)),
                                ..opts.clone()
                            };
                            opts = &capped_opts;
                        }
                        Err(outcome) => return outcome,
                    }
                }
                let pass = match combined_pass {
                    Some(pass) => pass,
                    None => {
                        self.run_in_process(root, all, opts, backup_dir, !precheck, stall)
                            .await
                    }
                };
                let all = match pass {
                    in_process::Pass::Stop(mut outcome) => {
                        if outcome.class == ExitClass::MaxDelete {
                            outcome.halt = Some(self.max_delete_reason(batch, opts, ""));
                        }
                        outcome.elapsed = started.elapsed();
                        return outcome;
                    }
                    in_process::Pass::Done { outcome, rest } => {
                        if rest.is_empty() {
                            if outcome.class == ExitClass::Success {
                                transferred();
                            }
                            let mut outcome = outcome;
                            outcome.elapsed = started.elapsed();
                            return outcome;
                        }
                        if outcome.stats.files_deleted > 0 {
                            // What rsync may still delete is what the executor left.
                            rest_opts = opts.less_deleted(outcome.stats.files_deleted);
                            opts = &rest_opts;
                        }
                        in_process_pass = Some(outcome);
                        rest
                    }
                };
                let (all, growing) = self
                    .send_growing(root, all, opts, &protect, backup, stall)
                    .await;
                if let Some(mut pass) = growing {
                    if all.is_empty() || !landed_but_for_known_paths(&pass) {
                        pass.elapsed = started.elapsed();
                        return pass;
                    }
                    growing_pass = Some(pass);
                }
                if all.is_empty() {
                    // Everything was a replayed rename: nothing for rsync to do.
                    transferred();
                    return Outcome::success(RsyncStats::default(), started.elapsed());
                }
                let owned = root.to_path_buf();
                let call = format!("looking up the batch's paths in {}", root.display());
                let (list, has_dir, linked) = self
                    .blocking(call, stall, move || {
                        let (list, has_dir) = transfer_list(&owned, &all);
                        let linked = hardlinks::Linked::in_list(&owned, &list);
                        (list, has_dir, linked)
                    })
                    .await;
                let list = with_other_links(root, list, linked).await;
                // Listed directories go recursively: re-sending all their files (-I) would make
                // a directory chmod or a refilled new directory cost its whole size. So a batch
                // with directories sends its changed files first, on their own, with -I: a
                // same-size rewrite within one mtime tick (`cp -p`, `tar`, coarse clocks) is
                // never skipped.
                let list = if has_dir {
                    let owned = root.to_path_buf();
                    let known = opts.by_content.clone();
                    let call = format!("looking up the batch's paths in {}", root.display());
                    let files_and_rest = self.blocking(call, stall, move || {
                        let (mut files, rest) = split_files(&owned, list);
                        // The changed files below the listed directories go by content too.
                        files.extend(split_files(&owned, known.as_ref().clone()).0);
                        (files, rest)
                    });
                    let (files, rest) = files_and_rest.await;
                    match self
                        .files_first(root, files, opts, &protect, backup, stall)
                        .await
                    {
                        Ok(first) => files_pass = first,
                        Err(mut failed) => {
                            if let Some(pass) = in_process_pass {
                                merge_files_pass(&mut failed, pass);
                            }
                            return failed;
                        }
                    }
                    rest
                } else {
                    list
                };
                // A receiver whose --delete-missing-args is broken: the missing paths go in a
                // pass of their own, by filter rules.
                let list = if self.deletion_fallback() {
                    let owned = root.to_path_buf();
                    let call = format!("looking up the batch's deletions in {}", root.display());
                    let (missing, rest) = self
                        .blocking(call, stall, move || split_missing(&owned, list))
                        .await;
                    if !missing.is_empty() {
                        let mut pass = self
                            .delete_by_rules(root, &missing, opts, &protect, backup_dir, stall)
                            .await;
                        if pass.class == ExitClass::MaxDelete {
                            pass.halt = Some(self.max_delete_reason(batch, opts, ""));
                        }
                        if rest.is_empty() || !landed_but_for_known_paths(&pass) {
                            for earlier in [files_pass.take(), in_process_pass.take()]
                                .into_iter()
                                .flatten()
                            {
                                merge_files_pass(&mut pass, earlier);
                            }
                            if rest.is_empty() && pass.class == ExitClass::Success {
                                transferred();
                            }
                            pass.elapsed = started.elapsed();
                            return pass;
                        }
                        if pass.stats.files_deleted > 0 {
                            // What rsync may still delete is what the fallback left.
                            deletions_opts = opts.less_deleted(pass.stats.files_deleted);
                            opts = &deletions_opts;
                        }
                        deletion_pass = Some(pass);
                    }
                    rest
                } else {
                    list
                };
                let mode = RsyncMode::Paths {
                    ignore_times: !has_dir,
                };
                (mode, Some(list))
            }
        };
        let argv = rsync_argv(&RsyncRequest {
            report_transfer_done: opts.report_transfer_done,
            progress: opts.progress && matches!(mode, RsyncMode::Full),
            backup_dir,
            checksum: opts.checksum && matches!(mode, RsyncMode::Full),
            ..self.rsync_request(root, mode, opts, &protect)
        });
        let stdin = list.map(|paths| files_from(&paths));
        tracing::debug!(remote = %self.remote.name, ?argv, "running rsync");
        let reporter = (opts.progress && matches!(mode, RsyncMode::Full))
            .then(|| progress::Reporter::new(&mut progress));
        let (mut outcome, output) =
            run_reporting(&self.groups, argv, stdin, transferred, reporter, keep).await;
        if let Some(refused) = self.refusal(&outcome, &output) {
            outcome.class = ExitClass::Fatal;
            outcome.error = Some(refused);
        }
        if outcome.class == ExitClass::Vanished {
            outcome.vanished = vanished_paths(&output, root);
        }
        self.note_failed_paths(&mut outcome, &output, root, stall)
            .await;
        if let Some(first) = files_pass {
            merge_files_pass(&mut outcome, first);
            outcome.elapsed = started.elapsed();
        }
        if let Some(pass) = growing_pass {
            merge_growing_pass(&mut outcome, pass);
            outcome.elapsed = started.elapsed();
        }
        if let Some(pass) = in_process_pass {
            merge_files_pass(&mut outcome, pass);
            outcome.elapsed = started.elapsed();
        }
        if let Some(pass) = deletion_pass {
            merge_files_pass(&mut outcome, pass);
            outcome.elapsed = started.elapsed();
        }
        if outcome.class == ExitClass::MaxDelete {
            outcome.halt = Some(self.max_delete_reason(batch, opts, &output));
        }
        outcome.moved = moved_deletions.min(outcome.stats.files_deleted);
        outcome
    }

    /// Applies what of `paths` it can by the executor ([`in_process`]) — in process for a local
    /// target, through the agent for an SSH one ([`agent`]) — when nothing in the batch needs
    /// rsync as a whole: no trash (rsync's `--backup` keeps what is overwritten), no growing
    /// files (their append pass), no dry run first, and `allowed` (a batch whose deletions a
    /// dry run counted goes whole through rsync, capped by what the dry run found). Off the
    /// event loop. Returns the pass, or every path left to rsync.
    async fn run_in_process(
        &self,
        root: &Path,
        paths: Vec<PathBuf>,
        opts: &BatchOptions,
        backup_dir: Option<wsync_core::rsync::BackupDir<'_>>,
        allowed: bool,
        stall: StallReport<'_>,
    ) -> in_process::Pass {
        let not_whole_batch = || in_process::Pass::Done {
            outcome: Outcome::success(RsyncStats::default(), Duration::ZERO),
            rest: Vec::new(),
        };
        if !allowed
            || backup_dir.is_some()
            || !opts.growing.is_empty()
            || opts.delete_policy == DeletePolicy::DryRunFirst
            || paths.is_empty()
            || !self.agent.may_send()
        {
            return with_rest(not_whole_batch(), paths);
        }
        let rules = has_rules(opts);
        let max_delete = opts.max_delete;
        let RemoteTarget::Local { path: target } = &self.remote.target else {
            return self.run_agent(root, paths, rules, max_delete, stall).await;
        };
        let (root, target, id) = (
            root.to_path_buf(),
            target.clone(),
            self.workspace_id.clone(),
        );
        let message = not_ours(&self.remote.target);
        // Behind the remote's gate like every call on the target: a hung mount stalls this
        // remote only, with its deadline.
        let call = format!("writing changes in process to {}", target.display());
        self.blocking(call, stall, move || {
            in_process::apply(&root, &target, &id, paths, rules, max_delete, || message)
        })
        .await
    }

    /// True when a paths batch's renames and its changes may go to the agent in one exchange
    /// ([`Destination::replay_and_apply_by_agent`] checks the rest): an SSH remote with both,
    /// and nothing that needs rsync as a whole or a dry run before the changes (the
    /// conditions of [`Destination::run_in_process`], and no deletion precheck: no renames
    /// carried as plain paths, no deletion of unknown contents, under a cap).
    fn may_combine(
        &self,
        renames: &[crate::queue::Rename],
        paths: &[PathBuf],
        opts: &BatchOptions,
        trash: bool,
    ) -> bool {
        matches!(self.remote.target, RemoteTarget::Ssh { .. })
            && !renames.is_empty()
            && !paths.is_empty()
            && !trash
            && opts.growing.is_empty()
            && opts.delete_policy != DeletePolicy::DryRunFirst
            && !(opts.max_delete.is_some()
                && (!opts.moved.is_empty() || opts.deletes_unknown_contents))
            && self.agent.may_send()
    }

    /// The files-first pass of a batch (see [`Destination::send_files_by_content`]): `Ok`
    /// with its outcome (none when there are no files) when the rest of the batch is to run,
    /// merged into its outcome later; `Err` with the outcome that ends the batch.
    async fn files_first(
        &self,
        root: &Path,
        files: Vec<PathBuf>,
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        backup: Option<&Backup>,
        stall: StallReport<'_>,
    ) -> Result<Option<Outcome>, Outcome> {
        if files.is_empty() {
            return Ok(None);
        }
        let first = self
            .send_files_by_content(root, files, opts, protect, backup, stall)
            .await;
        // Files that vanished in this pass are queued again by the engine, which counts the
        // rest of the batch as done: the second pass (the directories and the deletions, or
        // the full sync) must run all the same.
        match first.class {
            ExitClass::Partial if first.failed_paths.is_some() => Ok(Some(first)),
            ExitClass::Success | ExitClass::Vanished => {
                if first.class == ExitClass::Vanished {
                    tracing::debug!(remote = %self.remote.name, vanished = ?first.vanished, "files vanished in the files-first pass");
                }
                Ok(Some(first))
            }
            _ => Err(first),
        }
    }

    /// Sends `files` (existing, none a directory when listed) with `--ignore-times`: compared
    /// by content, whatever their size and mtime say. It deletes only a listed file that is
    /// gone by the time rsync looks (`--delete-missing-args`), and reports those that vanish
    /// mid-transfer (exit 24) like any batch.
    async fn send_files_by_content(
        &self,
        root: &Path,
        files: Vec<PathBuf>,
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        backup: Option<&Backup>,
        stall: StallReport<'_>,
    ) -> Outcome {
        let backup_dir = backup.map(Backup::dir);
        let argv = rsync_argv(&RsyncRequest {
            max_delete: None,
            backup_dir,
            ..self.rsync_request(root, RsyncMode::Paths { ignore_times: true }, opts, protect)
        });
        tracing::debug!(remote = %self.remote.name, ?argv, "sending changed files by content");
        let keep = backup.and_then(Backup::descriptor);
        let (mut outcome, output) = run_reporting(
            &self.groups,
            argv,
            Some(files_from(&files)),
            || {},
            None,
            keep,
        )
        .await;
        self.read_output(&mut outcome, &output, root, stall).await;
        outcome
    }

    /// What a pass's output says beyond its exit code: a target that is not ours, the files
    /// that vanished (exit 24) or failed (exit 23).
    async fn read_output(
        &self,
        outcome: &mut Outcome,
        output: &str,
        root: &Path,
        stall: StallReport<'_>,
    ) {
        if let Some(refused) = self.refusal(outcome, output) {
            outcome.class = ExitClass::Fatal;
            outcome.error = Some(refused);
        }
        if outcome.class == ExitClass::Vanished {
            outcome.vanished = vanished_paths(output, root);
        }
        self.note_failed_paths(outcome, output, root, stall).await;
    }

    /// Sends the batch's growing files (see [`BatchOptions::growing`]) in `list` on their own,
    /// before the rest: appended (`--append-verify`) when the file is longer now than the
    /// remote copy was, by content otherwise. rsync skips appending to a remote copy as long
    /// as the file or longer, so a file truncated and rewritten (no longer, or not yet longer)
    /// is sent by content. A file with other names goes with the rest (they are synced with
    /// it). Returns the rest of `list`, and the pass's outcome when it ran.
    async fn send_growing(
        &self,
        root: &Path,
        list: Vec<PathBuf>,
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        backup: Option<&Backup>,
        stall: StallReport<'_>,
    ) -> (Vec<PathBuf>, Option<Outcome>) {
        if opts.growing.is_empty() {
            return (list, None);
        }
        let (owned, growing) = (root.to_path_buf(), opts.growing.clone());
        let call = format!("looking up the growing files in {}", root.display());
        let sorted = self.blocking(call, stall, move || {
            let (mut append, mut by_content, mut rest) = (Vec::new(), Vec::new(), Vec::new());
            for path in list {
                let Some((_, remote_length)) = growing.iter().find(|(p, _)| *p == path) else {
                    rest.push(path);
                    continue;
                };
                match std::fs::symlink_metadata(owned.join(&path)) {
                    Ok(meta) if meta.file_type().is_file() && meta.nlink() == 1 => {
                        if remote_length.is_some_and(|sent| meta.len() > sent) {
                            append.push(path);
                        } else {
                            by_content.push(path);
                        }
                    }
                    _ => rest.push(path),
                }
            }
            (append, by_content, rest)
        });
        let (append, by_content, rest) = sorted.await;
        let mut pass: Option<Outcome> = None;
        // What a growing file's send overwrites is kept like any other overwrite.
        let backup_dir = backup.map(Backup::dir);
        let keep = backup.and_then(Backup::descriptor);
        for (files, append) in [(append, true), (by_content, false)] {
            if files.is_empty() {
                continue;
            }
            let argv = rsync_argv(&RsyncRequest {
                max_delete: None,
                backup_dir,
                ..self.rsync_request(root, RsyncMode::Growing { append }, opts, protect)
            });
            tracing::debug!(remote = %self.remote.name, ?argv, "sending growing files");
            let (mut outcome, output) = run_reporting(
                &self.groups,
                argv,
                Some(files_from(&files)),
                || {},
                None,
                keep,
            )
            .await;
            self.read_output(&mut outcome, &output, root, stall).await;
            if !landed_but_for_known_paths(&outcome) {
                return (rest, Some(outcome));
            }
            // rsync prints a file's line before sending it: only what did not fail landed.
            let failed = |p: &PathBuf| {
                outcome.failed_paths.iter().flatten().any(|f| &f.path == p)
                    || outcome.vanished.iter().flatten().any(|v| v == p)
            };
            outcome.sent_lengths = sent_lengths(&output)
                .into_iter()
                .filter(|(p, _)| files.contains(p) && !failed(p))
                .collect();
            tracing::debug!(remote = %self.remote.name, append, sent = ?outcome.sent_lengths, bytes = outcome.stats.bytes_sent, "growing files sent");
            match pass.as_mut() {
                Some(first) => merge_growing_pass(first, outcome),
                None => pass = Some(outcome),
            }
        }
        (rest, pass)
    }

    /// Deletes `entries` (paths the source lacks, none below another, each with a directory
    /// for a parent there) on the remote without `--delete-missing-args`: an
    /// [`RsyncMode::Deletions`] run over their parent directories with the rules of
    /// [`deletion_rules`], which let `--delete` see nothing else. For a receiver whose
    /// `--delete-missing-args` is broken (3.4.3 and its backports).
    async fn delete_by_rules(
        &self,
        root: &Path,
        entries: &[PathBuf],
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        backup_dir: Option<wsync_core::rsync::BackupDir<'_>>,
        stall: StallReport<'_>,
    ) -> Outcome {
        let started = Instant::now();
        let (dirs, rules) = deletion_rules(entries);
        let file = tempfile::Builder::new()
            .prefix("wsync-deletions-")
            .tempfile()
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &rules)?;
                Ok(file)
            });
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                let error = format!("cannot write the deletion rules: {e}");
                return Outcome::failed(ExitClass::Other, error, started);
            }
        };
        let argv = rsync_argv(&RsyncRequest {
            backup_dir,
            no_delete_missing_args: true,
            deletion_rules: Some(file.path()),
            ..self.rsync_request(root, RsyncMode::Deletions, opts, protect)
        });
        tracing::debug!(remote = %self.remote.name, ?argv, entries = entries.len(), "deleting by the filter-list fallback");
        let (mut outcome, output) = run(&self.groups, argv, Some(files_from(&dirs)), || {}).await;
        self.read_output(&mut outcome, &output, root, stall).await;
        outcome
    }

    /// On exit 23, the paths that failed (see [`failed_paths`]), mapped back to the workspace
    /// from the source root or the target path (as given and resolved; an SSH target only when
    /// absolute).
    async fn note_failed_paths(
        &self,
        outcome: &mut Outcome,
        output: &str,
        root: &Path,
        stall: StallReport<'_>,
    ) {
        if outcome.class != ExitClass::Partial {
            return;
        }
        let mut roots = vec![root.to_path_buf()];
        let local = match &self.remote.target {
            RemoteTarget::Local { path } => Some(path.clone()),
            RemoteTarget::Ssh { .. } => None,
        };
        let (owned, target) = (root.to_path_buf(), local.clone());
        let call = format!("resolving {} and the target", root.display());
        let resolved: Vec<PathBuf> = self
            .blocking(call, stall, move || {
                std::iter::once(owned)
                    .chain(target)
                    .filter_map(|p| std::fs::canonicalize(p).ok())
                    .collect()
            })
            .await;
        roots.extend(local);
        roots.extend(resolved);
        match &self.remote.target {
            RemoteTarget::Local { .. } => {}
            RemoteTarget::Ssh { path, .. } if path.starts_with('/') => {
                roots.push(PathBuf::from(path));
            }
            RemoteTarget::Ssh { .. } => {}
        }
        let roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
        outcome.failed_paths = failed_paths(output, &roots);
        outcome.vanished = vanished_paths(output, root);
    }

    /// A dry run of the full sync with the `--max-delete` cap: `Some` (a halt, or the failure)
    /// when the real one must not run.
    async fn precheck_deletions(
        &self,
        root: &Path,
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        started: Instant,
    ) -> Option<Outcome> {
        let argv = rsync_argv(&self.rsync_request(root, RsyncMode::Verify, opts, protect));
        tracing::debug!(remote = %self.remote.name, ?argv, "dry run before a full sync");
        let (mut outcome, output) = run(&self.groups, argv, None, || {}).await;
        match outcome.class {
            ExitClass::Success | ExitClass::Vanished => None,
            ExitClass::MaxDelete => {
                outcome.halt = Some(self.max_delete_reason(&Batch::Full, opts, &output));
                Some(outcome)
            }
            _ => {
                outcome.elapsed = started.elapsed();
                Some(outcome)
            }
        }
    }

    fn max_delete_reason(&self, batch: &Batch, opts: &BatchOptions, output: &str) -> String {
        // A dry run itemizes what it would delete: name the first of them.
        let deleting = parse_itemized(output).extra;
        let first = if deleting.is_empty() {
            String::new()
        } else {
            format!(", first {}", first_paths(&deleting, deleting.len() as u64))
        };
        format!(
            "a {} to remote {} stopped at the --max-delete cap of {} deletions, what is left of its deletion budget ({} more skipped){first}; nothing more is deleted until `wsync resume` confirms it (or raise the workspace's max_delete)",
            if *batch == Batch::Full { "full sync" } else { "sync" },
            self.remote.name,
            opts.max_delete.unwrap_or(0),
            max_delete_skipped(output).map_or("some".into(), |n| n.to_string()),
        )
    }

    /// A dry run of a capped paths batch whose deletions the engine cannot count: renames
    /// rsync carries out (`moved`: queued as plain paths, or whose replay fell back) and
    /// directories whose contents were not reported deleted (moved out of the workspace).
    /// What it would delete below a moved name whose new name exists is a move; everything
    /// else counts, and more than what is left of the budget ends the batch before anything
    /// is deleted, naming the count and the first paths. `Ok` with the deletions that are
    /// moves (the real run's `--max-delete` is raised by them, so it stays a bound), `Err`
    /// with the outcome that ends the batch.
    #[allow(clippy::too_many_arguments)]
    async fn precheck_paths(
        &self,
        root: &Path,
        all: &[PathBuf],
        moved: &[Rename],
        opts: &BatchOptions,
        protect: &[Vec<u8>],
        started: Instant,
        stall: StallReport<'_>,
    ) -> Result<u64, Outcome> {
        let (owned, paths, renames) = (root.to_path_buf(), all.to_vec(), moved.to_vec());
        let call = format!("looking up the batch's paths in {}", root.display());
        let (list, moved_from) = self
            .blocking(call, stall, move || {
                let (list, _) = transfer_list(&owned, &paths);
                // A rename whose new name is gone again was a move and then a deletion.
                let moved_from: Vec<PathBuf> = renames
                    .into_iter()
                    .filter(|r| std::fs::symlink_metadata(owned.join(&r.to)).is_ok())
                    .map(|r| r.from)
                    .collect();
                (list, moved_from)
            })
            .await;
        let argv = dry_run_argv(rsync_argv(&RsyncRequest {
            max_delete: None,
            ..self.rsync_request(
                root,
                RsyncMode::Paths {
                    ignore_times: false,
                },
                opts,
                protect,
            )
        }));
        tracing::debug!(remote = %self.remote.name, ?argv, "dry run of a batch that moves or deletes unknown contents");
        let (mut outcome, output) = run(&self.groups, argv, Some(files_from(&list)), || {}).await;
        // A path that fails or vanishes fails the real run the same way, on its own.
        if !matches!(
            outcome.class,
            ExitClass::Success | ExitClass::Vanished | ExitClass::Partial
        ) {
            self.read_output(&mut outcome, &output, root, stall).await;
            outcome.elapsed = started.elapsed();
            return Err(outcome);
        }
        let is_move = |p: &String| {
            let p = Path::new(p.trim_end_matches('/'));
            moved_from.iter().any(|from| p.starts_with(from))
        };
        let (moves, lost): (Vec<String>, Vec<String>) =
            parse_itemized(&output).extra.into_iter().partition(is_move);
        let left = opts.max_delete.unwrap_or(u64::MAX);
        tracing::debug!(remote = %self.remote.name, moves = moves.len(), lost = lost.len(), left, "dry run counted the batch's deletions");
        if lost.len() as u64 <= left {
            return Ok(moves.len() as u64);
        }
        let mut outcome = Outcome::failed(
            ExitClass::MaxDelete,
            format!(
                "the sync would delete {} paths, more than what is left of the deletion budget ({left})",
                lost.len()
            ),
            started,
        );
        outcome.halt = Some(format!(
            "a sync to remote {} would delete {} paths (a dry run ran first: nothing was deleted), more than the {left} left of its deletion budget, first {}; nothing is deleted until `wsync resume` confirms it (or raise the workspace's max_delete)",
            self.remote.name,
            lost.len(),
            first_paths(&lost, lost.len() as u64),
        ));
        Err(outcome)
    }
}

/// The longest the walk for hard-linked files' other names may take; past it the batch goes
/// without them (they are stale on the remote until the next write or full sync). Short: a
/// file whose other names are outside the workspace (a pnpm store) makes the walk reach the
/// end of the tree, and the batch waits for it.
const LINK_WALK_DEADLINE: Duration = Duration::from_secs(2);

/// `list` plus the other names in the workspace of its multiply-linked files `linked` (see
/// [`hardlinks`]), found off the event loop.
async fn with_other_links(
    root: &Path,
    list: Vec<PathBuf>,
    linked: hardlinks::Linked,
) -> Vec<PathBuf> {
    if linked.is_empty() {
        return list;
    }
    let owned = root.to_path_buf();
    let walk = tokio::task::spawn_blocking(move || linked.names(&owned));
    match tokio::time::timeout(LINK_WALK_DEADLINE, walk).await {
        Ok(Ok(names)) => {
            tracing::debug!(
                names = names.len(),
                "hard-linked files go with their other names"
            );
            collapse(list.iter().chain(&names))
        }
        Ok(Err(e)) => {
            tracing::warn!("looking for the other names of hard-linked files failed: {e}");
            list
        }
        Err(_) => {
            tracing::warn!(
                "looking for the other names of hard-linked files took over {}s; sending without them",
                LINK_WALK_DEADLINE.as_secs()
            );
            list
        }
    }
}

/// `pass` with every path left to rsync.
/// True when the workspace has exclude or protect rules (an empty rules file has none): they
/// leave deletions and directories to rsync.
fn has_rules(opts: &BatchOptions) -> bool {
    opts.exclude_from
        .as_deref()
        .is_none_or(|file| std::fs::metadata(file).map_or(true, |m| m.len() > 0))
}

fn with_rest(pass: in_process::Pass, paths: Vec<PathBuf>) -> in_process::Pass {
    match pass {
        in_process::Pass::Done { outcome, .. } => in_process::Pass::Done {
            outcome,
            rest: paths,
        },
        stop => stop,
    }
}

/// True when a pass landed everything but the paths it names (exit 23 with every failure
/// understood, or exit 24).
fn landed_but_for_known_paths(outcome: &Outcome) -> bool {
    match outcome.class {
        ExitClass::Success | ExitClass::Vanished => true,
        ExitClass::Partial => outcome.failed_paths.is_some(),
        _ => false,
    }
}

/// Folds the growing files' pass into the outcome of a later pass, like the files-first pass,
/// with the lengths it sent.
fn merge_growing_pass(outcome: &mut Outcome, pass: Outcome) {
    let mut lengths = pass.sent_lengths.clone();
    merge_files_pass(outcome, pass);
    lengths.append(&mut outcome.sent_lengths);
    outcome.sent_lengths = lengths;
}

/// Folds the files-first pass into the outcome of the batch's second pass. Its stats add up;
/// its vanished files (exit 24) make the batch's exit 24 too, with both lists (`None`, unknown,
/// wins: the engine then queues the whole batch again). A second pass that failed decides.
fn merge_files_pass(outcome: &mut Outcome, first: Outcome) {
    outcome.stats.files_transferred += first.stats.files_transferred;
    outcome.stats.files_deleted += first.stats.files_deleted;
    outcome.stats.bytes_sent += first.stats.bytes_sent;
    if first.class == ExitClass::Partial {
        // Files the first pass could not write: the batch failed on them (and on whatever the
        // second pass failed on); anything less known fails the whole batch.
        outcome.failed_paths = match (outcome.class, outcome.failed_paths.take()) {
            (ExitClass::Success, _) => first.failed_paths,
            (ExitClass::Partial, Some(mut second)) => {
                second.extend(first.failed_paths.into_iter().flatten());
                Some(second)
            }
            _ => None,
        };
        if matches!(outcome.class, ExitClass::Success | ExitClass::Vanished) {
            outcome.class = ExitClass::Partial;
            outcome.error = first.error;
        }
        return;
    }
    if first.class != ExitClass::Vanished {
        return;
    }
    match outcome.class {
        ExitClass::Success => {
            outcome.class = ExitClass::Vanished;
            outcome.vanished = first.vanished;
        }
        ExitClass::Vanished => {
            outcome.vanished = match (outcome.vanished.take(), first.vanished) {
                (Some(mut second), Some(first)) => {
                    second.extend(first);
                    Some(second)
                }
                _ => None,
            };
        }
        _ => {}
    }
}

/// Splits a transfer list into what the source lacks, as entries for [`deletion_rules`] (each
/// raised to its topmost ancestor whose parent is a directory in the source: a directory
/// deleted with its contents goes as one entry), and the rest.
fn split_missing(root: &Path, list: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let is_dir = |rel: &Path| {
        rel.as_os_str().is_empty()
            || std::fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_dir())
    };
    let (missing, rest): (Vec<PathBuf>, Vec<PathBuf>) = list
        .into_iter()
        .partition(|path| std::fs::symlink_metadata(root.join(path)).is_err());
    let raised: Vec<PathBuf> = missing
        .into_iter()
        .map(|mut entry| {
            while let Some(parent) = entry.parent().filter(|p| !is_dir(p)) {
                entry = parent.to_path_buf();
            }
            entry
        })
        .collect();
    (collapse(raised.iter()), rest)
}

/// Splits a transfer list into the entries that exist and are not directories, and the rest
/// (directories, and missing paths to delete).
fn split_files(root: &Path, list: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    list.into_iter()
        .partition(|path| std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| !m.is_dir()))
}

impl Destination {
    /// What the remote guard's refusal in a failed run's `output` means, if it refused.
    fn refusal(&self, outcome: &Outcome, output: &str) -> Option<String> {
        (outcome.class != ExitClass::Success)
            .then(|| guard_refusal(output, &self.remote.target))
            .flatten()
    }
}

fn not_ours(target: &RemoteTarget) -> String {
    wsync_core::target::not_ours_message(target)
}

/// Removes the proof files an earlier monitor of this workspace left in its root (it was
/// killed while a probe was out): otherwise they would stay there, and be synced to every
/// remote, as if they were the user's. Only empty regular files named like another process's
/// proof file ([`wsync_core::rsync::is_foreign_proof_name`]) are removed.
pub fn remove_stale_proofs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if !wsync_core::rsync::is_foreign_proof_name(entry.file_name().as_encoded_bytes()) {
            continue;
        }
        let path = entry.path();
        let stale = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
        if stale {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a proof-of-sync file left by an earlier monitor")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot remove a proof-of-sync file left by an earlier monitor: {e}")
                }
            }
        }
    }
}

/// True when the root holds nothing but flush cookies (or cannot be listed: rsync decides).
pub fn root_is_empty(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    // wsync's own flush cookies and proof files do not make an empty mount point look full.
    !entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        !name.starts_with(COOKIE_PREFIX.as_bytes())
            && !name.starts_with(wsync_core::rsync::PROOF_PREFIX.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_proof_files_of_other_monitors_are_removed_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let own = format!("{}1", wsync_core::rsync::proof_prefix());
        for name in [".wsync-proof-1-1", own.as_str(), ".wsync-proof-notes"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::write(dir.path().join(".wsync-proof-2-1"), "written to: not ours").unwrap();
        remove_stale_proofs(dir.path());
        assert!(!dir.path().join(".wsync-proof-1-1").exists());
        for kept in [own.as_str(), ".wsync-proof-notes", ".wsync-proof-2-1"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn a_root_holding_only_wsyncs_own_files_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".wsync-proof-1-1"), "").unwrap();
        std::fs::write(dir.path().join(".wsync-cookie-1-1"), "").unwrap();
        assert!(
            root_is_empty(dir.path()),
            "a proof file must not make a bare mount point look full"
        );
        std::fs::write(dir.path().join("f"), "").unwrap();
        assert!(!root_is_empty(dir.path()));
    }

    fn outcome(class: ExitClass, vanished: Option<Vec<&str>>) -> Outcome {
        let mut outcome = Outcome::success(RsyncStats::default(), Duration::ZERO);
        outcome.class = class;
        outcome.vanished = vanished.map(|v| v.into_iter().map(PathBuf::from).collect());
        outcome
    }

    #[test]
    fn files_vanished_in_the_first_pass_keep_the_batch_at_exit_24() {
        let mut second = outcome(ExitClass::Success, None);
        merge_files_pass(&mut second, outcome(ExitClass::Vanished, Some(vec!["a"])));
        assert_eq!(second.class, ExitClass::Vanished);
        assert_eq!(second.vanished, Some(vec![PathBuf::from("a")]));

        let mut second = outcome(ExitClass::Vanished, Some(vec!["b"]));
        merge_files_pass(&mut second, outcome(ExitClass::Vanished, Some(vec!["a"])));
        assert_eq!(
            second.vanished,
            Some(vec![PathBuf::from("b"), PathBuf::from("a")])
        );

        let mut second = outcome(ExitClass::Vanished, Some(vec!["b"]));
        merge_files_pass(&mut second, outcome(ExitClass::Vanished, None));
        assert_eq!(second.vanished, None, "unknown: the whole batch again");

        let mut second = outcome(ExitClass::Partial, None);
        merge_files_pass(&mut second, outcome(ExitClass::Vanished, Some(vec!["a"])));
        assert_eq!(second.class, ExitClass::Partial);
    }
}
