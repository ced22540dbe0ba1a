//! `--dry-run` against stubs: what it reports, that its checks catch what
//! the real run would trip on, that it posts and runs nothing, and that what
//! it says the run would post is exactly what the run posts.

#[path = "support/stubs.rs"]
mod stubs;

use hostenv_activate::dry_run::{render_text, report, CommitSource, Report};
use hostenv_activate::model::{CominStatus, Phase, Status};
use hostenv_activate::ports::ProviderError;
use serde_json::{json, Value};
use stubs::*;

fn dry_run(w: &World) -> Report {
    let lock = w.lock();
    let report = report(&w.settings, CommitSource::Given, w.ports(&lock));
    assert_eq!(lock.attempts.get(), 0, "a dry run never takes the lock");
    report
}

#[test]
fn a_migration_plan_lists_steps_and_passing_checks() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
        {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}
    ]))));
    w.systemd = StubSystemd::default().loaded("restic-backups-drupal-migrate.service", unit_ok());
    let report = dry_run(&w);
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
    assert!(
        text.contains("Intent: http://provider.test/api/deploy-intents/by-sha?sha=abc&node=node-a"),
        "the URL asked is shown: {text}"
    );
    assert!(w.provider.posted.borrow().is_empty());
    assert_eq!(w.provider.post_attempts.get(), 0);
    assert!(w.systemd.started.borrow().is_empty() && w.systemd.stopped.borrow().is_empty());
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn an_activation_shows_its_health_check_unless_it_is_off() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"}
    ]))));
    w.settings.health_timeout = std::time::Duration::from_secs(42);
    let report = dry_run(&w);
    assert!(report.ok, "{}", render_text(&report));
    let text = render_text(&report);
    assert!(
        text.contains("would: run acme's activate program as acme"),
        "{text}"
    );
    assert!(
        text.contains("would: wait up to 42s for the services that default.target and hostenv.target want in acme's systemd to settle; none failed: post (activate, success)"),
        "{text}"
    );
    let reachable = report.actions[0]
        .checks
        .iter()
        .find(|c| c.check == "user's systemd reachable")
        .unwrap_or_else(|| panic!("no systemd check: {text}"));
    assert!(reachable.ok && !reachable.unchecked, "{reachable:?}");
    let with_check = predicted(&report);

    // Off: no such step, no such check, the same events.
    w.settings.health_timeout = std::time::Duration::ZERO;
    let report = dry_run(&w);
    assert!(report.ok, "{}", render_text(&report));
    let text = render_text(&report);
    assert!(!text.contains("default.target"), "{text}");
    assert!(!text.contains("wait up to"), "{text}");
    assert!(
        report.actions[0]
            .checks
            .iter()
            .all(|c| c.check != "user's systemd reachable"),
        "{text}"
    );
    assert_eq!(predicted(&report), with_check);
}

#[test]
fn a_user_manager_that_is_not_running_is_not_checked_and_not_a_failure() {
    // A real run starts user@<uid>.service first; the dry run starts
    // nothing, so it cannot tell the unit's state, and says so.
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "backup", "user": "acme", "migrations": ["drupal-migrate"]},
        {"op": "deactivate", "user": "acme"}
    ]))));
    w.systemd = StubSystemd {
        manager_down: true,
        ..StubSystemd::default()
    };
    let report = dry_run(&w);
    assert!(report.ok, "{}", render_text(&report));
    let skipped: Vec<_> = report
        .actions
        .iter()
        .flat_map(|a| &a.checks)
        .filter(|c| c.unchecked)
        .collect();
    assert_eq!(skipped.len(), 2, "the unit and the manager: {skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|c| c.detail.contains("a real run would start user@")),
        "{skipped:?}"
    );
    let text = render_text(&report);
    assert!(
        text.contains("[skip] restic-backups-drupal-migrate.service is loaded"),
        "{text}"
    );
    assert!(text.contains("2 check(s) could not be made now"), "{text}");
    assert!(!text.contains("All preflight checks passed."), "{text}");
}

#[test]
fn failing_checks_make_the_report_fail() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "backup", "user": "acme", "migrations": ["drupal-migrate"]},
        {"op": "activate", "user": "ghost"}
    ]))));
    w.programs.wrappers = false;
    let report = dry_run(&w);
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
    assert!(
        failed[1].contains("looked at /home/acme/.local/bin/restic-drupal-migrate"),
        "the paths looked at are named: {}",
        failed[1]
    );
    assert!(failed[2].contains("ghost does not exist"));
    assert!(render_text(&report).contains("3 preflight check(s) failed."));
}

