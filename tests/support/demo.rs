//! `cargo run --example demo`: the program doing its real job, on this
//! machine, in about a minute. As root it builds a node world with the
//! real-node tests' harness (one environment user with its own
//! `systemd --user`, a restic repository, backup unit and wrapper, some
//! data), starts the fake provider with a deploy job and then a migration
//! job, and runs the real binary as two nodes (`node-a`, `node-b`: each its
//! own node name, state directory, run lock and metrics file). It prints
//! every event the nodes post, the snapshot, the data found on node-b,
//! `hostenv-activate status` of both nodes and their metrics files.
//!
//! The work runs in a child process of its own process group (the
//! "worker"); this process supervises it: on Ctrl-C (or SIGTERM) it kills
//! the worker's group and removes what the worker made (its users with
//! their processes, cgroups and runtime directories, the restore plan
//! directory, the temporary directory holding the nodes' state, tokens and
//! metrics). A failed step ends the worker with a message; its own teardown
//! runs, and the supervisor checks that nothing is left.
//!
//! Without root it says why and shows a dry run against the fake provider
//! instead. `tests/real_demo.rs` runs this program end to end in CI.

#[path = "../harness/mod.rs"]
mod harness;

#[path = "fake_provider.rs"]
mod fake_provider;

#[path = "node_run.rs"]
mod node_run;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{geteuid, Pid};
use serde_json::Value;

use fake_provider::{fixture_json, fixture_text, Event, FakeHandle, FakeProvider, Route};
use harness::units::HOSTENV_TARGET;
use harness::UserSpec;
use node_run::{
    action, intent, random_hex, restoring_activate, spawn, spawn_with, world, Finished, NodeConfig,
    NodeState, PlanDir, Running,
};

/// Set in the worker's environment: do the real run.
const WORKER: &str = "HOSTENV_DEMO_WORKER";
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";
const DEPLOY_SHA: &str = "c0ffee01";
const DEPLOY_JOB: &str = "job-deploy";
const MIGRATE_SHA: &str = "c0ffee02";
const MIGRATE_JOB: &str = "job-migrate";
/// The environment's migration key: `restic-backups-drupal-migrate.service`.
const KEY: &str = "drupal-migrate";
/// The environment's data, relative to its home (harness layout).
const MARKER_REL: &str = "data/drupal-migrate/marker.txt";
/// Bound on one step (one or two runs of the binary).
const STEP_LIMIT: Duration = Duration::from_secs(180);
/// Exit status after Ctrl-C, as shells report it.
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    if std::env::var_os(WORKER).is_some() {
        return worker();
    }
    if !geteuid().is_root() {
        println!(
            "== not root: the real demo creates a Unix user, runs its own systemd --user and \
             restic, and runs hostenv-activate as root the way comin does.\n   \
             Run it as root for the real migration (e.g. `sudo -E $(which cargo) run --example demo`).\n   \
             Showing the dry run instead.\n"
        );
        return match dry_run() {
            Ok(code) => code,
            Err(why) => {
                eprintln!("demo: {why}");
                ExitCode::FAILURE
            }
        };
    }
    supervise()
}

// ------------------------------------------------------------ supervisor

/// Debian packages the real run needs, by a file each one installs.
const PACKAGES: [(&str, &[&str]); 2] = [
    ("restic", &["/usr/bin/restic"]),
    (
        "dbus-user-session",
        &[
            "/usr/lib/systemd/user/dbus.socket",
            "/lib/systemd/user/dbus.socket",
        ],
    ),
];

/// Installs what is missing of [`PACKAGES`] with apt-get, as `.ci/run`
/// does, saying so.
fn install_missing() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(package, files)| {
            let installed = files.iter().any(|f| Path::new(f).exists())
                || (*package == "restic" && on_path("restic"));
            !installed
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    println!(
        "== installing {list} (apt-get install -y {list}, as .ci/run does): the demo needs it"
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run apt-get (install {list} yourself): {e}"))
            .and_then(|status| {
                if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "apt-get {} failed ({status}): install {list} yourself",
                        args.join(" ")
                    ))
                }
            })
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&missing);
    apt(&install)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs the worker in its own process group and cleans up after it.
