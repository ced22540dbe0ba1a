//! `backup`: for each migration key, run exactly `restic-backups-<key>.service`
//! in the user's systemd and take the snapshot this run made from the
//! repository itself (`restic-<key> snapshots --tag <key> --json`).
//! Every key's unit and wrapper are checked before any unit starts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::model::snapshot::{extract_snapshot_json, pick_snapshot};
use crate::model::{BackupPayload, EventPayload, MigrationKey, UnitFailure};
use crate::ports::{Account, JobOutcome, Level, ProgramOutcome, UnitStatus};

use super::super::report::Stop;
use super::super::text::fold_output;
use super::{tri, Ctx, Terminal};

pub fn perform(ctx: &Ctx<'_>) -> Result<Terminal, Stop> {
    ctx.post_running()?;
    let user = &ctx.action.user;
    if ctx.action.migrations.is_empty() {
        return Ok(Terminal::Success(
            format!("No migration backups required for {user}"),
            None,
        ));
    }
    let account = tri!(ctx.account());
    let keys: Vec<Key<'_>> = ctx
        .action
        .migrations
        .iter()
        .map(|key| Key::new(ctx, &account, key))
        .collect();
    let mut wrappers = Vec::with_capacity(keys.len());
    for key in &keys {
        wrappers.push(tri!(key.check()));
    }
    let mut snapshots = BTreeMap::new();
    for (key, wrapper) in keys.iter().zip(wrappers) {
        let id = tri!(key.back_up(wrapper));
        snapshots.insert(key.key.as_str().to_owned(), id);
    }
    Ok(Terminal::Success(
        format!("Migration backups completed for {user}"),
        Some(EventPayload::Backup(BackupPayload {
            user: user.as_str().to_owned(),
            source_node: ctx.settings.node.as_str().to_owned(),
            snapshots,
        })),
    ))
}

/// One migration key of the action, with what its messages need.
struct Key<'a> {
    ctx: &'a Ctx<'a>,
    account: &'a Account,
    key: &'a MigrationKey,
    unit: String,
}

impl<'a> Key<'a> {
    fn new(ctx: &'a Ctx<'a>, account: &'a Account, key: &'a MigrationKey) -> Self {
        Key {
            ctx,
            account,
            key,
            unit: key.unit_name(),
        }
    }

    fn log(&self, level: Level, msg: &str) {
        self.ctx
            .log(level, Some(&self.unit), Some(self.key.as_str()), msg);
    }

    /// The failure payload: who, which key and unit, and the unit's state.
    fn payload(&self, detail: &str, status: Option<&UnitStatus>) -> Option<EventPayload> {
        let status = status.cloned().unwrap_or_default();
        Some(EventPayload::UnitFailed(Box::new(UnitFailure {
            user: self.ctx.action.user.clone(),
            migration_key: self.key.clone(),
            unit_name: self.unit.clone(),
            exit_code: status.exec_main_status,
            result: status.result,
            active_state: status.active_state,
            sub_state: status.sub_state,
            exec_main_status: status.exec_main_status,
            detail: Some(detail.to_owned()),
        })))
    }

    fn failed(&self, msg: String, status: Option<&UnitStatus>) -> Terminal {
        self.log(Level::Error, &msg);
        let payload = self.payload(&msg, status);
        Terminal::Failed(msg, payload)
    }

    fn timed_out(&self, msg: String, status: &UnitStatus) -> Terminal {
        self.log(Level::Error, &msg);
        let payload = self.payload(&msg, Some(status));
        Terminal::TimedOut(msg, payload)
    }

    fn interrupted(&self, during: &str, status: &UnitStatus) -> Terminal {
        let (_, msg, _) = self.ctx.interrupted(during).into_parts();
        let payload = self.payload(&msg, Some(status));
        Terminal::Failed(msg, payload)
    }

