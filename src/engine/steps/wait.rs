//! `AwaitBackup` and `AwaitTarget` steps: waiting for another node of the
//! same job. The restoring node waits for the source node's backup, the
//! deactivating node waits for the target node to activate. Only the latest
//! event of each node is visible (`statuses`), so "activated" is
//! (`activate`, `success`) or (`intent`, `success`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::stop::Stop;
use crate::model::{DeployStatus, MigrationKey, NodeName, Phase, Status, Terminal};
use crate::ports::{Deadline, Over};

use super::{Ctx, Ended};

/// How a wait for another node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited<T> {
    Ready(T),
    /// The other node failed; the message says how.
    OtherFailed(String),
    /// The deadline passed.
    TimedOut,
    Interrupted,
}

/// What the deactivating node learnt about its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Activated,
    /// Not seen at all within the observe timeout.
    NotVisible,
}

fn latest<'s>(statuses: &'s [DeployStatus], node: &NodeName) -> Option<&'s DeployStatus> {
    statuses.iter().find(|s| s.node == node.as_str())
}

fn describe(s: &DeployStatus) -> String {
    format!(
        "{} {}: {}",
        s.phase,
        s.status,
        s.message.as_deref().unwrap_or("(no message)")
    )
}

/// Pure decision about the target node's latest event.
pub fn target_verdict(latest: Option<&DeployStatus>) -> Option<Result<(), String>> {
    let s = latest?;
    match (s.phase, s.status) {
        (Phase::Activate | Phase::Intent, Status::Success) => Some(Ok(())),
        // A failure in any phase finalises the node's remaining actions, so
        // the target will not activate this job.
        (_, status) if status.is_failure() => Some(Err(describe(s))),
        _ => None,
    }
}

/// Between two polls: ends the wait on cancel or past the deadline,
/// otherwise sleeps until one poll interval after `polled` (when the last
/// poll began), so polls start at most one interval apart.
fn pause<T>(ctx: &Ctx<'_>, polled: Instant) -> Option<Waited<T>> {
    let now = ctx.ports.clock.instant();
    match ctx.deadline.check_at(now, ctx.ports.cancel) {
        Err(Over::Stopped) => return Some(Waited::Interrupted),
        Err(Over::Reached) => return Some(Waited::TimedOut),
        Ok(()) => {}
    }
    let next_poll = Deadline::from(polled, ctx.settings.peer_poll);
    ctx.ports
        .clock
        .sleep(next_poll.earlier(ctx.deadline).remaining_at(now));
    None
}

/// The `AwaitTarget` step: waits, then posts `running` (saying so when the
/// target was never seen), or ends the action.
pub fn await_target(ctx: &Ctx<'_>, target: &NodeName, observe: Duration) -> Result<(), Ended> {
    let user = &ctx.action.user;
    match for_target(ctx, target, observe)? {
        Waited::Ready(Target::Activated) => Ok(ctx.post_running()?),
        Waited::Ready(Target::NotVisible) => Ok(ctx.post(
            Status::Running,
            &format!(
                "Target node {target} not visible after {}s; proceeding with deactivation of {user}",
                observe.as_secs()
            ),
        )?),
        Waited::OtherFailed(why) => Err(Ended::With(Terminal::failed(
            format!("Not deactivating {user}: {why}"),
            None,
        ))),
        Waited::TimedOut => Err(Ended::With(Terminal::timed_out(
            ctx.timed_out(
                format!(
                    "Deactivation of {user} timed out after {}s waiting for {target} to activate",
                    ctx.timeout_secs()
                ),
                &format!("waiting for {target} to activate {user}"),
            ),
            None,
        ))),
        Waited::Interrupted => Err(Ended::With(
            ctx.interrupted(&format!("waiting for {target}")),
        )),
    }
}

/// The `AwaitBackup` step: the snapshot ids `source` published for the user.
pub fn await_backup(
    ctx: &Ctx<'_>,
    source: &NodeName,
    keys: &[MigrationKey],
) -> Result<BTreeMap<MigrationKey, String>, Ended> {
    let user = &ctx.action.user;
    match for_backup(ctx, source, keys)? {
        Waited::Ready(snapshots) => Ok(snapshots),
        Waited::OtherFailed(why) => Err(Ended::With(Terminal::failed(
            format!("Restore for {user} cannot proceed: {why}"),
            None,
        ))),
        Waited::TimedOut => Err(Ended::With(Terminal::timed_out(
            ctx.timed_out(
                format!(
                    "Restore for {user} timed out after {}s waiting for the backup on {source}",
                    ctx.timeout_secs()
                ),
                &format!("waiting for the backup of {user} on {source}"),
            ),
            None,
        ))),
        Waited::Interrupted => Err(Ended::With(
            ctx.interrupted(&format!("waiting for {source}")),
        )),
    }
}

