//! The engine against stub adapters: for every action and outcome, the exact
//! events posted and the run's outcome. No I/O, no sleeping.

#[path = "support/stubs.rs"]
mod stubs;

use std::time::Duration;

use hostenv_activate::engine::{Outcome, Settings};
use hostenv_activate::errors::Exit;
use hostenv_activate::model::Phase::{self, Activate, Backup, Deactivate, Intent, Reload, Restore};
use hostenv_activate::model::Status::{self, Failed, Running, Success, TimedOut, Waiting};
use hostenv_activate::ports::{
    JobOutcome, ProgramOutcome, ProgramRun, ProviderError, UnitRun, UnitStatus,
};
use serde_json::json;
use stubs::*;

fn seq(items: &[(Phase, Status)]) -> Vec<(Phase, Status)> {
    items.to_vec()
}

fn activate_intent() -> serde_json::Value {
    intent(json!([{"op": "activate", "user": "acme"}]))
}

fn backup_intent(keys: &[&str]) -> serde_json::Value {
    intent(
        json!([{"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": keys}]),
    )
}

const UNIT: &str = "restic-backups-drupal-migrate.service";

// ------------------------------------------------------------------ run-level

#[test]
fn no_actions_posts_one_intent_success() {
    let w = World::new(StubProvider::with_intent(intent(json!([]))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.provider.sequence(), seq(&[(Intent, Success)]));
    assert_eq!(
        w.provider.messages(),
        vec!["No user actions for node node-a"]
    );
}

#[test]
fn invalid_intent_is_reported_and_nothing_runs() {
    let w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "activate", "user": "../etc"}]),
    )));
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert_eq!(Exit::of(&out) as i32, 1);
    assert_eq!(w.provider.sequence(), seq(&[(Intent, Failed)]));
    let msg = &w.provider.messages()[0];
    assert!(
        msg.starts_with("Invalid deploy intent payload for node node-a"),
        "{msg}"
    );
    assert!(
        msg.contains("actions[0]") && msg.contains("../etc"),
        "{msg}"
    );
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn failed_system_switch_touches_no_user() {
    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    w.settings.comin = hostenv_activate::model::CominStatus::Failed {
        message: "switch-to-configuration exited 4".into(),
    };
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(w.provider.sequence(), seq(&[(Intent, Failed)]));
    assert!(w.provider.messages()[0].contains("switch-to-configuration exited 4"));
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn intent_404_is_retried_every_poll_interval_then_nothing_to_do() {
    let w = World::new(StubProvider::answering(vec![Ok(None)]));
    let out = w.run();
    assert!(matches!(out, Outcome::NothingToDo(_)), "{out:?}");
    assert_eq!(Exit::of(&out) as i32, 0);
    assert!(w.provider.posted.borrow().is_empty());
    // 30 s window, one lookup every 2 s: at 0, 2, ..., 30.
    assert_eq!(w.provider.intent_calls.get(), 16);
    assert!(w.clock.slept.get() <= Duration::from_secs(30));
}

#[test]
fn intent_appearing_within_the_window_is_performed() {
    let w = World::new(StubProvider::answering(vec![
        Ok(None),
        Ok(None),
        Ok(Some(envelope(activate_intent()))),
    ]));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.provider.intent_calls.get(), 3);
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success), (Intent, Success)])
    );
}

#[test]
fn refused_token_fails_fast_without_retry() {
    let w = World::new(StubProvider::answering(vec![Err(ProviderError::Refused)]));
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert!(
        out.message().contains("refused this node's token"),
        "{}",
        out.message()
    );
    assert_eq!(w.provider.intent_calls.get(), 1);
    assert_eq!(w.clock.slept.get(), Duration::ZERO);
}

