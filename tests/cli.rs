//! The command line, as comin and an operator meet it: the real
//! `hostenv-activate` binary against the fake provider. Each test is one
//! rule of behaviour.md ("Configuration", "One run", "Dry run", "Exit
//! status"). Runs that would touch real users or systemd live elsewhere.
//!
//! Every run goes through [`Run::finish`], which also checks that the token
//! never appears in the program's output. To see what the binary said:
//! `CLI_TEST_SHOW_OUTPUT=1 cargo test --test cli -- --nocapture`.

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/prometheus.rs"]
mod prometheus;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use assert_cmd::Command;
use fake_provider::{event, fixture_json, FakeHandle, FakeProvider, JobState, Route, Visibility};
use prometheus::Families;
use serde_json::{json, Value};
use tempfile::TempDir;

const NODE: &str = "node-a";
const SHA: &str = "0123abcd";
const JOB: &str = "job-1";
/// Distinctive, so that a leak anywhere is caught.
const TOKEN: &str = "tok-a-7Qx9-SECRET-do-not-print";

/// Every required and optional setting of the program.
const VARIABLES: [(&str, &str); 15] = [
    ("COMIN_GIT_SHA", "--sha"),
    ("HOSTENV_COMIN_NODE_NAME", "--node-name"),
    ("HOSTENV_COMIN_API_BASE_URL", "--api-base-url"),
    ("HOSTENV_COMIN_TOKEN_FILE", "--token-file"),
    ("HOSTENV_COMIN_ACTION_TIMEOUT", "--action-timeout"),
    (
        "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
        "--target-observe-timeout",
    ),
    ("HOSTENV_COMIN_INTENT_WAIT", "--intent-wait"),
    ("COMIN_STATUS", "--comin-status"),
    ("COMIN_ERROR_MSG", "--comin-error-msg"),
    ("HOSTENV_COMIN_RUN_TIMEOUT", "--run-timeout"),
    ("HOSTENV_COMIN_STATE_DIR", "--state-dir"),
    ("HOSTENV_COMIN_LOCK_FILE", "--lock-file"),
    ("HOSTENV_COMIN_STORE", "--comin-store"),
    ("HOSTENV_COMIN_METRICS_FILE", "--metrics-file"),
    ("HOSTENV_COMIN_HEALTH_TIMEOUT", "--health-timeout"),
];

/// A provider that knows `node-a` (token [`TOKEN`]) and has one job for
/// [`SHA`] with `intent` for `node-a`.
fn provider_with(intent: Value) -> fake_provider::Builder {
    FakeProvider::builder()
        .node(NODE, TOKEN)
        .node("node-b", "tok-b")
        .job(JOB, SHA, [(NODE, intent)])
}

/// One invocation of the binary, configured the way comin's wrapper does it:
/// everything in the environment, nothing inherited from ours.
struct Run {
    cmd: Command,
    _dir: TempDir,
}

impl Run {
    /// Complete configuration for `node-a` against `fake`.
    fn against(fake: &FakeHandle) -> Self {
        Self::with_token(fake, TOKEN)
    }

    fn with_token(fake: &FakeHandle, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("token file mode");
        let mut run = Self::bare(dir);
        run.env("COMIN_GIT_SHA", SHA)
            .env("HOSTENV_COMIN_NODE_NAME", NODE)
            .env("HOSTENV_COMIN_API_BASE_URL", fake.url())
            .env(
                "HOSTENV_COMIN_TOKEN_FILE",
                token_file.to_str().expect("utf-8 path"),
            )
            .env("HOSTENV_COMIN_ACTION_TIMEOUT", "60")
            .env("HOSTENV_COMIN_INTENT_WAIT", "0");
        run
    }

    /// No configuration at all, but the run's memory (journal, lock) kept
    /// in this run's own directory, never the machine's.
    fn bare(dir: TempDir) -> Self {
        let mut cmd = Command::cargo_bin("hostenv-activate").expect("the binary is built");
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOSTENV_COMIN_STATE_DIR", dir.path().join("state"))
            .env("HOSTENV_COMIN_LOCK_FILE", dir.path().join("run/lock"))
            .timeout(std::time::Duration::from_secs(120));
        Self { cmd, _dir: dir }
    }

