//! The plan from a typed intent, with no ports at all: for each op and each
//! failure decided before running, the exact steps.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::model::{IntentDigest, UserName};

/// The planner reads no time: a clock that stands still at the epoch.
struct Still(std::time::Instant);

impl crate::ports::Clock for Still {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
    }
    fn instant(&self) -> std::time::Instant {
        self.0
    }
    fn sleep(&self, _: Duration) {}
}

fn settings() -> Settings {
    Settings::new(
        NodeName::parse("node-a").expect("node"),
        "abc".into(),
        Duration::from_secs(900),
        &Still(std::time::Instant::now()),
    )
}

fn fetched(actions: serde_json::Value) -> FetchedIntent {
    let raw = json!({"schemaVersion": 1, "actions": actions});
    FetchedIntent {
        job: JobId::new("job-1"),
        digest: IntentDigest::of(&raw),
        intent: crate::model::Intent::parse(&raw),
    }
}

/// The steps of the only action of `action`.
fn steps_of(action: serde_json::Value) -> Vec<Step> {
    let plan = plan(&settings(), &fetched(json!([action])), &Recalled::default());
    match plan.body {
        Body::Perform { mut actions, .. } => actions.remove(0).steps,
        other => panic!("expected actions, got {other:?}"),
    }
}

fn node(n: &str) -> NodeName {
    NodeName::parse(n).expect("node")
}

fn key(k: &str) -> MigrationKey {
    MigrationKey::parse(k).expect("key")
}

fn running(user: &str) -> Step {
    Step::Announce {
        status: Status::Running,
        message: format!("Applying action for {user}"),
    }
}

fn health(success: &str) -> Step {
    Step::CheckHealth {
        within: Settings::DEFAULT_HEALTH_TIMEOUT,
        success: success.into(),
    }
}

#[test]
fn activate_and_reload_resolve_the_user_activate_then_check_health() {
    assert_eq!(
        steps_of(json!({"op": "activate", "user": "acme"})),
        vec![
            running("acme"),
            Step::ResolveUser,
            Step::Activate,
            health("Activation completed for acme"),
        ]
    );
    assert_eq!(
        steps_of(json!({"op": "reload", "user": "acme"}))[3],
        health("Reload completed for acme")
    );
}

#[test]
fn with_the_health_check_off_activation_ends_at_exit_0() {
    let settings = Settings {
        health_timeout: Duration::ZERO,
        ..settings()
    };
    let intent = fetched(json!([{"op": "activate", "user": "acme"}]));
    let plan = plan(&settings, &intent, &Recalled::default());
    let Body::Perform { actions, .. } = &plan.body else {
        panic!("a plan that performs: {plan:?}");
    };
    assert_eq!(
        actions[0].steps[2..],
        [
            Step::Activate,
            Step::Finish {
                terminal: Terminal::success("Activation completed for acme", None)
            }
        ]
    );
    assert!(plan
        .would_post()
        .iter()
        .any(|e| e.message == "Activation completed for acme"));
}

#[test]
fn backup_checks_every_key_before_running_any_unit() {
    assert_eq!(
        steps_of(
            json!({"op": "backup", "user": "acme", "fromNode": "node-a", "toNode": "node-b", "migrations": ["db-migrate", "files-migrate"]})
        ),
        vec![
            running("acme"),
            Step::ResolveUser,
            Step::CheckUnit {
                key: key("db-migrate"),
                unit: "restic-backups-db-migrate.service".into()
            },
            Step::FindWrapper {
                key: key("db-migrate"),
                wrapper: "restic-db-migrate".into()
            },
            Step::CheckUnit {
                key: key("files-migrate"),
                unit: "restic-backups-files-migrate.service".into()
            },
            Step::FindWrapper {
                key: key("files-migrate"),
                wrapper: "restic-files-migrate".into()
            },
            Step::BackUp {
                key: key("db-migrate"),
                unit: "restic-backups-db-migrate.service".into(),
                wrapper: "restic-db-migrate".into()
            },
            Step::BackUp {
                key: key("files-migrate"),
                unit: "restic-backups-files-migrate.service".into(),
                wrapper: "restic-files-migrate".into()
            },
            Step::PublishBackup {
                message: "Migration backups completed for acme".into()
            },
        ]
    );
}

