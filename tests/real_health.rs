//! Healthy, not just exited (behaviour.md): the shipped binary on a real
//! node, whose user's `activate` starts `hostenv.target` the way an
//! environment's activation does, with the environment's services added to
//! the target through a drop-in. A service that crashes a second after
//! starting, one in a restart loop, a oneshot that needs 3 s, the check
//! turned off, and a migration whose new node's service fails.
//!
//! Needs root; `.ci/run` runs it against the static binary.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fake_provider::{FakeHandle, FakeProvider};
use harness::units::{HOSTENV_TARGET, TARGET_SERVICE};
use harness::{TestUser, UserSpec};
use node_run::{
    action, intent, position, random_hex, restoring_activate, show, spawn, world, Finished,
    NodeConfig,
};

const NODE: &str = "node-a";
const OTHER: &str = "node-b";
const SHA: &str = "4ea17b1";
const JOB: &str = "job-health";
const TOKEN: &str = "tok-health-SECRET";
const OTHER_TOKEN: &str = "tok-health-other";
const KEY: &str = "drupal-migrate";
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The activation of an environment: reload the user's units (the drop-in
/// is new), then ask for `hostenv.target` without waiting for it.
const ACTIVATE: &str = "#!/bin/sh\nsystemctl --user daemon-reload\nsystemctl --user start --no-block hostenv.target\necho activated\n";

/// Adds `unit` (with `body`) to `hostenv.target` through a drop-in.
fn add_service(user: &TestUser, unit: &str, body: &str) {
    user.write_unit(unit, body).expect("unit");
    user.write_unit(
        &format!("{HOSTENV_TARGET}.d/{unit}.conf"),
        &format!("[Unit]\nWants={unit}\n"),
    )
    .expect("drop-in");
}

fn world_with(tag: &str) -> harness::World {
    world(&[UserSpec::new(tag)])
}

/// node-a activates `user` once, with `health` as HOSTENV_COMIN_HEALTH_TIMEOUT
/// (`None`: the default).
fn activate(user: &TestUser, health: Option<&str>) -> (FakeHandle, Finished) {
    user.write_file(".local/bin/activate", ACTIVATE, 0o755)
        .expect("activate");
    let fake = FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            JOB,
            SHA,
            [(
                NODE,
                intent(vec![action("activate", &user.name, &[], None, None)]),
            )],
        )
        .start();
    let env: Vec<(&str, &str)> = health
        .map(|h| vec![("HOSTENV_COMIN_HEALTH_TIMEOUT", h)])
        .unwrap_or_default();
    let ran = spawn(
        &fake,
        &NodeConfig {
            node: NODE,
            sha: SHA,
            token: TOKEN,
            action_timeout: 60,
            target_observe_timeout: 30,
            intent_wait: 0,
            extra_env: &env,
            stdin: None,
            state: None,
            run_timeout: None,
        },
    )
    .wait(RUN_LIMIT);
    eprintln!("{}", ran.output());
    ran.expect_no_token(TOKEN);
    (fake, ran)
}

/// node-a's terminal activate event.
fn terminal(fake: &FakeHandle) -> fake_provider::Event {
    fake.events_of(JOB, NODE)
        .into_iter()
        .rfind(|e| e.phase == "activate" && e.status != "running")
        .unwrap_or_else(|| panic!("no terminal activate event: {}", show(&fake.events(JOB))))
}