    fn unconfigured() -> Self {
        Self::bare(tempfile::tempdir().expect("tempdir"))
    }

    fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    fn env_remove(&mut self, key: &str) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    fn arg(&mut self, arg: &str) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs to completion and checks the token did not leak.
    fn finish(&mut self) -> Finished {
        let output = self.cmd.output().expect("the binary runs");
        let finished = Finished(output);
        if std::env::var_os("CLI_TEST_SHOW_OUTPUT").is_some() {
            // `CLI_TEST_SHOW_OUTPUT=1 cargo test --test cli -- --nocapture`
            println!("{}", finished.all_output());
        }
        assert!(
            !finished.all_output().contains(TOKEN),
            "the token leaked into the output:\n{}",
            finished.all_output()
        );
        finished
    }
}

struct Finished(Output);

impl Finished {
    fn code(&self) -> i32 {
        self.0.status.code().expect("exited, not killed")
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    fn all_output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "exit status\n{}", self.all_output());
        self
    }

    #[track_caller]
    fn expect_mentions(&self, needles: &[&str]) -> &Self {
        let all = self.all_output();
        for needle in needles {
            assert!(
                all.contains(needle),
                "output should mention {needle:?}:\n{all}"
            );
        }
        self
    }
}

/// The events the fake received from the program, as posted.
fn posted(fake: &FakeHandle) -> Vec<Value> {
    fake.posted()
}

#[track_caller]
fn assert_single_intent_event(fake: &FakeHandle, status: &str, message_part: &str) {
    let posted = posted(fake);
    assert_eq!(posted.len(), 1, "exactly one event: {posted:#?}");
    let e = &posted[0];
    assert_eq!(e["node"], NODE);
    assert_eq!(e["phase"], "intent", "{e}");
    assert_eq!(e["status"], status, "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(message_part),
        "{message:?} should contain {message_part:?}"
    );
}

// ------------------------------------------------------------ configuration

#[test]
fn without_a_commit_sha_there_is_nothing_to_do_and_nothing_is_checked() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    // No configuration at all: the sha check comes first.
    Run::unconfigured()
        .finish()
        .expect_code(0)
        .expect_mentions(&["COMIN_GIT_SHA"]);
    // A blank sha is no sha.
    Run::against(&fake)
        .env("COMIN_GIT_SHA", "  ")
        .finish()
        .expect_code(0)
        .expect_mentions(&["COMIN_GIT_SHA"]);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

#[test]
fn missing_configuration_is_a_usage_error_naming_the_variable_and_the_flag() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    for (variable, flag) in &VARIABLES[1..5] {
        let finished = Run::against(&fake).env_remove(variable).finish();
        finished.expect_code(2).expect_mentions(&[variable, flag]);
        let lines: Vec<String> = finished
            .stderr()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 1, "one clear line for {variable}: {lines:#?}");
        assert!(finished.stdout().is_empty());
    }
    assert!(
        fake.requests().is_empty(),
        "nothing is fetched or posted: {:#?}",
        fake.requests()
    );
}