#[test]
fn refused_event_stops_the_run() {
    let w = World::new(
        StubProvider::with_intent(activate_intent()).fail_post(0, ProviderError::Refused),
    );
    let out = w.run();
    assert!(out.message().contains("403"), "{}", out.message());
    assert!(
        w.programs.ran.borrow().is_empty(),
        "no action runs without its running event"
    );
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let w = World::new(
        StubProvider::with_intent(activate_intent())
            .fail_post(
                0,
                ProviderError::Server {
                    status: 502,
                    body: "bad gateway".into(),
                },
            )
            .fail_post(1, ProviderError::Transport("connection reset".into())),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success), (Intent, Success)])
    );
    assert_eq!(w.clock.slept.get(), Duration::from_secs(1 + 2));
}

#[test]
fn the_users_systemd_hears_ahead_that_its_calls_follow() {
    let w = World::new(StubProvider::with_intent(activate_intent()));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(w.programs.ran.borrow().len(), 1);
    assert_eq!(w.systemd.health_checks.borrow().len(), 1);
    // Once, for acme, before its health check.
    assert_eq!(*w.systemd.prepared.borrow(), vec![("acme".to_owned(), 0)]);

    // A backup: once, before its unit starts.
    let mut w = World::new(StubProvider::with_intent(backup_intent(&["db-migrate"])));
    w.systemd = StubSystemd::default().loaded("restic-backups-db-migrate.service", unit_ok());
    w.run();
    assert_eq!(w.systemd.started.borrow().len(), 1);
    assert_eq!(*w.systemd.prepared.borrow(), vec![("acme".to_owned(), 0)]);

    // An unknown user: no hint, and the action fails as before.
    let w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "activate", "user": "ghost"}]),
    )));
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(w.systemd.prepared.borrow().is_empty());
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Failed)])
    );

    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    w.settings.health_timeout = Duration::ZERO;
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert!(w.systemd.health_checks.borrow().is_empty());
    assert!(
        w.systemd.prepared.borrow().is_empty(),
        "no health check follows: nothing to get ready for"
    );
}

#[test]
fn the_first_actions_user_systemd_gets_ready_before_the_run_reads_its_memory() {
    // The resume check (`backup-snapshot`) is part of reading the run's
    // memory: here the provider refuses it, so the run stops before any
    // action; the hint for the first action's user came before it.
    let mut p = StubProvider::with_intent(backup_intent(&["db-migrate"]));
    p.backup = Script::new([Err(ProviderError::Refused)]);
    let w = World::new(p);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(w.provider.backup_calls.borrow().len(), 1);
    assert!(w.systemd.started.borrow().is_empty());
    assert_eq!(*w.systemd.prepared.borrow(), vec![("acme".to_owned(), 0)]);

    // Later actions are got ready at their own start, each once: bob's
    // after acme's health check.
    let w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "activate", "user": "bob"}
    ]))));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        *w.systemd.prepared.borrow(),
        vec![("acme".to_owned(), 0), ("bob".to_owned(), 1)]
    );
}

#[test]
fn server_errors_beyond_the_budget_end_the_run() {
    let mut p = StubProvider::with_intent(activate_intent());
    for n in 0..100 {
        p = p.fail_post(
            n,
            ProviderError::Server {
                status: 503,
                body: String::new(),
            },
        );
    }
    let w = World::new(p);
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert!(out.message().contains("503"), "{}", out.message());
    assert!(w.clock.slept.get() <= Duration::from_secs(60));
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn job_closed_mid_run_runs_no_further_action() {
    let w = World::new(
        StubProvider::with_intent(intent(json!([
            {"op": "activate", "user": "acme"},
            {"op": "deactivate", "user": "other"}
        ])))
        // 0: activate running, 1: activate success, 2: deactivate running -> 409
        .fail_post(2, ProviderError::JobClosed),
    );
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert!(
        out.message().contains("closed job job-1") && out.message().contains("deactivate/running"),
        "{}",
        out.message()
    );
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success)])
    );
    assert!(
        w.systemd.stopped.borrow().is_empty(),
        "deactivate must not run for a closed job"
    );
    let log = w.log.0.borrow();
    assert!(
        log.iter()
            .any(|l| l.contains("Applying action for other (not delivered to the provider")),
        "the refused event is still logged: {log:?}"
    );
}

