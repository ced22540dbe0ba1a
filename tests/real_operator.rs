//! The operator's view of a real node: `status` from journals that real
//! runs of the shipped binary wrote (a success, a failure, an undelivered
//! event, a run in progress, no journal at all), and `doctor` against a
//! real `systemd --user`, real restic and the fake provider, healthy and
//! then broken one way at a time, changing nothing. Needs root; run with
//! `cargo test --test real_operator`.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fake_provider::{FakeHandle, FakeProvider, Route};
use harness::units::FAILING_UNIT;
use harness::{TestUser, UserSpec};
use node_run::{
    intent, spawn, spawn_journaled, spawn_with, world, Finished, NodeConfig, NodeState,
    StandInJournal,
};

const NODE: &str = "node-a";
const TOKEN: &str = "tok-operator-SECRET";
const KEY: &str = "drupal-migrate";
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn config<'a>(
    sha: &'a str,
    state: &'a NodeState,
    extra: &'a [(&'a str, &'a str)],
) -> NodeConfig<'a> {
    NodeConfig {
        node: NODE,
        sha,
        token: TOKEN,
        action_timeout: 60,
        target_observe_timeout: 30,
        intent_wait: 0,
        extra_env: extra,
        stdin: None,
        state: Some(state),
        run_timeout: None,
    }
}

fn activate_of(user: &str) -> Value {
    node_run::action("activate", user, &[], None, Some(NODE))
}

/// `hostenv-activate <args>` for node-a with `state`, to completion.
fn operator(
    fake: &FakeHandle,
    state: &NodeState,
    extra: &[(&str, &str)],
    args: &[&str],
) -> Finished {
    spawn_with(fake, &config("unused", state, extra), args).wait(RUN_LIMIT)
}

fn json_of(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", finished.output()))
}

// ------------------------------------------------------------ status

