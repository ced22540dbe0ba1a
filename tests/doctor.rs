//! `doctor` against stubs: what it judges from the facts and the read-only
//! ports, each problem with its fix, and that it changes nothing.

#[path = "support/stubs.rs"]
mod stubs;

use hostenv_activate::doctor::{
    examine, render_text, Diagnosis, Facts, Finding, TokenFacts, Verdict,
};
use hostenv_activate::model::comin::Deployment;
use hostenv_activate::ports::{JournalScan, ProviderError};
use serde_json::json;
use stubs::*;

/// node-a's migration away: backup (drupal-migrate) and deactivate of acme,
/// plus an activate of other.
fn intent_json() -> serde_json::Value {
    intent(json!([
        {"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
        {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"},
        {"op": "activate", "user": "other"}
    ]))
}

fn facts() -> Facts {
    Facts {
        node: Some(NODE.into()),
        config: Ok("valid".into()),
        base_url_warning: None,
        token: TokenFacts::Read {
            path: "/run/secrets/token".into(),
            bytes: 40,
            warnings: Vec::new(),
        },
        comin_store: (
            "/var/lib/comin/store.json".into(),
            Ok(Deployment {
                uuid: Some("d-1".into()),
                commit: "abc".into(),
                status: Some("done".into()),
                started_at: None,
                ended_at: "2026-12-01T08:15:41Z".parse().ok(),
                error_msg: None,
            }),
        ),
        state_dir: Ok("/var/lib/hostenv-activate is root's, mode 0700".into()),
        journal: JournalScan::default(),
        lock: Ok(None),
        metrics: None,
        lingering: Box::new(|_| true),
    }
}

fn healthy() -> World {
    let mut w = World::new(StubProvider::with_intent(intent_json()));
    w.systemd = StubSystemd::default().loaded("restic-backups-drupal-migrate.service", unit_ok());
    w
}

fn diagnose(w: &World, facts: Facts) -> Diagnosis {
    let lock = w.lock();
    let d = examine(facts, w.ports(&lock));
    assert_eq!(
        w.provider.post_attempts.get(),
        0,
        "the doctor posts nothing"
    );
    assert!(w.systemd.started.borrow().is_empty(), "starts nothing");
    assert!(w.systemd.stopped.borrow().is_empty(), "stops nothing");
    assert_eq!(w.systemd.reloads.get(), 0, "reloads nothing");
    assert!(w.programs.ran.borrow().is_empty(), "runs nothing");
    d
}

fn finding<'d>(d: &'d Diagnosis, check: &str) -> &'d Finding {
    d.checks
        .iter()
        .find(|c| c.check == check)
        .unwrap_or_else(|| panic!("no check {check:?} in:\n{}", render_text(d)))
}

#[test]
fn a_healthy_node_passes_every_check() {
    let w = healthy();
    let d = diagnose(&w, facts());
    assert!(d.ok, "{}", render_text(&d));
    assert!(
        d.checks.iter().all(|c| c.verdict == Verdict::Ok),
        "{}",
        render_text(&d)
    );
    for check in [
        "configuration",
        "token file",
        "comin",
        "provider",
        "state directory",
        "journal",
        "run lock",
        "user acme",
        "lingering of acme",
        "systemd of acme",
        "restic-backups-drupal-migrate.service",
        "restic-drupal-migrate",
        "user other",
        "activate program of other",
    ] {
        finding(&d, check);
    }
    assert_eq!(w.provider.intent_calls.get(), 1, "one authenticated GET");
    let v = serde_json::to_value(&d).expect("json");
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(v["checks"][0]["verdict"], "ok");
}