#[test]
fn the_first_failure_stops_the_run() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "ghost"},
        {"op": "activate", "user": "acme"}
    ]))));
    w.programs = StubPrograms::default();
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Failed)])
    );
    assert!(w.provider.messages()[1].contains("ghost"));
    assert!(w.programs.ran.borrow().is_empty());
}

// ------------------------------------------------------------------ activate / reload

#[test]
fn activate_success() {
    let w = World::new(StubProvider::with_intent(activate_intent()));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success), (Intent, Success)])
    );
    assert_eq!(w.provider.messages()[0], "Applying action for acme");
    assert_eq!(
        w.provider.messages()[2],
        "Completed all deploy actions for node node-a"
    );
    let ran = w.programs.ran.borrow();
    assert_eq!(ran.len(), 1);
    assert_eq!(
        ran[0].2,
        Duration::from_secs(900),
        "the action timeout bounds the program"
    );
}

#[test]
fn reload_uses_the_reload_phase() {
    let w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "reload", "user": "acme"}]),
    )));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Reload, Running), (Reload, Success), (Intent, Success)])
    );
}

#[test]
fn activate_failure_carries_a_summary_and_the_output() {
    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    let output = format!(
        "{}\nstarting php-fpm\nERROR: config invalid\n",
        "noise ".repeat(1000)
    );
    w.programs = StubPrograms::default().answer("activate", vec![exited(3, &output)]);
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Failed)])
    );
    let msg = &w.provider.messages()[1];
    assert!(
        msg.contains("exit code 3") && msg.ends_with("starting php-fpm; ERROR: config invalid"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let payload = w.provider.payload_json(1);
    assert_eq!(payload["user"], "acme");
    assert_eq!(payload["exitCode"], 3);
    let detail = payload["detail"].as_str().expect("detail");
    assert_eq!(detail.chars().count(), 4000);
    assert!(detail.ends_with("ERROR: config invalid\n"));
}

#[test]
fn activate_timeout() {
    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    w.programs = StubPrograms::default().answer(
        "activate",
        vec![ProgramRun {
            outcome: ProgramOutcome::TimedOut,
            output: String::new(),
        }],
    );
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, TimedOut)])
    );
    assert_eq!(
        w.provider.messages()[1],
        "Activation timed out for acme after 900s"
    );
}

#[test]
fn activate_program_missing() {
    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    w.programs.activate = None;
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Failed)])
    );
    assert!(w.provider.messages()[1].starts_with("activate script not found for user acme"));
}

#[test]
fn stop_signal_during_activate_posts_the_terminal_event() {
    let mut w = World::new(StubProvider::with_intent(activate_intent()));
    let cancel = w.cancel.clone();
    w.programs = StubPrograms {
        cancel_on_run: Some(cancel),
        ..StubPrograms::default()
    }
    .answer(
        "activate",
        vec![ProgramRun {
            outcome: ProgramOutcome::Interrupted,
            output: "partial".into(),
        }],
    );
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Failed)])
    );
    assert!(w.provider.messages()[1].contains("Interrupted"));
}

#[test]
fn stop_signal_between_actions_runs_nothing_more() {
    let mut w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "acme"},
        {"op": "activate", "user": "beta"}
    ]))));
    let cancel = w.cancel.clone();
    w.programs = StubPrograms {
        cancel_on_run: Some(cancel),
        ..StubPrograms::default()
    };
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Activate, Running), (Activate, Success), (Intent, Failed)])
    );
    assert!(w.provider.messages()[2].contains("Interrupted before action 2 of 2"));
    assert_eq!(w.programs.ran.borrow().len(), 1);
}

// ------------------------------------------------------------------ backup

