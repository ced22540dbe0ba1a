//! The systemd adapter (`UserBus`) against the real things: a real
//! `systemd --user` per test user on a real session bus, real unit files,
//! real restic. Needs root (see `harness`); run with
//! `cargo test --test real_node`. Each test builds its own world; the
//! harness runs them one at a time.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::thread;
use std::time::{Duration, Instant};

use hostenv_activate::adapters::systemd::UserBus;
use hostenv_activate::ports::{Cancel, JobOutcome, UnitRun, UserSystemd};

use harness::units::{
    FAILING_STATUS, FAILING_UNIT, HANGING_SLEEP, HANGING_UNIT, HOSTENV_TARGET, TARGET_SERVICE,
};
use harness::{TestUser, UserSpec, World};

/// The adapter as a run builds it, its bus helpers being the binary under
/// test (`$HOSTENV_ACTIVATE_BIN`, else cargo's build), not this test binary.
fn bus() -> UserBus {
    UserBus::new().helper_program(node_run::bin())
}

/// Bound on the adapter's reads in these tests.
const LIMIT: Duration = Duration::from_secs(30);

/// `run_unit` of `unit` as `user` within `limit`, cancelled by `cancel`.
fn run(user: &TestUser, unit: &str, limit: Duration, cancel: &Cancel) -> UnitRun {
    bus()
        .run_unit(&user.account(), unit, limit, cancel)
        .expect("run_unit")
}

/// How a job that ended `failed` is reported.
fn failed_job() -> JobOutcome {
    JobOutcome::Failed {
        job_result: "failed".into(),
    }
}

fn world(specs: &[UserSpec]) -> World {
    World::up(specs).unwrap_or_else(|e| panic!("cannot bring up the real test node: {e:#}"))
}

fn settled(state: &str) -> bool {
    matches!(state, "inactive" | "failed")
}

/// No process of `user` is still running `sleep <HANGING_SLEEP>`.
fn assert_no_hanging_process(user: &TestUser) {
    let left: Vec<_> = user
        .processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("sleep") && cmd.contains(HANGING_SLEEP))
        .collect();
    assert!(
        left.is_empty(),
        "hanging unit left processes behind: {left:?}"
    );
}

#[test]
fn load_state_tells_loaded_from_not_found() {
    let w = world(&[UserSpec::new("a").backups(&["app"])]);
    let a = w.user("a").account();
    let bus = bus();
    assert_eq!(
        bus.load_state(&a, "restic-backups-app.service", LIMIT)
            .expect("load_state"),
        "loaded"
    );
    assert_eq!(
        bus.load_state(&a, "restic-backups-nope.service", LIMIT)
            .expect("load_state"),
        "not-found"
    );
}

#[test]
fn run_unit_runs_a_real_restic_backup() {
    let w = world(&[UserSpec::new("a").backups(&["app"])]);
    let user = w.user("a");
    let run = run(
        user,
        "restic-backups-app.service",
        Duration::from_secs(60),
        &Cancel::new(),
    );
    assert_eq!(
        run.outcome,
        JobOutcome::Done,
        "{run:?}\n{}",
        user.manager_log()
    );
    assert_eq!(run.status.result.as_deref(), Some("success"));
    assert_eq!(run.status.exec_main_status, Some(0));
    assert_eq!(run.status.active_state.as_deref(), Some("inactive"));

    let snapshots = user.restic_snapshots("app").expect("restic snapshots");
    let list = snapshots.as_array().expect("snapshots is a JSON array");
    assert_eq!(list.len(), 1, "{snapshots}");
    let id = list[0]["id"].as_str().expect("snapshot id");
    assert_eq!(id.len(), 64, "full snapshot id: {id}");
    assert!(list[0]["tags"].to_string().contains("app"), "{snapshots}");
}