/// Waits until `target` has activated, has failed, or cannot be seen.
fn for_target(ctx: &Ctx<'_>, target: &NodeName, observe: Duration) -> Result<Waited<Target>, Stop> {
    let unseen_until = Deadline::on(ctx.ports.clock, observe);
    let mut seen = false;
    loop {
        let polled = ctx.ports.clock.instant();
        let statuses = ctx.provider_call("statuses", || {
            ctx.ports.provider.statuses(ctx.reporter.job())
        })?;
        let latest = latest(&statuses, target);
        seen |= latest.is_some();
        match target_verdict(latest) {
            Some(Ok(())) => return Ok(Waited::Ready(Target::Activated)),
            Some(Err(how)) => {
                return Ok(Waited::OtherFailed(format!(
                    "target node {target} failed ({how})"
                )))
            }
            None => {}
        }
        if !seen && unseen_until.reached_at(ctx.ports.clock.instant()) {
            return Ok(Waited::Ready(Target::NotVisible));
        }
        if let Some(end) = pause(ctx, polled) {
            return Ok(end);
        }
    }
}

/// Waits until `source` has posted a backup payload for the user with a
/// snapshot id for every key.
fn for_backup(
    ctx: &Ctx<'_>,
    source: &NodeName,
    keys: &[MigrationKey],
) -> Result<Waited<BTreeMap<MigrationKey, String>>, Stop> {
    let user = &ctx.action.user;
    loop {
        let polled = ctx.ports.clock.instant();
        let payload = ctx.provider_call("backup-snapshot", || {
            ctx.ports
                .provider
                .backup_snapshot(ctx.reporter.job(), source, user)
        })?;
        let found: BTreeMap<MigrationKey, String> = payload
            .map(|p| p.snapshots)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, id)| keys.contains(k) && !id.trim().is_empty())
            .collect();
        if found.len() == keys.len() {
            return Ok(Waited::Ready(found));
        }
        let statuses = ctx.provider_call("statuses", || {
            ctx.ports.provider.statuses(ctx.reporter.job())
        })?;
        if let Some(s) = latest(&statuses, source) {
            if s.status.is_failure() {
                return Ok(Waited::OtherFailed(format!(
                    "source node {source} failed ({})",
                    describe(s)
                )));
            }
            if (s.phase, s.status) == (Phase::Intent, Status::Success) {
                let missing: Vec<&str> = keys
                    .iter()
                    .filter(|k| !found.contains_key(*k))
                    .map(MigrationKey::as_str)
                    .collect();
                return Ok(Waited::OtherFailed(format!(
                    "source node {source} finished its job without a snapshot for {user}, key(s) {}",
                    missing.join(", ")
                )));
            }
        }
        if let Some(end) = pause(ctx, polled) {
            return Ok(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn status(phase: Phase, status: Status) -> DeployStatus {
        DeployStatus {
            event_id: Value::Null,
            node: "node-b".into(),
            status,
            phase,
            message: Some("m".into()),
            created_at: None,
        }
    }

    #[test]
    fn only_activate_or_intent_success_counts_as_activated() {
        assert_eq!(target_verdict(None), None);
        assert_eq!(
            target_verdict(Some(&status(Phase::Activate, Status::Success))),
            Some(Ok(()))
        );
        assert_eq!(
            target_verdict(Some(&status(Phase::Intent, Status::Success))),
            Some(Ok(()))
        );
        assert_eq!(
            target_verdict(Some(&status(Phase::Restore, Status::Success))),
            None
        );
        assert_eq!(
            target_verdict(Some(&status(Phase::Activate, Status::Running))),
            None
        );
        for phase in [Phase::Activate, Phase::Restore, Phase::Intent] {
            for st in [Status::Failed, Status::TimedOut] {
                assert!(matches!(
                    target_verdict(Some(&status(phase, st))),
                    Some(Err(_))
                ));
            }
        }
    }
}