#[test]
fn each_problem_is_reported_with_its_fix() {
    // A refused token.
    let mut w = healthy();
    w.provider = StubProvider::answering(vec![Err(ProviderError::Refused)]);
    let d = diagnose(&w, facts());
    let f = finding(&d, "provider");
    assert_eq!(f.verdict, Verdict::Fail);
    assert!(f.detail.contains("403"), "{f:?}");
    assert!(
        f.fix
            .as_deref()
            .unwrap_or("")
            .contains("HOSTENV_COMIN_NODE_NAME"),
        "{f:?}"
    );
    assert!(!d.ok);

    // The backup unit is missing, and so is the wrapper.
    let mut w = healthy();
    w.systemd = StubSystemd::default();
    w.programs.wrappers = false;
    let d = diagnose(&w, facts());
    let unit = finding(&d, "restic-backups-drupal-migrate.service");
    assert_eq!(unit.verdict, Verdict::Fail);
    assert_eq!(unit.detail, "LoadState=not-found");
    assert!(unit
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("restic backup named drupal-migrate"));
    let wrapper = finding(&d, "restic-drupal-migrate");
    assert_eq!(wrapper.verdict, Verdict::Fail);
    assert!(
        wrapper
            .detail
            .contains("looked at /home/acme/.local/bin/restic-drupal-migrate"),
        "{wrapper:?}"
    );

    // A token file others can read is a warning, not a failure.
    let w = healthy();
    let mut f = facts();
    f.token = TokenFacts::Read {
        path: "/run/secrets/token".into(),
        bytes: 40,
        warnings: vec!["readable by group or others (mode 0644)".into()],
    };
    f.lingering = Box::new(|user| user.as_str() != "other");
    let d = diagnose(&w, f);
    assert!(d.ok, "warnings do not fail: {}", render_text(&d));
    let token = finding(&d, "token file");
    assert_eq!(token.verdict, Verdict::Warn);
    assert!(token
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("chmod 0400 /run/secrets/token"));
    let linger = finding(&d, "lingering of other");
    assert_eq!(linger.verdict, Verdict::Warn);
    assert_eq!(linger.fix.as_deref(), Some("loginctl enable-linger other"));

    // An unknown user; an activate program that is not there.
    let w = World::new(StubProvider::with_intent(intent(json!([
        {"op": "activate", "user": "ghost"},
        {"op": "reload", "user": "acme"}
    ]))));
    let mut w = w;
    w.programs.activate = None;
    let d = diagnose(&w, facts());
    assert_eq!(finding(&d, "user ghost").verdict, Verdict::Fail);
    let activate = finding(&d, "activate program of acme");
    assert_eq!(activate.verdict, Verdict::Fail);
    assert!(activate.detail.contains("looked at"), "{activate:?}");

    // No usable configuration: nothing is asked of the provider.
    let w = healthy();
    let mut f = facts();
    f.config = Err("HOSTENV_COMIN_NODE_NAME (--node-name) is not set (required)".into());
    f.token = TokenFacts::NotConfigured;
    let lock = w.lock();
    let d = examine(f, w.ports(&lock));
    assert_eq!(finding(&d, "configuration").verdict, Verdict::Fail);
    assert_eq!(finding(&d, "provider").verdict, Verdict::Fail);
    assert_eq!(w.provider.intent_calls.get(), 0);
    let text = render_text(&d);
    assert!(
        text.contains("[FAIL] configuration: HOSTENV_COMIN_NODE_NAME (--node-name) is not set"),
        "{text}"
    );
    assert!(text.contains("       fix: "), "{text}");
}

#[test]
fn a_404_and_a_user_known_only_from_the_journal_are_warnings_not_failures() {
    use hostenv_activate::model::journal::{ActionRecord, ActionState, JobRecord};
    use hostenv_activate::model::{IntentDigest, JobId, NodeName, Op, UserName};

    // The provider has no intent for comin's commit: that is normal between
    // deployments, and also what a wrong base URL looks like.
    let w = World::new(StubProvider::answering(vec![Ok(None)]));
    let mut f = facts();
    f.base_url_warning = Some("https://provider.example/api ends in /api".into());
    // The journal's newest job ran an activate for a user that is gone now.
    let mut record = JobRecord::new(
        NodeName::parse(NODE).expect("node"),
        JobId::new("job-0"),
        "old".into(),
        IntentDigest::of(&intent_json()),
    );
    record.put(ActionRecord {
        index: 0,
        op: Op::Activate,
        user: UserName::parse("ghost").expect("user"),
        state: ActionState::Started {
            started_at: "2026-11-30T10:00:00Z".parse().expect("timestamp"),
        },
    });
    f.journal.records = vec![record];
    let d = diagnose(&w, f);

    let provider = finding(&d, "provider");
    assert_eq!(provider.verdict, Verdict::Warn, "{provider:?}");
    assert!(provider.detail.contains("404"), "{provider:?}");
    assert!(
        provider
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("HOSTENV_COMIN_API_BASE_URL"),
        "{provider:?}"
    );
    assert_eq!(finding(&d, "provider URL").verdict, Verdict::Warn);
    let ghost = finding(&d, "user ghost");
    assert_eq!(ghost.verdict, Verdict::Warn, "{ghost:?}");
    assert!(ghost.detail.contains("journal only"), "{ghost:?}");
    assert!(d.ok, "warnings only: {}", render_text(&d));
}

#[test]
fn a_user_manager_that_is_not_running_fails_with_how_to_start_it() {
    let mut w = healthy();
    w.systemd = StubSystemd {
        manager_down: true,
        ..StubSystemd::default()
    };
    let d = diagnose(&w, facts());
    assert!(!d.ok, "{}", render_text(&d));
    let manager = finding(&d, "systemd of acme");
    assert_eq!(manager.verdict, Verdict::Fail, "{manager:?}");
    assert!(manager.detail.contains("not running"), "{manager:?}");
    assert!(
        manager
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("user@1000.service"),
        "{manager:?}"
    );
}

