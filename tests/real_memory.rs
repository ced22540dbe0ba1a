//! The node's runs remember, proven with the shipped binary on a real node
//! (real `systemd --user`, real D-Bus, real restic, the fake provider; see
//! `harness`): one run at a time, a run killed with SIGKILL and resumed
//! without redoing its backup, a backup the provider already has adopted
//! without a journal, and the run deadline ending a hanging activation.
//! Needs root; run with `cargo test --test real_memory`.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::fs;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fake_provider::{backup_success, FakeHandle, FakeProvider, JobState};
use harness::{TestUser, UserSpec};
use node_run::{
    intent, migration_provider, processes_matching, show, spawn, start_target, world, Finished,
    NodeConfig, NodeState, PlanDir,
};

const SHA: &str = "5eedfeed";
const JOB: &str = "job-memory";
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";
const TOKEN_A: &str = "tok-a-memory-SECRET";
const TOKEN_B: &str = "tok-b-memory-SECRET";
const KEY: &str = "drupal-migrate";
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn config<'a>(node: &'a str, token: &'a str, state: &'a NodeState) -> NodeConfig<'a> {
    NodeConfig {
        node,
        sha: SHA,
        token,
        action_timeout: 60,
        target_observe_timeout: 60,
        intent_wait: 5,
        extra_env: &[],
        stdin: None,
        state: Some(state),
        run_timeout: None,
    }
}

fn action(op: &str, user: &str, migrations: &[&str]) -> Value {
    node_run::action(op, user, migrations, Some(NODE_A), Some(NODE_B))
}

/// node-a's events, as "phase/status".
fn steps_of(fake: &FakeHandle, node: &str) -> Vec<String> {
    fake.events_of(JOB, node)
        .iter()
        .map(|e| format!("{}/{}", e.phase, e.status))
        .collect()
}

/// What two runs printed and the job's events, for failure messages.
fn both_runs(fake: &FakeHandle, a: &Finished, b: &Finished) -> String {
    format!(
        "{}\n{}\nevents:\n{}",
        a.output(),
        b.output(),
        show(&fake.events(JOB))
    )
}

