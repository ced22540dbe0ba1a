//! Choosing the snapshot a backup run made, from `restic snapshots --json`.
//! restic writes local times with an offset, so times are compared as
//! instants, never as strings, and snapshots older than the run are ignored.

use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;

/// The snapshot this run made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub time: Timestamp,
}

/// Why no snapshot id could be taken from restic's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a JSON array of snapshots, or a time that is not a timestamp.
    Malformed(String),
    /// restic knows no snapshot with this tag.
    Empty,
    /// Snapshots exist, but none was made at or after the unit started.
    NoneFromThisRun { newest: Timestamp },
    /// The newest snapshot of this run has no `id`.
    MissingId { time: Timestamp },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Malformed(why) => {
                write!(f, "restic output is not a snapshot list: {why}")
            }
            SnapshotError::Empty => f.write_str("restic lists no snapshot with this tag"),
            SnapshotError::NoneFromThisRun { newest } => write!(
                f,
                "no snapshot was made by this run; the newest snapshot seen is from {newest}"
            ),
            SnapshotError::MissingId { time } => {
                write!(f, "the snapshot made at {time} has no id")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

impl SnapshotError {
    /// The newest snapshot time seen, for the operator's message.
    pub fn newest_seen(&self) -> Option<Timestamp> {
        match self {
            SnapshotError::NoneFromThisRun { newest } => Some(*newest),
            SnapshotError::MissingId { time } => Some(*time),
            _ => None,
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
/// from the JSON printed by `restic snapshots --tag <key> --json`.
pub fn pick_snapshot(json: &str, not_before: Timestamp) -> Result<Snapshot, SnapshotError> {
    let raw: Vec<RawSnapshot> =
        serde_json::from_str(json.trim()).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let mut parsed = Vec::with_capacity(raw.len());
    for snap in raw {
        let time: Timestamp = snap
            .time
            .parse()
            .map_err(|e| SnapshotError::Malformed(format!("snapshot time {:?}: {e}", snap.time)))?;
        parsed.push((time, snap.id.filter(|id| !id.trim().is_empty())));
    }
    let newest_overall = parsed
        .iter()
        .map(|(t, _)| *t)
        .max()
        .ok_or(SnapshotError::Empty)?;
    let (time, id) = parsed
        .into_iter()
        .filter(|(t, _)| *t >= not_before)
        .max_by_key(|(t, _)| *t)
        .ok_or(SnapshotError::NoneFromThisRun {
            newest: newest_overall,
        })?;
    let id = id.ok_or(SnapshotError::MissingId { time })?;
    Ok(Snapshot { id, time })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn offsets_are_compared_as_instants() {
        // 18:31:25.97-05:00 is 23:31:25.97Z: newer than 23:31:25.26Z,
        // although it sorts first as a string.
        let json = r#"[
            {"time": "2026-11-21T23:31:25.26Z", "id": "older"},
            {"time": "2026-11-21T18:31:25.97-05:00", "id": "newer"}
        ]"#;
        let snap = pick_snapshot(json, ts("2026-11-21T23:00:00Z")).expect("picks one");
        assert_eq!(snap.id, "newer");
    }

    #[test]
    fn snapshots_before_the_run_are_ignored() {
        let json = r#"[{"time": "2026-11-21T10:00:00Z", "id": "stale"}]"#;
        let err = pick_snapshot(json, ts("2026-11-21T11:00:00Z")).expect_err("stale");
        assert_eq!(
            err,
            SnapshotError::NoneFromThisRun {
                newest: ts("2026-11-21T10:00:00Z")
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
    }
}

/// The JSON array within a program's combined output: the whole output when
/// it is one, else the last line that starts with `[` (restic prints its
/// JSON on one line; warnings go to stderr, which we capture alongside).
pub fn extract_snapshot_json(output: &str) -> &str {
    let is_json = |text: &str| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let trimmed = output.trim();
    if trimmed.starts_with('[') && is_json(trimmed) {
        return trimmed;
    }
    // A warning that happens to start with `[` or end with `]` must not hide
    // the JSON line: prefer the last line that is JSON.
    let lines = || output.lines().map(str::trim).filter(|l| l.starts_with('['));
    lines()
        .rfind(|l| is_json(l))
        .or_else(|| lines().next_back())
        .unwrap_or(trimmed)
}

#[cfg(test)]
mod extract_tests {
    use super::*;

    #[test]
    fn finds_the_array_among_warnings() {
        let out = "warning: cache is old\n[{\"time\":\"2026-11-21T23:31:25Z\",\"id\":\"a\"}]\n";
        assert_eq!(
            extract_snapshot_json(out),
            "[{\"time\":\"2026-11-21T23:31:25Z\",\"id\":\"a\"}]"
        );
        assert_eq!(extract_snapshot_json("  []\n"), "[]");
        assert_eq!(extract_snapshot_json("garbage"), "garbage");
        // Lines around the JSON that look like brackets do not hide it.
        let out = "[{\"time\":\"2026-11-21T23:31:25Z\",\"id\":\"a\"}]\nwarning: lock [stale]\n[notice] done\n";
        assert_eq!(
            extract_snapshot_json(out),
            "[{\"time\":\"2026-11-21T23:31:25Z\",\"id\":\"a\"}]"
        );
    }
}
