//! Choosing the snapshot a backup run made, from `restic snapshots --json`.
//! restic writes local times with an offset, so times are compared as
//! instants, never as strings, and snapshots older than the run are ignored.
//! The list can be long (a year of hourly backups is several MiB), so the
//! decision is a fold over one snapshot at a time ([`Decision`]): the run
//! feeds restic's stdout through [`SnapshotStream`] as it arrives, in memory
//! that does not grow with the list; [`pick_snapshot`] reads a whole
//! document into the same decision (tests compare the two).

use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;

mod stream;

pub use stream::SnapshotStream;

/// Length of a restic snapshot id: 64 lowercase hex characters (SHA-256).
pub const ID_LEN: usize = 64;
/// Longest `time` text looked at. restic writes at most 35 bytes
/// (`2026-11-21T19:33:20.087519475-05:00`); anything longer is malformed.
pub const MAX_TIME_LEN: usize = 64;

/// The snapshot this run made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// restic's full id: [`ID_LEN`] lowercase hex characters.
    pub id: String,
    pub time: Timestamp,
    /// How many snapshots restic listed.
    pub listed: u64,
}

/// Why no snapshot id could be taken from restic's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a JSON array of snapshots, or a time that is not a timestamp.
    Malformed(String),
    /// restic knows no snapshot with this tag.
    Empty,
    /// Snapshots exist, but none was made at or after the unit started.
    NoneFromThisRun { newest: Timestamp, listed: u64 },
    /// The newest snapshot of this run has no `id` (absent, null or empty).
    MissingId { time: Timestamp },
    /// The newest snapshot of this run has an `id` that is not restic's
    /// ([`ID_LEN`] lowercase hex characters); `len` is its length in bytes.
    /// The text itself is never repeated: it is the user's.
    InvalidId { time: Timestamp, len: usize },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Malformed(why) => {
                write!(f, "restic output is not a snapshot list: {why}")
            }
            SnapshotError::Empty => f.write_str("restic lists no snapshot with this tag"),
            SnapshotError::NoneFromThisRun { newest, listed } => write!(
                f,
                "no snapshot was made by this run; the newest of the {listed} snapshot(s) listed is from {newest}"
            ),
            SnapshotError::MissingId { time } => {
                write!(f, "the snapshot made at {time} has no id")
            }
            SnapshotError::InvalidId { time, len } => write!(
                f,
                "the snapshot made at {time} has an id that is not restic's ({len} bytes, not {ID_LEN} lowercase hex characters)"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl SnapshotError {
    /// The newest snapshot time seen, for the operator's message.
    pub fn newest_seen(&self) -> Option<Timestamp> {
        match self {
            SnapshotError::NoneFromThisRun { newest, .. } => Some(*newest),
            SnapshotError::MissingId { time } | SnapshotError::InvalidId { time, .. } => {
                Some(*time)
            }
            _ => None,
        }
    }
}

/// Whether `id` is a restic snapshot id: [`ID_LEN`] lowercase hex characters.
pub fn is_restic_id(id: &[u8]) -> bool {
    id.len() == ID_LEN && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A snapshot's `time` as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeField<'a> {
    Text(&'a str),
    /// Longer than [`MAX_TIME_LEN`] bytes (not kept), or not UTF-8.
    Unusable {
        len: usize,
    },
}

impl<'a> TimeField<'a> {
    fn of(text: &'a str) -> Self {
        if text.len() > MAX_TIME_LEN {
            TimeField::Unusable { len: text.len() }
        } else {
            TimeField::Text(text)
        }
    }
}

/// A snapshot's `id` as the decision needs it: nothing else is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdField {
    /// Absent, `null` or `""`.
    Missing,
    Valid(String),
    /// Anything else; its length in bytes.
    Invalid {
        len: usize,
    },
}

impl IdField {
    fn of(id: Option<&str>) -> Self {
        match id {
            None | Some("") => IdField::Missing,
            Some(id) if is_restic_id(id.as_bytes()) => IdField::Valid(id.to_owned()),
            Some(id) => IdField::Invalid { len: id.len() },
        }
    }
}

/// The choice, fed one snapshot at a time in list order: the newest
/// instant at or after `not_before` (the later one on a tie), the newest
/// instant overall and the count. Its size does not depend on the list.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    not_before: Timestamp,
    listed: u64,
    newest: Option<Timestamp>,
    chosen: Option<(Timestamp, IdField)>,
    /// The first reason the list is not a snapshot list; the rest is ignored.
    malformed: Option<String>,
}

impl Decision {
    pub(crate) fn new(not_before: Timestamp) -> Self {
        Decision {
            not_before,
            listed: 0,
            newest: None,
            chosen: None,
            malformed: None,
        }
    }

    /// The list is not a snapshot list; the first reason given is kept.
    pub(crate) fn malformed(&mut self, why: impl FnOnce() -> String) {
        if self.malformed.is_none() {
            self.malformed = Some(why());
        }
    }

    /// One more snapshot of the list.
    pub(crate) fn snapshot(&mut self, time: TimeField<'_>, id: IdField) {
        if self.malformed.is_some() {
            return;
        }
        let time = match time {
            TimeField::Unusable { len } => {
                return self.malformed(|| format!("a snapshot time of {len} bytes"))
            }
            TimeField::Text(text) => match text.parse::<Timestamp>() {
                Ok(time) => time,
                Err(e) => return self.malformed(|| format!("snapshot time {text:?}: {e}")),
            },
        };
        self.listed += 1;
        self.newest = self.newest.max(Some(time));
        if time >= self.not_before && self.chosen.as_ref().is_none_or(|(t, _)| time >= *t) {
            self.chosen = Some((time, id));
        }
    }

    pub(crate) fn finish(self) -> Result<Snapshot, SnapshotError> {
        if let Some(why) = self.malformed {
            return Err(SnapshotError::Malformed(why));
        }
        let newest = self.newest.ok_or(SnapshotError::Empty)?;
        let (time, id) = self.chosen.ok_or(SnapshotError::NoneFromThisRun {
            newest,
            listed: self.listed,
        })?;
        match id {
            IdField::Valid(id) => Ok(Snapshot {
                id,
                time,
                listed: self.listed,
            }),
            IdField::Missing => Err(SnapshotError::MissingId { time }),
            IdField::Invalid { len } => Err(SnapshotError::InvalidId { time, len }),
        }
    }
}

#[derive(Deserialize)]
struct RawSnapshot {
    time: String,
    #[serde(default)]
    id: Option<String>,
}

/// Picks the newest snapshot (as an instant) made at or after `not_before`
/// from a whole `restic snapshots --tag <key> --json` document. The run
/// itself streams ([`SnapshotStream`]); this is the same decision over a
/// document read at once, which tests hold the stream to.
pub fn pick_snapshot(json: &str, not_before: Timestamp) -> Result<Snapshot, SnapshotError> {
    let raw: Vec<RawSnapshot> =
        serde_json::from_str(json.trim()).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let mut decision = Decision::new(not_before);
    for snap in &raw {
        decision.snapshot(TimeField::of(&snap.time), IdField::of(snap.id.as_deref()));
    }
    decision.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn id(c: char) -> String {
        c.to_string().repeat(ID_LEN)
    }

    #[test]
    fn offsets_are_compared_as_instants() {
        // 18:31:25.97-05:00 is 23:31:25.97Z: newer than 23:31:25.26Z,
        // although it sorts first as a string.
        let json = format!(
            r#"[
            {{"time": "2026-11-21T23:31:25.26Z", "id": "{}"}},
            {{"time": "2026-11-21T18:31:25.97-05:00", "id": "{}"}}
        ]"#,
            id('a'),
            id('b')
        );
        let snap = pick_snapshot(&json, ts("2026-11-21T23:00:00Z")).expect("picks one");
        assert_eq!(snap.id, id('b'));
        assert_eq!(snap.listed, 2);
    }

    #[test]
    fn snapshots_before_the_run_are_ignored() {
        let json = format!(
            r#"[{{"time": "2026-11-21T10:00:00Z", "id": "{}"}}]"#,
            id('0')
        );
        let err = pick_snapshot(&json, ts("2026-11-21T11:00:00Z")).expect_err("stale");
        assert_eq!(
            err,
            SnapshotError::NoneFromThisRun {
                newest: ts("2026-11-21T10:00:00Z"),
                listed: 1
            }
        );
    }

    #[test]
    fn empty_malformed_and_idless_answers_are_errors() {
        let start = ts("2026-11-21T00:00:00Z");
        assert_eq!(pick_snapshot("[]", start), Err(SnapshotError::Empty));
        assert!(matches!(
            pick_snapshot("{", start),
            Err(SnapshotError::Malformed(_))
        ));
        assert!(matches!(
            pick_snapshot(r#"[{"time": "yesterday", "id": "x"}]"#, start),
            Err(SnapshotError::Malformed(_))
        ));
        assert!(matches!(
            pick_snapshot(r#"[{"time": "2026-11-21T01:00:00Z"}]"#, start),
            Err(SnapshotError::MissingId { .. })
        ));
        assert!(matches!(
            pick_snapshot(r#"[{"time": "2026-11-21T01:00:00Z", "id": ""}]"#, start),
            Err(SnapshotError::MissingId { .. })
        ));
    }

    #[test]
    fn only_restic_ids_are_taken() {
        let start = ts("2026-11-21T00:00:00Z");
        let time = ts("2026-11-21T01:00:00Z");
        let long = "a".repeat(1_000_000);
        let upper = "A".repeat(ID_LEN);
        let short = "a".repeat(ID_LEN - 1);
        for bad in ["/etc/passwd", "idX", &long, &upper, &short, " "] {
            let json = serde_json::json!([{"time": "2026-11-21T01:00:00Z", "id": bad}]);
            assert_eq!(
                pick_snapshot(&json.to_string(), start),
                Err(SnapshotError::InvalidId {
                    time,
                    len: bad.len()
                }),
                "{}",
                &bad[..bad.len().min(20)]
            );
        }
        let err = SnapshotError::InvalidId { time, len: 11 }.to_string();
        assert!(!err.contains("/etc/passwd"), "{err}");
        assert!(is_restic_id(id('f').as_bytes()));
        assert!(!is_restic_id(id('g').as_bytes()));
    }
}
