//! The journal file's format: an append-only list of self-checking lines,
//! one change each, so that what one change writes does not grow with the
//! number of actions in the intent (behaviour.md, "Run memory"). Reading
//! folds the lines into the [`JobRecord`] the rest of the program uses;
//! a torn or corrupt line ends the reading there, everything before it
//! stands. Pure: bytes in, bytes out, no I/O.
//!
//! A line is `<16 hex digits> <JSON>\n`: the digits are the first 8 bytes
//! of the SHA-256 of the JSON text, and the JSON (serde's compact form,
//! which never holds a raw newline) is one [`Change`]. The first line is
//! always a [`Change::State`]: the whole record (job, node, intent digest,
//! runs, actions), written when a run starts the file and when it compacts
//! it at its end; every later line changes one thing (a run started or
//! ended, one action's state, the closing event, one delivery).
//!
//! A file that starts with `{` is the single JSON document earlier
//! versions wrote (one whole record, rewritten on every change): it is
//! still read, and replaced by this format at the next write.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    ActionRecord, ActionState, Delivery, EventOf, JobRecord, JournalError, Posted, RunEnd,
};
use crate::model::cut;

/// Hex digits of a line's checksum.
const SUM_DIGITS: usize = 16;

/// One change to a job's record: what one journal line holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// The record is now this, whole: the first line of every file (its
    /// header: node, job, commit, intent digest), and the line a compacted
    /// file consists of.
    State(Box<JobRecord>),
    /// A run starts working on the job (for commit `sha`).
    #[serde(rename_all = "camelCase")]
    Run {
        pid: u32,
        started_at: Timestamp,
        sha: String,
    },
    /// One action started, finished (with its terminal event and payload)
    /// or was adopted from the provider's record.
    Action(ActionRecord),
    /// The node's final (`intent`, ...) event, about to be posted.
    Closing(Posted),
    /// What posting a terminal event came to; `touch`: the newest run did it.
    Delivery {
        of: Target,
        delivery: Delivery,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        touch: bool,
    },
    /// The newest run ended.
    End(RunEnd),
}

impl Change {
    /// Whether the change must be on disk before the run goes on. Three need
    /// not; their lines reach the disk with the next change's sync, or with
    /// the kernel's writeback within seconds (a crash of this process loses
    /// none of them: they are in the page cache):
    /// - an action's start: lost in a power loss, the action is run again,
    ///   which is what a start without a finish means anyway (a backup the
    ///   provider already serves is adopted either way);
    /// - that an event was delivered: lost, the next run finds the event
    ///   finished and not delivered, sees that the provider has it already
    ///   (`memory::already_there`) and posts nothing, or posts that same
    ///   event once more;
    /// - the run's end: nothing a later run does depends on it; lost,
    ///   `status` shows the run as one that did not end.
    pub fn must_be_durable(&self) -> bool {
        !matches!(
            self,
            Change::Action(ActionRecord {
                state: ActionState::Started { .. },
                ..
            }) | Change::Delivery { .. }
                | Change::End(_)
        )
    }
}

/// Which terminal event of a job a [`Change::Delivery`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// The terminal event of the action with this index.
    Action(usize),
    /// The node's (`intent`, ...) event.
    Closing,
}

impl From<&EventOf> for Target {
    fn from(of: &EventOf) -> Self {
        match of {
            EventOf::Action { index, .. } => Target::Action(*index),
            EventOf::Closing => Target::Closing,
        }
    }
}

impl JobRecord {
    /// The record after `change`: how a run keeps its record in memory and
    /// how reading a journal file folds its lines, the same function.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::State(record) => *self = JobRecord::clone(record),
            Change::Run {
                pid,
                started_at,
                sha,
            } => {
                self.sha.clone_from(sha);
                self.begin_run(*pid, *started_at);
            }
            Change::Action(action) => self.put(action.clone()),
            Change::Closing(posted) => self.closing = Some(posted.clone()),
            Change::Delivery {
                of,
                delivery,
                touch,
            } => {
                self.mark_target(*of, *delivery);
                if let (true, Target::Action(index)) = (touch, of) {
                    self.touch(*index);
                }
            }
            Change::End(end) => self.end_run(end.clone()),
        }
    }
}

