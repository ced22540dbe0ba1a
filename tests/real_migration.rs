//! The shipped binary on a real node, the way comin runs it: as root, with
//! nothing but its configuration in the environment, against the fake
//! provider, performing its actions through a real `systemd --user`, real
//! D-Bus and real restic (see `harness`). Needs root; run with
//! `cargo test --test real_migration`.
//!
//! - The user's migration demo end to end: two concurrent runs of the
//!   binary (`node-a` backs up and deactivates, `node-b` restores and
//!   activates) against one provider job and one restic repository; and the
//!   same migration when `node-a`'s backup fails.
//! - The token never shows in any process's command line or environment.
//! - SIGTERM while an activation hangs, and while a backup unit hangs.
//!
//! Both "nodes" of the migration run on this one machine. The provider
//! finds the backup for the restoring node by user name, so the environment
//! has the same account on both: one harness user, one repository, one
//! `~/.local/bin/activate` that restores from the plan like a hostenv
//! environment's activation does.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use fake_provider::{FakeHandle, FakeProvider, JobState, Route};
use harness::units::{HOSTENV_TARGET, TARGET_SERVICE};
use harness::{TestUser, UserSpec};
use node_run::{
    intent, position, processes_matching, random_hex, restoring_activate, settled, show, spawn,
    start_target, world, Finished, NodeConfig, PlanDir, Running,
};

const SHA: &str = "5eedc0ffee";
const JOB: &str = "job-migrate";
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";
/// The demo's migration key: `restic-backups-drupal-migrate.service`.
const KEY: &str = "drupal-migrate";
/// Where the environment's data lives, relative to its home (harness layout).
const MARKER_REL: &str = "data/drupal-migrate/marker.txt";
/// Bound on one run of the binary in these tests.
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// What behaviour.md allows for a SIGTERM to end the run.
const STOP_LIMIT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ support

/// Waits until `done` holds, at most `limit`; panics naming `what`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up after {}s waiting for {what}",
            limit.as_secs()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `node`'s configuration, the way comin's wrapper gives it: only its
/// configuration in the environment, stdin /dev/null.
fn node_config<'a>(node: &'a str, token: &'a str, action_timeout: u64) -> NodeConfig<'a> {
    NodeConfig {
        node,
        sha: SHA,
        token,
        action_timeout,
        target_observe_timeout: 60,
        intent_wait: 10,
        extra_env: &[],
        stdin: None,
        state: None,
        run_timeout: None,
    }
}

/// One action of the migration from node-a to node-b.
fn action(op: &str, user: &str, migrations: &[&str]) -> Value {
    node_run::action(op, user, migrations, Some(NODE_A), Some(NODE_B))
}

/// A provider whose job has node-a activate `user` with `token`.
fn activate_provider(user: &str, token: &str) -> FakeHandle {
    FakeProvider::builder()
        .node(NODE_A, token)
        .job(
            JOB,
            SHA,
            [(NODE_A, intent(vec![action("activate", user, &[])]))],
        )
        .start()
}

/// A provider with the demo's migration job: `node-a` backs up and then
/// deactivates `user`, `node-b` restores and then activates it.
fn migration_provider(user: &str, token_a: &str, token_b: &str) -> FakeHandle {
    node_run::migration_provider(JOB, SHA, user, KEY, (NODE_A, token_a), (NODE_B, token_b)).start()
}

/// Starts the user's `hostenv.target` and checks it is active.
fn start_target_active(user: &TestUser) {
    start_target(user);
    assert_eq!(
        user.unit_property(HOSTENV_TARGET, "ActiveState")
            .expect("show"),
        "active"
    );
}

// ------------------------------------------------------------ /proc

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/<pid>/<file>`, if the process still exists.
fn proc_bytes(pid: i32, file: &str) -> Option<Vec<u8>> {
    fs::read(format!("/proc/{pid}/{file}")).ok()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root`.
