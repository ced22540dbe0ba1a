//! The run journal's record of one job on one node: which intent it was
//! written for (its digest), the runs that worked on it, and per action
//! (index, op, user) whether it started, how it finished and whether that
//! terminal event reached the provider. It is what lets a run resume after
//! a crash without redoing finished work. Nothing secret goes into it.
//! How it is kept in a file, one change per line, is [`changes`].

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{cut, Action, IntentDigest, JobId, NodeName, Op, Phase, Terminal, UserName};

pub mod changes;

pub use changes::{Change, Folded, Target};

/// The journal format this program writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How many runs of one job a record remembers (newest last).
pub const MAX_RUNS_KEPT: usize = 20;

/// Whether a terminal event reached the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Not (yet) taken by the provider: a later run posts it again.
    Pending,
    Delivered,
    /// The provider closed the job (409): it will never take it.
    Dropped,
}

/// A terminal event and whether it was delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    #[serde(flatten)]
    pub terminal: Terminal,
    pub delivery: Delivery,
}

/// Where one action stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ActionState {
    /// Started by a run that did not finish it (yet).
    Started { started_at: Timestamp },
    /// Finished with this terminal event.
    #[serde(rename_all = "camelCase")]
    Finished {
        started_at: Timestamp,
        finished_at: Timestamp,
        /// Taken over from the provider's record (a backup it already
        /// serves), not run by this node's journal.
        #[serde(default)]
        adopted: bool,
        event: Posted,
    },
}

/// One action of the intent, as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    pub index: usize,
    pub op: Op,
    pub user: UserName,
    #[serde(flatten)]
    pub state: ActionState,
}

impl ActionRecord {
    /// The action's terminal event, if it finished.
    pub fn finished(&self) -> Option<&Posted> {
        match &self.state {
            ActionState::Finished { event, .. } => Some(event),
            ActionState::Started { .. } => None,
        }
    }

    pub fn is(&self, index: usize, action: &Action) -> bool {
        self.index == index && self.op == action.op && self.user == action.user
    }
}

/// How a run ended, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEnd {
    pub at: Timestamp,
    pub success: bool,
    pub message: String,
}

/// One run that worked on the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub pid: u32,
    pub started_at: Timestamp,
    #[serde(default)]
    pub ended: Option<RunEnd>,
    /// The actions this run started, finished, adopted or delivered.
    #[serde(default)]
    pub touched: Vec<usize>,
}

/// Everything the journal knows about one job on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub format_version: u32,
    pub node: NodeName,
    pub job: JobId,
    pub sha: String,
    pub intent_digest: IntentDigest,
    /// The runs, oldest first, at most [`MAX_RUNS_KEPT`].
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    /// The actions that started, by index.
    #[serde(default)]
    pub actions: Vec<ActionRecord>,
    /// The node's final (`intent`, ...) event for the job.
    #[serde(default)]
    pub closing: Option<Posted>,
}

/// Why a journal file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalError {
    /// Not JSON, or not the record's shape.
    Malformed(String),
    /// Written by a format this program does not know.
    Version(u32),
    /// Two records for one action index, or an index out of order.
    Inconsistent(String),
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Malformed(why) => write!(f, "it is not a journal record ({why})"),
            JournalError::Version(v) => write!(
                f,
                "it has format version {v}; this program reads version {FORMAT_VERSION}"
            ),
            JournalError::Inconsistent(why) => write!(f, "it contradicts itself ({why})"),
        }
    }
}

impl std::error::Error for JournalError {}

impl JobRecord {
    /// A record for a job nothing is known about yet.
    pub fn new(node: NodeName, job: JobId, sha: String, intent_digest: IntentDigest) -> Self {
        JobRecord {
            format_version: FORMAT_VERSION,
            node,
            job,
            sha,
            intent_digest,
            runs: Vec::new(),
            actions: Vec::new(),
            closing: None,
        }
    }

