//! `--dry-run` planning against stubs: what it reports, that its checks
//! catch what the real run would trip on, and that it posts and runs nothing.

#[path = "support/stubs.rs"]
mod stubs;

use hostenv_activate::dry_run::{plan, render_text, Preflight};
use hostenv_activate::ports::ProviderError;
use serde_json::json;
use stubs::*;

fn preflight(w: &World) -> Preflight<'_> {
    Preflight {
        provider: &w.provider,
        users: &StubUsers,
        systemd: &w.systemd,
        programs: &w.programs,
    }
}

#[test]
fn a_migration_plan_lists_steps_and_passing_checks() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
        {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}
    ]))));
    w.systemd = StubSystemd::default().loaded("restic-backups-drupal-migrate.service", unit_ok());
    let report = plan("abc", NODE, preflight(&w));
    assert!(report.ok, "{report:#?}");
    let text = render_text(&report);
    assert!(
        text.contains("1. backup acme (from node-a, to node-b, migrations drupal-migrate)"),
        "{text}"
    );
    assert!(
        text.contains("would: start restic-backups-drupal-migrate.service"),
        "{text}"
    );
    assert!(
        text.contains("would: wait for node-b to activate acme"),
        "{text}"
    );
    assert!(text.contains("All preflight checks passed."), "{text}");
    assert!(w.provider.posted.borrow().is_empty());
    assert_eq!(w.provider.post_attempts.get(), 0);
    assert!(w.systemd.started.borrow().is_empty() && w.systemd.stopped.borrow().is_empty());
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn failing_checks_make_the_report_fail() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "backup", "user": "acme", "migrations": ["drupal-migrate"]},
        {"op": "activate", "user": "ghost"}
    ]))));
    w.programs.wrappers = false;
    let report = plan("abc", NODE, preflight(&w));
    assert!(!report.ok);
    let v = serde_json::to_value(&report).expect("json");
    assert_eq!(v["jobId"], "job-1");
    assert_eq!(v["actions"][0]["op"], "backup");
    assert_eq!(v["actions"][0]["user"], "acme");
    let failed: Vec<String> = v["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .flat_map(|a| a["checks"].as_array().expect("checks").clone())
        .filter(|c| c["ok"] == false)
        .map(|c| format!("{}: {}", c["check"], c["detail"]))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[0].contains("LoadState=not-found"));
    assert!(failed[1].contains("restic-drupal-migrate not found"));
    assert!(failed[2].contains("ghost does not exist"));
    assert!(render_text(&report).contains("3 preflight check(s) failed."));
}

#[test]
fn no_intent_is_not_retried_and_not_a_failure() {
    let w = World::new(StubProvider::answering(vec![Ok(None)]));
    let report = plan("abc", NODE, preflight(&w));
    assert!(report.ok);
    assert_eq!(
        report.problem.as_deref(),
        Some("no intent for abc on node-a")
    );
    assert_eq!(w.provider.intent_calls.get(), 1);
}

#[test]
fn provider_errors_and_invalid_intents_fail() {
    let w = World::new(StubProvider::answering(vec![Err(ProviderError::Refused)]));
    let report = plan("abc", NODE, preflight(&w));
    assert!(!report.ok);
    assert!(report.problem.as_deref().unwrap_or("").contains("403"));
    let w = World::new(StubProvider::with_intent(
        json!({"schemaVersion": 2, "actions": []}),
    ));
    let report = plan("abc", NODE, preflight(&w));
    assert!(!report.ok);
    assert!(report
        .problem
        .as_deref()
        .unwrap_or("")
        .contains("schemaVersion must be 1"));
}