fn backup_world(keys: &[&str], run: UnitRun, restic_output: &str) -> World {
    let mut w = World::new(StubProvider::with_intent(backup_intent(keys)));
    let mut sd = StubSystemd::default();
    for k in keys {
        sd = sd.loaded(&format!("restic-backups-{k}.service"), run.clone());
    }
    w.systemd = sd;
    let mut programs = StubPrograms::default();
    for k in keys {
        programs = programs.answer(&format!("restic-{k}"), vec![exited(0, restic_output)]);
    }
    w.programs = programs;
    w
}

// The fake clock starts at 10:00:00Z; the unit starts then.
const FRESH: &str = "2026-11-22T10:00:05.5Z";

#[test]
fn backup_posts_the_snapshot_this_run_made() {
    let restic = snapshots_json(&[
        ("2026-11-21T09:00:00Z", &restic_id("old0000000")),
        (FRESH, &restic_id("new1111111fullid")),
    ]);
    let w = backup_world(&["drupal-migrate"], unit_ok(), &restic);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Success), (Intent, Success)])
    );
    assert_eq!(
        w.provider.payload_json(1),
        json!({"user": "acme", "sourceNode": "node-a", "snapshots": {"drupal-migrate": restic_id("new1111111fullid")}})
    );
    assert_eq!(w.systemd.started.borrow()[0].0, UNIT);
    let ran = w.programs.ran.borrow();
    assert!(ran[0].0.ends_with(".local/bin/restic-drupal-migrate"));
    assert_eq!(
        ran[0].1,
        vec!["snapshots", "--tag", "drupal-migrate", "--json"]
    );
}

#[test]
fn backup_compares_snapshot_times_as_instants() {
    // As strings "2026-11-22T05:00:06-05:00" < "2026-11-22T10:00:05Z", but it is later.
    let restic = snapshots_json(&[
        ("2026-11-22T10:00:05.26Z", &restic_id("utc-snap")),
        ("2026-11-22T05:00:06.97-05:00", &restic_id("ny-snap-newer")),
    ]);
    let w = backup_world(&["drupal-migrate"], unit_ok(), &restic);
    w.run();
    assert_eq!(
        w.provider.payload_json(1)["snapshots"]["drupal-migrate"],
        restic_id("ny-snap-newer")
    );
}

#[test]
fn backup_of_several_keys() {
    let restic = snapshots_json(&[(FRESH, &restic_id("idX"))]);
    let w = backup_world(&["db-migrate", "files-migrate"], unit_ok(), &restic);
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.payload_json(1)["snapshots"],
        json!({"db-migrate": restic_id("idX"), "files-migrate": restic_id("idX")})
    );
    let started: Vec<String> = w
        .systemd
        .started
        .borrow()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(
        started,
        [
            "restic-backups-db-migrate.service",
            "restic-backups-files-migrate.service"
        ]
    );
}

#[test]
fn backup_checks_every_key_before_starting_any_unit() {
    let mut w = World::new(StubProvider::with_intent(backup_intent(&[
        "db-migrate",
        "files-migrate",
    ])));
    w.systemd = StubSystemd::default().loaded("restic-backups-db-migrate.service", unit_ok());
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    assert!(w.provider.messages()[1].contains("restic-backups-files-migrate.service"));
    assert!(
        w.systemd.started.borrow().is_empty(),
        "no backup runs when another key cannot be backed up"
    );
}

#[test]
fn backup_without_migrations_succeeds_at_once() {
    let w = World::new(StubProvider::with_intent(backup_intent(&[])));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.messages()[1],
        "No migration backups required for acme"
    );
    assert!(w.systemd.started.borrow().is_empty());
}

