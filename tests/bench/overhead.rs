//! `cargo bench`: what hostenv-activate itself costs, measured rather than
//! asserted. Prints per-action engine overhead (stub world), the cost of
//! running a program through the process runner against a bare spawn and
//! whether that cost grows with the number of processes on the machine, a
//! journal change and what the journal writes per event at 10, 100 and
//! 1,000 actions, how fast a deactivate reacts to the target node's
//! activation through the real HTTP client and a provider on loopback, and
//! how fast a stop signal ends a running program and a wait. Never fails on
//! timings.

#[path = "../support/stubs.rs"]
mod stubs;

#[path = "../support/fake_provider.rs"]
mod fake_provider;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hostenv_activate::adapters::clock::SystemClock;
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

/// Actions per intent in the engine's measurement: a busy node's deployment.
const ENGINE_ACTIONS: u32 = 20;

fn engine_per_action() -> Duration {
    let actions: Vec<_> = (0..ENGINE_ACTIONS)
        .map(|i| json!({"op": "activate", "user": format!("u{i}")}))
        .collect();
    let mut samples = Vec::new();
    for _ in 0..50 {
        let w = World::new(StubProvider::with_intent(intent(json!(actions))));
        let start = Instant::now();
        let out = w.run();
        samples.push(start.elapsed() / ENGINE_ACTIONS);
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

/// Medians of `samples` runs of `/bin/true` through the process runner and
/// through a bare `std::process` spawn, alternating.
fn spawn_costs(samples: usize) -> (Duration, Duration) {
    let (runner, cmd, account) = true_via_runner(Arc::new(Quiet));
    let cancel = Cancel::new();
    runner.run(&cmd, &account, &cancel).expect("runs"); // warm-up
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..samples {
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

/// A journal directory on this machine's disk (not a tmpfs), where fsyncs
/// cost what they cost on a node.
fn journal_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bench-journal-")
        .tempdir_in(std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()))
        .expect("a directory on this disk")
}

/// One journal change as a run makes it: one line appended to the file of
/// a 20-action job, on this machine's disk. An action's start (no sync of
/// its own) and the closing event (one `fdatasync`), medians of 50 each.
fn journal_change() -> (Duration, Duration) {
    use hostenv_activate::adapters::journal::FileJournal;
    use hostenv_activate::model::journal::{ActionRecord, ActionState, Change, JobRecord};
    use hostenv_activate::model::{IntentDigest, JobId, NodeName, Op};
    use hostenv_activate::ports::Journal;
    let dir = journal_dir();
    let node = NodeName::parse("node-a").expect("node");
    let journal = FileJournal::new(dir.path(), node.clone(), Arc::new(Quiet));
    let mut record = JobRecord::new(
        node,
        JobId::new("job-1"),
        "abc".into(),
        IntentDigest::of(&json!({})),
    );
    let now = jiff::Timestamp::now();
    record.begin_run(1, now);
    let started = |index| {
        Change::Action(ActionRecord {
            index,
            op: Op::Activate,
            user: hostenv_activate::model::UserName::parse(&format!("u{index}")).expect("user"),
            state: ActionState::Started { started_at: now },
        })
    };
    for index in 0..20 {
        record.apply(&started(index));
    }
    journal.rewrite(&record).expect("rewrite");
    let timed = |change: &dyn Fn(usize) -> Change| {
        let samples = (0..50)
            .map(|i| {
                let change = change(i);
                let start = Instant::now();
                journal.append(&record.job, &change).expect("append");
                start.elapsed()
            })
            .collect();
        median(samples)
    };
    let closing = |_| {
        Change::Closing(hostenv_activate::model::journal::Posted {
            terminal: hostenv_activate::model::Terminal::success("done", None),
            delivery: hostenv_activate::model::journal::Delivery::Pending,
        })
    };
    (timed(&|i| started(i % 20)), timed(&closing))
}

/// The real journal, counting beside it what the whole-record journal of
/// earlier versions would have written for the same changes: the record,
/// as one JSON document, and two fsyncs (file and directory), each time.
struct Compared<'a> {
    inner: &'a hostenv_activate::adapters::journal::FileJournal,
    record: std::cell::RefCell<Option<hostenv_activate::model::journal::JobRecord>>,
    whole_bytes: std::cell::Cell<u64>,
    whole_syncs: std::cell::Cell<u64>,
    /// Time spent counting, not journaling (left out of the run's time).
    counting: std::cell::Cell<Duration>,
}

impl Compared<'_> {
    fn count(&self) {
        let _spent = Spent(&self.counting, Instant::now());
        if let Some(record) = &*self.record.borrow() {
            let bytes = record.to_bytes().len() as u64;
            self.whole_bytes.set(self.whole_bytes.get() + bytes);
            self.whole_syncs.set(self.whole_syncs.get() + 2);
        }
    }
}