#[test]
fn status_shows_what_real_runs_did_and_a_run_in_progress() {
    let w = world(&[UserSpec::new("stat").without_test_units()]);
    let user = w.user("stat");
    let state = NodeState::new();
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            "job-ok",
            "sha-ok",
            [(NODE, intent(vec![activate_of(&user.name)]))],
        )
        .job(
            "job-bad",
            "sha-bad",
            [(NODE, intent(vec![activate_of(&user.name)]))],
        )
        .job(
            "job-lost",
            "sha-lost",
            [(NODE, intent(vec![activate_of(&user.name)]))],
        )
        .job(
            "job-slow",
            "sha-slow",
            [(NODE, intent(vec![activate_of(&user.name)]))],
        )
        // The success of job-lost's activate never gets through.
        .fail_event("job-lost", NODE, ("activate", "success"), 1000, 503)
        .start();

    // No journal at all.
    let empty = operator(&fake, &state, &[], &["status"]);
    empty.expect_code(0);
    assert!(
        fake.requests().is_empty(),
        "status asks the provider nothing: {:?}",
        fake.requests()
    );
    assert!(
        empty.stdout.contains("No run is recorded in the journal."),
        "{}",
        empty.output()
    );
    assert!(!state.state_dir().exists(), "status created nothing");

    // A success, then a failure.
    user.write_file(".local/bin/activate", "#!/bin/sh\necho activated\n", 0o755)
        .expect("activate");
    spawn(&fake, &config("sha-ok", &state, &[]))
        .wait(RUN_LIMIT)
        .expect_code(0);
    user.write_file(
        ".local/bin/activate",
        "#!/bin/sh\necho disk full\nexit 3\n",
        0o755,
    )
    .expect("activate");
    spawn(&fake, &config("sha-bad", &state, &[]))
        .wait(RUN_LIMIT)
        .expect_code(1);
    // An undelivered terminal event: the provider keeps answering 503 until
    // the run deadline.
    user.write_file(".local/bin/activate", "#!/bin/sh\necho activated\n", 0o755)
        .expect("activate");
    let mut lost = config("sha-lost", &state, &[]);
    lost.run_timeout = Some(6);
    spawn(&fake, &lost).wait(RUN_LIMIT).expect_code(1);

    // A run in progress.
    user.write_file(".local/bin/activate", "#!/bin/sh\nsleep 60\n", 0o755)
        .expect("activate");
    let slow = spawn(&fake, &config("sha-slow", &state, &[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fake
        .events_of("job-slow", NODE)
        .iter()
        .any(|e| e.is("activate", "running"))
    {
        assert!(
            Instant::now() < deadline,
            "the slow run never started its activate"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let text = operator(&fake, &state, &[], &["status"]);
    let doc = operator(&fake, &state, &[], &["status", "--output=json"]);
    slow.sigterm();
    let _ = slow.wait(RUN_LIMIT);

    if std::env::var_os("REAL_OPERATOR_SHOW_OUTPUT").is_some() {
        println!("{}", text.stdout);
    }
    text.expect_code(0);
    doc.expect_code(0);
    let out = &text.stdout;
    let context = text.output();
    for needle in [
        "A run holds the lock now: pid ",
        "commit sha-slow, job job-slow",
        &format!("now: 1. activate {}: started, not finished", user.name),
        "- job job-ok (node node-a), commit sha-ok",
        "succeeded: Completed all deploy actions for node node-a",
        &format!("1. activate {}: success in", user.name),
        "- job job-bad (node node-a), commit sha-bad",
        "FAILED: action 1 of 1",
        &format!(
            "Activation failed for {} (exit code 3): disk full",
            user.name
        ),
        "undelivered event(s); the next run delivers them first:",
        "job job-lost (node node-a): (activate, success)",
    ] {
        assert!(out.contains(needle), "{needle:?} in:\n{context}");
    }
    // Newest first.
    let at = |needle: &str| out.find(needle).unwrap_or(usize::MAX);
    assert!(at("job job-slow") < at("job job-lost"), "{context}");
    assert!(at("job job-lost") < at("job job-bad"), "{context}");
    assert!(at("job job-bad") < at("job job-ok"), "{context}");

    let v = json_of(&doc);
    assert_eq!(v["formatVersion"], 1, "{v:#}");
    assert_eq!(v["inProgress"]["job"], "job-slow", "{v:#}");
    assert_eq!(v["inProgress"]["action"]["op"], "activate", "{v:#}");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs[0]["job"], "job-slow");
    let bad = runs
        .iter()
        .find(|r| r["job"] == "job-bad")
        .expect("job-bad");
    assert_eq!(bad["success"], false);
    assert_eq!(bad["actions"][0]["status"], "failed");
    assert!(bad["actions"][0]["durationSeconds"].as_f64().is_some());
    // job-lost's action succeeded but its event did not get through: that
    // event, and the closing event its success decided (recorded with it),
    // wait for the next run, in that order.
    let undelivered = v["undelivered"].as_array().expect("undelivered");
    assert_eq!(undelivered.len(), 2, "{v:#}");
    assert_eq!(undelivered[0]["job"], "job-lost");
    assert_eq!(undelivered[0]["phase"], "activate");
    assert_eq!(undelivered[1]["job"], "job-lost");
    assert_eq!(undelivered[1]["phase"], "intent");
    assert!(
        fake.requests().iter().all(|r| r.route != Route::Unknown),
        "status asked the provider nothing it should not"
    );
}

// ------------------------------------------------------------ doctor

/// `/var/lib/systemd/linger/<user>`, removed on drop (with the directory
/// when this test made it).
struct Linger {
    file: PathBuf,
    made_dir: bool,
}

impl Linger {
    fn on(user: &TestUser) -> Self {
        let dir = Path::new("/var/lib/systemd/linger");
        let made_dir = !dir.exists();
        fs::create_dir_all(dir).expect("linger directory");
        let file = dir.join(&user.name);
        fs::write(&file, "").expect("linger file");
        Linger { file, made_dir }
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
        if self.made_dir {
            let _ = fs::remove_dir("/var/lib/systemd/linger");
        }
    }
}

/// comin's store naming `sha` as the newest deployment.
fn comin_store(dir: &Path, sha: &str) -> String {
    let path = dir.join("store.json");
    let store = json!({"deployments": [{"uuid": "d-1", "generation": {"selected_commit_id": sha},
        "ended_at": "2026-12-01T08:15:41Z", "status": "done", "error_msg": ""}]});
    fs::write(&path, store.to_string()).expect("store");
    path.display().to_string()
}

fn verdict_of(v: &Value, check: &str) -> (String, String) {
    let c = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check:?} in {v:#}"));
    (
        c["verdict"].as_str().unwrap_or_default().to_owned(),
        c["fix"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn doctor_passes_a_healthy_node_and_names_each_problem_with_its_fix() {
    let w = world(&[
        UserSpec::new("doc").backups(&[KEY]),
        UserSpec::new("nomgr").without_manager(),
    ]);
    let user = w.user("doc");
    let idle = w.user("nomgr");
    user.write_file(".local/bin/activate", "#!/bin/sh\nexit 0\n", 0o755)
        .expect("activate");
    let _linger = Linger::on(user);
    let dir = tempfile::tempdir().expect("tempdir");
    let sha = "d0c70r";
    let store = comin_store(dir.path(), sha);
    let intent_json = intent(vec![
        node_run::action("backup", &user.name, &[KEY], Some(NODE), Some("node-b")),
        activate_of(&user.name),
    ]);
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job("job-doc", sha, [(NODE, intent_json)])
        .start();
    let state = NodeState::new();
    let env = [("HOSTENV_COMIN_STORE", store.as_str())];
    let snapshots_before = user.restic_snapshots(KEY).expect("snapshots");

    // Healthy.
    let healthy = operator(&fake, &state, &env, &["doctor"]);
    if std::env::var_os("REAL_OPERATOR_SHOW_OUTPUT").is_some() {
        println!("{}", healthy.stdout);
    }
    healthy.expect_code(0);
    assert!(
        !healthy.stdout.contains("[FAIL]") && !healthy.stdout.contains("[WARN]"),
        "{}",
        healthy.output()
    );
    for needle in [
        "[ok  ] provider: reachable, token accepted",
        &format!("[ok  ] restic-backups-{KEY}.service: LoadState=loaded"),
        &format!("[ok  ] systemd of {}: reachable", user.name),
        &format!("[ok  ] lingering of {}: enabled", user.name),
        &format!("[ok  ] activate program of {}:", user.name),
    ] {
        assert!(
            healthy.stdout.contains(needle),
            "{needle:?}:\n{}",
            healthy.output()
        );
    }

    // A token file others can read: a warning, still exit 0.
    let loose = dir.path().join("token");
    fs::write(&loose, format!("{TOKEN}\n")).expect("token");
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = loose.display().to_string();
    let warned = operator(
        &fake,
        &state,
        &[
            ("HOSTENV_COMIN_STORE", &store),
            ("HOSTENV_COMIN_TOKEN_FILE", &loose),
        ],
        &["doctor", "--output=json"],
    );
    warned.expect_code(0);
    let (verdict, fix) = verdict_of(&json_of(&warned), "token file");
    assert_eq!(verdict, "warn", "{}", warned.output());
    assert!(fix.contains("chmod 0400"), "{fix}");

    // The provider refuses the token: fail, exit 1.
    let refused = operator(
        &FakeProvider::builder()
            .node(NODE, "another-token")
            .job("job-doc", sha, [(NODE, intent(vec![]))])
            .start(),
        &state,
        &env,
        &["doctor"],
    );
    if std::env::var_os("REAL_OPERATOR_SHOW_OUTPUT").is_some() {
        println!("{}", refused.stdout);
    }
    refused.expect_code(1);
    assert!(
        refused
            .stdout
            .contains("[FAIL] provider: the provider refused this node's token (403)")
            && refused
                .stdout
                .contains("fix: check HOSTENV_COMIN_NODE_NAME"),
        "{}",
        refused.output()
    );

    // The wrapper is missing.
    let wrapper = user.home.join(format!(".local/bin/restic-{KEY}"));
    let saved = fs::read(&wrapper).expect("wrapper");
    fs::remove_file(&wrapper).expect("remove the wrapper");
    let no_wrapper = operator(&fake, &state, &env, &["doctor", "--output=json"]);
    no_wrapper.expect_code(1);
    let (verdict, fix) = verdict_of(&json_of(&no_wrapper), &format!("restic-{KEY}"));
    assert_eq!(verdict, "fail", "{}", no_wrapper.output());
    assert!(fix.contains(".local/bin"), "{fix}");
    fs::write(&wrapper, saved).expect("restore the wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&wrapper, Some(user.uid), Some(user.gid)).expect("chown");

    // The unit is missing.
    let unit = user
        .unit_dir()
        .join(format!("restic-backups-{KEY}.service"));
    fs::remove_file(&unit).expect("remove the unit");
    user.daemon_reload().expect("daemon-reload");
    let no_unit = operator(&fake, &state, &env, &["doctor", "--output=json"]);
    no_unit.expect_code(1);
    let (verdict, fix) = verdict_of(&json_of(&no_unit), &format!("restic-backups-{KEY}.service"));
    assert_eq!(verdict, "fail", "{}", no_unit.output());
    assert!(fix.contains(&format!("restic backup named {KEY}")), "{fix}");

    // A user whose systemd manager is not running.
    let fake_idle = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            "job-idle",
            sha,
            [(NODE, intent(vec![activate_of(&idle.name)]))],
        )
        .start();
    let stopped = operator(&fake_idle, &state, &env, &["doctor", "--output=json"]);
    stopped.expect_code(1);
    let (verdict, fix) = verdict_of(&json_of(&stopped), &format!("systemd of {}", idle.name));
    assert_eq!(verdict, "fail", "{}", stopped.output());
    assert!(fix.contains(&format!("user@{}.service", idle.uid)), "{fix}");

    // It changed nothing: no POST, no unit run, nothing written.
    for f in [&fake, &fake_idle] {
        assert!(f.posted().is_empty(), "the doctor posted: {:?}", f.posted());
        assert!(f.requests().iter().all(|r| r.method == "GET"));
    }
    assert_eq!(
        user.restic_snapshots(KEY).expect("snapshots"),
        snapshots_before,
        "no backup ran"
    );
    assert!(!state.state_dir().exists(), "no journal was written");
    assert!(
        !Path::new(&format!("/run/user/{}/bus", idle.uid)).exists(),
        "no user manager was started"
    );
}

/// The check of `doctor` whose name is `check`, whole.
fn check_of(v: &Value, check: &str) -> Value {
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == check)
        .cloned()
        .unwrap_or_else(|| panic!("no check {check:?} in {v:#}"))
}

#[test]
fn doctor_names_a_users_failed_unit_and_its_result_and_leaves_it_failed() {
    let w = world(&[UserSpec::new("flr")]);
    let user = w.user("flr");
    user.write_file(".local/bin/activate", "#!/bin/sh\nexit 0\n", 0o755)
        .expect("activate");
    let _linger = Linger::on(user);
    let dir = tempfile::tempdir().expect("tempdir");
    let sha = "fa11ed";
    let store = comin_store(dir.path(), sha);
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            "job-flr",
            sha,
            [(NODE, intent(vec![activate_of(&user.name)]))],
        )
        .start();
    let state = NodeState::new();
    let env = [("HOSTENV_COMIN_STORE", store.as_str())];
    let check = format!("failed units of {}", user.name);

    // Nothing failed yet.
    let clean = operator(&fake, &state, &env, &["doctor", "--output=json"]);
    clean.expect_code(0);
    let found = check_of(&json_of(&clean), &check);
    assert_eq!(found["verdict"], "ok", "{}", clean.output());

    // A real unit that fails when started (exit 3: Result=exit-code).
    let started = user.systemctl(&["start", FAILING_UNIT]).expect("systemctl");
    assert!(!started.ok(), "{FAILING_UNIT} should fail");
    assert_eq!(
        user.unit_property(FAILING_UNIT, "ActiveState")
            .expect("ActiveState"),
        "failed"
    );
    let warned = operator(&fake, &state, &env, &["doctor", "--output=json"]);
    if std::env::var_os("REAL_OPERATOR_SHOW_OUTPUT").is_some() {
        println!("{}", warned.stdout);
    }
    // A warning, not a failure.
    warned.expect_code(0);
    let found = check_of(&json_of(&warned), &check);
    assert_eq!(found["verdict"], "warn", "{}", warned.output());
    assert_eq!(
        found["detail"],
        format!("1 unit(s) failed now: {FAILING_UNIT} (exit-code)"),
        "{}",
        warned.output()
    );
    let fix = found["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains(&format!("systemctl --user status {FAILING_UNIT}")),
        "{fix}"
    );
    let text = operator(&fake, &state, &env, &["doctor"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains(&format!(
            "[WARN] {check}: 1 unit(s) failed now: {FAILING_UNIT} (exit-code)"
        )),
        "{}",
        text.output()
    );

    // The doctor looked only: the unit is still failed, nothing posted or
    // written.
    assert_eq!(
        user.unit_property(FAILING_UNIT, "ActiveState")
            .expect("ActiveState"),
        "failed"
    );
    assert!(
        fake.posted().is_empty(),
        "the doctor posted: {:?}",
        fake.posted()
    );
    assert!(!state.state_dir().exists(), "no journal was written");

    // Once reset, ok again.
    assert!(user
        .systemctl(&["reset-failed", FAILING_UNIT])
        .expect("systemctl")
        .ok());
    let reset = operator(&fake, &state, &env, &["doctor", "--output=json"]);
    reset.expect_code(0);
    assert_eq!(check_of(&json_of(&reset), &check)["verdict"], "ok");
}

// ------------------------------------------------------------ journal message ids

/// The shipped binary, its journal socket a datagram socket of the test's
/// (bind-mounted over /run/systemd/journal/socket in a private mount
/// namespace), sends the documented MESSAGE_IDs with their fields.
#[test]
fn the_shipped_binary_sends_message_ids_to_the_journal() {
    // A host with journald has its own; one without must still have none.
    let journal_was_there = Path::new("/run/systemd/journal").exists();

    let journal = StandInJournal::new();
    let state = NodeState::new();
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            "job-ids",
            "sha-ids",
            [(NODE, intent(vec![activate_of("hostenv-absent-ids")]))],
        )
        .start();
    let ran =
        spawn_journaled(&fake, &config("sha-ids", &state, &[]), &[], &journal).wait(RUN_LIMIT);
    let stderr = &ran.stderr;
    assert_eq!(
        ran.code,
        Some(1),
        "the absent user fails the run:\n{stderr}"
    );

    let lines = journal.datagrams();
    let with_id = |id: &str| -> Vec<&Vec<(String, String)>> {
        lines
            .iter()
            .filter(|l| l.contains(&("MESSAGE_ID".to_owned(), id.to_owned())))
            .collect()
    };
    let has = |line: &Vec<(String, String)>, k: &str, v: &str| {
        line.contains(&(k.to_owned(), v.to_owned()))
    };
    let context = format!("{} datagrams:\n{lines:#?}\nstderr:\n{stderr}", lines.len());

    let started = with_id("a2c87e5e79624c00a5ad24f0e451d4f8");
    assert_eq!(started.len(), 1, "run started: {context}");
    assert!(has(started[0], "HOSTENV_SHA", "sha-ids"), "{context}");
    let finished = with_id("cf85c54d5f08479cbf1f778bd5ce9e94");
    assert_eq!(finished.len(), 1, "run finished: {context}");
    assert!(
        has(finished[0], "HOSTENV_STATUS", "failed") && has(finished[0], "PRIORITY", "3"),
        "{context}"
    );
    let action = with_id("d51dba628d354d67b3fe6a3a1f26ca3b");
    assert_eq!(action.len(), 1, "action finished: {context}");
    for (k, v) in [
        ("HOSTENV_OP", "activate"),
        ("HOSTENV_USER", "hostenv-absent-ids"),
        ("HOSTENV_STATUS", "failed"),
        ("HOSTENV_JOB", "job-ids"),
        ("HOSTENV_NODE", NODE),
        ("SYSLOG_IDENTIFIER", "hostenv-activate"),
    ] {
        assert!(has(action[0], k, v), "{k}={v}: {context}");
    }
    assert!(
        with_id("e2d0a1adfc9244328abdc0bc21e918f9").is_empty(),
        "{context}"
    );
    assert_eq!(
        Path::new("/run/systemd/journal").exists(),
        journal_was_there,
        "the stand-in journal stayed inside its namespace"
    );
}