#[test]
fn backup_unit_not_loaded_fails_naming_user_key_and_unit() {
    let mut w = World::new(StubProvider::with_intent(backup_intent(&[
        "drupal-migrate",
    ])));
    w.systemd =
        StubSystemd::default().loaded("restic-backups-acme-drupal-migrate.service", unit_ok());
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    let msg = &w.provider.messages()[1];
    for part in [
        "acme",
        "drupal-migrate",
        UNIT,
        "LoadState=not-found",
        "restic-backups-acme-drupal-migrate.service",
    ] {
        assert!(msg.contains(part), "{msg} should mention {part}");
    }
    assert!(
        w.systemd.started.borrow().is_empty(),
        "no fallback unit is ever started"
    );
    let payload = w.provider.payload_json(1);
    assert_eq!(payload["unitName"], UNIT);
    assert_eq!(payload["migrationKey"], "drupal-migrate");
}

#[test]
fn backup_unit_failure_carries_the_unit_state() {
    let failed = UnitRun {
        outcome: JobOutcome::Failed {
            job_result: "failed".into(),
        },
        status: UnitStatus {
            result: Some("exit-code".into()),
            active_state: Some("failed".into()),
            sub_state: Some("failed".into()),
            exec_main_status: Some(1),
        },
    };
    let w = backup_world(&["drupal-migrate"], failed, "[]");
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    let p = w.provider.payload_json(1);
    assert_eq!(p["result"], "exit-code");
    assert_eq!(p["execMainStatus"], 1);
    assert_eq!(p["exitCode"], 1);
    assert_eq!(p["activeState"], "failed");
    assert_eq!(p["user"], "acme");
    assert!(
        w.programs.ran.borrow().is_empty(),
        "no snapshot lookup after a failed unit"
    );
}

#[test]
fn backup_unit_timeout() {
    let hung = UnitRun {
        outcome: JobOutcome::TimedOut,
        status: UnitStatus {
            active_state: Some("inactive".into()),
            ..UnitStatus::default()
        },
    };
    let w = backup_world(&["drupal-migrate"], hung, "[]");
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, TimedOut)])
    );
    assert!(w.provider.messages()[1].contains("timed out after 900s"));
}

#[test]
fn backup_never_posts_a_stale_snapshot() {
    let restic = snapshots_json(&[("2026-11-22T09:59:00Z", &restic_id("stale-id"))]);
    let w = backup_world(&["drupal-migrate"], unit_ok(), &restic);
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    let msg = &w.provider.messages()[1];
    assert!(
        msg.contains("snapshot id missing")
            && msg.contains("drupal-migrate")
            && msg.contains("2026-11-22T09:59:00Z"),
        "{msg}"
    );
    let all = serde_json::to_string(
        &*w.provider
            .posted
            .borrow()
            .iter()
            .map(|e| serde_json::to_value(e).expect("ser"))
            .collect::<Vec<_>>(),
    )
    .expect("ser");
    assert!(!all.contains(&restic_id("stale-id")));
}

/// Everything node-a posted, as one JSON text.
fn all_posted(w: &World) -> String {
    let events: Vec<serde_json::Value> = w
        .provider
        .posted
        .borrow()
        .iter()
        .map(|e| serde_json::to_value(e).expect("ser"))
        .collect();
    serde_json::to_string(&events).expect("ser")
}

#[test]
fn backup_never_posts_an_id_that_is_not_restics() {
    let huge = "a".repeat(1_000_000);
    for bad in ["/etc/passwd", "", &huge, &"A".repeat(64), "idX"] {
        let restic = snapshots_json(&[(FRESH, bad)]);
        let w = backup_world(&["drupal-migrate"], unit_ok(), &restic);
        w.run();
        let shown = &bad[..bad.len().min(20)];
        assert_eq!(
            w.provider.sequence(),
            seq(&[(Backup, Running), (Backup, Failed)]),
            "{shown}"
        );
        let msg = &w.provider.messages()[1];
        assert!(
            msg.contains("snapshot id missing")
                && msg.contains("drupal-migrate")
                && msg.contains("2026-11-22T10:00:05.5Z"),
            "{msg}"
        );
        let posted = all_posted(&w);
        assert!(posted.len() < 10_000, "{} bytes posted", posted.len());
        if !bad.is_empty() {
            assert!(!posted.contains(bad), "{shown} was posted: {posted}");
        }
    }
}