/// Adds the time since `.1` to `.0` when dropped.
struct Spent<'a>(&'a std::cell::Cell<Duration>, Instant);

impl Drop for Spent<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + self.1.elapsed());
    }
}

impl hostenv_activate::ports::Journal for Compared<'_> {
    fn load(
        &self,
        job: &hostenv_activate::model::JobId,
    ) -> Option<hostenv_activate::model::journal::JobRecord> {
        self.inner.load(job)
    }
    fn rewrite(&self, record: &hostenv_activate::model::journal::JobRecord) -> anyhow::Result<()> {
        let spent = Spent(&self.counting, Instant::now());
        *self.record.borrow_mut() = Some(record.clone());
        drop(spent);
        self.count();
        self.inner.rewrite(record)
    }
    fn append_all(
        &self,
        job: &hostenv_activate::model::JobId,
        changes: &[hostenv_activate::model::journal::Change],
    ) -> anyhow::Result<()> {
        let spent = Spent(&self.counting, Instant::now());
        if let Some(record) = &mut *self.record.borrow_mut() {
            for change in changes {
                record.apply(change);
            }
        }
        drop(spent);
        self.count();
        self.inner.append_all(job, changes)
    }
    fn with_pending(&self) -> Vec<hostenv_activate::model::journal::JobRecord> {
        self.inner.with_pending()
    }
    fn prune(&self, now: jiff::Timestamp) {
        self.inner.prune(now)
    }
}

/// What the journal of one run costs per event the run posts.
struct JournalCost {
    actions: usize,
    events: usize,
    /// Bytes handed to `write` (journal files and their temp files).
    bytes: u64,
    /// `fsync`/`fdatasync` calls, of files and of the directory.
    syncs: u64,
    /// What the block layer wrote for this process meanwhile
    /// (`/proc/self/io` `write_bytes`: whole pages, filesystem journal
    /// blocks not included), when the kernel reports it.
    disk: Option<u64>,
    /// The file once the run compacted it.
    file: u64,
    wall: Duration,
    /// What the whole-record journal of earlier versions would have
    /// written for the same run: bytes, fsyncs.
    whole: (u64, u64),
}

fn proc_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A whole run of `actions` `activate` actions (stub world, fake clock)
/// with the real journal on this disk: what it wrote per posted event.
fn journal_per_event(actions: usize) -> JournalCost {
    use hostenv_activate::adapters::journal::FileJournal;
    use hostenv_activate::engine;
    use hostenv_activate::ports::Ports;
    let list: Vec<_> = (0..actions)
        .map(|i| json!({"op": "activate", "user": format!("u{i}")}))
        .collect();
    let w = World::new(StubProvider::with_intent(intent(json!(list))));
    let dir = journal_dir();
    let file_journal = FileJournal::new(dir.path(), w.settings.node.clone(), Arc::new(Quiet));
    let journal = Compared {
        inner: &file_journal,
        record: Default::default(),
        whole_bytes: Default::default(),
        whole_syncs: Default::default(),
        counting: Default::default(),
    };
    let lock = w.lock();
    let ports = Ports {
        provider: &w.provider,
        users: &StubUsers,
        systemd: &w.systemd,
        programs: &w.programs,
        plans: &w.plans,
        journal: &journal,
        lock: &lock,
        clock: &w.clock,
        log: &Quiet,
        cancel: &w.cancel,
    };
    let disk_before = proc_write_bytes();
    let start = Instant::now();
    let out = engine::run(&w.settings, ports);
    let wall = start.elapsed().saturating_sub(journal.counting.get());
    let disk = disk_before.zip(proc_write_bytes()).map(|(a, b)| b - a);
    assert!(matches!(
        out,
        hostenv_activate::engine::Outcome::Succeeded(_)
    ));
    let written = file_journal.written();
    let file = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let events = w.provider.posted.borrow().len();
    JournalCost {
        actions,
        events,
        bytes: written.bytes,
        syncs: written.syncs,
        disk,
        file,
        wall,
        whole: (journal.whole_bytes.get(), journal.whole_syncs.get()),
    }
}