/// Snapshot ids in the user's repository for `KEY`.
fn snapshot_ids(user: &TestUser) -> Vec<String> {
    user.restic_snapshots(KEY)
        .expect("restic snapshots")
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// An `activate` that records when it runs and whether another activation
/// of the same user was running at the same time.
const GUARDED_ACTIVATE: &str = r#"#!/bin/sh
if ! mkdir "$HOME/activating" 2>/dev/null; then
  echo "OVERLAP" >> "$HOME/activate.log"
  exit 9
fi
echo "start" >> "$HOME/activate.log"
sleep 2
echo "end" >> "$HOME/activate.log"
rmdir "$HOME/activating"
"#;

// ------------------------------------------------------------ one run at a time

#[test]
fn two_runs_for_one_node_never_overlap_and_post_one_clean_sequence() {
    let w = world(&[UserSpec::new("lock").without_test_units()]);
    let user = w.user("lock");
    user.write_file(".local/bin/activate", GUARDED_ACTIVATE, 0o755)
        .expect("activate");
    // node-b takes part in the job but never runs: the job stays open, so
    // the second run of node-a finds it and must see that all is done.
    let fake = FakeProvider::builder()
        .node(NODE_A, TOKEN_A)
        .node(NODE_B, TOKEN_B)
        .job(
            JOB,
            SHA,
            [
                (NODE_A, intent(vec![action("activate", &user.name, &[])])),
                (NODE_B, intent(vec![])),
            ],
        )
        .start();
    let state = NodeState::new();
    let first = spawn(&fake, &config(NODE_A, TOKEN_A, &state));
    let second = spawn(&fake, &config(NODE_A, TOKEN_A, &state));
    let (a, b) = (first.wait(RUN_LIMIT), second.wait(RUN_LIMIT));
    let context = both_runs(&fake, &a, &b);
    assert_eq!(a.code, Some(0), "{context}");
    assert_eq!(b.code, Some(0), "{context}");
    let log = fs::read_to_string(user.home.join("activate.log")).expect("activate.log");
    assert_eq!(
        log, "start\nend\n",
        "one activation, no overlap:\n{context}"
    );
    assert_eq!(
        steps_of(&fake, NODE_A),
        ["activate/running", "activate/success", "intent/success"],
        "{context}"
    );
    let waited = format!("{}{}", a.stderr, b.stderr);
    assert!(
        waited.contains("another run holds this node's run lock (pid"),
        "the second run said who held the lock:\n{context}"
    );
    assert_eq!(
        waited
            .matches("another run holds this node's run lock")
            .count(),
        1,
        "said once:\n{context}"
    );
    // node-b posts its own closing event: the job then succeeds.
    assert_eq!(
        fake.append_event(
            JOB,
            json!({"node": NODE_B, "status": "success", "phase": "intent", "message": "done"})
        ),
        200
    );
    assert_eq!(fake.job_state(JOB), JobState::Success, "{context}");
}

// ------------------------------------------------------------ killed and resumed

/// `activate` as node-b's environment runs it: logs the snapshot id of the
/// restore plan it was given.
const PLAN_LOGGING_ACTIVATE: &str = r#"#!/bin/sh
plan="/run/hostenv/user/$USER/restore/plan.json"
if [ -f "$plan" ]; then
  sed -n 's/.*"drupal-migrate" *: *"\([0-9a-f]*\)".*/restored \1/p' "$plan" >> "$HOME/activate.log"
else
  echo "no-plan" >> "$HOME/activate.log"
fi
"#;

/// Kills node-a's first run with SIGKILL the moment the provider sees its
/// (backup, success), resumes node-a with a second run, and checks that the
/// backup unit never ran again and node-b restored the first snapshot.
fn killed_after_the_backup_and_resumed(delivered: bool) {
    let w = world(&[UserSpec::new(if delivered { "kda" } else { "kdb" }).backups(&[KEY])]);
    let user = &w.users()[0];
    let _plans = PlanDir::clearing_stale(user);
    user.write_file(".local/bin/activate", PLAN_LOGGING_ACTIVATE, 0o755)
        .expect("activate");
    start_target(user);
    let (tx, rx) = mpsc::channel();
    // The provider reports every event POST to `tx`; node-a's first
    // (backup, success) is answered 503 unless `delivered`.
    let fake = migration_provider(
        JOB,
        SHA,
        &user.name,
        KEY,
        (NODE_A, TOKEN_A),
        (NODE_B, TOKEN_B),
    )
    .fail_event(
        JOB,
        NODE_A,
        ("backup", "success"),
        if delivered { 0 } else { 1 },
        503,
    )
    .watch_events(tx)
    .start();
    let state = NodeState::new();
    let b = spawn(&fake, &config(NODE_B, TOKEN_B, &NodeState::new()));
    let mut first = spawn(&fake, &config(NODE_A, TOKEN_A, &state));
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let seen = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("node-a posts its backup");
        if seen.node == NODE_A && seen.phase == "backup" && seen.status == "success" {
            break;
        }
    }
    first.kill();
    let ids = snapshot_ids(user);
    assert_eq!(ids.len(), 1, "the first run made one snapshot: {ids:?}");
    let journal = state.journal();
    assert_eq!(journal.len(), 1, "{journal:#?}");
    let backup = &journal[0]["actions"][0];
    assert_eq!(backup["state"], "finished", "{journal:#?}");

    let second = spawn(&fake, &config(NODE_A, TOKEN_A, &state));
    let a = second.wait(RUN_LIMIT);
    let b = b.wait(RUN_LIMIT);
    let context = both_runs(&fake, &a, &b);
    assert_eq!(a.code, Some(0), "{context}");
    assert_eq!(b.code, Some(0), "{context}");
    assert_eq!(
        snapshot_ids(user),
        ids,
        "the unit did not run again:\n{context}"
    );
    let events = fake.events_of(JOB, NODE_A);
    let successes: Vec<_> = events
        .iter()
        .filter(|e| e.is("backup", "success"))
        .collect();
    assert_eq!(successes.len(), 1, "one backup event:\n{context}");
    assert_eq!(
        successes[0].payload.as_ref().expect("payload")["snapshots"][KEY],
        json!(ids[0]),
        "{context}"
    );
    assert_eq!(
        events.iter().filter(|e| e.is("backup", "running")).count(),
        1,
        "the backup was not announced again:\n{context}"
    );
    let log = fs::read_to_string(user.home.join("activate.log")).expect("activate.log");
    assert_eq!(
        log,
        format!("restored {}\nrestored {}\n", ids[0], ids[0]),
        "node-b restored the first run's snapshot:\n{context}"
    );
    assert_eq!(fake.job_state(JOB), JobState::Success, "{context}");
    let journal = state.journal();
    assert!(
        journal[0]["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .all(|a| a["event"]["delivery"] == "delivered"),
        "{journal:#?}"
    );
}

#[test]
fn a_run_killed_after_its_backup_was_delivered_resumes_without_a_second_backup() {
    killed_after_the_backup_and_resumed(true);
}

#[test]
fn a_run_killed_before_its_backup_was_delivered_delivers_that_backup_first() {
    killed_after_the_backup_and_resumed(false);
}

// ------------------------------------------------------------ the provider's record

#[test]
fn a_backup_the_provider_already_has_is_not_run_or_posted_again() {
    let w = world(&[UserSpec::new("adopt").backups(&[KEY])]);
    let user = w.user("adopt");
    user.write_file(".local/bin/activate", GUARDED_ACTIVATE, 0o755)
        .expect("activate");
    let fake = FakeProvider::builder()
        .node(NODE_A, TOKEN_A)
        .job(
            JOB,
            SHA,
            [(
                NODE_A,
                intent(vec![
                    action("backup", &user.name, &[KEY]),
                    action("reload", &user.name, &[]),
                ]),
            )],
        )
        .event(JOB, backup_success(NODE_A, &user.name, &[(KEY, "55eed")]))
        .start();
    let ran = spawn(&fake, &config(NODE_A, TOKEN_A, &NodeState::new())).wait(RUN_LIMIT);
    ran.expect_code(0);
    let context = format!("{}\nevents:\n{}", ran.output(), show(&fake.events(JOB)));
    assert!(
        snapshot_ids(user).is_empty(),
        "the unit did not run:\n{context}"
    );
    assert_eq!(
        steps_of(&fake, NODE_A),
        [
            "backup/success",
            "reload/running",
            "reload/success",
            "intent/success"
        ],
        "only the seeded backup event, then the reload:\n{context}"
    );
    let log = fs::read_to_string(user.home.join("activate.log")).expect("activate.log");
    assert_eq!(log, "start\nend\n", "the next action ran once:\n{context}");
    assert_eq!(fake.job_state(JOB), JobState::Success, "{context}");
}

// ------------------------------------------------------------ the deadline

#[test]
fn the_run_deadline_ends_a_hanging_activation_long_before_its_timeout() {
    let w = world(&[UserSpec::new("late").without_test_units()]);
    let user = w.user("late");
    user.write_file(
        ".local/bin/activate",
        "#!/bin/sh\nsleep 401 &\nsetsid sleep 402 >/dev/null 2>&1 </dev/null &\nsleep 400\n",
        0o755,
    )
    .expect("activate");
    let fake = FakeProvider::builder()
        .node(NODE_A, TOKEN_A)
        .job(
            JOB,
            SHA,
            [(NODE_A, intent(vec![action("activate", &user.name, &[])]))],
        )
        .start();
    let state = NodeState::new();
    let mut cfg = config(NODE_A, TOKEN_A, &state);
    cfg.action_timeout = 300;
    cfg.run_timeout = Some(5);
    let ran: Finished = spawn(&fake, &cfg).wait(RUN_LIMIT);
    let context = format!("{}\nevents:\n{}", ran.output(), show(&fake.events(JOB)));
    ran.expect_code(1);
    assert!(
        ran.elapsed < Duration::from_secs(20),
        "ended {:?} after start, far from the 300 s action timeout:\n{context}",
        ran.elapsed
    );
    let events = fake.events_of(JOB, NODE_A);
    let last = events.last().expect("events");
    assert!(last.is("activate", "timed_out"), "{context}");
    assert!(
        last.message.starts_with("run deadline of 5 s reached"),
        "{context}"
    );
    for needle in ["sleep 400", "sleep 401", "sleep 402"] {
        let left = processes_matching(user, &[needle]);
        assert!(left.is_empty(), "{needle} survived the deadline: {left:?}");
    }
}