#[test]
fn run_unit_reports_a_failing_unit() {
    let w = world(&[UserSpec::new("a")]);
    let run = run(
        w.user("a"),
        FAILING_UNIT,
        Duration::from_secs(30),
        &Cancel::new(),
    );
    assert_eq!(run.outcome, failed_job());
    assert_eq!(run.status.result.as_deref(), Some("exit-code"));
    assert_eq!(run.status.exec_main_status, Some(FAILING_STATUS));
    assert_eq!(run.status.active_state.as_deref(), Some("failed"));
    assert_eq!(run.status.sub_state.as_deref(), Some("failed"));
}

/// A unit systemd collects as soon as it ends, even when it failed
/// (`CollectMode=inactive-or-failed`): its state read after the job must be
/// how this run ended, not the defaults of a fresh load of its file.
#[test]
fn run_unit_reads_how_the_run_ended_even_when_systemd_collects_the_unit_at_once() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let unit = "collected-at-once.service";
    user.write_unit(
        unit,
        "[Unit]\nCollectMode=inactive-or-failed\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 7'\n",
    )
    .expect("unit");
    user.daemon_reload().expect("daemon-reload");
    let run = run(user, unit, Duration::from_secs(30), &Cancel::new());
    assert_eq!(run.outcome, failed_job(), "{run:?}\n{}", user.manager_log());
    assert_eq!(run.status.result.as_deref(), Some("exit-code"), "{run:?}");
    assert_eq!(run.status.exec_main_status, Some(7), "{run:?}");
    assert_eq!(
        run.status.active_state.as_deref(),
        Some("failed"),
        "{run:?}"
    );
}

#[test]
fn run_unit_times_out_and_stops_the_unit() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let started = Instant::now();
    let run = run(user, HANGING_UNIT, Duration::from_secs(1), &Cancel::new());
    eprintln!("timed out run: {run:?} after {:?}", started.elapsed());
    assert_eq!(run.outcome, JobOutcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let state = run.status.active_state.clone().unwrap_or_default();
    assert!(settled(&state), "adapter saw {run:?}");
    let seen = user
        .unit_property(HANGING_UNIT, "ActiveState")
        .expect("systemctl show");
    assert!(settled(&seen), "systemctl says {seen}");
    assert_no_hanging_process(user);
}

#[test]
fn run_unit_is_interrupted_by_cancel() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(700));
        trigger.cancel();
    });
    let started = Instant::now();
    let run = run(user, HANGING_UNIT, Duration::from_secs(60), &cancel);
    canceller.join().expect("canceller thread");
    assert_eq!(run.outcome, JobOutcome::Interrupted);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let seen = user
        .unit_property(HANGING_UNIT, "ActiveState")
        .expect("systemctl show");
    assert!(settled(&seen), "systemctl says {seen}");
    assert_no_hanging_process(user);
}

#[test]
fn run_unit_stops_the_unit_when_the_bus_connection_is_lost() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let account = user.account();
    let runner = thread::spawn(move || {
        bus().run_unit(
            &account,
            HANGING_UNIT,
            Duration::from_secs(60),
            &Cancel::new(),
        )
    });
    // Wait for the unit to run, then kill the user's dbus-daemon under it.
    let deadline = Instant::now() + Duration::from_secs(10);
    // (`.ok()`: a command forked while the runner holds the user's effective
    // uid for its connect() fails; the next poll is fine.)
    while user
        .unit_property(HANGING_UNIT, "ActiveState")
        .ok()
        .as_deref()
        != Some("activating")
    {
        assert!(Instant::now() < deadline, "{HANGING_UNIT} never started");
        thread::sleep(Duration::from_millis(100));
    }
    let daemons: Vec<i32> = user
        .processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("dbus-daemon"))
        .map(|(pid, _)| pid)
        .collect();
    assert!(!daemons.is_empty(), "no dbus-daemon for the user");
    for pid in daemons {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .expect("kill dbus-daemon");
    }
    let err = runner
        .join()
        .expect("runner thread")
        .expect_err("a lost bus is an error");
    let text = format!("{err:#}");
    assert!(text.contains("lost the connection"), "{text}");
    assert!(text.contains("the unit was then stopped"), "{text}");
    let seen = user
        .unit_property(HANGING_UNIT, "ActiveState")
        .expect("systemctl show");
    assert!(settled(&seen), "systemctl says {seen}");
    assert_no_hanging_process(user);
}