#[test]
fn malformed_values_are_usage_errors() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    let cases = [
        ("HOSTENV_COMIN_ACTION_TIMEOUT", "soon", "--action-timeout"),
        ("HOSTENV_COMIN_ACTION_TIMEOUT", "0", "--action-timeout"),
        (
            "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
            "2m",
            "--target-observe-timeout",
        ),
        ("HOSTENV_COMIN_INTENT_WAIT", "-1", "--intent-wait"),
        ("HOSTENV_COMIN_HEALTH_TIMEOUT", "1m", "--health-timeout"),
        ("HOSTENV_COMIN_HEALTH_TIMEOUT", "-5", "--health-timeout"),
        ("HOSTENV_COMIN_HEALTH_TIMEOUT", "604801", "--health-timeout"),
        (
            "HOSTENV_COMIN_API_BASE_URL",
            "ftp://provider",
            "--api-base-url",
        ),
        ("HOSTENV_COMIN_TOKEN_FILE", "relative/token", "--token-file"),
        ("COMIN_STATUS", "meh", "--comin-status"),
    ];
    for (variable, value, flag) in cases {
        Run::against(&fake)
            .env(variable, value)
            .finish()
            .expect_code(2)
            .expect_mentions(&[variable, flag]);
    }
    // The flag form is checked the same way, and a flag wins over its variable.
    Run::against(&fake)
        .arg("--action-timeout=later")
        .finish()
        .expect_code(2)
        .expect_mentions(&["HOSTENV_COMIN_ACTION_TIMEOUT", "--action-timeout"]);
    assert!(fake.requests().is_empty());
}

#[test]
fn help_documents_every_variable_and_the_exit_codes() {
    let finished = Run::unconfigured().arg("--help").finish();
    finished.expect_code(0);
    let help = finished.stdout();
    for (variable, flag) in VARIABLES {
        assert!(
            help.contains(variable),
            "--help should name {variable}:\n{help}"
        );
        assert!(help.contains(flag), "--help should name {flag}:\n{help}");
    }
    assert!(help.contains("--dry-run"));
    for code in ["0 ", "1 ", "2 "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(code)),
            "--help should explain exit status {code}:\n{help}"
        );
    }
}

#[test]
fn version_names_the_program_and_its_version() {
    Run::unconfigured()
        .arg("--version")
        .finish()
        .expect_code(0)
        .expect_mentions(&[concat!("hostenv-activate ", env!("CARGO_PKG_VERSION"))]);
}

// ------------------------------------------------------------ one run

#[test]
fn no_intent_for_this_node_is_a_normal_outcome_after_a_bounded_wait() {
    let fake = provider_with(fixture_json("intents/activate-only.json"))
        .visibility(JOB, Visibility::Never)
        .start();
    Run::against(&fake)
        .env("HOSTENV_COMIN_INTENT_WAIT", "3")
        .finish()
        .expect_code(0)
        .expect_mentions(&["intent", SHA, NODE]);
    let lookups = fake.requests_to(Route::IntentBySha);
    assert!(
        lookups.len() >= 2,
        "a 404 is retried within the wait: {}",
        lookups.len()
    );
    assert!(lookups.iter().all(|r| r.query_param("sha") == Some(SHA)));
    assert!(lookups.iter().all(|r| r.query_param("node") == Some(NODE)));
    assert!(posted(&fake).is_empty());
}

#[test]
fn an_intent_that_appears_late_is_still_performed() {
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .visibility(JOB, Visibility::AfterLookups(1))
        .start();
    Run::against(&fake)
        .env("HOSTENV_COMIN_INTENT_WAIT", "10")
        .finish()
        .expect_code(0);
    assert_eq!(fake.requests_to(Route::IntentBySha).len(), 2);
    assert_single_intent_event(&fake, "success", "No user actions for node node-a");
}

#[test]
fn an_invalid_intent_is_reported_once_and_fails_the_run() {
    for fixture in [
        "intents/invalid-schema-version.json",
        "intents/invalid-unknown-op.json",
        "intents/invalid-empty-user.json",
        "intents/invalid-path-user.json",
        "intents/invalid-actions-not-array.json",
    ] {
        let fake = provider_with(fixture_json(fixture)).start();
        Run::against(&fake)
            .finish()
            .expect_code(1)
            .expect_mentions(&["Invalid deploy intent payload for node node-a"]);
        assert_single_intent_event(
            &fake,
            "failed",
            "Invalid deploy intent payload for node node-a",
        );
        assert_eq!(fake.job_state(JOB), JobState::Failed, "{fixture}");
    }
}

