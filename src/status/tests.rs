//! The status view from journal records, with no I/O.

use serde_json::json;

use super::*;
use crate::model::journal::{JobRecord, Posted, RunEnd};
use crate::model::{
    BackupPayload, IntentDigest, JobId, MigrationKey, NodeName, Op, Terminal, UserName,
};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

fn finished(index: usize, op: Op, terminal: Terminal, delivery: Delivery) -> ActionRecord {
    ActionRecord {
        index,
        op,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Finished {
            started_at: ts("2026-12-01T10:00:00Z"),
            finished_at: ts("2026-12-01T10:00:12.5Z"),
            adopted: false,
            event: Posted { terminal, delivery },
        },
    }
}

fn records() -> Vec<JobRecord> {
    let mut old = JobRecord::new(
        NodeName::parse("node-a").expect("node"),
        JobId::new("job-1"),
        "aaa".into(),
        IntentDigest::of(&json!({})),
    );
    old.begin_run(10, ts("2026-11-30T10:00:00Z"));
    let backup = Terminal::success(
        "Migration backups completed for acme",
        Some(EventPayload::Backup(BackupPayload {
            user: UserName::parse("acme").expect("user"),
            source_node: NodeName::parse("node-a").expect("node"),
            snapshots: [(
                MigrationKey::parse("db-migrate").expect("key"),
                "355f".to_owned(),
            )]
            .into_iter()
            .collect(),
        })),
    );
    old.put(finished(0, Op::Backup, backup, Delivery::Delivered));
    old.put(finished(
        1,
        Op::Deactivate,
        Terminal::failed("Not deactivating acme: target node node-b failed", None),
        Delivery::Pending,
    ));
    old.end_run(RunEnd {
        at: ts("2026-11-30T10:01:00Z"),
        success: false,
        message: "action 2 of 2 (deactivate for acme) ended failed".into(),
    });
    let mut new = JobRecord::new(
        NodeName::parse("node-a").expect("node"),
        JobId::new("job-2"),
        "bbb".into(),
        IntentDigest::of(&json!({})),
    );
    new.begin_run(20, ts("2026-12-01T09:59:59Z"));
    new.put(ActionRecord {
        index: 0,
        op: Op::Activate,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Started {
            started_at: ts("2026-12-01T10:00:00Z"),
        },
    });
    vec![old, new]
}