fn descendants(root: i32) -> BTreeSet<i32> {
    let parents: BTreeMap<i32, i32> = pids()
        .into_iter()
        .filter_map(|p| ppid(p).map(|pp| (p, pp)))
        .collect();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&child, &pp) in &parents {
            if pp == parent && found.insert(child) {
                frontier.push(child);
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn cmdline(pid: i32) -> String {
    proc_bytes(pid, "cmdline")
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

// ------------------------------------------------------------ 1. migration

/// The user's demo: node-a backs up the environment and deactivates it
/// only once node-b has restored that very snapshot and activated.
#[test]
fn migration_moves_the_environment_data_from_node_a_to_node_b() {
    let w = world(&[UserSpec::new("mig").backups(&[KEY])]);
    let user = w.user("mig");
    let plans = PlanDir::clearing_stale(user);
    let marker = format!("marker-{}", random_hex(24));
    user.write_file(MARKER_REL, &format!("{marker}\n"), 0o644)
        .expect("marker");
    user.write_file(
        ".local/bin/activate",
        &restoring_activate(KEY, &marker, false),
        0o755,
    )
    .expect("activate");
    start_target_active(user);

    let (token_a, token_b) = (
        format!("tok-a-{}", random_hex(20)),
        format!("tok-b-{}", random_hex(20)),
    );
    let fake = migration_provider(&user.name, &token_a, &token_b);
    let started = Instant::now();
    let run_a = spawn(&fake, &node_config(NODE_A, &token_a, 60));
    let run_b = spawn(&fake, &node_config(NODE_B, &token_b, 60));
    let b = run_b.wait(RUN_LIMIT);
    let a = run_a.wait(RUN_LIMIT);
    eprintln!(
        "migration took {:.1?}\n{}\n{}",
        started.elapsed(),
        a.output(),
        b.output()
    );
    let events = fake.events(JOB);
    let context = format!("{}\n{}\nevents:\n{}", a.output(), b.output(), show(&events));
    assert_eq!(a.code, Some(0), "node-a:\n{context}");
    assert_eq!(b.code, Some(0), "node-b:\n{context}");
    for out in [&a, &b] {
        for token in [&token_a, &token_b] {
            out.expect_no_token(token);
        }
    }

    // node-a posted the snapshot it made, and it is the repository's newest.
    let backup = &events[position(&events, NODE_A, "backup", "success")];
    let payload = backup.payload.clone().expect("backup payload");
    assert_eq!(payload["user"], json!(user.name), "{payload}");
    assert_eq!(payload["sourceNode"], json!(NODE_A), "{payload}");
    let posted_id = payload["snapshots"][KEY]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot for {KEY} in {payload}"))
        .to_owned();
    assert_eq!(posted_id.len(), 64, "full snapshot id: {posted_id}");
    let snapshots = user.restic_snapshots(KEY).expect("restic snapshots");
    let in_repo: Vec<&str> = snapshots
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(in_repo, vec![posted_id.as_str()], "{snapshots}");

    // node-b's activation restored exactly that snapshot and found the marker.
    let log = fs::read_to_string(user.home.join("activate.log")).expect("activate.log");
    let lines: Vec<&str> = log.lines().collect();
    // Once for the restore action, once for the activate action.
    assert_eq!(lines.len(), 2, "activate.log:\n{log}\n{context}");
    for line in &lines {
        assert_eq!(
            *line,
            format!("restored {posted_id} marker-ok {marker}"),
            "activate.log:\n{log}"
        );
    }
    let plan = fs::read_to_string(plans.plan()).expect("the restore plan");
    let plan: Value = serde_json::from_str(&plan).expect("plan.json is JSON");
    assert_eq!(
        plan,
        json!({"sourceNode": NODE_A, "snapshots": {KEY: posted_id}})
    );

    // The order the provider saw.
    let a_backed_up = position(&events, NODE_A, "backup", "success");
    let b_restoring = position(&events, NODE_B, "restore", "running");
    assert!(a_backed_up < b_restoring, "events:\n{}", show(&events));
    let b_activated = position(&events, NODE_B, "activate", "success");
    let a_deactivating = position(&events, NODE_A, "deactivate", "running");
    assert!(b_activated < a_deactivating, "events:\n{}", show(&events));
    let a_deactivated = position(&events, NODE_A, "deactivate", "success");
    let last_of_b = events
        .iter()
        .rposition(|e| e.node == NODE_B)
        .expect("node-b events");
    assert!(last_of_b < a_deactivated, "events:\n{}", show(&events));
    assert!(
        events[last_of_b].is("intent", "success"),
        "events:\n{}",
        show(&events)
    );
    let last = events.last().expect("events");
    assert!(
        last.node == NODE_A && last.is("intent", "success"),
        "events:\n{}",
        show(&events)
    );
    // One terminal event per action, nothing failed.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.status.as_str(), "failed" | "timed_out")),
        "events:\n{}",
        show(&events)
    );
    assert_eq!(
        fake.job_state(JOB),
        JobState::Success,
        "{:?}",
        fake.actions(JOB)
    );
    assert!(fake.actions(JOB).iter().all(|r| r.status == "success"));

    // node-a took the environment down.
    for unit in [HOSTENV_TARGET, TARGET_SERVICE] {
        assert_eq!(
            user.unit_property(unit, "ActiveState").expect("show"),
            "inactive",
            "{unit} after the deactivation"
        );
    }
}

/// What the migration with a failing backup on node-a left behind.
struct FailedMigration {
    fake: FakeHandle,
    a: Finished,
    b: Finished,
    /// From node-a's exit to node-b's.
    b_after_a: Duration,
}

impl FailedMigration {
    fn context(&self) -> String {
        format!(
            "{}\n{}\nevents:\n{}",
            self.a.output(),
            self.b.output(),
            show(&self.fake.events(JOB))
        )
    }
}

/// The demo's migration, but `restic-backups-drupal-migrate.service` fails
/// (exit 7). node-b is started first and is already waiting for the backup
/// when node-a runs: a job that has failed is no longer served to a node
/// that looks it up late, and the point is how a *waiting* node reacts.
fn failed_backup_migration(user: &TestUser) -> FailedMigration {
    user.write_file(MARKER_REL, "marker\n", 0o644)
        .expect("marker");
    user.write_file(
        ".local/bin/activate",
        &restoring_activate(KEY, "marker", false),
        0o755,
    )
    .expect("activate");
    user.write_unit(
        &format!("restic-backups-{KEY}.service"),
        "[Unit]\nDescription=broken backup\n\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'echo repository unreachable; exit 7'\n",
    )
    .expect("failing backup unit");
    user.daemon_reload().expect("daemon-reload");
    start_target_active(user);

    let (token_a, token_b) = (
        format!("tok-a-{}", random_hex(20)),
        format!("tok-b-{}", random_hex(20)),
    );
    let fake = migration_provider(&user.name, &token_a, &token_b);
    // A long action timeout: giving up "at once" must not mean "at the timeout".
    let action_timeout = 120;
    let run_b = spawn(&fake, &node_config(NODE_B, &token_b, action_timeout));
    wait_until(
        Duration::from_secs(20),
        "node-b to wait for the backup",
        || {
            fake.events(JOB)
                .iter()
                .any(|e| e.node == NODE_B && e.is("restore", "waiting"))
        },
    );
    let run_a = spawn(&fake, &node_config(NODE_A, &token_a, action_timeout));
    let a = run_a.wait(RUN_LIMIT);
    let a_done = Instant::now();
    let b = run_b.wait(RUN_LIMIT);
    let b_after_a = a_done.elapsed();
    FailedMigration {
        fake,
        a,
        b,
        b_after_a,
    }
}

/// node-a's backup unit fails: node-b, waiting for the snapshot, gives up
/// at once (not at its timeout), and node-a never takes the site down.
#[test]
fn a_failed_backup_on_node_a_stops_the_restore_on_node_b_and_keeps_the_site_up() {
    let w = world(&[UserSpec::new("migf").backups(&[KEY])]);
    let user = w.user("migf");
    let plans = PlanDir::clearing_stale(user);
    let run = failed_backup_migration(user);
    let (fake, a, b, b_after_a) = (&run.fake, &run.a, &run.b, run.b_after_a);
    let events = fake.events(JOB);
    let context = run.context();
    eprintln!("{context}\nnode-b ended {b_after_a:.1?} after node-a");
    a.expect_code(1);
    b.expect_code(1);

    let failed = &events[position(&events, NODE_A, "backup", "failed")];
    assert!(
        failed
            .message
            .contains(&format!("restic-backups-{KEY}.service")),
        "{context}"
    );
    assert_eq!(
        failed.payload.as_ref().map(|p| p["execMainStatus"].clone()),
        Some(json!(7)),
        "{context}"
    );
    // node-b gave up within a couple of polls, far from its 120 s timeout.
    assert!(
        b_after_a < Duration::from_secs(15),
        "node-b took {b_after_a:?} after node-a's failure:\n{context}"
    );
    // Its one terminal restore event says node-a failed. The provider had
    // already closed the job (node-a's failure), so it answered 409 and
    // node-b stopped there.
    let b_restore_terminal: Vec<_> = fake
        .requests_to(Route::Events)
        .into_iter()
        .filter(|r| {
            let p = r.body_json();
            p["node"] == NODE_B
                && p["phase"] == "restore"
                && !matches!(p["status"].as_str(), Some("waiting" | "running"))
        })
        .collect();
    assert_eq!(b_restore_terminal.len(), 1, "{context}");
    let terminal = b_restore_terminal[0].body_json();
    assert_eq!(terminal["status"], "failed", "{terminal}");
    let message = terminal["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(NODE_A) && message.contains("failed"),
        "node-b's restore should say that {NODE_A} failed: {message}"
    );
    assert_eq!(b_restore_terminal[0].status, 409, "{context}");
    assert!(b.stderr.contains("closed job"), "{context}");
    // Nothing restored, nothing activated on node-b.
    assert!(
        !user.home.join("activate.log").exists(),
        "activate ran on node-b"
    );
    assert!(!plans.plan().exists(), "a restore plan was written");
    assert!(
        !fake
            .posted()
            .iter()
            .any(|p| p["node"] == NODE_B && p["phase"] == "activate"),
        "{context}"
    );
    // node-a did not deactivate: the site is still up.
    assert!(
        !fake
            .posted()
            .iter()
            .any(|p| p["node"] == NODE_A && p["phase"] == "deactivate"),
        "{context}"
    );
    assert_eq!(
        user.unit_property(HOSTENV_TARGET, "ActiveState")
            .expect("show"),
        "active"
    );
    assert_eq!(fake.job_state(JOB), JobState::Failed);
}

/// An event the provider refuses (409 here: node-a's failure closed the job)
/// still reaches the log with its reason, so the operator of node-b learns
/// *why* its restore failed, not only that the job was closed.
#[test]
fn a_terminal_event_the_provider_refuses_is_still_logged_with_its_reason() {
    let w = world(&[UserSpec::new("migl").backups(&[KEY])]);
    let user = w.user("migl");
    let _plans = PlanDir::clearing_stale(user);
    let run = failed_backup_migration(user);
    run.b.expect_code(1);
    assert!(
        run.b
            .stderr
            .contains(&format!("source node {NODE_A} failed")),
        "node-b's log does not say why its restore failed:\n{}",
        run.context()
    );
}

// ------------------------------------------------------------ 2. token

/// While the run is inside the user's activate (and its child), the token
/// is in no process's command line and in no environment; the activate's
/// own environment has no `HOSTENV_COMIN_*`; the output does not show it.
#[test]
fn the_token_is_in_no_command_line_and_no_environment_during_a_run() {
    let w = world(&[UserSpec::new("tok").without_test_units()]);
    let user = w.user("tok");
    user.write_file(
        ".local/bin/activate",
        "#!/bin/sh\nenv > \"$HOME/activate.env\"\nsleep 3 &\n\
         touch \"$HOME/activate.started\"\nwait\n",
        0o755,
    )
    .expect("activate");
    let token = format!("tok-{}-SECRET-{}", random_hex(16), random_hex(16));
    let fake = activate_provider(&user.name, &token);
    let mut run = spawn(&fake, &node_config(NODE_A, &token, 60));
    let started_flag = user.home.join("activate.started");
    wait_until(Duration::from_secs(20), "the activate to start", || {
        started_flag.exists() || run.has_exited()
    });
    assert!(started_flag.exists(), "the activate never ran");

    // Scan for ~2 s while activate and its `sleep 3` run.
    let binary = run.pid();
    let mut seen_children: BTreeSet<String> = BTreeSet::new();
    let mut scans = 0;
    let scan_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < scan_until && !run.has_exited() {
        scans += 1;
        for pid in pids() {
            if let Some(argv) = proc_bytes(pid, "cmdline") {
                assert!(
                    !contains(&argv, &token),
                    "the token is in the command line of pid {pid}: {}",
                    cmdline(pid)
                );
            }
            if let Some(env) = proc_bytes(pid, "environ") {
                assert!(
                    !contains(&env, &token),
                    "the token is in the environment of pid {pid} ({})",
                    cmdline(pid)
                );
            }
        }
        // Ours, and the user's processes but those its own systemd started
        // (its dbus-daemon, say, which systemd hands NOTIFY_SOCKET itself).
        let managed = user
            .manager_pid()
            .map(|m| descendants(m as i32))
            .unwrap_or_default();
        let mut watched: BTreeSet<i32> = descendants(binary);
        watched.extend(
            user.processes()
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| !managed.contains(p)),
        );
        for pid in watched {
            let Some(env) = proc_bytes(pid, "environ") else {
                continue;
            };
            let cmd = cmdline(pid);
            assert!(
                !contains(&env, "HOSTENV_COMIN_"),
                "pid {pid} ({cmd}) has HOSTENV_COMIN_* in its environment"
            );
            assert!(
                !contains(&env, "NOTIFY_SOCKET"),
                "pid {pid} ({cmd}) inherited NOTIFY_SOCKET"
            );
            seen_children.insert(cmd);
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(scans > 3, "the run ended before the scan ({scans} scans)");
    assert!(
        seen_children.iter().any(|c| c.contains("activate"))
            && seen_children.iter().any(|c| c.contains("sleep 3")),
        "the scan did not see the activate and its child: {seen_children:?}"
    );

    let done = run.wait(RUN_LIMIT);
    done.expect_code(0).expect_no_token(&token);
    let env = fs::read_to_string(user.home.join("activate.env")).expect("activate.env");
    assert!(!env.contains(&token), "the token reached activate:\n{env}");
    assert!(
        !env.contains("HOSTENV_COMIN_"),
        "HOSTENV_COMIN_* reached activate:\n{env}"
    );
    assert!(
        env.lines().any(|l| l == format!("USER={}", user.name)),
        "activate.env is not the user's:\n{env}"
    );
    let events = fake.events(JOB);
    position(&events, NODE_A, "activate", "success");
    position(&events, NODE_A, "intent", "success");
    // The token went only where it belongs: the Authorization header.
    for req in fake.requests() {
        assert!(
            !req.raw_url.contains(&token),
            "token in URL {}",
            req.raw_url
        );
        assert!(!req.body.contains(&token), "token in a request body");
        assert_eq!(
            req.authorization.as_deref(),
            Some(format!("Bearer {token}").as_str())
        );
    }
}

// ------------------------------------------------------------ 3. SIGTERM

/// Sends `run` a SIGTERM: it must exit 1 within [`STOP_LIMIT`].
#[track_caller]
fn stop_with_sigterm(run: Running) -> Finished {
    run.sigterm();
    let signalled = Instant::now();
    let done = run.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    eprintln!("stopped {took:.1?} after SIGTERM\n{}", done.output());
    done.expect_code(1);
    assert!(
        took <= STOP_LIMIT,
        "took {took:?} to stop:\n{}",
        done.output()
    );
    done
}

/// SIGTERM while the activate hangs: the run ends the activate's whole
/// process tree, reports the action as interrupted and exits 1 within 5 s.
#[test]
fn sigterm_during_a_hanging_activate_ends_it_and_reports_the_interruption() {
    let w = world(&[UserSpec::new("term").without_test_units()]);
    let user = w.user("term");
    user.write_file(
        ".local/bin/activate",
        "#!/bin/sh\nsleep 301 &\ntouch \"$HOME/activate.started\"\nsleep 300\n",
        0o755,
    )
    .expect("activate");
    let token = format!("tok-{}", random_hex(24));
    let fake = activate_provider(&user.name, &token);
    let mut run = spawn(&fake, &node_config(NODE_A, &token, 600));
    let sleeps = ["sleep 300", "sleep 301"];
    wait_until(
        Duration::from_secs(20),
        "the activate and its child",
        || processes_matching(user, &sleeps).len() == 2 || run.has_exited(),
    );
    assert_eq!(
        processes_matching(user, &sleeps).len(),
        2,
        "activate not running"
    );

    stop_with_sigterm(run);
    let left = processes_matching(user, &sleeps);
    assert!(left.is_empty(), "the activate's tree survived: {left:?}");

    let events = fake.events(JOB);
    let failed = &events[position(&events, NODE_A, "activate", "failed")];
    assert!(
        failed.message.contains("Interrupted") && failed.message.contains("stop signal"),
        "{}",
        show(&events)
    );
    assert!(
        !events.iter().any(|e| e.is("intent", "success")),
        "{}",
        show(&events)
    );
    let terminal = events
        .iter()
        .filter(|e| e.phase == "activate" && !matches!(e.status.as_str(), "running" | "waiting"))
        .count();
    assert_eq!(terminal, 1, "{}", show(&events));
    assert_eq!(fake.job_state(JOB), JobState::Failed);
}

/// SIGTERM while a backup unit hangs: the unit is stopped (not left running
/// behind the report) and the backup is reported as interrupted.
#[test]
fn sigterm_during_a_hanging_backup_unit_stops_the_unit() {
    let key = "hang-migrate";
    let w = world(&[UserSpec::new("termb").backups(&[key]).without_test_units()]);
    let user = w.user("termb");
    let unit = format!("restic-backups-{key}.service");
    user.write_unit(
        &unit,
        "[Unit]\nDescription=backup that hangs\n\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sleep 599\n",
    )
    .expect("hanging backup unit");
    user.daemon_reload().expect("daemon-reload");
    let token = format!("tok-{}", random_hex(24));
    let fake = FakeProvider::builder()
        .node(NODE_A, &token)
        .node(NODE_B, "tok-b")
        .job(
            JOB,
            SHA,
            [
                (NODE_A, intent(vec![action("backup", &user.name, &[key])])),
                (NODE_B, intent(vec![])),
            ],
        )
        .start();
    let mut run = spawn(&fake, &node_config(NODE_A, &token, 600));
    wait_until(Duration::from_secs(20), "the backup unit to run", || {
        run.has_exited() || !processes_matching(user, &["sleep 599"]).is_empty()
    });
    assert_eq!(
        user.unit_property(&unit, "ActiveState").expect("show"),
        "activating"
    );

    stop_with_sigterm(run);
    let state = user.unit_property(&unit, "ActiveState").expect("show");
    assert!(settled(&state), "{unit} left {state}");
    let left = processes_matching(user, &["sleep 599"]);
    assert!(left.is_empty(), "the backup kept running: {left:?}");

    let events = fake.events(JOB);
    let failed = &events[position(&events, NODE_A, "backup", "failed")];
    assert!(
        failed.message.contains("Interrupted") && failed.message.contains(&unit),
        "{}",
        show(&events)
    );
    assert!(
        !events
            .iter()
            .any(|e| e.node == NODE_A && e.phase == "intent"),
        "{}",
        show(&events)
    );
    assert!(
        fake.posted()
            .iter()
            .all(|p| p["payload"]["snapshots"].is_null()),
        "a snapshot was reported for an interrupted backup"
    );
}