#[test]
fn a_failed_system_switch_is_reported_and_no_action_runs() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    Run::against(&fake)
        .env("COMIN_STATUS", "failed")
        .env(
            "COMIN_ERROR_MSG",
            "switch-to-configuration exited with status 4",
        )
        .finish()
        .expect_code(1);
    assert_single_intent_event(
        &fake,
        "failed",
        "switch-to-configuration exited with status 4",
    );
    assert!(
        fake.actions(JOB).iter().all(|r| r.status == "failed"),
        "the intent failure finalises the node's actions: {:?}",
        fake.actions(JOB)
    );
}

#[test]
fn an_intent_without_actions_succeeds_with_one_event() {
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    Run::against(&fake).finish().expect_code(0);
    assert_single_intent_event(&fake, "success", "No user actions for node node-a");
    assert_eq!(fake.job_state(JOB), JobState::Success);
}

#[test]
fn server_errors_on_an_event_are_retried_until_it_is_delivered() {
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .fail(Route::Events, 2, 503)
        .start();
    Run::against(&fake).finish().expect_code(0);
    assert_eq!(
        fake.requests_to(Route::Events).len(),
        3,
        "two 503s, then delivered"
    );
    assert_eq!(fake.events(JOB).len(), 1, "recorded once");
}

#[test]
fn a_closed_job_stops_the_run() {
    // The job is superseded right after this node fetched its intent.
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .close_after_lookup(JOB, JobState::Superseded)
        .start();
    Run::against(&fake)
        .finish()
        .expect_code(1)
        .expect_mentions(&[JOB]);
    assert_eq!(
        fake.requests_to(Route::Events).len(),
        1,
        "a 409 is not retried"
    );
    assert!(fake.events(JOB).is_empty());
}

#[test]
fn a_refused_token_fails_fast_and_says_the_token_was_refused() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    let finished = Run::with_token(&fake, "not-the-token").finish();
    finished.expect_code(1);
    let all = finished.all_output().to_lowercase();
    assert!(all.contains("refused") && all.contains("token"), "{all}");
    assert!(
        !all.contains("not-the-token"),
        "the wrong token is a secret too:\n{all}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "a 403 is not retried: {:#?}",
        fake.requests()
    );
}

#[test]
fn the_token_travels_only_in_the_authorization_header() {
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    Run::against(&fake).finish().expect_code(0);
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(r.auth_ok);
        assert!(
            !r.raw_url.contains(TOKEN) && !r.body.contains(TOKEN),
            "{r:?}"
        );
    }
}

#[test]
fn the_provider_can_listen_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .unix_socket(dir.path().join("provider.sock"))
        .start();
    assert!(fake.url().starts_with("unix:/"));
    Run::against(&fake).finish().expect_code(0);
    assert_single_intent_event(&fake, "success", "No user actions for node node-a");
}

#[test]
fn events_of_other_nodes_do_not_change_this_nodes_outcome() {
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .node("node-b", "tok-b")
        .job(
            JOB,
            SHA,
            [
                (NODE, fixture_json("intents/empty-actions.json")),
                ("node-b", fixture_json("intents/activate-only.json")),
            ],
        )
        .event(
            JOB,
            event(
                "node-b",
                "activate",
                "running",
                "Applying action for acme-blog-main",
            ),
        )
        .start();
    Run::against(&fake).finish().expect_code(0);
    assert_single_intent_event(&fake, "success", "No user actions for node node-a");
    assert_eq!(
        fake.job_state(JOB),
        JobState::Waiting,
        "node-b is still working"
    );
}

// ------------------------------------------------------------ dry run

/// Users that do not exist on any test machine.
fn absent_users_intent() -> Value {
    json!({
        "schemaVersion": 1,
        "actions": [
            {"op": "backup", "user": "hostenv-absent-a", "fromNode": NODE, "toNode": "node-b", "migrations": ["drupal-migrate"]},
            {"op": "deactivate", "user": "hostenv-absent-a", "fromNode": NODE, "toNode": "node-b"},
            {"op": "activate", "user": "hostenv-absent-b", "fromNode": null, "toNode": NODE}
        ]
    })
}