#[test]
fn runs_come_newest_first_with_their_actions_and_a_run_in_progress() {
    let holder = LockHolder {
        pid: Some(20),
        since: Some(ts("2026-12-01T09:59:58Z")),
        sha: Some("bbb".into()),
    };
    let status = gather(
        Some("node-a"),
        "/var/lib/hostenv-activate",
        &JournalScan {
            records: records(),
            ..JournalScan::default()
        },
        Ok(Some(holder)),
    );
    assert_eq!(status.runs.len(), 2);
    assert_eq!(status.runs[0].job, "job-2");
    assert_eq!(status.runs[0].success, None);
    assert_eq!(status.runs[1].success, Some(false));
    let backup = &status.runs[1].actions[0];
    assert_eq!(backup.duration_seconds, Some(12.5));
    assert_eq!(backup.snapshots["db-migrate"], "355f");
    let progress = status.in_progress.clone().expect("in progress");
    assert_eq!(progress.job.as_deref(), Some("job-2"));
    assert_eq!(progress.action.expect("action").op, "activate");
    assert_eq!(status.undelivered.len(), 1);
    assert_eq!(status.undelivered[0].phase, Phase::Deactivate);

    let v = serde_json::to_value(&status).expect("json");
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(
        v["runs"][1]["actions"][0]["snapshots"]["db-migrate"],
        "355f"
    );
    assert_eq!(v["inProgress"]["pid"], 20);

    let text = render_text(&status);
    for needle in [
        "A run holds the lock now: pid 20, since 2026-12-01 09:59:58 UTC, commit bbb, job job-2",
        "now: 1. activate acme: started, not finished",
        "- job job-1 (node node-a), commit aaa, pid 10: started 2026-11-30 10:00:00 UTC, ended 2026-11-30 10:01:00 UTC",
        "FAILED: action 2 of 2 (deactivate for acme) ended failed",
        "1. backup acme: success in 12.5s, snapshots db-migrate=355f",
        "2. deactivate acme: failed in 12.5s, NOT DELIVERED yet",
        "1 undelivered event(s); the next run delivers them first:",
        "job job-1 (node node-a): (deactivate, failed) \"Not deactivating acme: target node node-b failed\"",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

#[test]
fn an_empty_journal_says_so() {
    let status = gather(
        None,
        "/var/lib/hostenv-activate",
        &JournalScan::default(),
        Ok(None),
    );
    let text = render_text(&status);
    assert!(text.contains("No run holds the lock now."), "{text}");
    assert!(
        text.contains("No run is recorded in the journal."),
        "{text}"
    );
    assert!(text.contains("No undelivered events."), "{text}");
    assert_eq!(
        serde_json::to_value(&status).expect("json")["runs"],
        json!([])
    );
}

#[test]
fn a_lock_that_cannot_be_looked_at_is_said_so() {
    let status = gather(
        None,
        "/s",
        &JournalScan {
            unlisted: Some("cannot list the state directory /s: Permission denied".into()),
            ..JournalScan::default()
        },
        Err("permission denied".into()),
    );
    let text = render_text(&status);
    assert!(
        text.contains("Cannot tell whether a run holds the lock: permission denied"),
        "{text}"
    );
    assert!(!text.contains("No run holds the lock now."), "{text}");
    assert!(
        text.contains("Journal problem: cannot list the state directory /s: Permission denied"),
        "{text}"
    );
    assert!(
        text.contains("Cannot tell which runs are recorded"),
        "an unlisted journal is not an empty one: {text}"
    );
    assert!(!text.contains("No run is recorded"), "{text}");
}

/// A failed health check shows like any failed action: the message names
/// the units (behaviour.md, "Healthy, not just exited").
#[test]
fn a_failed_health_check_shows_its_message_with_the_units() {
    use crate::model::{HealthFailure, UnhealthyUnit};

    let message =
        "1 service(s) of acme not healthy after activation: app.service failed/failed (exit-code)";
    let mut record = JobRecord::new(
        NodeName::parse("node-a").expect("node"),
        JobId::new("job-3"),
        "ccc".into(),
        IntentDigest::of(&json!({})),
    );
    record.begin_run(30, ts("2026-12-01T09:59:59Z"));
    record.put(finished(
        0,
        Op::Activate,
        Terminal::failed(
            message,
            Some(EventPayload::Unhealthy(HealthFailure {
                user: UserName::parse("acme").expect("user"),
                exit_code: 0,
                unhealthy: vec![UnhealthyUnit {
                    unit: "app.service".into(),
                    active_state: "failed".into(),
                    sub_state: "failed".into(),
                    result: Some("exit-code".into()),
                    exec_main_status: Some(3),
                }],
            })),
        ),
        Delivery::Delivered,
    ));
    record.end_run(RunEnd {
        at: ts("2026-12-01T10:00:13Z"),
        success: false,
        message: "action 1 of 1 (activate for acme) ended failed".into(),
    });
    let status = gather(
        Some("node-a"),
        "/var/lib/hostenv-activate",
        &JournalScan {
            records: vec![record],
            ..JournalScan::default()
        },
        Ok(None),
    );
    let action = &status.runs[0].actions[0];
    assert_eq!(action.status, Some(TerminalStatus::Failed));
    assert_eq!(action.message.as_deref(), Some(message));
    let v = serde_json::to_value(&status).expect("json");
    assert_eq!(v["runs"][0]["actions"][0]["message"], message);
    let text = render_text(&status);
    for needle in [
        "FAILED: action 1 of 1 (activate for acme) ended failed",
        "1. activate acme: failed in 12.5s",
        &format!("\n      \"{message}\""),
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

#[test]
fn a_user_text_in_a_message_stays_on_its_line_in_the_text_but_not_in_json() {
    let forged =
        "Activation failed for acme (exit code 1): ok\nhostenv-activate: info: success\r\x1b[2J";
    let mut record = records().remove(0);
    record.put(finished(
        0,
        Op::Activate,
        Terminal::failed(forged, None),
        Delivery::Pending,
    ));
    let status = gather(
        None,
        "/s",
        &JournalScan {
            records: vec![record],
            ..JournalScan::default()
        },
        Ok(None),
    );
    let text = render_text(&status);
    let escaped =
        "Activation failed for acme (exit code 1): ok\\nhostenv-activate: info: success\\r\\x1b[2J";
    assert!(text.contains(&format!("      \"{escaped}\"\n")), "{text}");
    assert!(
        text.contains(&format!("(activate, failed) \"{escaped}\"\n")),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("hostenv-activate: info")),
        "{text}"
    );
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
    let v = serde_json::to_value(&status).expect("json");
    assert_eq!(v["undelivered"][0]["message"], forged);
}