#[test]
fn a_missing_activate_program_names_the_paths_looked_at() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "nobody"}
    ]))));
    w.programs.activate = None;
    let report = dry_run(&w);
    assert!(!report.ok);
    let text = render_text(&report);
    assert!(
        text.contains("activate script not found for user nobody (looked at /home/nobody/.local/bin/activate, /etc/profiles/per-user/nobody/bin/activate)"),
        "{text}"
    );
}

#[test]
fn no_intent_is_not_retried_and_not_a_failure() {
    let w = World::new(StubProvider::answering(vec![Ok(None)]));
    let report = dry_run(&w);
    assert!(report.ok);
    let problem = report.problem.as_deref().unwrap_or("");
    assert!(
        problem.starts_with("no intent for abc on node-a (http://provider.test/api/deploy-intents/by-sha?sha=abc&node=node-a answered 404)"),
        "{problem}"
    );
    assert_eq!(w.provider.intent_calls.get(), 1);
}

#[test]
fn provider_errors_and_invalid_intents_fail() {
    let w = World::new(StubProvider::answering(vec![Err(ProviderError::Refused)]));
    let report = dry_run(&w);
    assert!(!report.ok);
    assert!(report.problem.as_deref().unwrap_or("").contains("403"));
    let w = World::new(StubProvider::with_intent(
        json!({"schemaVersion": 2, "actions": []}),
    ));
    let report = dry_run(&w);
    assert!(!report.ok);
    let text = render_text(&report);
    assert!(text.contains("schemaVersion must be 1"), "{text}");
    assert!(text.contains("nothing would run"), "{text}");
}

#[test]
fn a_restore_without_migrations_is_reported_as_failing() {
    let w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "restore", "user": "acme", "fromNode": "node-b"}
    ]))));
    let report = dry_run(&w);
    assert!(!report.ok, "the real run fails it");
    let text = render_text(&report);
    assert!(
        text.contains(
            "[FAIL] fails before running: (restore, failed) \"restore for acme lists no migrations"
        ),
        "{text}"
    );
    assert!(!text.contains("All preflight checks passed"), "{text}");
}

#[test]
fn a_failed_switch_says_nothing_would_run() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"}
    ]))));
    w.settings.comin = CominStatus::Failed {
        message: "switch-to-configuration exited 4".into(),
    };
    let report = dry_run(&w);
    assert!(!report.ok);
    assert!(
        report.actions.is_empty(),
        "no action is listed as would-run"
    );
    let text = render_text(&report);
    assert!(
        text.contains("The system switch failed: nothing would run; (intent, failed) \"System switch failed on node node-a; no user action was run: switch-to-configuration exited 4\" would be posted."),
        "{text}"
    );
}

// ------------------------------------------------------------ agreement

/// A world in which every step of every op succeeds: units loaded, restic
/// shows a snapshot newer than the run, the source node's backup is there,
/// the target node has activated.
fn agreeable_world(intent_json: Value) -> World {
    let mut w = World::new(
        StubProvider::with_intent(intent_json)
            .statuses(vec![Ok(vec![status(
                "node-b",
                Phase::Activate,
                Status::Success,
            )])])
            .backups(vec![Ok(Some(backup_payload(
                "acme",
                "node-b",
                &[("drupal-migrate", "snapfull")],
            )))]),
    );
    w.systemd = StubSystemd::default().loaded("restic-backups-drupal-migrate.service", unit_ok());
    w.programs = StubPrograms::default().answer(
        "restic-drupal-migrate",
        vec![exited(
            0,
            &snapshots_json(&[("2026-11-22T10:00:05Z", &restic_id("newsnapshot"))]),
        )],
    );
    w
}

