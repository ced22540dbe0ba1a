//! The line format alone: what a reader makes of whole, torn, damaged and
//! earlier-version bytes.

use serde_json::json;

use super::*;
use crate::model::journal::{ActionState, FORMAT_VERSION};
use crate::model::{IntentDigest, JobId, NodeName, Op, Terminal, UserName};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

fn header() -> JobRecord {
    JobRecord::new(
        NodeName::parse("node-a").expect("node"),
        JobId::new("job-1"),
        "abc".into(),
        IntentDigest::of(&json!({"schemaVersion": 1, "actions": []})),
    )
}

fn action(index: usize, finished: bool) -> Change {
    let t = ts("2026-12-01T10:00:00Z");
    Change::Action(ActionRecord {
        index,
        op: Op::Activate,
        user: UserName::parse("acme").expect("user"),
        state: if finished {
            ActionState::Finished {
                started_at: t,
                finished_at: t,
                adopted: false,
                event: Posted {
                    terminal: Terminal::success("Activation completed for acme", None),
                    delivery: Delivery::Pending,
                },
            }
        } else {
            ActionState::Started { started_at: t }
        },
    })
}

/// A run's changes after the header.
fn changes() -> Vec<Change> {
    vec![
        Change::Run {
            pid: 7,
            started_at: ts("2026-12-01T10:00:00Z"),
            sha: "def".into(),
        },
        action(0, false),
        action(0, true),
        Change::Delivery {
            of: Target::Action(0),
            delivery: Delivery::Delivered,
            touch: true,
        },
        action(1, false),
        Change::Closing(Posted {
            terminal: Terminal::failed("stopped", None),
            delivery: Delivery::Pending,
        }),
        Change::End(RunEnd {
            at: ts("2026-12-01T10:01:00Z"),
            success: false,
            message: "stopped".into(),
        }),
    ]
}

/// The file's bytes and, per line, the record its lines make up to there.
fn file() -> (Vec<u8>, Vec<(usize, JobRecord)>) {
    let mut record = header();
    let mut bytes = encode_record(&record).expect("encode");
    let mut states = vec![(bytes.len(), record.clone())];
    for change in changes() {
        record.apply(&change);
        bytes.extend(encode(&change).expect("encode"));
        states.push((bytes.len(), record.clone()));
    }
    (bytes, states)
}

#[test]
fn lines_fold_into_the_record_the_changes_make() {
    let (bytes, states) = file();
    let folded = read(&bytes).expect("read");
    let (len, last) = states.last().expect("states");
    assert_eq!(folded.record, *last);
    assert_eq!(
        (folded.valid, folded.ignored, folded.legacy),
        (*len, None, false)
    );
    assert!(folded.record.runs[0].ended.is_some());
    assert_eq!(folded.record.sha, "def");
    assert_eq!(folded.record.runs[0].touched, vec![0, 1]);
    // Compacted, the same record is one line.
    let compact = encode_record(&folded.record).expect("encode");
    assert_eq!(compact.iter().filter(|b| **b == b'\n').count(), 1);
    assert_eq!(read(&compact).expect("read").record, *last);
}

#[test]
fn a_torn_last_line_is_ignored_at_every_byte() {
    let (bytes, states) = file();
    let (before, kept) = &states[states.len() - 2];
    for cut in *before..bytes.len() {
        let folded = read(&bytes[..cut]).expect("read");
        assert_eq!(folded.record, *kept, "cut at {cut}");
        assert_eq!(folded.valid, *before);
        assert_eq!(folded.ignored.is_some(), cut > *before, "cut at {cut}");
        assert_eq!(folded.appendable(), cut == *before);
    }
}

#[test]
fn a_damaged_line_ends_the_reading_there() {
    let (bytes, states) = file();
    let (start, kept) = &states[2];
    let (end, _) = states[3];
    // Each byte of line 4 (not its newline) flipped in turn.
    for at in *start..end - 1 {
        let mut broken = bytes.clone();
        broken[at] ^= 0x20;
        let folded = read(&broken).expect("read");
        assert_eq!(folded.record, *kept, "flipped byte {at}");
        assert_eq!(folded.valid, *start);
        let why = folded.ignored.expect("said why");
        assert!(why.starts_with("record 4 is "), "{why}");
        assert!(
            why.ends_with(&format!(
                "{} byte(s) after it are ignored",
                bytes.len() - start
            )),
            "{why}"
        );
    }
}

#[test]
fn a_file_needs_its_header_and_keeps_to_its_job() {
    let lone = encode(&action(0, false)).expect("encode");
    let err = read(&lone).expect_err("no header");
    assert!(err.to_string().contains("not the header"), "{err}");
    assert!(read(b"").is_err());
    let header_line = encode_record(&header()).expect("encode");
    let torn = read(&header_line[..header_line.len() - 1]).expect_err("torn header");
    assert!(torn.to_string().contains("torn"), "{torn}");
    let mut other = header();
    other.job = JobId::new("job-2");
    let mut bytes = header_line.clone();
    bytes.extend(encode(&Change::State(Box::new(other))).expect("encode"));
    let folded = read(&bytes).expect("read");
    assert_eq!(folded.record, header());
    assert!(folded.ignored.expect("ignored").contains("another job"));
    let mut future = header();
    future.format_version = FORMAT_VERSION + 1;
    assert!(read(&encode_record(&future).expect("encode")).is_err());
}

#[test]
fn an_earlier_versions_file_is_read_as_it_was() {
    let (bytes, states) = file();
    let record = read(&bytes).expect("read").record;
    let folded = read(&record.to_bytes()).expect("legacy");
    assert!(folded.legacy && !folded.appendable());
    assert_eq!(folded.record, states.last().expect("states").1);
}

#[test]
fn one_change_writes_the_same_bytes_whatever_the_record_holds() {
    // A change is encoded alone: its line does not depend on the record.
    let line = encode(&action(5, true)).expect("encode");
    let mut record = header();
    for index in 0..1000 {
        record.apply(&action(index, true));
    }
    assert_eq!(encode(&action(5, true)).expect("encode"), line);
    assert!(line.len() < 400, "{}", line.len());
}