#[test]
fn dry_run_prints_every_action_and_posts_nothing() {
    let fake = provider_with(absent_users_intent()).start();
    let finished = Run::against(&fake).arg("--dry-run").finish();
    // The users are missing, so a preflight check fails: exit 1.
    finished.expect_code(1);
    let out = finished.stdout();
    for needle in [
        "backup hostenv-absent-a",
        "deactivate hostenv-absent-a",
        "activate hostenv-absent-b",
        SHA,
        NODE,
    ] {
        assert!(
            out.contains(needle),
            "dry run should show {needle:?}:\n{out}"
        );
    }
    assert!(posted(&fake).is_empty(), "a dry run posts nothing");
    // One intent lookup, then only reads: whether the provider already has
    // this node's backup (what would be skipped).
    let requests = fake.requests();
    assert_eq!(fake.requests_to(Route::IntentBySha).len(), 1);
    assert!(requests.iter().all(|r| r.method == "GET"), "{requests:#?}");
}

#[test]
fn dry_run_shows_the_health_check_with_its_seconds_and_0_turns_it_off() {
    let fake = provider_with(absent_users_intent()).start();
    let check = "for the services that default.target and hostenv.target want";
    // The default, from the variable, and from the flag (which wins).
    for (variable, flag, seconds) in [
        (None, None, 60),
        (Some("17"), None, 17),
        (Some("17"), Some("--health-timeout=5"), 5),
    ] {
        let mut run = Run::against(&fake);
        run.arg("--dry-run");
        if let Some(value) = variable {
            run.env("HOSTENV_COMIN_HEALTH_TIMEOUT", value);
        }
        if let Some(flag) = flag {
            run.arg(flag);
        }
        let finished = run.finish();
        finished.expect_code(1);
        let out = finished.stdout();
        assert!(
            out.contains(&format!("would: wait up to {seconds}s {check}")),
            "{variable:?} {flag:?}:\n{out}"
        );
    }
    // 0 is accepted (not a usage error) and the check is not planned: the
    // activation posts its success as soon as `activate` exits 0.
    for off in [
        Run::against(&fake)
            .env("HOSTENV_COMIN_HEALTH_TIMEOUT", "0")
            .arg("--dry-run")
            .finish(),
        Run::against(&fake)
            .arg("--dry-run")
            .arg("--health-timeout=0")
            .finish(),
    ] {
        off.expect_code(1);
        let out = off.stdout();
        assert!(out.contains("activate hostenv-absent-b"), "{out}");
        assert!(!out.contains("default.target"), "{out}");
        assert!(!off.stderr().contains("HOSTENV_COMIN_HEALTH_TIMEOUT"));
    }
    assert!(posted(&fake).is_empty());
}

#[test]
fn dry_run_json_is_one_document_with_every_action() {
    let fake = provider_with(absent_users_intent()).start();
    let finished = Run::against(&fake)
        .arg("--dry-run")
        .arg("--output=json")
        .finish();
    finished.expect_code(1);
    let doc: Value = serde_json::from_str(&finished.stdout())
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}):\n{}", finished.stdout()));
    let text = doc.to_string();
    for needle in [
        "hostenv-absent-a",
        "hostenv-absent-b",
        "backup",
        "deactivate",
        "activate",
    ] {
        assert!(
            text.contains(needle),
            "JSON should mention {needle:?}: {doc:#}"
        );
    }
    assert!(posted(&fake).is_empty());
}

#[test]
fn dry_run_of_an_empty_intent_passes() {
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    Run::against(&fake).arg("--dry-run").finish().expect_code(0);
    assert!(posted(&fake).is_empty());
}

#[test]
fn dry_run_without_an_intent_says_so_without_retrying() {
    let fake = provider_with(fixture_json("intents/activate-only.json"))
        .visibility(JOB, Visibility::Never)
        .start();
    Run::against(&fake)
        .env("HOSTENV_COMIN_INTENT_WAIT", "30")
        .arg("--dry-run")
        .finish()
        .expect_mentions(&[&format!("no intent for {SHA} on {NODE}")]);
    assert_eq!(fake.requests().len(), 1, "fetched once, not retried");
}