#[test]
fn backup_reads_a_long_list_in_chunks_with_stderr_apart() {
    // 10,000 snapshots (about 1.5 MB, far past the 64 KiB of output a
    // program's tail keeps), this run's one in the middle, handed over in
    // 7-byte chunks, after lines of noise on stdout and with noise on stderr.
    let old: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            let time = format!(
                "2026-{:02}-{:02}T{:02}:00:00Z",
                1 + i % 10,
                1 + i % 28,
                i % 24
            );
            (time, restic_id(&format!("old{i}")))
        })
        .collect();
    let mut entries: Vec<(&str, &str)> =
        old.iter().map(|(t, i)| (t.as_str(), i.as_str())).collect();
    let fresh = restic_id("this-run");
    entries.insert(5_000, ("2026-11-22T05:00:06-05:00", &fresh));
    let restic = format!(
        "using the cache in ~/.cache/restic\n[notice] lock is stale\n{}\n",
        snapshots_json(&entries)
    );
    assert!(restic.len() > 1_000_000, "{} bytes", restic.len());
    let mut w = backup_world(&["drupal-migrate"], unit_ok(), &restic);
    w.programs = std::mem::take(&mut w.programs).with_stderr(
        "restic-drupal-migrate",
        &"warning: [json] not here\n".repeat(10_000),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.payload_json(1)["snapshots"]["drupal-migrate"],
        fresh
    );
    assert_eq!(w.logged("10001 snapshot(s) listed").len(), 1);
}

#[test]
fn a_failing_wrapper_is_reported_with_its_stderr() {
    let mut w = backup_world(&["drupal-migrate"], unit_ok(), "");
    w.programs = StubPrograms::default()
        .answer("restic-drupal-migrate", vec![exited(1, "[]")])
        .with_stderr(
            "restic-drupal-migrate",
            "Fatal: unable to open repository\n",
        );
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    let msg = &w.provider.messages()[1];
    assert!(
        msg.contains("exit code 1") && msg.contains("Fatal: unable to open repository"),
        "{msg}"
    );
}

#[test]
fn backup_with_empty_or_malformed_restic_output_fails() {
    for output in ["[]", "not json", "[{\"time\": \"2026-11-22T10:00:05Z\"}]"] {
        let w = backup_world(&["drupal-migrate"], unit_ok(), output);
        w.run();
        assert_eq!(
            w.provider.sequence(),
            seq(&[(Backup, Running), (Backup, Failed)]),
            "{output}"
        );
        assert!(
            w.provider.messages()[1].contains("snapshot id missing"),
            "{output}"
        );
    }
}

#[test]
fn backup_without_wrapper_starts_no_unit() {
    let mut w = backup_world(&["drupal-migrate"], unit_ok(), "[]");
    w.programs.wrappers = false;
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    assert!(w.provider.messages()[1].contains("restic wrapper restic-drupal-migrate not found"));
    assert!(w.systemd.started.borrow().is_empty());
}

#[test]
fn backup_interrupted_while_the_unit_runs() {
    let stopped = UnitRun {
        outcome: JobOutcome::Interrupted,
        status: UnitStatus::default(),
    };
    let w = backup_world(&["drupal-migrate"], stopped, "[]");
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Backup, Running), (Backup, Failed)])
    );
    assert!(w.provider.messages()[1].contains("Interrupted"));
}

// ------------------------------------------------------------------ restore

fn restore_intent() -> serde_json::Value {
    intent(
        json!([{"op": "restore", "user": "acme", "fromNode": "node-b", "toNode": "node-a", "migrations": ["drupal-migrate"]}]),
    )
}