#[test]
fn a_known_users_failed_units_are_a_warning_naming_each_and_its_result() {
    use hostenv_activate::ports::{FailedUnit, FailedUnits};

    let w = healthy();
    *w.systemd.failed.borrow_mut() = FailedUnits {
        units: vec![
            FailedUnit {
                unit: "app.service".into(),
                result: Some("exit-code".into()),
            },
            FailedUnit {
                unit: "queue.socket".into(),
                result: None,
            },
        ],
        more: 3,
    };
    let d = diagnose(&w, facts());
    // A warning, not a failure: the next activation may fix it.
    assert!(d.ok, "{}", render_text(&d));
    for user in ["acme", "other"] {
        let f = finding(&d, &format!("failed units of {user}"));
        assert_eq!(f.verdict, Verdict::Warn, "{f:?}");
        assert_eq!(
            f.detail,
            "5 unit(s) failed now: app.service (exit-code), queue.socket and 3 more"
        );
        let fix = f.fix.as_deref().unwrap_or("");
        assert!(
            fix.contains(&format!("as {user}: systemctl --user status app.service")),
            "{fix}"
        );
    }
    let text = render_text(&d);
    assert!(
        text.contains("[WARN] failed units of acme: 5 unit(s) failed now: app.service (exit-code)"),
        "{text}"
    );

    // None failed: ok.
    let w = healthy();
    let d = diagnose(&w, facts());
    let f = finding(&d, "failed units of acme");
    assert_eq!(
        (f.verdict, f.detail.as_str()),
        (Verdict::Ok, "none failed now")
    );
}

#[test]
fn a_user_known_only_from_the_journal_has_its_backup_units_and_wrappers_checked() {
    use hostenv_activate::model::journal::{
        ActionRecord, ActionState, Delivery, JobRecord, Posted,
    };
    use hostenv_activate::model::{
        EventPayload, IntentDigest, JobId, MigrationKey, NodeName, Op, Terminal, UnitFailure,
        UserName,
    };

    // comin's newest commit has no intent (404): the users are known from
    // the journal's newest job alone, whose backups name their keys in
    // their events (the snapshots taken; the unit that failed).
    let mut w = World::new(StubProvider::answering(vec![Ok(None)]));
    w.programs.wrappers = false;
    let mut record = JobRecord::new(
        NodeName::parse(NODE).expect("node"),
        JobId::new("job-0"),
        "old".into(),
        IntentDigest::of(&intent_json()),
    );
    let at = |t: &str| t.parse().expect("timestamp");
    let finished = |index: usize, user: &str, terminal: Terminal| ActionRecord {
        index,
        op: Op::Backup,
        user: UserName::parse(user).expect("user"),
        state: ActionState::Finished {
            started_at: at("2026-11-30T10:00:00Z"),
            finished_at: at("2026-11-30T10:01:00Z"),
            adopted: false,
            event: Posted {
                terminal,
                delivery: Delivery::Delivered,
            },
        },
    };
    record.put(finished(
        0,
        "acme",
        Terminal::success(
            "Backup complete for acme",
            Some(EventPayload::Backup(backup_payload(
                "acme",
                NODE,
                &[("drupal-migrate", "snap1")],
            ))),
        ),
    ));
    record.put(finished(
        1,
        "beta",
        Terminal::failed(
            "restic-backups-files.service failed",
            Some(EventPayload::UnitFailed(Box::new(UnitFailure {
                user: UserName::parse("beta").expect("user"),
                migration_key: MigrationKey::parse("files").expect("key"),
                unit_name: "restic-backups-files.service".into(),
                exit_code: Some(1),
                result: Some("exit-code".into()),
                active_state: Some("failed".into()),
                sub_state: Some("failed".into()),
                exec_main_status: Some(1),
                detail: None,
            }))),
        ),
    ));
    let mut f = facts();
    f.journal.records = vec![record];
    let d = diagnose(&w, f);

    for (unit, wrapper) in [
        (
            "restic-backups-drupal-migrate.service",
            "restic-drupal-migrate",
        ),
        ("restic-backups-files.service", "restic-files"),
    ] {
        let u = finding(&d, unit);
        assert_eq!(u.verdict, Verdict::Warn, "{u:?}");
        assert!(u.detail.contains("LoadState=not-found"), "{u:?}");
        assert!(u.detail.ends_with("(known from the journal only)"), "{u:?}");
        let wr = finding(&d, wrapper);
        assert_eq!(wr.verdict, Verdict::Warn, "{wr:?}");
        assert!(wr.detail.contains("not found"), "{wr:?}");
        assert!(
            wr.detail.ends_with("(known from the journal only)"),
            "{wr:?}"
        );
    }
    assert!(d.ok, "warnings only: {}", render_text(&d));
}