#[test]
fn dry_run_can_look_at_another_commit() {
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .job(
            "job-2",
            "feedbeef",
            [(NODE, fixture_json("intents/empty-actions.json"))],
        )
        .start();
    Run::against(&fake)
        .arg("--dry-run")
        .arg("--sha=feedbeef")
        .finish()
        .expect_code(0)
        .expect_mentions(&["feedbeef"]);
    let lookups = fake.requests_to(Route::IntentBySha);
    assert_eq!(lookups.len(), 1);
    assert_eq!(
        lookups[0].query_param("sha"),
        Some("feedbeef"),
        "a flag wins over COMIN_GIT_SHA"
    );
}

// ------------------------------------------------------------ dry run on a node

/// comin's store with two deployments, `newest` ending last; `error` is the
/// newest one's `error_msg`.
fn comin_store(dir: &std::path::Path, newest: &str, error: &str) -> String {
    let store = json!({
        "deployments": [
            {"uuid": "d-new", "generation": {"selected_commit_id": newest},
             "started_at": "2026-12-01T08:14:55Z", "ended_at": "2026-12-01T08:15:41Z",
             "status": "done", "error_msg": error},
            {"uuid": "d-old", "generation": {"selected_commit_id": "0ld0ld"},
             "started_at": "2026-11-30T09:59:31Z", "ended_at": "2026-11-30T10:00:12Z",
             "status": "done", "error_msg": ""}
        ]
    });
    let path = dir.join("store.json");
    std::fs::write(&path, store.to_string()).expect("write the store");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn a_dry_run_without_a_commit_uses_comins_newest_deployment() {
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = comin_store(dir.path(), SHA, "");
    let finished = Run::against(&fake)
        .env_remove("COMIN_GIT_SHA")
        .env("HOSTENV_COMIN_STORE", &store)
        .arg("--dry-run")
        .finish();
    finished.expect_code(0).expect_mentions(&[
        &format!("Commit: {SHA}, comin's newest deployment in {store} (deployment d-new"),
        &format!(
            "{}/api/deploy-intents/by-sha?sha={SHA}&node={NODE}",
            fake.url()
        ),
    ]);
    let lookups = fake.requests_to(Route::IntentBySha);
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].query_param("sha"), Some(SHA));
    assert!(posted(&fake).is_empty());
}

#[test]
fn a_dry_run_of_a_deployment_whose_switch_failed_says_nothing_would_run() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = comin_store(
        dir.path(),
        SHA,
        "switch-to-configuration exited with status 4",
    );
    Run::against(&fake)
        .env_remove("COMIN_GIT_SHA")
        .arg(&format!("--comin-store={store}"))
        .arg("--dry-run")
        .finish()
        .expect_code(1)
        .expect_mentions(&[
            "its switch failed: switch-to-configuration exited with status 4",
            "nothing would run; (intent, failed)",
        ]);
    assert!(posted(&fake).is_empty());
}

#[test]
fn a_dry_run_with_comins_error_message_in_the_environment_says_nothing_would_run() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    Run::against(&fake)
        .env("COMIN_STATUS", "done")
        .env(
            "COMIN_ERROR_MSG",
            "switch-to-configuration exited with status 4",
        )
        .arg("--dry-run")
        .finish()
        .expect_code(1)
        .expect_mentions(&["nothing would run; (intent, failed)"]);
    assert!(posted(&fake).is_empty());
}