#[test]
fn stop_unit_stops_hostenv_target_and_its_service() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let ran = user
        .systemctl(&["start", HOSTENV_TARGET])
        .expect("systemctl");
    assert!(ran.ok(), "start {HOSTENV_TARGET}: {}", ran.stderr);
    assert_eq!(
        user.unit_property(TARGET_SERVICE, "ActiveState")
            .expect("show"),
        "active"
    );
    bus()
        .stop_unit(
            &user.account(),
            HOSTENV_TARGET,
            Duration::from_secs(90),
            &Cancel::new(),
        )
        .expect("stop_unit");
    assert_eq!(
        user.unit_property(HOSTENV_TARGET, "ActiveState")
            .expect("show"),
        "inactive"
    );
    assert_eq!(
        user.unit_property(TARGET_SERVICE, "ActiveState")
            .expect("show"),
        "inactive"
    );
}

#[test]
fn stop_unit_of_a_missing_unit_is_fine() {
    let w = world(&[UserSpec::new("a").without_test_units()]);
    bus()
        .stop_unit(
            &w.user("a").account(),
            HOSTENV_TARGET,
            Duration::from_secs(90),
            &Cancel::new(),
        )
        .expect("stopping a unit that does not exist is not an error");
}

#[test]
fn reload_manager_reloads_changed_unit_files() {
    let w = world(&[UserSpec::new("a")]);
    let user = w.user("a");
    let bus = bus();
    let account = user.account();
    assert_eq!(
        bus.load_state(&account, FAILING_UNIT, LIMIT).expect("load"),
        "loaded"
    );
    // Keep the unit in memory (a started unit stays loaded in `failed`).
    let _ = user.systemctl(&["start", FAILING_UNIT]);
    // Make the file newer than the loaded unit.
    thread::sleep(Duration::from_millis(1100));
    user.write_unit(
        FAILING_UNIT,
        &harness::units::failing_unit().replace("fails on purpose", "fails, edited"),
    )
    .expect("rewrite unit");
    assert_eq!(
        user.unit_property(FAILING_UNIT, "NeedDaemonReload")
            .expect("show"),
        "yes"
    );
    bus.reload_manager(&account, LIMIT).expect("reload_manager");
    assert_eq!(
        user.unit_property(FAILING_UNIT, "NeedDaemonReload")
            .expect("show"),
        "no"
    );
    assert_eq!(
        user.unit_property(FAILING_UNIT, "Description")
            .expect("show"),
        "hostenv test: fails, edited"
    );
}

#[test]
fn list_units_lists_the_loaded_backup_units() {
    let w = world(&[UserSpec::new("a").backups(&["app", "db", "idle"])]);
    let user = w.user("a");
    // A unit file that does not load (a service without ExecStart).
    user.write_unit(
        "restic-backups-broken.service",
        "[Unit]\nDescription=broken\n[Service]\nType=oneshot\n",
    )
    .expect("write unit");
    // In memory, as a node's backup units are through their timers: wanted
    // by the active default.target. `idle` is only a unit file.
    user.write_unit(
        "default.target.d/hat-backups.conf",
        "[Unit]\nWants=restic-backups-app.service restic-backups-db.service restic-backups-broken.service\n",
    )
    .expect("write drop-in");
    user.daemon_reload().expect("daemon-reload");
    let names = bus()
        .list_units(&user.account(), "restic-backups-", LIMIT)
        .expect("list_units");
    assert_eq!(
        names.names,
        vec![
            "restic-backups-app.service".to_owned(),
            "restic-backups-db.service".to_owned()
        ]
    );
    assert_eq!(names.more, 0);
}

