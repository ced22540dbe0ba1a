//! `restore`: wait for the source node's backup of this user, write the
//! restore plan the environment's activation reads, then activate.

use std::collections::BTreeMap;

use crate::model::{NodeName, RestorePlan, Status};
use crate::ports::Level;

use super::super::report::Stop;
use super::super::wait::{self, Waited};
use super::activate::run_activate;
use super::{tri, Ctx, Terminal};

pub fn perform(ctx: &Ctx<'_>) -> Result<Terminal, Stop> {
    let action = ctx.action;
    let user = &action.user;
    let keys = &action.migrations;
    if keys.is_empty() {
        ctx.post_running()?;
        return Ok(Terminal::failed(format!(
            "restore for {user} lists no migrations: there are no snapshots to restore (the provider emits restore only for moves with migrations)"
        )));
    }
    let Some(source) = &action.from_node else {
        ctx.post_running()?;
        return Ok(Terminal::failed(format!(
            "restore for {user} lists migrations ({}) but no fromNode: the intent does not say where the backup is",
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    let remote = source != &ctx.settings.node;
    if remote {
        ctx.post(
            Status::Waiting,
            &format!("Waiting for the backup of {user} on {source}"),
        )?;
    } else {
        ctx.post_running()?;
    }
    let account = tri!(ctx.account());
    let snapshots = match wait::for_backup(ctx, source, keys)? {
        Waited::Ready(snapshots) => snapshots,
        Waited::OtherFailed(why) => {
            return Ok(Terminal::failed(format!(
                "Restore for {user} cannot proceed: {why}"
            )))
        }
        Waited::TimedOut => {
            return Ok(Terminal::TimedOut(
                format!(
                    "Restore for {user} timed out after {}s waiting for the backup on {source}",
                    ctx.timeout_secs()
                ),
                None,
            ))
        }
        Waited::Interrupted => return Ok(ctx.interrupted(&format!("waiting for {source}"))),
    };
    if remote {
        ctx.post_running()?;
    }
    tri!(write_plan(ctx, &account, source, snapshots));
    Ok(run_activate(
        ctx,
        &account,
        "Restore and activation completed",
    ))
}

fn write_plan(
    ctx: &Ctx<'_>,
    account: &crate::ports::Account,
    source: &NodeName,
    snapshots: BTreeMap<String, String>,
) -> Result<(), Terminal> {
    let plan = RestorePlan {
        source_node: source.as_str().to_owned(),
        snapshots,
    };
    match ctx.ports.plans.write_restore_plan(account, &plan) {
        Ok(path) => {
            ctx.log(
                Level::Info,
                None,
                None,
                &format!("restore plan written to {}", path.display()),
            );
            Ok(())
        }
        Err(e) => {
            let msg = format!(
                "cannot write the restore plan for {}: {e:#}",
                ctx.action.user
            );
            ctx.log(Level::Error, None, None, &msg);
            Err(Terminal::failed(msg))
        }
    }
}