/// (phase, status, message) of each event, from the dry run's JSON.
fn predicted(report: &Report) -> Vec<(String, String, String)> {
    let v = serde_json::to_value(report).expect("json");
    v["wouldPost"]
        .as_array()
        .expect("wouldPost")
        .iter()
        .map(|e| {
            (
                e["phase"].as_str().expect("phase").to_owned(),
                e["status"].as_str().expect("status").to_owned(),
                e["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

/// (phase, status, message) of each event the run posted.
fn posted(w: &World) -> Vec<(String, String, String)> {
    w.provider
        .posted
        .borrow()
        .iter()
        .map(|e| (e.phase.to_string(), e.status.to_string(), e.message.clone()))
        .collect()
}

#[test]
fn the_dry_run_predicts_exactly_what_the_run_posts() {
    let cases: Vec<(&str, Value, Option<CominStatus>)> = vec![
        (
            "activate",
            intent(json!([{"op": "activate", "user": "acme"}])),
            None,
        ),
        (
            "reload",
            intent(json!([{"op": "reload", "user": "acme"}])),
            None,
        ),
        (
            "backup",
            intent(
                json!([{"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]}]),
            ),
            None,
        ),
        (
            "backup without migrations",
            intent(json!([{"op": "backup", "user": "acme"}])),
            None,
        ),
        (
            "restore from another node",
            intent(
                json!([{"op": "restore", "user": "acme", "fromNode": "node-b", "toNode": "node-a", "migrations": ["drupal-migrate"]}]),
            ),
            None,
        ),
        (
            "deactivate for another node",
            intent(
                json!([{"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}]),
            ),
            None,
        ),
        (
            "deactivate here",
            intent(json!([{"op": "deactivate", "user": "acme"}])),
            None,
        ),
        (
            "a whole migration away",
            intent(json!([
                {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
                {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"},
                {"op": "activate", "user": "other"}
            ])),
            None,
        ),
        (
            "restore without migrations",
            intent(json!([
                {"op": "restore", "user": "acme", "fromNode": "node-b"},
                {"op": "activate", "user": "acme"}
            ])),
            None,
        ),
        ("no actions", intent(json!([])), None),
        (
            "switch failed",
            intent(json!([{"op": "activate", "user": "acme"}])),
            Some(CominStatus::Failed {
                message: "switch exited 4".into(),
            }),
        ),
        (
            "invalid intent",
            intent(json!([{"op": "nuke", "user": "acme"}])),
            None,
        ),
    ];
    for (name, intent_json, comin) in cases {
        let mut dry = agreeable_world(intent_json.clone());
        let mut real = agreeable_world(intent_json);
        if let Some(comin) = comin {
            dry.settings.comin = comin.clone();
            real.settings.comin = comin;
        }
        let report = dry_run(&dry);
        assert!(
            dry.provider.posted.borrow().is_empty(),
            "{name}: dry run posted"
        );
        real.run();
        let predicted = predicted(&report);
        assert!(!predicted.is_empty(), "{name}: nothing predicted");
        assert_eq!(predicted, posted(&real), "{name}");
    }
}

// ------------------------------------------------------------ memory

#[test]
fn the_dry_run_shows_what_is_already_done_and_a_run_in_progress() {
    use hostenv_activate::model::journal::Delivery;
    use hostenv_activate::model::{Op, Terminal};

    let intent_json = intent(json!([
        {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
        {"op": "activate", "user": "acme"}
    ]));
    let mut w = agreeable_world(intent_json.clone());
    w.provider = StubProvider::with_intent(intent_json.clone()).backups(vec![Ok(Some(
        backup_payload("acme", NODE, &[("drupal-migrate", "published")]),
    ))]);
    w.journal.put(earlier_record(
        &intent_json,
        [finished(
            1,
            Op::Activate,
            Terminal::success("Activation completed for acme", None),
            Delivery::Pending,
        )],
    ));
    w.lock_busy_until = Some("2026-11-22T11:00:00Z".parse().expect("ts"));
    let report = dry_run(&w);
    let text = render_text(&report);
    assert!(
        text.contains("A run holds this node's run lock now (pid 4242, since 2026-11-22T09:59:00Z, commit 0ther): a real run would wait for it to finish."),
        "{text}"
    );
    assert!(
        text.contains("already done: the provider serves this node's backup payload for it"),
        "{text}"
    );
    assert!(
        text.contains("already done, its event not delivered: (success) \"Activation completed for acme\" is posted again"),
        "{text}"
    );
    assert!(!text.contains("would: start restic-backups"), "{text}");
    assert_eq!(w.journal.saves.get(), 0, "the dry run wrote nothing");
    let v = serde_json::to_value(&report).expect("json");
    assert_eq!(v["actions"][0]["resume"]["resume"], "adopt");
    assert_eq!(v["actions"][1]["resume"]["resume"], "redeliver");
    assert_eq!(v["runInProgress"]["pid"], 4242);
    // What it predicts is what the run does (once the lock is free).
    w.lock_busy_until = None;
    let predicted = predicted(&dry_run(&w));
    w.run();
    assert_eq!(predicted, posted(&w));
}
