//! What the root process asks a bus helper and what the helper answers:
//! small typed messages, one JSON line each, so the root process never
//! parses a byte of the user's bus traffic (behaviour.md, "The environment's
//! user is not trusted").
//!
//! A helper answers its requests one after the other on one connection:
//! the root side may keep it for the next exchange of the same action
//! ([`Request::keeps_helper`]), so an action pays for one helper start and
//! one D-Bus handshake, not one per call.
//!
//! The helper's answers come from a process the user can take over (it runs
//! with the user's credentials), so the root side reads them bounded
//! ([`MAX_ANSWER`]) and trusts nothing in them but their shape.

use serde::{Deserialize, Serialize};

use crate::ports::{FailedUnits, Health, UnitList, UnitRun};

/// The most the root process reads of what one helper says, all its lines
/// over all the requests it answers (a helper answers a few small ones).
pub const MAX_ANSWER: usize = 64 * 1024;
/// The longest message a helper sends; longer texts are cut (they may hold
/// whatever the user's bus said).
pub const MAX_MESSAGE: usize = 2000;

/// One exchange with one user's systemd manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Connect and wait for the manager, nothing else: sent ahead of a
    /// request that will follow (the health check after `activate`), so
    /// the handshake overlaps with the user's program.
    Connect,
    /// `LoadUnit` + `LoadState`.
    LoadState { unit: String },
    /// Start the unit and wait for its job, at most `timeout_ms`; past it
    /// (or on SIGTERM) cancel, stop, and kill what will not stop.
    RunUnit { unit: String, timeout_ms: u64 },
    /// Stop the unit and wait for the stop job, at most `timeout_ms`.
    StopUnit { unit: String, timeout_ms: u64 },
    /// `daemon-reload`.
    ReloadManager,
    /// The loaded units whose names start with `prefix` (a few named, the
    /// rest counted).
    ListUnits { prefix: String },
    /// Wait up to `timeout_ms` for the services of `default.target` and
    /// `hostenv.target` to settle, then say which are not healthy.
    CheckHealth { timeout_ms: u64 },
    /// The units that are `failed` now, each with its service `Result`
    /// (a few named, the rest counted). Read-only.
    FailedUnits,
}

impl Request {
    /// What the request does, for messages: "LoadState of x.service".
    pub fn describe(&self) -> String {
        match self {
            Request::Connect => "connecting to the user's systemd manager".to_owned(),
            Request::LoadState { unit } => format!("reading the LoadState of {unit}"),
            Request::RunUnit { unit, .. } => format!("starting {unit}"),
            Request::StopUnit { unit, .. } => format!("stopping {unit}"),
            Request::ReloadManager => "daemon-reload".to_owned(),
            Request::ListUnits { prefix } => format!("listing the units named {prefix}*"),
            Request::CheckHealth { .. } => {
                "looking at the services of default.target and hostenv.target".to_owned()
            }
            Request::FailedUnits => "listing the failed units".to_owned(),
        }
    }
}

impl Request {
    /// Whether the helper may answer another request after this one. Those
    /// that leave a signal watch or a unit job behind end their helper, so
    /// every helper that is kept holds a bare connection and nothing else.
    pub fn keeps_helper(&self) -> bool {
        match self {
            Request::Connect
            | Request::LoadState { .. }
            | Request::ReloadManager
            | Request::ListUnits { .. }
            | Request::FailedUnits => true,
            Request::RunUnit { .. } | Request::StopUnit { .. } | Request::CheckHealth { .. } => {
                false
            }
        }
    }
}

/// Everything a helper needs: who it talks to and what it asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The account's name and uid (the helper already runs as that uid).
    pub user: String,
    pub uid: u32,
    /// Connecting, authenticating and every call end within this many
    /// milliseconds of the helper reading the request (a `RunUnit` job has
    /// its own).
    pub limit_ms: u64,
    pub request: Request,
}

/// One line from a helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum Line {
    /// Connected and authenticated; the manager is on the bus.
    Connected,
    /// The start or stop job exists: from now on the helper must be given
    /// the time to stop the unit and kill what will not stop.
    JobQueued,
    /// The answer.
    Done { answer: Answer },
    /// The exchange failed; the message names the user and what to check.
    Failed { message: String },
}

/// A successful exchange's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Ready,
    LoadState { state: String },
    UnitRun { run: UnitRun },
    Stopped,
    Reloaded,
    Units { list: UnitList },
    Health { health: Health },
    Failed { failed: FailedUnits },
}

/// `text` cut to [`MAX_MESSAGE`] characters at most, saying so.
pub fn bounded_message(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE).collect();
    cut.push_str(" ... (cut)");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{JobOutcome, UnitStatus};

    #[test]
    fn lines_round_trip_as_one_json_line_each() {
        let lines = [
            Line::Connected,
            Line::JobQueued,
            Line::Done {
                answer: Answer::UnitRun {
                    run: UnitRun {
                        outcome: JobOutcome::Failed {
                            job_result: "failed".into(),
                        },
                        status: UnitStatus {
                            result: Some("exit-code".into()),
                            active_state: Some("failed".into()),
                            sub_state: Some("failed".into()),
                            exec_main_status: Some(3),
                        },
                    },
                },
            },
            Line::Failed {
                message: "a\nb".into(),
            },
        ];
        for line in lines {
            let text = serde_json::to_string(&line).expect("serialise");
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(serde_json::from_str::<Line>(&text).expect("parse"), line);
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(MAX_MESSAGE * 3);
        let cut = bounded_message(&long);
        assert!(cut.len() < MAX_MESSAGE + 20);
        assert!(cut.ends_with("(cut)"));
        assert_eq!(bounded_message("short"), "short");
    }
}
