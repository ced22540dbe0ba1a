//! `CheckUnit`, `FindWrapper`, `BackUp` and `PublishBackup` steps: run
//! exactly `restic-backups-<key>.service` in the user's systemd and take the
//! snapshot this run made from the repository itself
//! (`restic-<key> snapshots --tag <key> --json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::snapshot::SnapshotStream;
use crate::model::text::summary;
use crate::model::{BackupPayload, EventPayload, MigrationKey, Terminal, UnitFailure};
use crate::ports::{Account, JobOutcome, Level, ProgramOutcome, UnitStatus};

use super::{Ctx, Ended};

/// One migration key of the action, with what its messages need.
struct Key<'a> {
    ctx: &'a Ctx<'a>,
    key: &'a MigrationKey,
    unit: &'a str,
}

impl Key<'_> {
    fn log(&self, level: Level, msg: &str) {
        self.ctx
            .log(level, Some(self.unit), Some(self.key.as_str()), msg);
    }

    /// The failure payload: who, which key and unit, and the unit's state.
    fn payload(&self, detail: &str, status: Option<&UnitStatus>) -> Option<EventPayload> {
        let status = status.cloned().unwrap_or_default();
        Some(EventPayload::UnitFailed(Box::new(UnitFailure {
            user: self.ctx.action.user.clone(),
            migration_key: self.key.clone(),
            unit_name: self.unit.to_owned(),
            exit_code: status.exec_main_status,
            result: status.result,
            active_state: status.active_state,
            sub_state: status.sub_state,
            exec_main_status: status.exec_main_status,
            detail: Some(detail.to_owned()),
        })))
    }

    fn failed(&self, msg: String, status: Option<&UnitStatus>) -> Ended {
        self.log(Level::Error, &msg);
        let payload = self.payload(&msg, status);
        Ended::With(Terminal::failed(msg, payload))
    }

    fn timed_out(&self, msg: String, status: &UnitStatus) -> Ended {
        self.log(Level::Error, &msg);
        let payload = self.payload(&msg, Some(status));
        Ended::With(Terminal::timed_out(msg, payload))
    }

    fn interrupted(&self, during: &str, status: &UnitStatus) -> Ended {
        self.with_payload(self.ctx.interrupted(during), status)
    }

    /// `terminal`, with the unit's failure payload.
    fn with_payload(&self, terminal: Terminal, status: &UnitStatus) -> Ended {
        let payload = self.payload(&terminal.message, Some(status));
        Ended::With(Terminal {
            payload,
            ..terminal
        })
    }
}

/// The unit must be loaded: no fallback names.
pub fn check_unit(
    ctx: &Ctx<'_>,
    account: &Account,
    key: &MigrationKey,
    unit: &str,
) -> Result<(), Ended> {
    let k = Key { ctx, key, unit };
    let user = &ctx.action.user;
    let load_state =
        ctx.ports
            .systemd
            .load_state(account, unit, ctx.remaining())
            .map_err(|e| {
                k.failed(
            format!("cannot read LoadState of {unit} for user {user}, migration key {key}: {e:#}"),
            None,
        )
            })?;
    if crate::ports::is_loaded(&load_state) {
        return Ok(());
    }
    let known = match ctx
        .ports
        .systemd
        .list_units(account, "restic-backups-", ctx.remaining())
    {
        Ok(units) => units.to_string(),
        Err(e) => format!("unknown ({e:#})"),
    };
    Err(k.failed(
        format!(
            "Backup unit {unit} for user {user}, migration key {key} is not loaded (LoadState={load_state}); the user's loaded restic-backups units: {known}. Check that the environment defines a restic backup named {key}"
        ),
        None,
    ))
}

/// The user's `restic-<key>` wrapper, in the documented lookup order.
pub fn find_wrapper(
    ctx: &Ctx<'_>,
    account: &Account,
    key: &MigrationKey,
    wrapper: &str,
) -> Result<PathBuf, Ended> {
    let unit = key.unit_name();
    let k = Key {
        ctx,
        key,
        unit: &unit,
    };
    let search = ctx.ports.programs.find_restic_wrapper(account, key);
    search.found.clone().ok_or_else(|| {
        k.failed(
            format!(
                "restic wrapper {wrapper} not found for user {}, migration key {key} (looked at {}); without it the snapshot id cannot be read",
                ctx.action.user,
                search.looked_at()
            ),
            None,
        )
    })
}

