//! `cargo bench`: what hostenv-activate itself costs, measured rather than
//! asserted. Prints per-action engine overhead (stub world), the cost of
//! running a program through the process runner against a bare spawn and
//! whether that cost grows with the number of processes on the machine, and
//! how fast a stop signal ends a running program and a wait. Never fails on
//! timings.

#[path = "../support/stubs.rs"]
mod stubs;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hostenv_activate::adapters::clock::SystemClock;
use hostenv_activate::adapters::log::Logger;
use hostenv_activate::adapters::process::{ProcessRunner, UserCommand};
use hostenv_activate::model::UserName;
use hostenv_activate::ports::{Account, Cancel, Clock, Level, Log, LogFields};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde_json::json;
use stubs::*;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn me() -> Account {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    Account {
        name: UserName::parse("bench").expect("name"),
        uid,
        gid,
        groups: vec![gid],
        home: std::env::temp_dir(),
    }
}

fn engine_per_action() -> Duration {
    let actions: Vec<_> = (0..500)
        .map(|i| json!({"op": "activate", "user": format!("u{i}")}))
        .collect();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let w = World::new(StubProvider::with_intent(intent(json!(actions))));
        let start = Instant::now();
        let out = w.run();
        samples.push(start.elapsed() / 500);
        assert!(matches!(
            out,
            hostenv_activate::engine::Outcome::Succeeded(_)
        ));
    }
    median(samples)
}

/// `/bin/true` as this process's own user, through a runner logging to `log`.
fn true_via_runner(log: Arc<dyn Log + Send + Sync>) -> (ProcessRunner, UserCommand, Account) {
    let account = me();
    let cmd = UserCommand::for_account(
        &account,
        PathBuf::from("/bin/true"),
        Vec::new(),
        Duration::from_secs(10),
    );
    (ProcessRunner::new(log), cmd, account)
}

fn spawn_costs() -> (Duration, Duration) {
    let (runner, cmd, account) = true_via_runner(Arc::new(Logger::new("/nonexistent/journal")));
    let cancel = Cancel::new();
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        runner.run(&cmd, &account, &cancel).expect("runs");
        ours.push(start.elapsed());
        let start = Instant::now();
        std::process::Command::new("/bin/true")
            .status()
            .expect("runs");
        bare.push(start.elapsed());
    }
    (median(ours), median(bare))
}

fn stop_reaction_program() -> Duration {
    let account = me();
    let runner = ProcessRunner::new(Arc::new(Logger::new("/nonexistent/journal")));
    let cmd = UserCommand::for_account(
        &account,
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), "sleep 60 & sleep 60".into()],
        Duration::from_secs(60),
    );
    let mut samples = Vec::new();
    for _ in 0..3 {
        let cancel = Cancel::new();
        let flag = cancel.clone();
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            flag.cancel();
            Instant::now()
        });
        runner.run(&cmd, &account, &cancel).expect("runs");
        let done = Instant::now();
        let cancelled_at = setter.join().expect("thread");
        samples.push(done.saturating_duration_since(cancelled_at));
    }
    median(samples)
}

fn stop_reaction_wait() -> Duration {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let cancel = Cancel::new();
        let clock = SystemClock::new(cancel.clone());
        let flag = cancel.clone();
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            flag.cancel();
            Instant::now()
        });
        clock.sleep(Duration::from_secs(30));
        let done = Instant::now();
        samples.push(done.saturating_duration_since(setter.join().expect("thread")));
    }
    median(samples)
}

/// Runs of `/bin/true` per crowd size.
const CROWD_SAMPLES: usize = 40;
/// The argument that makes this binary the measuring child (see [`Crowd`]).
const MEASURE_ARG: &str = "--measure-runner-in-crowd";

/// Drops log lines: the runner logs every start, which would drown the report.
struct Quiet;

