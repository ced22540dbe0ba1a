//! Waiting for another node of the same job: the restoring node waits for
//! the source node's backup, the deactivating node waits for the target node
//! to activate. Only the latest event of each node is visible (`statuses`),
//! so "activated" is (`activate`, `success`) or (`intent`, `success`).

use std::collections::BTreeMap;

use crate::model::{DeployStatus, MigrationKey, NodeName, Phase, Status};

use super::actions::Ctx;
use super::report::Stop;
use super::retry;

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

/// Waits until `target` has activated, has failed, or cannot be seen.
pub fn for_target(ctx: &Ctx<'_>, target: &NodeName) -> Result<Waited<Target>, Stop> {
    let start = ctx.ports.clock.now();
    let mut seen = false;
    loop {
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
        if !seen && retry::elapsed(ctx.ports.clock, start) >= ctx.settings.target_observe_timeout {
            return Ok(Waited::Ready(Target::NotVisible));
        }
        if let Some(end) = ctx.pause()? {
            return Ok(end);
        }
    }
}

/// Waits until `source` has posted a backup payload for the user with a
/// snapshot id for every key.
pub fn for_backup(
    ctx: &Ctx<'_>,
    source: &NodeName,
    keys: &[MigrationKey],
) -> Result<Waited<BTreeMap<String, String>>, Stop> {
    let user = &ctx.action.user;
    loop {
        let payload = ctx.provider_call("backup-snapshot", || {
            ctx.ports
                .provider
                .backup_snapshot(ctx.reporter.job(), source, user)
        })?;
        let found: BTreeMap<String, String> = payload
            .map(|p| p.snapshots)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, id)| keys.iter().any(|key| key.as_str() == k) && !id.trim().is_empty())
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
                    .map(MigrationKey::as_str)
                    .filter(|k| !found.contains_key(*k))
                    .collect();
                return Ok(Waited::OtherFailed(format!(
                    "source node {source} finished its job without a snapshot for {user}, key(s) {}",
                    missing.join(", ")
                )));
            }
        }
        if let Some(end) = ctx.pause()? {
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