#[test]
fn restore_waits_for_the_backup_then_writes_the_plan_and_activates() {
    let w = World::new(StubProvider::with_intent(restore_intent()).backups(vec![
        Ok(None),
        Ok(None),
        Ok(Some(backup_payload(
            "acme",
            "node-b",
            &[("drupal-migrate", "snapfull")],
        ))),
    ]));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Restore, Waiting),
            (Restore, Running),
            (Restore, Success),
            (Intent, Success)
        ])
    );
    let written = w.plans.written.borrow();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].1.source_node, "node-b");
    assert_eq!(
        written[0].1.snapshots,
        map(&[("drupal-migrate", "snapfull")])
    );
    assert_eq!(w.programs.ran_names(), ["activate"]);
    // Two polls found nothing; the third found the payload.
    assert_eq!(w.clock.slept.get(), 2 * Settings::PEER_POLL);
}

#[test]
fn restore_fails_when_the_source_backup_failed() {
    let w = World::new(
        StubProvider::with_intent(restore_intent())
            .statuses(vec![Ok(vec![status("node-b", Backup, Failed)])]),
    );
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Waiting), (Restore, Failed)])
    );
    assert!(w.provider.messages()[1].contains("source node node-b failed"));
    assert!(w.plans.written.borrow().is_empty());
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn restore_times_out_waiting_for_the_source() {
    let w = World::new(StubProvider::with_intent(restore_intent()));
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Waiting), (Restore, TimedOut)])
    );
    assert!(w.clock.slept.get() >= Duration::from_secs(900));
    assert!(w.clock.slept.get() < Duration::from_secs(900 + 61));
}

#[test]
fn restore_without_from_node_fails() {
    let w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "restore", "user": "acme", "migrations": ["drupal-migrate"]}]),
    )));
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Running), (Restore, Failed)])
    );
    assert!(w.provider.messages()[1].contains("no fromNode"));
}

#[test]
fn restore_plan_refused_fails_without_activating() {
    let mut w = World::new(
        StubProvider::with_intent(restore_intent()).backups(vec![Ok(Some(backup_payload(
            "acme",
            "node-b",
            &[("drupal-migrate", "snapfull")],
        )))]),
    );
    w.plans.fail = true;
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Waiting), (Restore, Running), (Restore, Failed)])
    );
    assert!(w.provider.messages()[2].contains("symlink"));
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn restore_activation_failure_is_reported_with_output() {
    let mut w = World::new(
        StubProvider::with_intent(restore_intent()).backups(vec![Ok(Some(backup_payload(
            "acme",
            "node-b",
            &[("drupal-migrate", "snapfull")],
        )))]),
    );
    w.programs =
        StubPrograms::default().answer("activate", vec![exited(2, "restic: wrong password")]);
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Waiting), (Restore, Running), (Restore, Failed)])
    );
    assert_eq!(
        w.provider.payload_json(2)["detail"],
        "restic: wrong password"
    );
}

// ------------------------------------------------------------------ deactivate

fn deactivate_intent() -> serde_json::Value {
    intent(json!([{"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}]))
}

#[test]
fn deactivate_waits_for_the_target_to_activate() {
    let w = World::new(
        StubProvider::with_intent(deactivate_intent()).statuses(vec![
            Ok(vec![status("node-b", Restore, Waiting)]),
            Ok(vec![status("node-b", Restore, Running)]),
            Ok(vec![
                status("node-a", Deactivate, Waiting),
                status("node-b", Intent, Success),
            ]),
        ]),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Deactivate, Waiting),
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ])
    );
    assert_eq!(*w.systemd.stopped.borrow(), ["hostenv.target"]);
    assert_eq!(w.systemd.reloads.get(), 1);
}

#[test]
fn deactivate_accepts_activate_success_too() {
    let w = World::new(
        StubProvider::with_intent(deactivate_intent())
            .statuses(vec![Ok(vec![status("node-b", Activate, Success)])]),
    );
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
}

#[test]
fn deactivate_refuses_when_the_target_failed() {
    for phase in [Activate, Restore, Intent] {
        let w = World::new(
            StubProvider::with_intent(deactivate_intent())
                .statuses(vec![Ok(vec![status("node-b", phase, TimedOut)])]),
        );
        w.run();
        assert_eq!(
            w.provider.sequence(),
            seq(&[(Deactivate, Waiting), (Deactivate, Failed)]),
            "{phase}"
        );
        assert!(
            w.systemd.stopped.borrow().is_empty(),
            "a live site must not be taken down"
        );
    }
}

#[test]
fn deactivate_proceeds_when_the_target_is_never_seen() {
    let w = World::new(StubProvider::with_intent(deactivate_intent()));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Deactivate, Waiting),
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ])
    );
    assert!(w.provider.messages()[1].contains("not visible after 120s"));
    assert!(w.clock.slept.get() >= Duration::from_secs(120));
}

