//! `backup`: for each migration key, run exactly `restic-backups-<key>.service`
//! in the user's systemd and take the snapshot this run made from the
//! repository itself (`restic-<key> snapshots --tag <key> --json`).

use std::collections::BTreeMap;

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
    let mut snapshots = BTreeMap::new();
    for key in &ctx.action.migrations {
        let id = tri!(back_up(ctx, &account, key));
        snapshots.insert(key.as_str().to_owned(), id);
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

/// Backs up one key and returns the new snapshot's full id.
fn back_up(ctx: &Ctx<'_>, account: &Account, key: &MigrationKey) -> Result<String, Terminal> {
    let user = &ctx.action.user;
    let unit = key.unit_name();
    let log = |level, msg: &str| ctx.log(level, Some(&unit), Some(key.as_str()), msg);
    let failure = |detail: &str, outcome: Option<&UnitStatus>| {
        let status = outcome.cloned().unwrap_or_default();
        EventPayload::UnitFailed(Box::new(UnitFailure {
            user: user.clone(),
            migration_key: key.clone(),
            unit_name: unit.clone(),
            exit_code: status.exec_main_status,
            result: status.result,
            active_state: status.active_state,
            sub_state: status.sub_state,
            exec_main_status: status.exec_main_status,
            detail: Some(detail.to_owned()),
        }))
    };
    let fail = |msg: String, status: Option<&UnitStatus>| {
        log(Level::Error, &msg);
        Terminal::Failed(msg.clone(), Some(failure(&msg, status)))
    };

    let load_state = ctx.ports.systemd.load_state(account, &unit).map_err(|e| {
        fail(
            format!("cannot read LoadState of {unit} for user {user}, migration key {key}: {e:#}"),
            None,
        )
    })?;
    if load_state != "loaded" {
        let known = ctx
            .ports
            .systemd
            .list_units(account, "restic-backups-")
            .map(|units| {
                if units.is_empty() {
                    "none".to_owned()
                } else {
                    units.join(", ")
                }
            })
            .unwrap_or_else(|e| format!("unknown ({e:#})"));
        return Err(fail(
            format!(
                "Backup unit {unit} for user {user}, migration key {key} is not loaded (LoadState={load_state}); the user's loaded restic-backups units: {known}. Check that the environment defines a restic backup named {key}"
            ),
            None,
        ));
    }
    let Some(wrapper) = ctx.ports.programs.find_restic_wrapper(account, key) else {
        return Err(fail(
            format!(
                "restic wrapper {} not found for user {user}, migration key {key} (looked in ~/.local/bin, on the user's PATH and in ~/.nix-profile/bin); without it the snapshot id cannot be read",
                key.wrapper_name()
            ),
            None,
        ));
    };

    let started = ctx.ports.clock.now();
    log(Level::Info, &format!("starting {unit}"));
    let run = ctx
        .ports
        .systemd
        .run_unit(account, &unit, ctx.remaining(), ctx.ports.cancel)
        .map_err(|e| {
            fail(
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
            return Err(fail(
                format!("Backup unit {unit} failed for user {user}, migration key {key}: job {job_result}, {}", describe()),
                Some(status),
            ))
        }
        JobOutcome::TimedOut => {
            let msg = format!(
                "Backup unit {unit} for user {user}, migration key {key} timed out after {}s; the unit was stopped ({})",
                ctx.timeout_secs(),
                describe()
            );
            log(Level::Error, &msg);
            return Err(Terminal::TimedOut(msg.clone(), Some(failure(&msg, Some(status)))));
        }
        JobOutcome::Interrupted => {
            let (_, msg, _) = ctx.interrupted(&format!("running {unit}")).into_parts();
            return Err(Terminal::Failed(msg.clone(), Some(failure(&msg, Some(status)))));
        }
    }

    let args = ["snapshots", "--tag", key.as_str(), "--json"].map(str::to_owned);
    let listed = ctx
        .ports
        .programs
        .run(account, &wrapper, &args, ctx.remaining(), ctx.ports.cancel)
        .map_err(|e| {
            fail(
                format!("cannot run {} for user {user}: {e:#}", wrapper.display()),
                Some(status),
            )
        })?;
    match listed.outcome {
        ProgramOutcome::Exited(0) => {}
        ProgramOutcome::TimedOut => {
            let msg = format!(
                "{} snapshots for user {user}, migration key {key} timed out (action timeout {}s)",
                wrapper.display(),
                ctx.timeout_secs()
            );
            return Err(Terminal::TimedOut(
                msg.clone(),
                Some(failure(&msg, Some(status))),
            ));
        }
        ProgramOutcome::Interrupted => {
            let (_, msg, _) = ctx.interrupted("listing snapshots").into_parts();
            return Err(Terminal::Failed(
                msg.clone(),
                Some(failure(&msg, Some(status))),
            ));
        }
        other => {
            return Err(fail(
                format!(
                    "{} snapshots failed for user {user}, migration key {key} ({other:?}): {}",
                    wrapper.display(),
                    fold_output(&listed.output, 220)
                ),
                Some(status),
            ))
        }
    }
    let snapshot = pick_snapshot(extract_snapshot_json(&listed.output), started).map_err(|e| {
        let newest = e
            .newest_seen()
            .map_or("none".to_owned(), |t| t.to_string());
        fail(
            format!(
                "snapshot id missing for user {user}, migration key {key} after {unit}: {e} (run started at {started}, newest snapshot seen: {newest})"
            ),
            Some(status),
        )
    })?;
    log(
        Level::Info,
        &format!("snapshot {} taken at {}", snapshot.id, snapshot.time),
    );
    Ok(snapshot.id)
}