#[test]
fn a_missing_bus_names_the_user_and_what_to_check() {
    let w = world(&[UserSpec::new("a").without_manager()]);
    let account = w.user("a").account();
    let err = bus()
        .load_state(&account, FAILING_UNIT, LIMIT)
        .expect_err("no manager, no system bus here: must fail");
    let text = format!("{err:#}");
    eprintln!("the operator reads: {text}");
    for needle in [
        account.name.as_str(),
        &format!("uid {}", account.uid),
        &format!("user@{}.service", account.uid),
        "enable-linger",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
}

#[test]
fn root_cannot_use_the_users_bus_without_switching_credentials() {
    use std::os::unix::net::UnixStream;
    use zbus::blocking::connection::Builder;

    let w = world(&[UserSpec::new("a").without_test_units()]);
    let user = w.user("a");
    let address = format!("unix:path={}", user.bus_path().display());

    // Root, straight to the bus: dbus-daemon drops the connection.
    let direct = Builder::address(address.as_str())
        .expect("address")
        .method_timeout(Duration::from_secs(10))
        .build();
    assert!(direct.is_err(), "root connected to the user's bus");

    // Root's socket, claiming the user's uid: rejected at authentication.
    let stream = UnixStream::connect(user.bus_path()).expect("connect as root");
    let claimed = Builder::async_io_unix_stream(stream)
        .user_id(user.uid)
        .method_timeout(Duration::from_secs(10))
        .build();
    assert!(claimed.is_err(), "root's socket passed as the user");

    // The adapter's way (connect with the user's effective uid) works.
    assert_eq!(
        bus()
            .load_state(&user.account(), "dbus.socket", LIMIT)
            .expect("via UserBus"),
        "loaded"
    );
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

#[test]
fn calls_leave_no_threads_or_connections_behind() {
    let w = world(&[UserSpec::new("a")]);
    let account = w.user("a").account();
    let bus = bus();
    // The first call starts zbus's process-wide threads.
    bus.load_state(&account, FAILING_UNIT, LIMIT)
        .expect("load_state");
    thread::sleep(Duration::from_millis(300));
    let (threads_before, fds_before) = (thread_names(), open_fds());
    for _ in 0..3 {
        bus.load_state(&account, FAILING_UNIT, LIMIT)
            .expect("load_state");
        bus.run_unit(
            &account,
            FAILING_UNIT,
            Duration::from_secs(30),
            &Cancel::new(),
        )
        .expect("run_unit");
    }
    bus.run_unit(
        &account,
        HANGING_UNIT,
        Duration::from_millis(300),
        &Cancel::new(),
    )
    .expect("run_unit with a timeout");
    bus.stop_unit(
        &account,
        HOSTENV_TARGET,
        Duration::from_secs(90),
        &Cancel::new(),
    )
    .expect("stop_unit");
    // Sockets and reader threads end asynchronously, shortly after each call.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut threads, mut fds) = (thread_names(), open_fds());
    while (threads.len() > threads_before.len() || fds.len() > fds_before.len())
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(100));
        (threads, fds) = (thread_names(), open_fds());
    }
    assert!(
        threads.len() <= threads_before.len(),
        "threads before: {threads_before:?}\nafter: {threads:?}"
    );
    assert!(
        fds.len() <= fds_before.len(),
        "open files before: {fds_before:?}\nafter: {fds:?}"
    );
}

/// What this process's file descriptors point at.
fn open_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .map(|f| format!("{:?}", std::fs::read_link(f.path())))
        .collect()
}

/// A helper program that notes each start in `log`, then is the binary
/// under test (it runs as the user: the log is writable by all).
fn counting_helper(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("starts");
    std::fs::write(&log, "").expect("log");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod log");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let wrapper = dir.join("helper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho start >> {}\nexec {} \"$@\"\n",
            log.display(),
            node_run::bin().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("chmod wrapper");
    (wrapper, log)
}

/// How many helpers have started, once that number has stopped changing.
fn helpers_started(log: &std::path::Path) -> usize {
    let count = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let mut seen = count();
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = count();
        if now == seen {
            return now;
        }
        seen = now;
    }
}

