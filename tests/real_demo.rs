//! Exists so that the README's first command keeps working: runs
//! `cargo run --example demo` (the built example, `target/<profile>/examples/demo`)
//! end to end as root, and checks what it shows (a real migration: a 64-hex
//! snapshot id, the data verified on node-b, `status` of both nodes, their
//! metrics) and that it leaves no user, process or file behind, also when
//! interrupted with Ctrl-C in the middle of the migration.
//!
//! Needs root and the example built first (`cargo build --example demo`;
//! `.ci/run` does both). The demo runs the binary `$HOSTENV_ACTIVATE_BIN`
//! when set, like the other real-node tests.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Bound on one whole demo.
const DEMO_LIMIT: Duration = Duration::from_secs(300);

/// One demo at a time (each brings up a node world).
static SERIAL: Mutex<()> = Mutex::new(());

/// `examples/demo` in this test's build profile directory.
fn demo() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let demo = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples/demo"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        demo.is_file(),
        "{} is missing: build it first with `cargo build --example demo` (.ci/run does)",
        demo.display()
    );
    demo
}

/// The demo, running, its stdout arriving line by line.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: thread::JoinHandle<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(demo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo");
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout until a line contains `needle` (true) or it ends (false).
    fn read_until(&mut self, needle: Option<&str>, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = needle.is_some_and(|n| line.contains(n));
                    self.stdout.push(line);
                    if found {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "the demo did not finish within {} s; its output:\n{}",
                        DEMO_LIMIT.as_secs(),
                        self.stdout.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for the end: (exit code, stdout, stderr).
    fn finish(mut self, deadline: Instant) -> (Option<i32>, String, String) {
        self.read_until(None, deadline);
        let status = self.child.wait().expect("wait for the demo");
        let stderr = self.stderr.join().unwrap_or_default();
        (status.code(), self.stdout.join("\n"), stderr)
    }
}

/// What the demo made, from its output: (user, uid, temporary directory).
fn made(stdout: &str) -> (String, u32, PathBuf) {
    let user_line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("user "))
        .unwrap_or_else(|| panic!("no user line:\n{stdout}"));
    let mut words = user_line.split_whitespace();
    let name = words.next().expect("a user name").to_owned();
    let uid = words
        .nth(1)
        .and_then(|w| w.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no uid in {user_line:?}"));
    let tmp = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("node-a "))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|state| state.split("/hat-state-").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no node-a state line:\n{stdout}"));
    (name, uid, tmp)
}

/// Everything of the demo still on the machine.
fn left_behind(name: &str, uid: u32, tmp: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.split(':').next() == Some(name)) {
        left.push(format!("user {name}"));
    }
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let runs_as_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|uids| {
                uids.split_whitespace()
                    .take(2)
                    .any(|u| u == uid.to_string())
            });
        if runs_as_uid {
            left.push(format!("process {:?} of uid {uid}", entry.file_name()));
        }
    }
    for path in [
        PathBuf::from(format!("/run/hostenv/user/{name}")),
        PathBuf::from(format!("/home/{name}")),
        PathBuf::from(format!("/sys/fs/cgroup/{name}")),
        tmp.to_path_buf(),
    ] {
        if path.exists() {
            left.push(path.display().to_string());
        }
    }
    left
}

#[test]
fn the_demo_migrates_an_environment_for_real_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let (code, stdout, stderr) = Demo::start().finish(started + DEMO_LIMIT);
    let context = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    eprintln!("the demo took {:.1?}", started.elapsed());
    assert_eq!(code, Some(0), "{context}");

    // The snapshot node-a posted: 64 hex characters.
    let snapshot = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("snapshot "))
        .filter_map(|rest| rest.split_whitespace().next())
        .find(|word| *word != "drupal-migrate")
        .unwrap_or_else(|| panic!("no snapshot line:\n{context}"));
    assert!(
        snapshot.len() == 64 && snapshot.chars().all(|c| c.is_ascii_hexdigit()),
        "{snapshot}"
    );
    // Each step and the event it posted, in the order the provider got them.
    for shown in [
        "node-a  activate   success",
        "node-b  restore    waiting",
        &format!("snapshot drupal-migrate = {snapshot}"),
        "node-a  deactivate waiting",
        "node-b  activate   success",
        "node-a  deactivate success",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{context}");
    }
    let at = |needle: &str| stdout.find(needle).unwrap_or(usize::MAX);
    assert!(at("node-b  activate   success") < at("node-a  deactivate running"));
    // The data, verified on node-b; status and metrics of both nodes.
    let verified = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("verified "))
        .unwrap_or_else(|| panic!("no verified line:\n{context}"));
    let data = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("data "))
        .and_then(|rest| rest.split(" = ").nth(1))
        .unwrap_or_else(|| panic!("no data line:\n{context}"));
    assert!(
        verified.contains("node-b restored") && verified.contains(&format!("= {data} ")),
        "{verified}"
    );
    for shown in [
        "hostenv-activate status of node node-a",
        "hostenv-activate status of node node-b",
        &format!("snapshots drupal-migrate={snapshot}"),
        "restore ",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing:\n{context}");
    }
    assert_eq!(
        stdout
            .matches("hostenv_activate_last_run_success 1")
            .count(),
        2,
        "{context}"
    );
    assert!(stdout.contains("== cleaned up:"), "{context}");

    let (name, uid, tmp) = made(&stdout);
    assert_eq!(left_behind(&name, uid, &tmp), Vec::<String>::new());
}

#[test]
fn ctrl_c_in_the_middle_of_the_migration_removes_what_the_demo_made() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = Instant::now() + DEMO_LIMIT;
    let mut demo = Demo::start();
    assert!(
        demo.read_until(Some("node-b  restore    waiting"), deadline),
        "the migration never started:\n{}",
        demo.stdout.join("\n")
    );
    // As the terminal sends it: to the demo (its worker has a process group
    // of its own, so only the demo gets it).
    kill(Pid::from_raw(demo.child.id() as i32), Signal::SIGINT).expect("SIGINT");
    let (code, stdout, stderr) = demo.finish(deadline);
    let context = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert_eq!(code, Some(130), "{context}");
    assert!(
        stderr.contains("interrupted: stopping the demo and removing what it made"),
        "{context}"
    );
    assert!(stdout.contains("== cleaned up:"), "{context}");
    let (name, uid, tmp) = made(&stdout);
    assert_eq!(left_behind(&name, uid, &tmp), Vec::<String>::new());
}