fn unhealthy_units(payload: &Value) -> Vec<String> {
    payload["unhealthy"]
        .as_array()
        .unwrap_or_else(|| panic!("no unhealthy list in {payload}"))
        .iter()
        .map(|u| u["unit"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_service_that_crashes_a_second_after_starting_fails_the_activation() {
    let w = world_with("crash");
    let user = w.user("crash");
    add_service(
        user,
        "hat-crash.service",
        "[Service]\nExecStart=/bin/sh -c 'sleep 1; echo crashing; exit 3'\n",
    );
    let (fake, ran) = activate(user, None);
    ran.expect_code(1);
    let event = terminal(&fake);
    assert_eq!(event.status, "failed", "{}", show(&fake.events(JOB)));
    eprintln!("the operator reads: {}", event.message);
    assert!(
        event.message.starts_with(&format!(
            "1 service(s) of {} not healthy after activation: hat-crash.service failed/failed (exit-code)",
            user.name
        )),
        "{}",
        event.message
    );
    let payload = event.payload.clone().expect("payload");
    assert_eq!(payload["user"], json!(user.name), "{payload}");
    assert_eq!(payload["exitCode"], json!(0), "{payload}");
    assert_eq!(
        unhealthy_units(&payload),
        vec!["hat-crash.service"],
        "{payload}"
    );
    assert_eq!(
        payload["unhealthy"][0]["result"],
        json!("exit-code"),
        "{payload}"
    );
    assert_eq!(
        payload["unhealthy"][0]["execMainStatus"],
        json!(3),
        "{payload}"
    );
    assert!(ran.stderr.contains("hat-crash.service"), "{}", ran.stderr);
    // The healthy service of the same target is not listed, and runs.
    assert!(!event.message.contains(TARGET_SERVICE), "{}", event.message);
    assert_eq!(
        user.unit_property(TARGET_SERVICE, "ActiveState")
            .expect("show"),
        "active"
    );
}

#[test]
fn a_oneshot_that_needs_three_seconds_is_reported_once_it_is_active() {
    let w = world_with("slow");
    let user = w.user("slow");
    add_service(
        user,
        "hat-slow.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 3\n",
    );
    let started = Instant::now();
    let (fake, ran) = activate(user, None);
    ran.expect_code(0);
    let event = terminal(&fake);
    assert_eq!(event.status, "success", "{}", show(&fake.events(JOB)));
    let reported = fake
        .arrival_of(NODE, "activate", "success")
        .expect("arrival of the success");
    assert!(
        reported.duration_since(started) >= Duration::from_secs(3),
        "success was reported {:.1?} after the start, before the oneshot ended",
        reported.duration_since(started)
    );
    assert_eq!(
        user.unit_property("hat-slow.service", "ActiveState")
            .expect("show"),
        "active"
    );
}

#[test]
fn a_service_in_a_restart_loop_fails_within_the_health_timeout() {
    let w = world_with("loop");
    let user = w.user("loop");
    add_service(
        user,
        "hat-loop.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 0.3; exit 1'\nRestart=always\nRestartSec=1\n",
    );
    let (fake, ran) = activate(user, Some("5"));
    ran.expect_code(1);
    let event = terminal(&fake);
    assert_eq!(event.status, "failed", "{}", show(&fake.events(JOB)));
    eprintln!("the operator reads: {}", event.message);
    assert!(
        event.message.contains("hat-loop.service"),
        "{}",
        event.message
    );
    assert!(
        ran.elapsed < Duration::from_secs(5 + 5),
        "a 5 s health timeout, the run took {:.1?}",
        ran.elapsed
    );
    let payload = event.payload.clone().expect("payload");
    assert_eq!(
        unhealthy_units(&payload),
        vec!["hat-loop.service"],
        "{payload}"
    );
}

#[test]
fn with_the_check_off_a_crashing_service_does_not_hold_the_activation() {
    let w = world_with("off");
    let user = w.user("off");
    add_service(
        user,
        "hat-crash.service",
        "[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 3'\n",
    );
    let (fake, ran) = activate(user, Some("0"));
    ran.expect_code(0);
    assert_eq!(terminal(&fake).status, "success");
    assert!(
        ran.elapsed < Duration::from_secs(5),
        "the run took {:.1?}",
        ran.elapsed
    );
}

/// The migration where node-b's restored environment does not come up:
/// node-b reports the failed restore, node-a's deactivate fails, and the
/// environment's target keeps running (it is the one site there is).
#[test]
fn a_migration_whose_new_node_fails_its_health_check_keeps_the_old_site_up() {
    let w = world(&[UserSpec::new("mig").backups(&[KEY])]);
    let user = w.user("mig");
    let _plans = node_run::PlanDir::clearing_stale(user);
    let marker = format!("marker-{}", random_hex(24));
    user.write_file(
        &format!("data/{KEY}/marker.txt"),
        &format!("{marker}\n"),
        0o644,
    )
    .expect("marker");
    user.write_file(
        ".local/bin/activate",
        &restoring_activate(KEY, &marker, true),
        0o755,
    )
    .expect("activate");
    node_run::start_target(user);
    // The restored environment's new service crashes on node-b.
    add_service(
        user,
        "hat-crash.service",
        "[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 3'\n",
    );
    user.daemon_reload().expect("daemon-reload");

    let fake = node_run::migration_provider(
        JOB,
        SHA,
        &user.name,
        KEY,
        (NODE, TOKEN),
        (OTHER, OTHER_TOKEN),
    )
    .start();
    let config = |node, token| NodeConfig {
        node,
        sha: SHA,
        token,
        action_timeout: 60,
        target_observe_timeout: 60,
        intent_wait: 10,
        extra_env: &[],
        stdin: None,
        state: None,
        run_timeout: None,
    };
    let run_a = spawn(&fake, &config(NODE, TOKEN));
    let run_b = spawn(&fake, &config(OTHER, OTHER_TOKEN));
    let b = run_b.wait(RUN_LIMIT);
    let a = run_a.wait(RUN_LIMIT);
    let events = fake.events(JOB);
    let context = format!("{}\n{}\n{}", a.output(), b.output(), show(&events));
    assert_eq!(b.code, Some(1), "node-b:\n{context}");
    assert_eq!(a.code, Some(1), "node-a:\n{context}");
    let restore = &events[position(&events, OTHER, "restore", "failed")];
    assert!(
        restore.message.contains("hat-crash.service") && restore.message.contains("not healthy"),
        "{context}"
    );
    // node-a's deactivate fails, naming why (the provider may have closed
    // the job by then, so it is in node-a's log, delivered or not).
    assert!(
        a.stderr
            .contains(&format!("Not deactivating {}", user.name))
            && a.stderr.contains("hat-crash.service"),
        "{context}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.node == NODE && e.is("deactivate", "success")),
        "{context}"
    );
    for unit in [HOSTENV_TARGET, TARGET_SERVICE] {
        assert_eq!(
            user.unit_property(unit, "ActiveState").expect("show"),
            "active",
            "{unit} must keep running:\n{context}"
        );
    }
}