#[test]
fn the_calls_of_an_action_share_one_bus_helper() {
    let w = world(&[UserSpec::new("a").backups(&["app"])]);
    let user = w.user("a");
    let a = user.account();
    let dir = tempfile::tempdir().expect("tempdir");
    let (wrapper, log) = counting_helper(dir.path());
    let bus = UserBus::new().helper_program(&wrapper);
    const UNIT: &str = "restic-backups-app.service";

    // A backup's calls: reads, then the run, in one helper.
    assert_eq!(bus.load_state(&a, UNIT, LIMIT).expect("load"), "loaded");
    assert_eq!(
        bus.load_state(&a, "restic-backups-nope.service", LIMIT)
            .expect("load"),
        "not-found"
    );
    bus.list_units(&a, "restic-backups-", LIMIT).expect("list");
    let run = bus
        .run_unit(&a, UNIT, Duration::from_secs(60), &Cancel::new())
        .expect("run_unit");
    assert_eq!(run.outcome, JobOutcome::Done, "{}", user.manager_log());
    assert_eq!(helpers_started(&log), 1, "one helper for four calls");

    // A run leaves its job watch behind: its helper is not kept.
    assert_eq!(bus.load_state(&a, UNIT, LIMIT).expect("load"), "loaded");
    assert_eq!(helpers_started(&log), 2);

    // `prepare` for a user whose helper is kept starts nothing; for
    // another moment (nothing kept) it starts one ahead, which the health
    // check then uses.
    bus.prepare(&a);
    assert_eq!(helpers_started(&log), 2, "the kept helper is ready already");
    bus.run_unit(&a, UNIT, Duration::from_secs(60), &Cancel::new())
        .expect("run_unit");
    bus.prepare(&a);
    assert_eq!(helpers_started(&log), 3, "started ahead");
    let health = bus
        .check_health(&a, Duration::from_secs(30), &Cancel::new())
        .expect("health");
    assert!(
        matches!(health, hostenv_activate::ports::Health::Healthy { .. }),
        "{health:?}"
    );
    assert_eq!(helpers_started(&log), 3, "the health check used it");

    // Nothing is left running once the adapter is gone.
    bus.load_state(&a, UNIT, LIMIT).expect("load");
    drop(bus);
    let deadline = Instant::now() + Duration::from_secs(5);
    let helpers = || {
        user.processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("__user-bus-helper"))
            .collect::<Vec<_>>()
    };
    while !helpers().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(helpers().is_empty(), "{:?}", helpers());
}

#[test]
fn a_health_check_prepared_ahead_looks_at_what_the_targets_want_when_it_runs() {
    let w = world(&[UserSpec::new("g")]);
    let user = w.user("g");
    let a = user.account();
    user.write_unit(
        "early.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .expect("unit");
    user.write_unit(
        "default.target.d/early.conf",
        "[Unit]\nWants=early.service\n",
    )
    .expect("drop-in");
    user.daemon_reload().expect("daemon-reload");
    user.systemctl(&["start", "early.service"]).expect("start");
    let bus = bus();
    // The helper starts ahead and connects while the targets want only
    // early.service (settled by the time of the check: more than the 2 s
    // of a second look since it started)...
    bus.prepare(&a);
    thread::sleep(Duration::from_millis(2500));
    // ...then the user's program adds a service that fails to
    // default.target, as an activation may.
    user.write_unit("late.service", "[Service]\nExecStart=/bin/false\n")
        .expect("unit");
    user.write_unit("default.target.d/late.conf", "[Unit]\nWants=late.service\n")
        .expect("drop-in");
    user.daemon_reload().expect("daemon-reload");
    user.systemctl(&["start", "late.service"]).expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !user
        .systemctl(&["is-failed", "late.service"])
        .is_ok_and(|ran| ran.ok())
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(100));
    }
    let health = bus
        .check_health(&a, Duration::from_secs(10), &Cancel::new())
        .expect("health");
    let hostenv_activate::ports::Health::Unhealthy { units } = &health else {
        panic!("the service added after the helper connected is seen: {health:?}");
    };
    assert!(units.iter().any(|u| u.unit == "late.service"), "{units:?}");
    // Prepared again with nothing changed since: the same.
    bus.prepare(&a);
    thread::sleep(Duration::from_millis(500));
    let again = bus
        .check_health(&a, Duration::from_secs(10), &Cancel::new())
        .expect("health");
    assert_eq!(again, health);
}