    /// Reads a record from the bytes of a journal file of earlier versions
    /// (one JSON document), checking what serde cannot: the version and
    /// one entry per action index, in order.
    pub fn parse(bytes: &[u8]) -> Result<JobRecord, JournalError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| JournalError::Malformed(cut(&e.to_string())))?;
        if version.format_version != FORMAT_VERSION {
            return Err(JournalError::Version(version.format_version));
        }
        let record: JobRecord = serde_json::from_slice(bytes)
            .map_err(|e| JournalError::Malformed(cut(&e.to_string())))?;
        record.check()?;
        Ok(record)
    }

    /// What serde cannot check: the version, and one entry per action
    /// index, in order.
    pub fn check(&self) -> Result<(), JournalError> {
        if self.format_version != FORMAT_VERSION {
            return Err(JournalError::Version(self.format_version));
        }
        if let Some(pair) = self.actions.windows(2).find(|w| w[0].index >= w[1].index) {
            return Err(JournalError::Inconsistent(format!(
                "action {} is followed by action {}",
                pair[0].index, pair[1].index
            )));
        }
        Ok(())
    }

    /// The record as one JSON document, the journal file of earlier
    /// versions (still read by [`changes::read`]; this program writes
    /// [`changes`] lines).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A record is plain data: serialising it cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// What the journal knows of action `index` of `action`.
    pub fn action(&self, index: usize, action: &Action) -> Option<&ActionRecord> {
        self.actions.iter().find(|a| a.is(index, action))
    }

    /// Sets what is known of one action, keeping the list ordered by index;
    /// the newest run is said to have touched it.
    pub fn put(&mut self, record: ActionRecord) {
        self.touch(record.index);
        match self
            .actions
            .binary_search_by_key(&record.index, |a| a.index)
        {
            Ok(i) => self.actions[i] = record,
            Err(i) => self.actions.insert(i, record),
        }
    }

    /// A new run starts working on the job.
    pub fn begin_run(&mut self, pid: u32, at: Timestamp) {
        self.runs.push(RunRecord {
            pid,
            started_at: at,
            ended: None,
            touched: Vec::new(),
        });
        let excess = self.runs.len().saturating_sub(MAX_RUNS_KEPT);
        self.runs.drain(..excess);
    }

    /// The newest run ends.
    pub fn end_run(&mut self, end: RunEnd) {
        if let Some(run) = self.runs.last_mut() {
            run.ended = Some(end);
        }
    }

    /// Terminal events not yet delivered, in the order they were meant to
    /// go: by action index, the closing event last.
    pub fn pending(&self) -> Vec<PendingEvent> {
        let mut out: Vec<PendingEvent> = self
            .actions
            .iter()
            .filter_map(|a| match a.finished() {
                Some(posted) if posted.delivery == Delivery::Pending => Some(PendingEvent {
                    of: EventOf::Action {
                        index: a.index,
                        op: a.op,
                        user: a.user.clone(),
                    },
                    terminal: posted.terminal.clone(),
                }),
                _ => None,
            })
            .collect();
        if let Some(posted) = &self.closing {
            if posted.delivery == Delivery::Pending {
                out.push(PendingEvent {
                    of: EventOf::Closing,
                    terminal: posted.terminal.clone(),
                });
            }
        }
        out
    }

    /// The newest run worked on action `index`.
    pub fn touch(&mut self, index: usize) {
        if let Some(run) = self.runs.last_mut() {
            if !run.touched.contains(&index) {
                run.touched.push(index);
            }
        }
    }

    /// Marks the pending event `of` as `delivery`.
    pub fn mark(&mut self, of: &EventOf, delivery: Delivery) {
        self.mark_target(Target::from(of), delivery);
    }

    /// Marks the terminal event `target` as `delivery` (nothing when there
    /// is no such event).
    pub fn mark_target(&mut self, target: Target, delivery: Delivery) {
        let posted = match target {
            Target::Closing => self.closing.as_mut(),
            Target::Action(index) => self
                .actions
                .binary_search_by_key(&index, |a| a.index)
                .ok()
                .and_then(|i| match &mut self.actions[i].state {
                    ActionState::Finished { event, .. } => Some(event),
                    ActionState::Started { .. } => None,
                }),
        };
        if let Some(posted) = posted {
            posted.delivery = delivery;
        }
    }

    /// The actions `run` (one of this record's runs) worked on, as the
    /// record has them now.
    pub fn touched_by<'a>(&'a self, run: &'a RunRecord) -> impl Iterator<Item = &'a ActionRecord> {
        run.touched
            .iter()
            .filter_map(|i| self.actions.iter().find(|a| a.index == *i))
    }

    /// When the job was last worked on.
    pub fn last_activity(&self) -> Option<Timestamp> {
        self.runs
            .iter()
            .map(|r| r.ended.as_ref().map_or(r.started_at, |e| e.at))
            .max()
    }
}