#[test]
fn backup_without_migrations_succeeds_without_looking_at_the_user() {
    assert_eq!(
        steps_of(json!({"op": "backup", "user": "acme"})),
        vec![
            running("acme"),
            Step::Finish {
                terminal: Terminal::success("No migration backups required for acme", None)
            },
        ]
    );
}

#[test]
fn restore_from_another_node_waits_then_writes_the_plan_and_activates() {
    assert_eq!(
        steps_of(
            json!({"op": "restore", "user": "acme", "fromNode": "node-b", "toNode": "node-a", "migrations": ["db-migrate"]})
        ),
        vec![
            Step::Announce {
                status: Status::Waiting,
                message: "Waiting for the backup of acme on node-b".into()
            },
            Step::ResolveUser,
            Step::AwaitBackup {
                source: node("node-b"),
                keys: vec![key("db-migrate")]
            },
            running("acme"),
            Step::WriteRestorePlan {
                path: PathBuf::from("/run/hostenv/user/acme/restore/plan.json"),
                source: node("node-b")
            },
            Step::Activate,
            health("Restore and activation completed for acme"),
        ]
    );
}

#[test]
fn restore_from_this_node_announces_running_at_once() {
    let steps = steps_of(
        json!({"op": "restore", "user": "acme", "fromNode": "node-a", "migrations": ["db-migrate"]}),
    );
    assert_eq!(steps[0], running("acme"));
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::Announce { .. }))
            .count(),
        1
    );
}

#[test]
fn restores_that_cannot_work_fail_before_running() {
    for (action, wording) in [
        (
            json!({"op": "restore", "user": "acme", "fromNode": "node-b"}),
            "restore for acme lists no migrations",
        ),
        (
            json!({"op": "restore", "user": "acme", "migrations": ["db-migrate"]}),
            "restore for acme lists migrations (db-migrate) but no fromNode",
        ),
    ] {
        let steps = steps_of(action);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[0], running("acme"));
        let Step::Finish { terminal } = &steps[1] else {
            panic!("{steps:?}");
        };
        assert_eq!(terminal.status, TerminalStatus::Failed);
        assert!(
            terminal.message.starts_with(wording),
            "{}",
            terminal.message
        );
    }
}