#[test]
fn deactivate_times_out_when_the_target_never_activates() {
    let w = World::new(
        StubProvider::with_intent(deactivate_intent())
            .statuses(vec![Ok(vec![status("node-b", Restore, Running)])]),
    );
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Deactivate, Waiting), (Deactivate, TimedOut)])
    );
    assert!(w.systemd.stopped.borrow().is_empty());
}

#[test]
fn deactivate_without_target_stops_at_once() {
    let w = World::new(StubProvider::with_intent(intent(
        json!([{"op": "deactivate", "user": "acme"}]),
    )));
    assert!(matches!(w.run(), Outcome::Succeeded(_)));
    assert_eq!(
        w.provider.sequence(),
        seq(&[
            (Deactivate, Running),
            (Deactivate, Success),
            (Intent, Success)
        ])
    );
    assert_eq!(w.clock.slept.get(), Duration::ZERO);
}

#[test]
fn job_closed_while_waiting_stops_before_taking_the_site_down() {
    // 0: waiting, 1: running -> 409
    let w = World::new(
        StubProvider::with_intent(deactivate_intent())
            .statuses(vec![Ok(vec![status("node-b", Intent, Success)])])
            .fail_post(1, ProviderError::JobClosed),
    );
    assert!(matches!(w.run(), Outcome::Failed(_)));
    assert!(w.systemd.stopped.borrow().is_empty());
}

// ------------------------------------------------------------------ review follow-ups

#[test]
fn restore_without_migrations_fails() {
    let w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "restore", "user": "acme", "fromNode": "node-b"}
    ]))));
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Restore, Running), (Restore, Failed)])
    );
    assert!(w.provider.messages()[1].contains("lists no migrations"));
    assert!(w.programs.ran.borrow().is_empty());
}

#[test]
fn deactivate_of_an_unknown_user_fails_before_waiting() {
    let w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "deactivate", "user": "ghost", "toNode": "node-b"}
    ]))));
    w.run();
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Deactivate, Waiting), (Deactivate, Failed)])
    );
    assert_eq!(w.clock.slept.get(), Duration::ZERO);
}

#[test]
fn an_action_cut_short_by_the_provider_still_gets_its_terminal_event() {
    let w = World::new(
        StubProvider::with_intent(deactivate_intent()).statuses(vec![Err(ProviderError::Server {
            status: 502,
            body: "bad gateway".into(),
        })]),
    );
    let out = w.run();
    assert!(matches!(out, Outcome::Failed(_)));
    assert!(out.message().contains("502"), "{}", out.message());
    assert_eq!(
        w.provider.sequence(),
        seq(&[(Deactivate, Waiting), (Deactivate, Failed)])
    );
    assert!(w.provider.messages()[1].contains("could not finish"));
    assert!(w.systemd.stopped.borrow().is_empty());
}

#[test]
fn a_provider_failure_after_a_stop_signal_names_the_signal() {
    let mut w = World::new(StubProvider::answering(vec![Err(
        ProviderError::Transport("timed out".into()),
    )]));
    w.cancel.cancel();
    w.settings.retry.budget = Duration::from_secs(60);
    let out = w.run();
    assert!(
        out.message().starts_with("interrupted by a stop signal"),
        "{}",
        out.message()
    );
}