/// A run lock that is always free.
struct FreeLock;

impl hostenv_activate::ports::RunLock for FreeLock {
    fn try_lock(
        &self,
        _: &str,
        _: jiff::Timestamp,
    ) -> anyhow::Result<hostenv_activate::ports::LockAttempt> {
        Ok(hostenv_activate::ports::LockAttempt::Taken)
    }
    fn holder(&self) -> anyhow::Result<Option<hostenv_activate::ports::LockHolder>> {
        Ok(None)
    }
}

/// How long after the target node's (activate, success) reaches the
/// provider a waiting deactivate posts its `running`: the engine with the
/// real clock and HTTP client, the fake provider on loopback, the target's
/// event published at an arbitrary moment. (median, worst) of `rounds`.
fn peer_reaction(rounds: usize) -> (Duration, Duration) {
    use fake_provider::FakeProvider;
    use hostenv_activate::adapters::http::{ApiBase, HttpProvider};
    use hostenv_activate::engine::{self, Settings};
    use hostenv_activate::model::NodeName;
    use hostenv_activate::ports::Ports;
    use hostenv_activate::secret::Token;

    let mut samples = Vec::new();
    for round in 0..rounds {
        let deactivate = json!({"schemaVersion": 1, "actions": [
            {"op": "deactivate", "user": "acme", "fromNode": "node-a", "toNode": "node-b"}]});
        let fake = FakeProvider::builder()
            .node("node-a", "tok-a")
            .node("node-b", "tok-b")
            .job(
                "job-1",
                "abc",
                [
                    ("node-a", deactivate),
                    ("node-b", json!({"schemaVersion": 1, "actions": []})),
                ],
            )
            .start();
        let cancel = Cancel::new();
        let clock = SystemClock::new(cancel.clone());
        let provider = HttpProvider::new(
            &ApiBase::parse(fake.url()).expect("base"),
            NodeName::parse("node-a").expect("node"),
            Token::new("tok-a").expect("token"),
        )
        .expect("client");
        let settings = Settings::new(
            NodeName::parse("node-a").expect("node"),
            "abc".into(),
            Duration::from_secs(60),
            &clock,
        );
        let (systemd, programs, plans, journal) = (
            StubSystemd::default(),
            StubPrograms::default(),
            StubPlans::default(),
            StubJournal::default(),
        );
        // The target activates at a moment unrelated to the poll's phase.
        let publish_after = Duration::from_millis(1_300 + (round as u64 * 379) % 1_000);
        let published = thread::scope(|scope| {
            let publisher = scope.spawn(|| {
                thread::sleep(publish_after);
                let at = Instant::now();
                fake.append_event(
                    "job-1",
                    json!({"node": "node-b", "status": "success", "phase": "activate", "message": "up"}),
                );
                at
            });
            let ports = Ports {
                provider: &provider,
                users: &StubUsers,
                systemd: &systemd,
                programs: &programs,
                plans: &plans,
                journal: &journal,
                lock: &FreeLock,
                clock: &clock,
                log: &Quiet,
                cancel: &cancel,
            };
            engine::run(&settings, ports);
            publisher.join().expect("publisher")
        });
        samples.push(reaction_since(published, &fake));
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    (median(samples), worst)
}

/// When the deactivate's `running` reached the provider, after `published`.
fn reaction_since(published: Instant, fake: &fake_provider::FakeHandle) -> Duration {
    let arrived = fake
        .arrival_of("node-a", "deactivate", "running")
        .expect("the deactivate went on");
    arrived.saturating_duration_since(published)
}

fn stop_reaction_program() -> Duration {
    let account = me();
    let runner = ProcessRunner::new(Arc::new(Quiet));
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

/// In the measuring child: the medians of running `/bin/true` through the
/// process runner and by a bare spawn, printed as nanoseconds, then the
/// process count.
fn measure_runner_in_crowd() {
    let (ours, bare) = spawn_costs(CROWD_SAMPLES);
    println!(
        "{} {} {}",
        ours.as_nanos(),
        bare.as_nanos(),
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

    /// The runner's and a bare spawn's medians in a fresh child process,
    /// and how many processes were alive meanwhile.
    fn measure() -> Crowded {
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
            fields.next().flatten(),
        ) {
            (true, Some(ours), Some(bare), Some(count)) => Crowded {
                runner: Duration::from_nanos(ours),
                bare: Duration::from_nanos(bare),
                processes: usize::try_from(count).unwrap_or(usize::MAX),
            },
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

/// What the measuring child found.
struct Crowded {
    runner: Duration,
    bare: Duration,
    processes: usize,
}

impl Crowded {
    /// What the runner adds to a bare spawn (which also gets slower with
    /// more processes: the kernel's cost, not ours).
    fn overhead(&self) -> Duration {
        self.runner.saturating_sub(self.bare)
    }
}

/// The runner's per-program cost with the machine as it is, and with 5,000
/// more (idle) processes on it. The runner's cleanup after each program
/// must not depend on how many processes the node runs.
fn runner_vs_process_count() -> [Crowded; 2] {
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
    let [few, many] = runner_vs_process_count();
    let per_action = engine_per_action();
    let (start_change, durable_change) = journal_change();
    let journal: Vec<JournalCost> = [10, 100, 1000].map(journal_per_event).into();
    let (reaction, worst_reaction) = peer_reaction(8);
    let (ours, bare) = spawn_costs(30);
    let program_stop = stop_reaction_program();
    let wait_stop = stop_reaction_wait();
    println!("hostenv-activate overhead (medians)");
    println!("  engine, per action (stub world, {ENGINE_ACTIONS} actions):    {per_action:>12?}");
    println!("  one journal change, an action's start (no sync): {start_change:>11?}");
    println!("  one journal change that must be durable (fdatasync): {durable_change:>7?}");
    println!("  run /bin/true via the process runner:           {ours:>12?}");
    println!("  run /bin/true via a bare std::process spawn:    {bare:>12?}");
    println!(
        "  runner overhead per program:                    {:>12?}",
        ours.saturating_sub(bare)
    );
    for crowd in [&few, &many] {
        println!(
            "  {:>5} processes on the machine: runner {:>10?}, bare spawn {:>10?}, overhead {:>10?}",
            crowd.processes,
            crowd.runner,
            crowd.bare,
            crowd.overhead()
        );
    }
    println!(
        "  runner / bare spawn, few vs many processes:     {:>6.2}x vs {:.2}x",
        few.runner.as_secs_f64() / few.bare.as_secs_f64().max(f64::MIN_POSITIVE),
        many.runner.as_secs_f64() / many.bare.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    println!(
        "  target activated -> deactivate goes on (HTTP):  {reaction:>12?} (worst of 8: {worst_reaction:?})"
    );
    println!("  stop signal -> running program tree ended:      {program_stop:>12?}");
    println!("  stop signal -> a wait between polls returns:    {wait_stop:>12?}");
    println!("  the journal of one run, per event posted (real files on this disk; whole record at run start and end):");
    println!("    actions  events  bytes/event  fsyncs/event  disk bytes/event  file after run  time/event  | whole-record rewrites (before): bytes/event  fsyncs/event");
    for c in &journal {
        let per = |n: u64| n as f64 / c.events.max(1) as f64;
        let disk = c
            .disk
            .map_or_else(|| "n/a".to_owned(), |d| format!("{:.0}", per(d)));
        println!(
            "    {:>7}  {:>6}  {:>11.0}  {:>12.2}  {:>16}  {:>14}  {:>10.2?}  | {:>43.0}  {:>12.2}",
            c.actions,
            c.events,
            per(c.bytes),
            per(c.syncs),
            disk,
            c.file,
            c.wall / u32::try_from(c.events.max(1)).unwrap_or(u32::MAX),
            per(c.whole.0),
            per(c.whole.1),
        );
    }
}