fn supervise() -> ExitCode {
    let started = Instant::now();
    if let Err(why) = install_missing() {
        eprintln!("demo: {why}");
        return ExitCode::FAILURE;
    }
    let tmp = match tempfile::Builder::new().prefix("hostenv-demo-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("demo: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("demo: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let plan_root = Path::new("/run/hostenv");
    let plan_root_existed = plan_root.exists();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("demo: cannot find the demo's own path: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Its own process group: Ctrl-C reaches this process only, which then
    // ends the whole group at once.
    let mut child = match Command::new(exe)
        .env(WORKER, "1")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("demo: cannot start the demo's worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("cannot wait for the demo's worker: {e}")),
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("\n== interrupted: stopping the demo and removing what it made");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.wait();
            break Err("interrupted".to_owned());
        }
        thread::sleep(Duration::from_millis(50));
    };
    if outcome.is_err() {
        // A worker that was killed did not tear down; harmless otherwise.
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = child.wait();
    }

    // Whatever happened: nothing of the demo's stays.
    let mut left = Vec::new();
    for user in harness::remove_users_of(pid) {
        left.push(format!("user {user}"));
    }
    let prefix = format!("hat-{pid}-");
    if let Ok(entries) = fs::read_dir(plan_root.join("user")) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    left.push(format!("{}: {e}", entry.path().display()));
                }
            }
        }
    }
    if !plan_root_existed {
        let _ = fs::remove_dir(plan_root.join("user"));
        let _ = fs::remove_dir(plan_root);
    }
    let tmp_path = tmp.path().to_owned();
    if let Err(e) = tmp.close() {
        left.push(format!("{}: {e}", tmp_path.display()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    if left.is_empty() {
        println!(
            "== cleaned up: no hat-{pid}-* user, process, cgroup or restore plan left; {} removed",
            tmp_path.display()
        );
    } else {
        eprintln!("demo: could not remove: {}", left.join("; "));
    }
    match outcome {
        Ok(status) if status.success() && left.is_empty() => {
            println!("== demo finished in {elapsed:.0} s");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!(
                "demo: FAILED after {elapsed:.0} s ({}); the message above says which step",
                status
                    .code()
                    .map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"))
            );
            ExitCode::FAILURE
        }
        Err(why) if why == "interrupted" => {
            eprintln!("demo: interrupted after {elapsed:.0} s");
            ExitCode::from(INTERRUPTED)
        }
        Err(why) => {
            eprintln!("demo: {why}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------ worker

/// The real run; a failed step is a panic whose message says what failed
/// (the node world's `Drop` tears down while it unwinds).
fn worker() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        eprintln!("\n== demo step FAILED: {message}\n== removing what the demo made ...");
    }));
    match std::panic::catch_unwind(real_demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

fn real_demo() {
    let started = Instant::now();
    println!(
        "== hostenv-activate demo: an environment deployed to node-a, then migrated to node-b \
         with backup and restore. Both nodes are runs of the real binary on this machine."
    );

    step(1, "the environment: a Unix user with its own systemd --user, restic repository, backup unit and data");
    let w = world(&[UserSpec::new("demo").backups(&[KEY])]);
    let user = w.user("demo");
    let plans = PlanDir::clearing_stale(user);
    let marker = format!("demo-data-{}", random_hex(16));
    user.write_file(MARKER_REL, &format!("{marker}\n"), 0o644)
        .expect("cannot write the environment's data");
    user.write_file(
        ".local/bin/activate",
        &restoring_activate(KEY, &marker, true),
        0o755,
    )
    .expect("cannot write the environment's activate program");
    println!("   user            {} (uid {})", user.name, user.uid);
    println!(
        "   systemd --user  pid {}",
        user.manager_pid()
            .map_or_else(|| "?".to_owned(), |p| p.to_string())
    );
    println!("   backup unit     ~/.config/systemd/user/restic-backups-{KEY}.service (restic backup --tag {KEY} ~/data/{KEY})");
    println!("   restic wrapper  ~/.local/bin/restic-{KEY} (repository ~/restic-repos/{KEY})");
    println!("   activate        ~/.local/bin/activate (restores a planned snapshot, then starts {HOSTENV_TARGET})");
    println!("   data            ~/{MARKER_REL} = {marker}");

    let token_a = format!("tok-a-{}", random_hex(24));
    let token_b = format!("tok-b-{}", random_hex(24));
    let fake = node_run::migration_provider(
        MIGRATE_JOB,
        MIGRATE_SHA,
        &user.name,
        KEY,
        (NODE_A, &token_a),
        (NODE_B, &token_b),
    )
    .job(
        DEPLOY_JOB,
        DEPLOY_SHA,
        [(
            NODE_A,
            intent(vec![action("activate", &user.name, &[], None, None)]),
        )],
    )
    .start();
    let (state_a, state_b) = (NodeState::new(), NodeState::new());
    let metrics_a = state_a.state_dir().with_file_name("hostenv-activate.prom");
    let metrics_b = state_b.state_dir().with_file_name("hostenv-activate.prom");
    let (metrics_a_text, metrics_b_text) = (
        metrics_a.display().to_string(),
        metrics_b.display().to_string(),
    );
    let env_a = [("HOSTENV_COMIN_METRICS_FILE", metrics_a_text.as_str())];
    let env_b = [("HOSTENV_COMIN_METRICS_FILE", metrics_b_text.as_str())];
    let config = |node, sha, token, state, env| NodeConfig {
        node,
        sha,
        token,
        action_timeout: 120,
        target_observe_timeout: 60,
        intent_wait: 10,
        extra_env: env,
        stdin: None,
        state: Some(state),
        run_timeout: Some(STEP_LIMIT.as_secs() - 10),
    };
    println!(
        "   provider        the fake provider at {}: job {DEPLOY_JOB} (commit {DEPLOY_SHA}), job {MIGRATE_JOB} (commit {MIGRATE_SHA})",
        fake.url()
    );
    for (node, state, metrics) in [
        (NODE_A, &state_a, &metrics_a),
        (NODE_B, &state_b, &metrics_b),
    ] {
        println!(
            "   {node}          state {}, lock {}, metrics {}",
            state.state_dir().display(),
            state.lock_file().display(),
            metrics.display()
        );
    }

    step(
        2,
        &format!(
            "deploy: comin on node-a deployed commit {DEPLOY_SHA}; its intent: activate {}",
            user.name
        ),
    );
    let runs = vec![spawn(
        &fake,
        &config(NODE_A, DEPLOY_SHA, &token_a, &state_a, &env_a),
    )];
    let done = follow(&fake, DEPLOY_JOB, runs);
    expect_success(&done, &fake, DEPLOY_JOB);
    let target = user
        .unit_property(HOSTENV_TARGET, "ActiveState")
        .expect("cannot ask the user's systemd");
    println!("   {HOSTENV_TARGET} of {} is now {target}", user.name);
    assert_eq!(
        target, "active",
        "node-a's activation did not start the environment"
    );

    step(
        3,
        &format!(
            "migrate: commit {MIGRATE_SHA} moves the environment: node-a backs up, node-b waits for the snapshot, \
             restores and activates, node-a waits for node-b and deactivates (both nodes run at once)"
        ),
    );
    let runs = vec![
        spawn(
            &fake,
            &config(NODE_A, MIGRATE_SHA, &token_a, &state_a, &env_a),
        ),
        spawn(
            &fake,
            &config(NODE_B, MIGRATE_SHA, &token_b, &state_b, &env_b),
        ),
    ];
    let done = follow(&fake, MIGRATE_JOB, runs);
    expect_success(&done, &fake, MIGRATE_JOB);

    step(4, "the data on node-b");
    let events = fake.events(MIGRATE_JOB);
    let snapshot = events
        .iter()
        .find(|e| e.node == NODE_A && e.is("backup", "success"))
        .and_then(|e| e.payload.as_ref())
        .and_then(|p| p["snapshots"][KEY].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "node-a posted no snapshot id for {KEY}:\n{}",
                node_run::show(&events)
            )
        });
    assert!(
        snapshot.len() == 64 && snapshot.chars().all(|c| c.is_ascii_hexdigit()),
        "the snapshot id is not 64 hex characters: {snapshot}"
    );
    println!("   snapshot        {snapshot} (posted by node-a, read by node-b from the provider)");
    let in_repo: Vec<String> = user
        .restic_snapshots(KEY)
        .expect("cannot list the restic repository")
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        in_repo,
        vec![snapshot.clone()],
        "the repository's snapshots"
    );
    println!("   repository      holds exactly that snapshot (restic-{KEY} snapshots)");
    let log = fs::read_to_string(user.home.join("activate.log")).unwrap_or_default();
    let restored = format!("restored {snapshot} marker-ok {marker}");
    assert!(
        log.lines().any(|l| l == restored),
        "node-b's activation did not restore the snapshot with the data; ~/activate.log:\n{log}"
    );
    let found = find_file(&user.home.join("restored"), "marker.txt")
        .and_then(|p| fs::read_to_string(&p).ok().map(|text| (p, text)));
    let (path, text) = found.expect("no restored marker.txt under ~/restored");
    assert_eq!(text.trim(), marker, "the restored data");
    println!(
        "   verified        node-b restored {} = {} (the data node-a backed up)",
        path.display(),
        text.trim()
    );
    let plan = fs::read_to_string(plans.plan()).unwrap_or_default();
    let plan = serde_json::from_str::<Value>(&plan).map_or(plan, |p| p.to_string());
    println!(
        "   restore plan    {} = {}",
        plans.plan().display(),
        plan.trim()
    );
    let target = user
        .unit_property(HOSTENV_TARGET, "ActiveState")
        .expect("cannot ask the user's systemd");
    println!(
        "   {HOSTENV_TARGET}  {target} after node-a's deactivation (on real nodes the environment keeps running on node-b; \
         here both nodes share one user manager)"
    );

    step(5, "hostenv-activate status, on each node");
    for (node, token, state, env) in [
        (NODE_A, &token_a, &state_a, &env_a),
        (NODE_B, &token_b, &state_b, &env_b),
    ] {
        let status = spawn_with(
            &fake,
            &config(node, MIGRATE_SHA, token, state, env),
            &["status"],
        )
        .wait(STEP_LIMIT);
        assert_eq!(
            status.code,
            Some(0),
            "status on {node}:\n{}",
            status.output()
        );
        println!("-- {node}:");
        print!("{}", indent(&status.stdout));
    }

    step(
        6,
        "the metrics files (node_exporter's textfile collector reads these)",
    );
    for (node, metrics) in [(NODE_A, &metrics_a), (NODE_B, &metrics_b)] {
        let text = fs::read_to_string(metrics)
            .unwrap_or_else(|e| panic!("{node} wrote no metrics file {}: {e}", metrics.display()));
        println!(
            "-- {node}: {} (without its # HELP and # TYPE lines)",
            metrics.display()
        );
        let samples: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        print!("{}", indent(&samples));
    }

    let posted = fake.requests_to(Route::Events).len();
    println!(
        "\n== the migration worked: snapshot {snapshot} made on node-a, restored and verified on node-b; \
         {posted} events posted; {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("== removing the demo's user, its processes and files ...");
}

/// Prints each event of `job` as it arrives while `runs` go on; then their
/// ends.
fn follow(fake: &FakeHandle, job: &str, mut runs: Vec<Running>) -> Vec<Finished> {
    let deadline = Instant::now() + STEP_LIMIT;
    let mut shown = 0;
    loop {
        let events = fake.events(job);
        for event in &events[shown.min(events.len())..] {
            print_event(event);
        }
        shown = events.len();
        if runs.iter_mut().all(Running::has_exited) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runs did not end within {} s",
            STEP_LIMIT.as_secs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let events = fake.events(job);
    for event in &events[shown.min(events.len())..] {
        print_event(event);
    }
    runs.into_iter().map(|r| r.wait(STEP_LIMIT)).collect()
}

fn print_event(e: &Event) {
    println!(
        "   {:<7} {:<10} {:<9} {}",
        e.node, e.phase, e.status, e.message
    );
    if let Some(snapshots) = e
        .payload
        .as_ref()
        .and_then(|p| p.get("snapshots"))
        .and_then(Value::as_object)
    {
        for (key, id) in snapshots {
            println!(
                "   {:<28}snapshot {key} = {}",
                "",
                id.as_str().unwrap_or("?")
            );
        }
    }
}

fn expect_success(done: &[Finished], fake: &FakeHandle, job: &str) {
    for run in done {
        if run.code != Some(0) {
            panic!(
                "{} exited {} instead of 0 in job {job}:\n{}\nthe job's events:\n{}",
                run.node,
                run.code
                    .map_or_else(|| "on a signal".to_owned(), |c| c.to_string()),
                run.output(),
                node_run::show(&fake.events(job))
            );
        }
        println!(
            "   {} exited 0 after {:.1} s",
            run.node,
            run.elapsed.as_secs_f64()
        );
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

// ------------------------------------------------------------ dry run

/// Without root: the fake provider serving `fixtures/demo/intent.json` for
/// `node-a` at commit `demo`, and the real `hostenv-activate --dry-run`
/// against it, as an operator types it on a node (the commit from comin's
/// store, text), then for one commit (JSON). On a machine without the demo
/// users the preflight reports them missing, which is expected here.
fn dry_run() -> Result<ExitCode, String> {
    const SHA: &str = "demo";
    const JOB: &str = "demo-job-1";
    let bin = node_run::bin();
    // A token made up for this run only; the program reads it from the file.
    let token = format!("demo-token-{}", std::process::id());
    let fake = FakeProvider::builder()
        .node(NODE_A, &token)
        .job(JOB, SHA, [(NODE_A, fixture_json("demo/intent.json"))])
        .start();
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let token_file = dir.path().join("node-token");
    write_secret(&token_file, &token)?;

    println!(
        "== fake provider at {} serves job {JOB} (sha {SHA}) for {NODE_A}",
        fake.url()
    );
    print!(
        "== intent (fixtures/demo/intent.json):\n{}",
        fixture_text("demo/intent.json")
    );

    // comin's store, as on a node: its newest deployment is of commit SHA.
    let store = dir.path().join("comin-store.json");
    fs::write(
        &store,
        format!(
            r#"{{"deployments": [{{"uuid": "demo-deployment", "generation": {{"selected_commit_id": "{SHA}"}},
               "ended_at": "2026-12-01T08:15:41Z", "status": "done", "error_msg": ""}}]}}"#
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", store.display()))?;

    let mut worst = 0;
    // Text as an operator types it on a node (the commit from comin's
    // store); JSON as a script asks for one commit.
    for (title, sha, extra) in [
        ("text", None, None),
        ("JSON", Some(SHA), Some("--output=json")),
    ] {
        let shown = match extra {
            Some(flag) => format!("--dry-run {flag}"),
            None => "--dry-run".to_owned(),
        };
        println!("\n== hostenv-activate {shown}   ({title} output; stderr carries the log lines)");
        println!(
            "   environment: {}HOSTENV_COMIN_NODE_NAME={NODE_A} HOSTENV_COMIN_API_BASE_URL={} HOSTENV_COMIN_TOKEN_FILE={} HOSTENV_COMIN_ACTION_TIMEOUT=900 HOSTENV_COMIN_STORE={}\n",
            sha.map(|s| format!("COMIN_GIT_SHA={s} ")).unwrap_or_default(),
            fake.url(),
            token_file.display(),
            store.display()
        );
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTENV_COMIN_NODE_NAME", NODE_A)
            .env("HOSTENV_COMIN_API_BASE_URL", fake.url())
            .env("HOSTENV_COMIN_TOKEN_FILE", &token_file)
            .env("HOSTENV_COMIN_ACTION_TIMEOUT", "900")
            .env("HOSTENV_COMIN_STORE", &store)
            .env("HOSTENV_COMIN_STATE_DIR", dir.path().join("state"))
            .env("HOSTENV_COMIN_LOCK_FILE", dir.path().join("run/lock"))
            .arg("--dry-run");
        if let Some(sha) = sha {
            cmd.env("COMIN_GIT_SHA", sha);
        }
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let code = status.code().unwrap_or(1);
        println!(
            "\n== exit status {code} ({})",
            match code {
                0 => "every preflight check passed",
                1 => "some preflight check failed: expected here, the demo users do not exist",
                _ => "usage or configuration error",
            }
        );
        worst = worst.max(code);
    }

    let requests = fake.requests();
    println!("\n== the provider saw {} request(s):", requests.len());
    for r in &requests {
        println!("   {} {} -> {}", r.method, r.raw_url, r.status);
    }
    let posts = fake.requests_to(Route::Events).len();
    println!("== events posted: {posts} (a dry run posts nothing)");
    Ok(if worst >= 2 || posts > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_secret(path: &Path, token: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{token}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