#[test]
fn deactivate_for_another_node_waits_for_it_after_checking_the_user() {
    let mut s = settings();
    s.target_observe_timeout = Duration::from_secs(45);
    let plan = plan(
        &s,
        &fetched(
            json!([{"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}]),
        ),
        &Recalled::default(),
    );
    let Body::Perform { actions, .. } = plan.body else {
        panic!("actions");
    };
    assert_eq!(
        actions[0].steps,
        vec![
            Step::Announce {
                status: Status::Waiting,
                message: "Waiting for node-b to activate acme".into()
            },
            Step::ResolveUser,
            Step::AwaitTarget {
                target: node("node-b"),
                observe: Duration::from_secs(45)
            },
            Step::StopUnit {
                unit: "hostenv.target".into()
            },
            Step::ReloadManager,
            Step::Finish {
                terminal: Terminal::success("Deactivated acme", None)
            },
        ]
    );
}

#[test]
fn deactivate_without_another_node_stops_at_once() {
    for to in [json!(null), json!("node-a")] {
        let steps = steps_of(json!({"op": "deactivate", "user": "acme", "toNode": to}));
        assert_eq!(steps[0], running("acme"));
        assert_eq!(steps[1], Step::ResolveUser);
        assert_eq!(
            steps[2],
            Step::StopUnit {
                unit: "hostenv.target".into()
            }
        );
    }
}

#[test]
fn every_plan_ends_the_action() {
    for op in Op::ALL {
        for migrations in [json!([]), json!(["db-migrate"])] {
            let steps = steps_of(
                json!({"op": op.as_str(), "user": "acme", "fromNode": "node-b", "toNode": "node-b", "migrations": migrations}),
            );
            assert!(
                matches!(
                    steps.last(),
                    Some(
                        Step::CheckHealth { .. } | Step::PublishBackup { .. } | Step::Finish { .. }
                    )
                ),
                "{op}: {steps:?}"
            );
        }
    }
}

#[test]
fn a_failed_switch_refuses_everything_even_an_invalid_intent() {
    let mut s = settings();
    s.comin = CominStatus::Failed {
        message: "switch-to-configuration exited 4".into(),
    };
    for intent in [
        fetched(json!([{"op": "activate", "user": "acme"}])),
        fetched(json!([{"op": "nuke", "user": "acme"}])),
    ] {
        let plan = plan(&s, &intent, &Recalled::default());
        let Body::Refuse { why, event } = &plan.body else {
            panic!("{plan:?}");
        };
        assert_eq!(*why, Refusal::SwitchFailed);
        assert_eq!(
            event.message,
            "System switch failed on node node-a; no user action was run: switch-to-configuration exited 4"
        );
        assert_eq!(
            plan.would_post(),
            vec![PlannedEvent {
                phase: Phase::Intent,
                status: Status::Failed,
                message: event.message.clone()
            }]
        );
    }
}

#[test]
fn a_long_build_log_from_comin_is_one_line_and_keeps_its_end() {
    let mut s = settings();
    let log = format!(
        "{}\nerror: builder for '/nix/store/x.drv' failed",
        "building...\n".repeat(400)
    );
    s.comin = CominStatus::Failed { message: log };
    let plan = plan(&s, &fetched(json!([])), &Recalled::default());
    let Body::Refuse { event, .. } = &plan.body else {
        panic!("{plan:?}");
    };
    assert!(!event.message.contains('\n'), "{}", event.message);
    assert!(event.message.chars().count() < 400, "{}", event.message);
    assert!(
        event
            .message
            .ends_with("error: builder for '/nix/store/x.drv' failed"),
        "{}",
        event.message
    );
}

#[test]
fn an_invalid_intent_is_refused_with_the_reason() {
    let plan = plan(
        &settings(),
        &fetched(json!([{"op": "activate", "user": "../etc"}])),
        &Recalled::default(),
    );
    let Body::Refuse { why, event } = &plan.body else {
        panic!("{plan:?}");
    };
    assert_eq!(*why, Refusal::InvalidIntent);
    assert!(
        event
            .message
            .starts_with("Invalid deploy intent payload for node node-a: actions[0]: user name"),
        "{}",
        event.message
    );
}

#[test]
fn no_actions_is_one_closing_event() {
    let plan = plan(&settings(), &fetched(json!([])), &Recalled::default());
    assert_eq!(
        plan.would_post(),
        vec![PlannedEvent {
            phase: Phase::Intent,
            status: Status::Success,
            message: "No user actions for node node-a".into()
        }]
    );
}

#[test]
fn would_post_stops_at_an_action_that_fails_before_running() {
    let plan = plan(
        &settings(),
        &fetched(json!([
            {"op": "activate", "user": "acme"},
            {"op": "restore", "user": "acme", "fromNode": "node-b"},
            {"op": "activate", "user": "other"}
        ])),
        &Recalled::default(),
    );
    let events: Vec<(Phase, Status)> = plan
        .would_post()
        .iter()
        .map(|e| (e.phase, e.status))
        .collect();
    assert_eq!(
        events,
        vec![
            (Phase::Activate, Status::Running),
            (Phase::Activate, Status::Success),
            (Phase::Restore, Status::Running),
            (Phase::Restore, Status::Failed),
        ]
    );
    let _ = UserName::parse("acme");
}

#[test]
fn what_an_action_uses_is_what_its_steps_do() {
    for action in [
        json!({"op": "activate", "user": "acme"}),
        json!({"op": "reload", "user": "acme"}),
        json!({"op": "backup", "user": "acme", "migrations": ["db", "files"]}),
        json!({"op": "backup", "user": "acme"}),
        json!({"op": "restore", "user": "acme", "fromNode": "node-b", "migrations": ["db"]}),
        json!({"op": "restore", "user": "acme", "fromNode": "node-b"}),
        json!({"op": "restore", "user": "acme", "migrations": ["db"]}),
        json!({"op": "deactivate", "user": "acme", "toNode": "node-b"}),
    ] {
        let parsed = fetched(json!([action.clone()]));
        let Ok(intent) = &parsed.intent else {
            panic!("{action}");
        };
        let steps = steps_of(action.clone());
        let uses = Uses::of(&intent.actions[0]);
        assert_eq!(
            uses.activate,
            steps.iter().any(|s| matches!(s, Step::Activate)),
            "{action}"
        );
        let checked: Vec<MigrationKey> = steps
            .iter()
            .filter_map(|s| match s {
                Step::CheckUnit { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(uses.keys, checked, "{action}");
    }
}

#[test]
fn the_users_systemd_is_got_ready_for_when_no_wait_for_another_node_comes_first() {
    // From which steps on each plan calls the user's systemd before any
    // wait for another node.
    let ready_from = |settings: &Settings, action: serde_json::Value| -> Vec<usize> {
        let plan = plan(settings, &fetched(json!([action])), &Recalled::default());
        let Body::Perform { actions, .. } = plan.body else {
            panic!("actions");
        };
        (0..actions[0].steps.len())
            .filter(|&i| actions[0].needs_user_systemd_next(i))
            .collect()
    };
    let s = settings();
    // Announce, ResolveUser, Activate, CheckHealth: from the start.
    assert_eq!(
        ready_from(&s, json!({"op": "activate", "user": "acme"})),
        [0, 1, 2, 3]
    );
    let off = Settings {
        health_timeout: Duration::ZERO,
        ..settings()
    };
    assert!(
        ready_from(&off, json!({"op": "activate", "user": "acme"})).is_empty(),
        "no health check: activate never calls the user's systemd"
    );
    // Announce, ResolveUser, CheckUnit, FindWrapper, BackUp, PublishBackup.
    assert_eq!(
        ready_from(
            &s,
            json!({"op": "backup", "user": "acme", "migrations": ["db"]})
        ),
        [0, 1, 2, 3, 4]
    );
    // Waiting, ResolveUser, AwaitBackup, then running, plan, activate, health:
    // not before the wait, which may take minutes.
    assert_eq!(
        ready_from(
            &s,
            json!({"op": "restore", "user": "acme", "fromNode": "node-b", "toNode": "node-a", "migrations": ["db"]})
        ),
        [3, 4, 5, 6]
    );
    // Waiting, ResolveUser, AwaitTarget, StopUnit, ReloadManager, Finish.
    assert_eq!(
        ready_from(
            &s,
            json!({"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"})
        ),
        [3, 4]
    );
    assert_eq!(
        ready_from(&s, json!({"op": "deactivate", "user": "acme"})),
        [0, 1, 2, 3]
    );
}

#[test]
fn the_run_gets_the_first_actions_user_systemd_ready_at_its_start_when_no_wait_comes_first() {
    let ready = |settings: &Settings, actions: serde_json::Value| {
        plan(settings, &fetched(actions), &Recalled::default())
            .ready_at_start()
            .map(|first| (first.index, first.action.user.to_string()))
    };
    let s = settings();
    assert_eq!(
        ready(
            &s,
            json!([{"op": "backup", "user": "acme", "migrations": ["db"]},
                   {"op": "activate", "user": "bob"}])
        ),
        Some((0, "acme".to_owned()))
    );
    // Only the first action: the next ones get ready at their own start.
    let off = Settings {
        health_timeout: Duration::ZERO,
        ..settings()
    };
    assert_eq!(
        ready(
            &off,
            json!([{"op": "activate", "user": "acme"}, {"op": "activate", "user": "bob"}])
        ),
        None
    );
    // A wait for another node comes first: not at the run's start.
    assert_eq!(
        ready(
            &s,
            json!([{"op": "restore", "user": "acme", "fromNode": "node-b", "toNode": "node-a", "migrations": ["db"]}])
        ),
        None
    );
    // Nothing runs: nothing to get ready for.
    let failed_switch = Settings {
        comin: CominStatus::Failed {
            message: "switch failed".into(),
        },
        ..settings()
    };
    assert_eq!(
        ready(&failed_switch, json!([{"op": "activate", "user": "acme"}])),
        None
    );
}