impl Log for Quiet {
    fn line(&self, _level: Level, _fields: &LogFields<'_>, _message: &str) {}
}

/// Processes on the machine now (numeric entries of `/proc`).
fn processes_on_the_machine() -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

/// In the measuring child: the median of running `/bin/true` through the
/// process runner, printed as nanoseconds, then the process count.
fn measure_runner_in_crowd() {
    let (runner, cmd, account) = true_via_runner(Arc::new(Quiet));
    let cancel = Cancel::new();
    runner.run(&cmd, &account, &cancel).expect("runs"); // warm-up
    let samples = (0..CROWD_SAMPLES)
        .map(|_| {
            let start = Instant::now();
            runner.run(&cmd, &account, &cancel).expect("runs");
            start.elapsed()
        })
        .collect();
    println!(
        "{} {}",
        median(samples).as_nanos(),
        processes_on_the_machine()
    );
}

/// `size` idle `sleep 600` processes that are not the runner's children: a
/// holder shell (in its own session and process group) starts them and
/// waits. The runner is measured in a separate child process (this binary
/// again, with [`MEASURE_ARG`]), because the runner ends every child of the
/// process it runs in except the program, and the holder is ours. Dropping
/// the crowd (also while unwinding from a panic) kills the group and reaps
/// every one of them here: this process is a child subreaper, so the
/// orphaned sleeps come to it rather than to init.
struct Crowd {
    holder: Option<Child>,
    group: Pid,
}

impl Crowd {
    fn start(size: usize) -> Crowd {
        nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
        let script = format!(
            "i=0; while [ $i -lt {size} ]; do sleep 600 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; \
             echo ready; wait"
        );
        let mut holder = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the crowd's holder");
        let group = Pid::from_raw(i32::try_from(holder.id()).expect("pid fits i32"));
        let mut crowd = Crowd {
            holder: None,
            group,
        };
        let stdout = holder.stdout.take().expect("holder's stdout");
        crowd.holder = Some(holder);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read from the holder");
        assert_eq!(line.trim(), "ready", "the holder started {size} sleeps");
        crowd
    }

    /// The runner's median in a fresh child process, and how many processes
    /// were alive meanwhile.
    fn measure() -> (Duration, usize) {
        let exe = std::env::current_exe().expect("this benchmark's path");
        let out = Command::new(exe)
            .arg(MEASURE_ARG)
            .stderr(Stdio::inherit())
            .output()
            .expect("run the measuring child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        match (
            out.status.success(),
            fields.next().flatten(),
            fields.next().flatten(),
        ) {
            (true, Some(nanos), Some(count)) => (
                Duration::from_nanos(nanos),
                usize::try_from(count).unwrap_or(usize::MAX),
            ),
            _ => panic!("the measuring child failed ({}): {text}", out.status),
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let _ = killpg(self.group, Signal::SIGKILL);
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.wait();
        }
        // The sleeps, orphaned by the holder's death, are ours to reap.
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::ECHILD) => return,
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    thread::sleep(Duration::from_millis(10))
                }
                _ => {}
            }
        }
        eprintln!("warning: some of the crowd's processes were not reaped within 30 s");
    }
}

/// The runner's per-program cost with the machine as it is, and with 5,000
/// more (idle) processes on it. The runner's cleanup after each program
/// must not depend on how many processes the node runs.
fn runner_vs_process_count() -> [(Duration, usize); 2] {
    let few = Crowd::measure();
    let crowd = Crowd::start(5000);
    let many = Crowd::measure();
    drop(crowd);
    [few, many]
}

fn main() {
    if std::env::args().any(|a| a == MEASURE_ARG) {
        return measure_runner_in_crowd();
    }
    // `cargo test --benches` runs this too, with no arguments (`cargo bench`
    // passes `--bench`): there it only shows that it builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("overhead: not measuring (run `cargo bench` to measure)");
        return;
    }
    let [(few, few_count), (many, many_count)] = runner_vs_process_count();
    let per_action = engine_per_action();
    let (ours, bare) = spawn_costs();
    let program_stop = stop_reaction_program();
    let wait_stop = stop_reaction_wait();
    println!("hostenv-activate overhead (medians)");
    println!("  engine, per action (stub world, 500 actions):   {per_action:>12?}");
    println!("  run /bin/true via the process runner:           {ours:>12?}");
    println!("  run /bin/true via a bare std::process spawn:    {bare:>12?}");
    println!(
        "  runner overhead per program:                    {:>12?}",
        ours.saturating_sub(bare)
    );
    println!("  run /bin/true via the runner, {few_count:>5} processes:   {few:>12?}");
    println!("  run /bin/true via the runner, {many_count:>5} processes:   {many:>12?}");
    println!(
        "  ratio (many / few processes):                   {:>11.2}x",
        many.as_secs_f64() / few.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    println!("  stop signal -> running program tree ended:      {program_stop:>12?}");
    println!("  stop signal -> a wait between polls returns:    {wait_stop:>12?}");
}