/// Runs the unit, then returns the full id of the snapshot it made.
pub fn back_up(
    ctx: &Ctx<'_>,
    account: &Account,
    key: &MigrationKey,
    unit: &str,
    wrapper: &Path,
) -> Result<String, Ended> {
    let k = Key { ctx, key, unit };
    let user = &ctx.action.user;
    if let Some(terminal) = ctx.out_of_time(&format!("start {unit} (migration key {key})")) {
        return Err(k.with_payload(terminal, &UnitStatus::default()));
    }
    let started = ctx.ports.clock.now();
    let job_started = ctx.ports.clock.instant();
    k.log(Level::Info, &format!("starting {unit}"));
    let run = ctx
        .ports
        .systemd
        .run_unit(account, unit, ctx.remaining(), ctx.ports.cancel)
        .map_err(|e| {
            k.failed(
                format!("cannot run {unit} for user {user}, migration key {key}: {e:#}"),
                None,
            )
        })?;
    let status = &run.status;
    let describe = || {
        format!(
            "Result={}, ActiveState={}, SubState={}, ExecMainStatus={}",
            status.result.as_deref().unwrap_or("?"),
            status.active_state.as_deref().unwrap_or("?"),
            status.sub_state.as_deref().unwrap_or("?"),
            status
                .exec_main_status
                .map_or("?".to_owned(), |s| s.to_string()),
        )
    };
    match &run.outcome {
        JobOutcome::Done => k.log(
            Level::Info,
            &format!(
                "{unit} finished (job done) after {:.1?}",
                ctx.ports.clock.instant().saturating_duration_since(job_started)
            ),
        ),
        JobOutcome::Failed { job_result } => {
            return Err(k.failed(
                format!(
                    "Backup unit {unit} failed for user {user}, migration key {key}: job {job_result}, {}; see journalctl _UID={} --user-unit {unit}",
                    describe(),
                    account.uid
                ),
                Some(status),
            ))
        }
        JobOutcome::TimedOut => {
            return Err(k.timed_out(
                ctx.timed_out(
                    format!(
                        "Backup unit {unit} for user {user}, migration key {key} timed out after {}s; the unit was stopped ({})",
                        ctx.timeout_secs(),
                        describe()
                    ),
                    &format!(
                        "running {unit} for user {user}, migration key {key}; the unit was stopped ({})",
                        describe()
                    ),
                ),
                status,
            ))
        }
        JobOutcome::Interrupted => return Err(k.interrupted(&format!("running {unit}"), status)),
    }

    // The list grows with every backup of the key: read as a stream, apart
    // from stderr (whose tail serves the messages), in bounded memory.
    let args = ["snapshots", "--tag", key.as_str(), "--json"].map(str::to_owned);
    let shown = wrapper.display();
    let mut stream = SnapshotStream::new(started);
    let listing_started = ctx.ports.clock.instant();
    let listed = ctx
        .ports
        .programs
        .run_with_stdout(
            account,
            wrapper,
            &args,
            ctx.remaining(),
            ctx.ports.cancel,
            &mut |chunk| stream.feed(chunk),
        )
        .map_err(|e| {
            k.failed(
                format!("cannot run {shown} for user {user}: {e:#}"),
                Some(status),
            )
        })?;
    match listed.outcome {
        ProgramOutcome::Exited(0) => {}
        ProgramOutcome::TimedOut => {
            return Err(k.timed_out(
                ctx.timed_out(
                    format!(
                        "{shown} snapshots for user {user}, migration key {key} timed out (action timeout {}s)",
                        ctx.timeout_secs()
                    ),
                    &format!("listing the snapshots of {user}, migration key {key}"),
                ),
                status,
            ))
        }
        ProgramOutcome::Interrupted => return Err(k.interrupted("listing snapshots", status)),
        other => {
            return Err(k.failed(
                format!(
                    "{shown} snapshots failed for user {user}, migration key {key} ({other}): {}",
                    summary(&listed.output)
                ),
                Some(status),
            ))
        }
    }
    let snapshot = stream.finish().map_err(|e| {
        let newest = e.newest_seen().map_or("none".to_owned(), |t| t.to_string());
        k.failed(
            format!(
                "snapshot id missing for user {user}, migration key {key} after {unit}: {e} (run started at {started}, newest snapshot seen: {newest})"
            ),
            Some(status),
        )
    })?;
    k.log(
        Level::Info,
        &format!(
            "snapshot {} taken at {} ({} snapshot(s) listed in {:.1?})",
            snapshot.id,
            snapshot.time,
            snapshot.listed,
            ctx.ports
                .clock
                .instant()
                .saturating_duration_since(listing_started)
        ),
    );
    Ok(snapshot.id)
}

/// `success` with this node's backup payload: the snapshot ids taken.
pub fn publish(
    ctx: &Ctx<'_>,
    message: &str,
    snapshots: BTreeMap<MigrationKey, String>,
) -> Terminal {
    Terminal::success(
        message,
        Some(EventPayload::Backup(BackupPayload {
            user: ctx.action.user.clone(),
            source_node: ctx.settings.node.clone(),
            snapshots,
        })),
    )
}
