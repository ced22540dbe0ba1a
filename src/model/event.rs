//! What this node tells the provider (`NodeEvent` and its payloads) and what
//! it reads back about other nodes (`DeployStatus`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::intent::Op;
use super::names::{MigrationKey, NodeName, UserName};

/// A node event's status. `Unknown` only ever comes from the server (a value
/// this program does not know); it is never posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Waiting,
    Running,
    Success,
    Failed,
    TimedOut,
    #[serde(other)]
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Unknown => "unknown",
        }
    }

    /// `failed` or `timed_out`: the node gave up.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's phase: one action's op, or `intent` for the node as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Intent,
    Activate,
    Reload,
    Backup,
    Restore,
    Deactivate,
    #[serde(other)]
    Unknown,
}

impl From<Op> for Phase {
    fn from(op: Op) -> Self {
        match op {
            Op::Activate => Phase::Activate,
            Op::Reload => Phase::Reload,
            Op::Backup => Phase::Backup,
            Op::Restore => Phase::Restore,
            Op::Deactivate => Phase::Deactivate,
        }
    }
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Intent => "intent",
            Phase::Activate => "activate",
            Phase::Reload => "reload",
            Phase::Backup => "backup",
            Phase::Restore => "restore",
            Phase::Deactivate => "deactivate",
            Phase::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /api/deploy-jobs/{jobId}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEvent {
    pub node: NodeName,
    pub status: Status,
    pub phase: Phase,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<EventPayload>,
}

impl NodeEvent {
    /// The event, its message escaped ([`super::text::escape`]): a message
    /// may carry a user's text, and the provider shows it to people. The
    /// payload stays as it is (JSON, complete within its bounds).
    pub fn new(
        node: NodeName,
        status: Status,
        phase: Phase,
        message: &str,
        payload: Option<EventPayload>,
    ) -> Self {
        NodeEvent {
            node,
            status,
            phase,
            message: super::text::escape(message),
            payload,
        }
    }
}

/// The status of a terminal event: an action (or the node's run) ends with
/// exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    Success,
    Failed,
    TimedOut,
}

impl From<TerminalStatus> for Status {
    fn from(t: TerminalStatus) -> Status {
        match t {
            TerminalStatus::Success => Status::Success,
            TerminalStatus::Failed => Status::Failed,
            TerminalStatus::TimedOut => Status::TimedOut,
        }
    }
}

impl fmt::Display for TerminalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Status::from(*self).fmt(f)
    }
}

/// A terminal event before it is addressed to a phase: what an action (or
/// the run) ended with. Kept in the journal until delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    pub status: TerminalStatus,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<EventPayload>,
}

impl Terminal {
    pub fn success(message: impl Into<String>, payload: Option<EventPayload>) -> Self {
        Self::new(TerminalStatus::Success, message, payload)
    }

    pub fn failed(message: impl Into<String>, payload: Option<EventPayload>) -> Self {
        Self::new(TerminalStatus::Failed, message, payload)
    }

    pub fn timed_out(message: impl Into<String>, payload: Option<EventPayload>) -> Self {
        Self::new(TerminalStatus::TimedOut, message, payload)
    }

    fn new(
        status: TerminalStatus,
        message: impl Into<String>,
        payload: Option<EventPayload>,
    ) -> Self {
        Terminal {
            status,
            message: message.into(),
            payload,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == TerminalStatus::Success
    }

    /// The event that reports it for `phase`.
    pub fn event(&self, node: &NodeName, phase: Phase) -> NodeEvent {
        NodeEvent::new(
            node.clone(),
            self.status.into(),
            phase,
            &self.message,
            self.payload.clone(),
        )
    }
}

/// The payloads this program posts. Serialised without a tag: each variant is
/// the JSON object the provider (and the restoring node) expects. Read back
/// (from the journal) in this order, most specific first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventPayload {
    Backup(BackupPayload),
    UnitFailed(Box<UnitFailure>),
    Unhealthy(HealthFailure),
    ProgramFailed(ProgramFailure),
}

/// Payload of an activation that exited 0 but whose services are not
/// healthy (behaviour.md, "Healthy, not just exited").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthFailure {
    pub user: UserName,
    /// The `activate` program's: always 0 here.
    pub exit_code: i32,
    pub unhealthy: Vec<UnhealthyUnit>,
}

/// A unit of `default.target`/`hostenv.target` that is failed, or still
/// not settled, when the health check ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyUnit {
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
    /// The service's `Result` (`exit-code`, `signal`, ...); none for units
    /// that are not services.
    pub result: Option<String>,
    pub exec_main_status: Option<i32>,
}

impl std::fmt::Display for UnhealthyUnit {
    /// `app.service failed/failed (exit-code)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.unit, self.active_state, self.sub_state)?;
        if let Some(result) = &self.result {
            write!(f, " ({result})")?;
        }
        Ok(())
    }
}