/// `change` as one journal line: checksum, space, JSON, newline.
pub fn encode(change: &Change) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(change)?;
    let mut line = Vec::with_capacity(json.len() + SUM_DIGITS + 2);
    line.extend_from_slice(checksum(&json).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// A whole file holding `record` alone: how a run starts the file and how
/// it compacts it.
pub fn encode_record(record: &JobRecord) -> Result<Vec<u8>, serde_json::Error> {
    encode(&Change::State(Box::new(record.clone())))
}

fn checksum(json: &[u8]) -> String {
    Sha256::digest(json)
        .iter()
        .take(SUM_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line (without its newline) as a change, or why it is not one.
fn decode(line: &[u8]) -> Result<Change, String> {
    let (sum, json) = match line.iter().position(|b| *b == b' ') {
        Some(SUM_DIGITS) => (&line[..SUM_DIGITS], &line[SUM_DIGITS + 1..]),
        _ => return Err("not a checksummed line".to_owned()),
    };
    if sum != checksum(json).as_bytes() {
        return Err("damaged (its checksum does not match)".to_owned());
    }
    serde_json::from_slice(json)
        .map_err(|e| format!("not a change this program knows ({})", cut(&e.to_string())))
}

/// What reading a journal file's bytes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The record the readable lines make.
    pub record: JobRecord,
    /// How many bytes at the start hold those lines; what follows them
    /// (a torn or corrupt tail) was ignored.
    pub valid: usize,
    /// Why the bytes after `valid` were ignored.
    pub ignored: Option<String>,
    /// The whole-record JSON of earlier versions, not lines.
    pub legacy: bool,
}

impl Folded {
    /// Whether a change can be appended to these bytes as they are: they
    /// are lines, all of them readable.
    pub fn appendable(&self) -> bool {
        !self.legacy && self.ignored.is_none()
    }
}

/// Reads a journal file's bytes: the lines up to the first one that is
/// torn or damaged, folded into a record, or the whole-record JSON of
/// earlier versions. An error when not even the first line (the header)
/// can be read.
pub fn read(bytes: &[u8]) -> Result<Folded, JournalError> {
    if bytes.first() == Some(&b'{') {
        return Ok(Folded {
            record: JobRecord::parse(bytes)?,
            valid: bytes.len(),
            ignored: None,
            legacy: true,
        });
    }
    let mut record: Option<JobRecord> = None;
    let mut valid = 0;
    let mut ignored = None;
    let mut number = 0usize;
    while valid < bytes.len() {
        number += 1;
        let rest = &bytes[valid..];
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            ignored = Some(format!(
                "its last {} byte(s) are a torn record (no end of line)",
                rest.len()
            ));
            break;
        };
        if let Err(why) = decode(&rest[..end]).and_then(|change| fold(&mut record, change)) {
            ignored = Some(format!(
                "record {number} is {why}; it and the {} byte(s) after it are ignored",
                rest.len()
            ));
            break;
        }
        valid += end + 1;
    }
    match record {
        Some(record) => Ok(Folded {
            record,
            valid,
            ignored,
            legacy: false,
        }),
        None => Err(JournalError::Malformed(match ignored {
            Some(why) => format!("no record can be read: {why}"),
            None => "it is empty".to_owned(),
        })),
    }
}

/// Adds one read line to what the lines before it made: the first must be
/// the whole record (the header); a later whole record must be of the
/// same job and node.
fn fold(record: &mut Option<JobRecord>, change: Change) -> Result<(), String> {
    match (record.as_mut(), change) {
        (None, Change::State(first)) => {
            first.check().map_err(|e| e.to_string())?;
            *record = Some(*first);
        }
        (None, _) => return Err("not the header a journal file starts with".to_owned()),
        (Some(now), Change::State(next)) => {
            if next.job != now.job || next.node != now.node {
                return Err(format!(
                    "the record of another job or node ({} on {})",
                    next.job, next.node
                ));
            }
            next.check().map_err(|e| e.to_string())?;
            *now = *next;
        }
        (Some(now), change) => now.apply(&change),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