#[test]
fn a_dry_run_without_a_commit_or_a_store_says_to_pass_sha() {
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    let finished = Run::against(&fake)
        .env_remove("COMIN_GIT_SHA")
        .env("HOSTENV_COMIN_STORE", "/nonexistent/comin/store.json")
        .arg("--dry-run")
        .finish();
    finished
        .expect_code(1)
        .expect_mentions(&["/nonexistent/comin/store.json", "pass --sha"]);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

#[test]
fn output_without_dry_run_is_a_usage_error() {
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    Run::against(&fake)
        .arg("--output=json")
        .finish()
        .expect_code(2)
        .expect_mentions(&["--output", "--dry-run"]);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    // Without a commit there is nothing to do, before any other check.
    Run::against(&fake)
        .env_remove("COMIN_GIT_SHA")
        .arg("--output=json")
        .finish()
        .expect_code(0)
        .expect_mentions(&["COMIN_GIT_SHA"]);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

// ------------------------------------------------------------ the base URL

#[test]
fn a_base_url_with_a_path_prefix_keeps_it() {
    let fake = provider_with(fixture_json("intents/empty-actions.json"))
        .mounted_at("provider")
        .start();
    assert!(fake.url().ends_with("/provider"));
    Run::against(&fake).finish().expect_code(0);
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(r.raw_url.starts_with("/provider/api/"), "{}", r.raw_url);
    }
    assert_single_intent_event(&fake, "success", "No user actions for node node-a");
}

#[test]
fn a_base_url_ending_in_api_is_flagged_and_named_when_nothing_is_found() {
    let fake = provider_with(fixture_json("intents/activate-only.json"))
        .mounted_at("provider")
        .start();
    let base = format!("{}/api", fake.url());
    let finished = Run::against(&fake)
        .env("HOSTENV_COMIN_API_BASE_URL", &base)
        .finish();
    finished.expect_code(0).expect_mentions(&[
        &format!("{base}/api/deploy-intents/..."),
        &format!("set it to {}", fake.url()),
        &format!("{base}/api/deploy-intents/by-sha?sha={SHA}&node={NODE} answered 404"),
        "check HOSTENV_COMIN_API_BASE_URL",
    ]);
    let warning_lines = finished
        .stderr()
        .lines()
        .filter(|l| l.contains("ends in /api"))
        .count();
    assert_eq!(warning_lines, 1, "{}", finished.stderr());
}

// ------------------------------------------------------------ careless input

#[test]
fn careless_values_get_one_short_line_naming_the_setting() {
    use std::os::unix::ffi::OsStrExt;
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    // A 10 KB node name is cut.
    let long = format!("{}nn", "n ".repeat(4_999));
    let finished = Run::against(&fake)
        .env("HOSTENV_COMIN_NODE_NAME", &long)
        .finish();
    finished.expect_code(2).expect_mentions(&[
        "HOSTENV_COMIN_NODE_NAME",
        "--node-name",
        "(10000 characters)",
    ]);
    assert!(finished.stderr().len() < 400, "{}", finished.stderr());
    // A negative number gets our own message, not clap's.
    Run::against(&fake)
        .arg("--action-timeout")
        .arg("-5")
        .finish()
        .expect_code(2)
        .expect_mentions(&[
            "HOSTENV_COMIN_ACTION_TIMEOUT (--action-timeout) is negative",
            "between 1 and 604800",
        ]);
    // A value that is not UTF-8 names its variable.
    let mut run = Run::against(&fake);
    run.cmd.env(
        "HOSTENV_COMIN_NODE_NAME",
        std::ffi::OsStr::from_bytes(&[b'n', 0xff]),
    );
    run.finish()
        .expect_code(2)
        .expect_mentions(&["HOSTENV_COMIN_NODE_NAME (--node-name) is not valid UTF-8"]);
    // A unix socket that is not there is named, not `http://localhost`
    // (a dry run asks once; a run would retry for its budget first).
    let finished = Run::against(&fake)
        .env("HOSTENV_COMIN_API_BASE_URL", "unix:/nonexistent.sock")
        .arg("--dry-run")
        .finish();
    finished
        .expect_code(1)
        .expect_mentions(&["unix:/nonexistent.sock"]);
    assert!(
        !finished.all_output().contains("localhost"),
        "{}",
        finished.all_output()
    );
    assert!(fake.requests().is_empty());
}

// ------------------------------------------------------------ comin's status

#[test]
fn an_error_message_with_status_done_is_a_failed_switch() {
    // comin v0.10.0 to v0.13.0 export `done` after a failed switch.
    let fake = provider_with(fixture_json("intents/activate-only.json")).start();
    Run::against(&fake)
        .env("COMIN_STATUS", "done")
        .env(
            "COMIN_ERROR_MSG",
            "error: switch-to-configuration exited with status 4",
        )
        .finish()
        .expect_code(1);
    assert_single_intent_event(
        &fake,
        "failed",
        "switch-to-configuration exited with status 4",
    );
}

// ------------------------------------------------------------ metrics

#[test]
fn every_run_ends_by_writing_its_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hostenv-activate.prom");
    let metrics_file = file.to_str().expect("utf-8 path");
    let value = |m: &Families, name: &str| {
        m.get(name)
            .and_then(|s| s.first())
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} in {m:?}"))
    };

    // A run that succeeds (an empty intent).
    let fake = provider_with(fixture_json("intents/empty-actions.json")).start();
    Run::against(&fake)
        .env("HOSTENV_COMIN_METRICS_FILE", metrics_file)
        .finish()
        .expect_code(0);
    let m = prometheus::read(&file);
    assert_eq!(value(&m, "hostenv_activate_last_run_success"), 1.0);
    assert_eq!(value(&m, "hostenv_activate_undelivered_events"), 0.0);
    assert!(value(&m, "hostenv_activate_last_run_duration_seconds") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("now")
        .as_secs_f64();
    assert!((now - value(&m, "hostenv_activate_last_run_timestamp_seconds")).abs() < 120.0);
    let build = &m["hostenv_activate_build_info"][0];
    assert!(
        build
            .0
            .contains(&("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())),
        "{build:?}"
    );
    assert!(m
        .get("hostenv_activate_action_success")
        .is_none_or(Vec::is_empty));

    // A run whose action fails (a user that does not exist).
    let fake = provider_with(json!({"schemaVersion": 1, "actions": [
        {"op": "activate", "user": "hostenv-absent-c"}
    ]}))
    .start();
    Run::against(&fake)
        .env("HOSTENV_COMIN_METRICS_FILE", metrics_file)
        .finish()
        .expect_code(1);
    let m = prometheus::read(&file);
    assert_eq!(value(&m, "hostenv_activate_last_run_success"), 0.0);
    let actions = &m["hostenv_activate_action_success"];
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (labels, success) = &actions[0];
    assert_eq!(*success, 0.0);
    for pair in [
        ("op", "activate"),
        ("user", "hostenv-absent-c"),
        ("index", "1"),
    ] {
        assert!(
            labels.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{labels:?}"
        );
    }
    assert_eq!(m["hostenv_activate_action_duration_seconds"].len(), 1);

    // A run that ends before the engine starts (the token file is a
    // directory) still leaves its failure in the metrics.
    let token_dir = dir.path().join("not-a-token");
    std::fs::create_dir(&token_dir).expect("mkdir");
    let finished = Run::against(&fake)
        .env("HOSTENV_COMIN_METRICS_FILE", metrics_file)
        .env(
            "HOSTENV_COMIN_TOKEN_FILE",
            token_dir.to_str().expect("utf-8"),
        )
        .finish();
    finished
        .expect_code(1)
        .expect_mentions(&["status=failed", "not a regular file"]);
    let m = prometheus::read(&file);
    assert_eq!(value(&m, "hostenv_activate_last_run_success"), 0.0);
    assert!(m
        .get("hostenv_activate_action_success")
        .is_none_or(Vec::is_empty));

    // A directory that is not there: the run's outcome stands (the job
    // failed, so there is nothing more to do: exit 0), and it says why.
    let finished = Run::against(&fake)
        .env(
            "HOSTENV_COMIN_METRICS_FILE",
            "/nonexistent/dir/hostenv-activate.prom",
        )
        .finish();
    finished
        .expect_code(0)
        .expect_mentions(&["cannot write the metrics file", "/nonexistent/dir"]);
}