/// Payload of a successful `backup`; served later, verbatim, to the restoring
/// node by `backup-snapshot`, so its shape is part of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPayload {
    pub user: UserName,
    pub source_node: NodeName,
    #[serde(default)]
    pub snapshots: BTreeMap<MigrationKey, String>,
}

impl BackupPayload {
    /// Whether it has a (non-blank) snapshot id for every key.
    pub fn covers(&self, keys: &[MigrationKey]) -> bool {
        keys.iter().all(|k| {
            self.snapshots
                .get(k)
                .is_some_and(|id| !id.trim().is_empty())
        })
    }
}

/// Payload of a failed `activate` (also `reload` and `restore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramFailure {
    pub user: UserName,
    pub exit_code: Option<i32>,
    pub detail: String,
}

/// Payload of a failed or timed-out backup unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitFailure {
    pub user: UserName,
    pub migration_key: MigrationKey,
    pub unit_name: String,
    pub exit_code: Option<i32>,
    pub result: Option<String>,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub exec_main_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One entry of `statuses`: the latest event of one node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployStatus {
    #[serde(default)]
    pub event_id: Value,
    pub node: String,
    pub status: Status,
    pub phase: Phase,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `/run/hostenv/user/<user>/restore/plan.json`: what the environment's own
/// activation restores from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub source_node: NodeName,
    pub snapshots: BTreeMap<MigrationKey, String>,
}

impl RestorePlan {
    /// Where the plan for `user` goes, relative to the filesystem root.
    pub fn path(user: &UserName) -> PathBuf {
        PathBuf::from(format!("/run/hostenv/user/{user}/restore/plan.json"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backup_event_has_the_contract_shape() {
        let event = NodeEvent {
            node: NodeName::parse("node-a").expect("node"),
            status: Status::Success,
            phase: Phase::Backup,
            message: "Migration backups completed for acme".into(),
            payload: Some(EventPayload::Backup(BackupPayload {
                user: UserName::parse("acme").expect("user"),
                source_node: NodeName::parse("node-a").expect("node"),
                snapshots: BTreeMap::from([(
                    MigrationKey::parse("drupal-migrate").expect("key"),
                    "355f".into(),
                )]),
            })),
        };
        assert_eq!(
            serde_json::to_value(&event).expect("serialises"),
            json!({"node": "node-a", "status": "success", "phase": "backup",
                   "message": "Migration backups completed for acme",
                   "payload": {"user": "acme", "sourceNode": "node-a",
                               "snapshots": {"drupal-migrate": "355f"}}})
        );
    }

    #[test]
    fn timed_out_and_unknown_values_round_trip() {
        assert_eq!(
            serde_json::to_value(Status::TimedOut).expect("ser"),
            json!("timed_out")
        );
        let s: DeployStatus = serde_json::from_value(json!({
            "eventId": 7, "node": "node-b", "status": "weird", "phase": "something",
            "message": "m", "createdAt": "2026-11-21T23:31:25Z"
        }))
        .expect("decodes");
        assert_eq!(s.status, Status::Unknown);
        assert_eq!(s.phase, Phase::Unknown);
    }

    #[test]
    fn an_event_without_payload_omits_it() {
        let event = NodeEvent {
            node: NodeName::parse("n").expect("node"),
            status: Status::Running,
            phase: Phase::Activate,
            message: "Applying action for u".into(),
            payload: None,
        };
        let v = serde_json::to_value(&event).expect("ser");
        assert!(v.get("payload").is_none());
    }

    #[test]
    fn payloads_read_back_as_the_variant_they_were() {
        let user = UserName::parse("acme").expect("user");
        let key = MigrationKey::parse("db-migrate").expect("key");
        let payloads = [
            EventPayload::Backup(BackupPayload {
                user: user.clone(),
                source_node: NodeName::parse("node-a").expect("node"),
                snapshots: BTreeMap::from([(key.clone(), "abc".into())]),
            }),
            EventPayload::UnitFailed(Box::new(UnitFailure {
                user: user.clone(),
                migration_key: key,
                unit_name: "restic-backups-db-migrate.service".into(),
                exit_code: Some(1),
                result: Some("exit-code".into()),
                active_state: Some("failed".into()),
                sub_state: Some("failed".into()),
                exec_main_status: Some(1),
                detail: Some("d".into()),
            })),
            EventPayload::ProgramFailed(ProgramFailure {
                user,
                exit_code: None,
                detail: "timed out".into(),
            }),
        ];
        for payload in payloads {
            let json = serde_json::to_string(&payload).expect("ser");
            let back: EventPayload = serde_json::from_str(&json).expect("de");
            assert_eq!(back, payload, "{json}");
        }
    }
}