/// Which event of a job a pending terminal event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOf {
    Action {
        index: usize,
        op: Op,
        user: UserName,
    },
    /// The node's (`intent`, ...) event.
    Closing,
}

impl EventOf {
    /// The phase the event is posted with.
    pub fn phase(&self) -> Phase {
        match self {
            EventOf::Action { op, .. } => Phase::from(*op),
            EventOf::Closing => Phase::Intent,
        }
    }
}

/// A terminal event still to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub of: EventOf,
    pub terminal: Terminal,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> JobRecord {
        let mut r = JobRecord::new(
            NodeName::parse("node-a").expect("node"),
            JobId::new("job-1"),
            "abc".into(),
            IntentDigest::of(&json!({"schemaVersion": 1, "actions": []})),
        );
        let t: Timestamp = "2026-12-01T10:00:00Z".parse().expect("ts");
        r.begin_run(42, t);
        r.put(ActionRecord {
            index: 1,
            op: Op::Deactivate,
            user: UserName::parse("acme").expect("user"),
            state: ActionState::Started { started_at: t },
        });
        r.put(ActionRecord {
            index: 0,
            op: Op::Backup,
            user: UserName::parse("acme").expect("user"),
            state: ActionState::Finished {
                started_at: t,
                finished_at: t,
                adopted: false,
                event: Posted {
                    terminal: Terminal::success("done", None),
                    delivery: Delivery::Pending,
                },
            },
        });
        r
    }

    #[test]
    fn a_record_round_trips_and_keeps_actions_in_order() {
        let r = record();
        assert_eq!(r.actions[0].index, 0);
        assert_eq!(JobRecord::parse(&r.to_bytes()), Ok(r));
    }

    #[test]
    fn pending_events_come_in_order_and_can_be_marked() {
        let mut r = record();
        r.closing = Some(Posted {
            terminal: Terminal::success("all", None),
            delivery: Delivery::Pending,
        });
        let pending = r.pending();
        assert_eq!(pending.len(), 2);
        assert!(matches!(pending[0].of, EventOf::Action { index: 0, .. }));
        assert_eq!(pending[1].of, EventOf::Closing);
        r.mark(&pending[0].of, Delivery::Delivered);
        r.mark(&EventOf::Closing, Delivery::Dropped);
        assert!(r.pending().is_empty());
    }

    #[test]
    fn foreign_and_broken_files_are_typed_errors() {
        assert!(matches!(
            JobRecord::parse(b"{\"formatVersion\": 1"),
            Err(JournalError::Malformed(_))
        ));
        assert_eq!(
            JobRecord::parse(br#"{"formatVersion": 7}"#),
            Err(JournalError::Version(7))
        );
        let mut r = record();
        r.actions.swap(0, 1);
        assert!(matches!(
            JobRecord::parse(&r.to_bytes()),
            Err(JournalError::Inconsistent(_))
        ));
        // Half a file, as a torn write would leave it.
        let bytes = record().to_bytes();
        assert!(JobRecord::parse(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn only_the_last_runs_are_kept() {
        let mut r = record();
        let t: Timestamp = "2026-12-01T11:00:00Z".parse().expect("ts");
        for pid in 0..(MAX_RUNS_KEPT as u32 + 5) {
            r.begin_run(pid, t);
        }
        assert_eq!(r.runs.len(), MAX_RUNS_KEPT);
        assert_eq!(
            r.runs.last().map(|run| run.pid),
            Some(MAX_RUNS_KEPT as u32 + 4)
        );
    }
}
