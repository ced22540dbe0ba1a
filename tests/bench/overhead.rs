//! `cargo bench`: what hostenv-activate itself costs, measured rather than
//! asserted. Prints per-action engine overhead (stub world), the cost of
//! running a program through the process runner against a bare spawn, and
//! how fast a stop signal ends a running program and a wait. Never fails on
//! timings.

#[path = "../support/stubs.rs"]
mod stubs;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hostenv_activate::adapters::clock::SystemClock;
use hostenv_activate::adapters::log::Logger;
use hostenv_activate::adapters::process::{ProcessRunner, UserCommand};
use hostenv_activate::model::UserName;
use hostenv_activate::ports::{Account, Cancel, Clock};
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

fn spawn_costs() -> (Duration, Duration) {
    let account = me();
    let runner = ProcessRunner::new(Arc::new(Logger::new("/nonexistent/journal")));
    let cmd = UserCommand::for_account(
        &account,
        PathBuf::from("/bin/true"),
        Vec::new(),
        Duration::from_secs(10),
    );
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

fn main() {
    // `cargo test --benches` runs this too; keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
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
    println!("  stop signal -> running program tree ended:      {program_stop:>12?}");
    println!("  stop signal -> a wait between polls returns:    {wait_stop:>12?}");
}