    /// The unit must be loaded (no fallback names) and the wrapper present.
    fn check(&self) -> Result<PathBuf, Terminal> {
        let (ctx, account, key, unit) = (self.ctx, self.account, self.key, &self.unit);
        let user = &ctx.action.user;
        let load_state = ctx.ports.systemd.load_state(account, unit).map_err(|e| {
            self.failed(
                format!(
                    "cannot read LoadState of {unit} for user {user}, migration key {key}: {e:#}"
                ),
                None,
            )
        })?;
        if load_state != "loaded" {
            let known = match ctx.ports.systemd.list_units(account, "restic-backups-") {
                Ok(units) if units.is_empty() => "none".to_owned(),
                Ok(units) => units.join(", "),
                Err(e) => format!("unknown ({e:#})"),
            };
            return Err(self.failed(
                format!(
                    "Backup unit {unit} for user {user}, migration key {key} is not loaded (LoadState={load_state}); the user's loaded restic-backups units: {known}. Check that the environment defines a restic backup named {key}"
                ),
                None,
            ));
        }
        ctx.ports
            .programs
            .find_restic_wrapper(account, key)
            .ok_or_else(|| {
                self.failed(
                    format!(
                        "restic wrapper {} not found for user {user}, migration key {key} (looked in ~/.local/bin, on the user's PATH and in ~/.nix-profile/bin); without it the snapshot id cannot be read",
                        key.wrapper_name()
                    ),
                    None,
                )
            })
    }

    /// Runs the unit, then returns the full id of the snapshot it made.
    fn back_up(&self, wrapper: PathBuf) -> Result<String, Terminal> {
        let (ctx, account, key, unit) = (self.ctx, self.account, self.key, &self.unit);
        let user = &ctx.action.user;
        if ctx.remaining().is_zero() {
            return Err(self.timed_out(
                format!(
                    "No time left of the {}s action timeout to start {unit} for user {user}, migration key {key}; the unit was not started",
                    ctx.timeout_secs()
                ),
                &UnitStatus::default(),
            ));
        }
        let started = ctx.ports.clock.now();
        self.log(Level::Info, &format!("starting {unit}"));
        let run = ctx
            .ports
            .systemd
            .run_unit(account, unit, ctx.remaining(), ctx.ports.cancel)
            .map_err(|e| {
                self.failed(
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
            JobOutcome::Done => {}
            JobOutcome::Failed { job_result } => {
                return Err(self.failed(
                    format!(
                        "Backup unit {unit} failed for user {user}, migration key {key}: job {job_result}, {}",
                        describe()
                    ),
                    Some(status),
                ))
            }
            JobOutcome::TimedOut => {
                return Err(self.timed_out(
                    format!(
                        "Backup unit {unit} for user {user}, migration key {key} timed out after {}s; the unit was stopped ({})",
                        ctx.timeout_secs(),
                        describe()
                    ),
                    status,
                ))
            }
            JobOutcome::Interrupted => {
                return Err(self.interrupted(&format!("running {unit}"), status))
            }
        }

        let args = ["snapshots", "--tag", key.as_str(), "--json"].map(str::to_owned);
        let shown = wrapper.display();
        let listed = ctx
            .ports
            .programs
            .run(account, &wrapper, &args, ctx.remaining(), ctx.ports.cancel)
            .map_err(|e| {
                self.failed(
                    format!("cannot run {shown} for user {user}: {e:#}"),
                    Some(status),
                )
            })?;
        match listed.outcome {
            ProgramOutcome::Exited(0) => {}
            ProgramOutcome::TimedOut => {
                return Err(self.timed_out(
                    format!(
                        "{shown} snapshots for user {user}, migration key {key} timed out (action timeout {}s)",
                        ctx.timeout_secs()
                    ),
                    status,
                ))
            }
            ProgramOutcome::Interrupted => {
                return Err(self.interrupted("listing snapshots", status))
            }
            other => {
                return Err(self.failed(
                    format!(
                        "{shown} snapshots failed for user {user}, migration key {key} ({other:?}): {}",
                        fold_output(&listed.output, 220)
                    ),
                    Some(status),
                ))
            }
        }
        let snapshot =
            pick_snapshot(extract_snapshot_json(&listed.output), started).map_err(|e| {
                let newest = e.newest_seen().map_or("none".to_owned(), |t| t.to_string());
                self.failed(
                    format!(
                        "snapshot id missing for user {user}, migration key {key} after {unit}: {e} (run started at {started}, newest snapshot seen: {newest})"
                    ),
                    Some(status),
                )
            })?;
        self.log(
            Level::Info,
            &format!("snapshot {} taken at {}", snapshot.id, snapshot.time),
        );
        Ok(snapshot.id)
    }
}
