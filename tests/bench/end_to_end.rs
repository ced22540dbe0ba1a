//! `cargo bench --bench end_to_end` (root): the whole program as a node
//! runs it. The binary under test (`$HOSTENV_ACTIVATE_BIN`, the static musl
//! build in practice, else cargo's) against a real user systemd and the fake
//! provider on loopback, with an `activate` program and a backup unit that
//! finish at once, so that only the program's own overhead counts:
//!
//! - wall time of a one-action `activate` run and a one-action `backup` run
//!   (medians), beside the bash hook's 253 ms / 422 ms measured on the
//!   same kind of machine (issue 17);
//! - per-action time at 1, 10, 100 and 1,000 `activate` actions, and for the
//!   same runs, traced with `strace`, the bytes written to the state
//!   directory and the fsyncs per event;
//! - the floor beside each: the user's own parts run by hand (the activate
//!   program alone; `systemctl --user start` of the unit, then the
//!   wrapper), so that what the program adds shows as wall minus floor;
//! - this process's peak RSS (sampled) in each run.
//!
//! Never fails on timings. Without `--bench` (`cargo test --benches`) it
//! only says how to run it.

#[path = "../harness/mod.rs"]
mod harness;

#[path = "../support/fake_provider.rs"]
mod fake_provider;

#[path = "../support/node_run.rs"]
mod node_run;

use std::fs;
use std::time::Duration;

use serde_json::Value;

use fake_provider::{FakeHandle, FakeProvider};
use harness::{TestUser, UserSpec};
use node_run::{action, intent, world, NodeConfig, NodeState};

const NODE: &str = "node-a";
const OTHER: &str = "node-b";
const SHA: &str = "be4c4b00";
const TOKEN: &str = "tok-bench-SECRET";
const KEY: &str = "bench";
const ROUNDS: usize = 15;

/// The bash hook on the same kind of machine (issue 17's table).
const BASH_ACTIVATE: Duration = Duration::from_millis(253);
const BASH_BACKUP: Duration = Duration::from_millis(422);

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn provider(job: &str, actions: Vec<Value>) -> FakeHandle {
    FakeProvider::builder()
        .node(NODE, TOKEN)
        .node(OTHER, "tok-other")
        .job(job, SHA, [(NODE, intent(actions))])
        .start()
}

/// The health check off, for the row that shows what it costs.
const HEALTH_OFF: &[(&str, &str)] = &[("HOSTENV_COMIN_HEALTH_TIMEOUT", "0")];

fn config<'a>(state: Option<&'a NodeState>) -> NodeConfig<'a> {
    NodeConfig {
        node: NODE,
        sha: SHA,
        token: TOKEN,
        action_timeout: 120,
        target_observe_timeout: 30,
        intent_wait: 0,
        extra_env: &[],
        stdin: None,
        state,
        run_timeout: None,
    }
}

/// One run of `actions`: wall time and sampled peak RSS (KiB).
fn timed_run(actions: Vec<Value>) -> (Duration, u64) {
    timed_run_with(actions, &[])
}

/// [`timed_run`] with more variables for the binary.
fn timed_run_with(actions: Vec<Value>, env: &[(&str, &str)]) -> (Duration, u64) {
    timed_run_of(node_run::bin(), actions, env)
}

/// [`timed_run_with`] of the binary `program`.
fn timed_run_of(
    program: &std::path::Path,
    actions: Vec<Value>,
    env: &[(&str, &str)],
) -> (Duration, u64) {
    let (t, peak, _) = timed_parts_of(program, actions, env);
    (t, peak)
}

/// [`timed_run_of`], with what the binary's log says the user's own parts
/// of a backup took: the unit's job and the wrapper's snapshot listing
/// (none for a binary that does not log them).
fn timed_parts_of(
    program: &std::path::Path,
    actions: Vec<Value>,
    env: &[(&str, &str)],
) -> (Duration, u64, Option<Duration>) {
    let fake = provider("job-bench", actions);
    let run = node_run::spawn_binary(
        program,
        &fake,
        &NodeConfig {
            extra_env: env,
            ..config(None)
        },
        &[],
    );
    let (finished, peak) = run.wait_measuring(Duration::from_secs(600));
    assert_eq!(finished.code, Some(0), "{}", finished.output());
    (finished.elapsed, peak, users_parts(&finished.stderr))
}

/// The unit's job plus the snapshot listing, as a backup run logged them
/// ("... finished (job done) after 12.3ms", "... listed in 5.1ms)").
fn users_parts(log: &str) -> Option<Duration> {
    let after = |marker: &str| {
        let rest = &log[log.find(marker)? + marker.len()..];
        let end = rest.find(|c: char| c.is_whitespace() || c == ')')?;
        parse_debug_duration(&rest[..end])
    };
    Some(after("(job done) after ")? + after("snapshot(s) listed in ")?)
}

/// A `Duration` as `{:.1?}` prints it: `12.3ms`, `1.2s`, `512.0µs`.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// What `strace` saw a run write to its state directory.
struct Io {
    events: usize,
    bytes: u64,
    fsyncs: usize,
}

/// The same run under `strace -f -y`: bytes written to files of the state
/// directory and fsync/fdatasync calls on them, per event posted.
fn traced_run(actions: Vec<Value>) -> Io {
    let count = actions.len();
    let state = NodeState::new();
    let dir = state.state_dir();
    let trace = tempfile::NamedTempFile::new().expect("trace file");
    run_under_strace(
        actions,
        &state,
        "-f -y -qq -e trace=write,pwrite64,writev,fsync,fdatasync",
        trace.path(),
    );
    let text = fs::read_to_string(trace.path()).expect("read trace");
    let marker = dir.display().to_string();
    let mut io = Io {
        events: 2 * count + 1,
        bytes: 0,
        fsyncs: 0,
    };
    for line in text.lines() {
        if !line.contains(&marker) {
            continue;
        }
        if line.contains("fsync(") || line.contains("fdatasync(") {
            io.fsyncs += 1;
        } else if let Some(n) = line
            .rsplit("= ")
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            io.bytes += n;
        }
    }
    io
}

/// Runs `actions` with the binary under `strace <options> -o <out>`.
fn run_under_strace(actions: Vec<Value>, state: &NodeState, options: &str, out: &std::path::Path) {
    run_traced(
        actions,
        state,
        &format!("strace {options} -o {}", out.display()),
    );
}

/// One run of the binary under `tracer` (a command line that ends where
/// the binary's path goes), which must succeed.
fn run_traced(actions: Vec<Value>, state: &NodeState, tracer: &str) {
    let fake = provider("job-traced", actions);
    // strace runs the binary: NodeConfig's environment reaches it through
    // strace, which passes its own environment on.
    let cfg = config(Some(state));
    let wrapper = tempfile::Builder::new()
        .prefix("hat-strace-")
        .tempfile()
        .expect("wrapper");
    fs::write(
        wrapper.path(),
        format!(
            "#!/bin/sh\nexec {tracer} {} \"$@\"\n",
            node_run::bin().display()
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(
        wrapper.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod wrapper");
    let wrapper_path = wrapper.into_temp_path();
    let finished =
        node_run::spawn_binary(&wrapper_path, &fake, &cfg, &[]).wait(Duration::from_secs(1200));
    assert_eq!(finished.code, Some(0), "{}", finished.output());
}

/// The wall time of `program args` run straight as `user` (uid, gid, the
/// session's variables; no wrapper process), which must succeed.
fn as_user(user: &TestUser, program: &str, args: &[&str]) -> Duration {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .uid(user.uid)
        .gid(user.gid)
        .env_clear()
        .current_dir(&user.home)
        .stdout(std::process::Stdio::null());
    for pair in user.env_pairs() {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    let started = std::time::Instant::now();
    let status = cmd.status().expect("run as the user");
    let took = started.elapsed();
    assert!(status.success(), "{program} {args:?} as the user: {status}");
    took
}

/// The floor of each one-action run: what the user's own parts take when
/// run by hand, with no program of ours around them. For `activate`, the
/// user's program alone; for `backup`, `systemctl --user start` of the
/// unit (systemctl's own start included) and then the wrapper alone.
fn floors(user: &TestUser) -> (Duration, Duration) {
    let program = user.home.join(".local/bin/activate");
    let wrapper = user.home.join(format!(".local/bin/restic-{KEY}"));
    let unit = format!("restic-backups-{KEY}.service");
    let mut activate = Vec::new();
    let (mut backup, mut systemctl, mut alone, mut listing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        activate.push(as_user(user, &program.display().to_string(), &[]));
        let started = as_user(user, "systemctl", &["--user", "start", &unit]);
        // systemctl's own start and one call to the manager, no unit run.
        alone.push(as_user(
            user,
            "systemctl",
            &["--user", "show", "-p", "Version", "--value"],
        ));
        let listed = as_user(
            user,
            &wrapper.display().to_string(),
            &["snapshots", "--tag", KEY, "--json"],
        );
        backup.push(started + listed);
        systemctl.push(started);
        listing.push(listed);
    }
    println!(
        "backup floor, medians: `systemctl --user start` {:.1?} (systemctl's own start and one call, `systemctl --user show -p Version`: {:.1?}), the wrapper {:.1?}",
        median(systemctl),
        median(alone),
        median(listing)
    );
    (median(activate), median(backup))
}

fn activate_user(user: &TestUser) {
    user.write_file(".local/bin/activate", "#!/bin/sh\nexit 0\n", 0o755)
        .expect("activate");
}

/// A backup unit and a wrapper that finish at once: the unit runs
/// `/bin/true`, the wrapper prints one snapshot of now.
fn instant_backup(user: &TestUser) {
    user.write_unit(
        &format!("restic-backups-{KEY}.service"),
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    .expect("unit");
    user.write_file(
        &format!(".local/bin/restic-{KEY}"),
        &format!(
            "#!/bin/sh\nprintf '[{{\"time\":\"%s\",\"id\":\"%s\",\"short_id\":\"x\",\"tags\":[\"{KEY}\"]}}]\\n' \"$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)\" \"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')\"\n"
        ),
        0o755,
    )
    .expect("wrapper");
    user.daemon_reload().expect("daemon-reload");
}

/// Medians of `2 * ROUNDS` one-action runs of `old` and of `new`, taking
/// turns (who goes first alternates), and with `--actions N,M,...` also
/// four runs of N (M, ...) `activate` actions of each (median time per
/// action).
fn compare(
    old: &std::path::Path,
    new: &std::path::Path,
    activate: &dyn Fn() -> Value,
    backup: &dyn Fn() -> Value,
    args: &[String],
) {
    println!("old: {}\nnew: {}", old.display(), new.display());
    println!("medians of {} runs each, taking turns", 2 * ROUNDS);
    println!("| run | old | new | new / old |");
    println!("|---|---|---|---|");
    for (name, make, env) in [
        ("activate", activate, &[][..]),
        ("activate (health check off)", activate, HEALTH_OFF),
        ("backup", backup, &[]),
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Wall minus the user's parts, for binaries that log them.
        let (mut a_own, mut b_own) = (Vec::new(), Vec::new());
        for round in 0..2 * ROUNDS {
            // Who goes first alternates: a run right after another one is
            // faster (a backup unit's cgroup attach skips the kernel's wait
            // when another attach was just made), and that must not favour
            // one binary.
            let mut pair = [(old, &mut a, &mut a_own), (new, &mut b, &mut b_own)];
            if round % 2 == 1 {
                pair.reverse();
            }
            for (binary, times, own) in pair {
                let (t, _, parts) = timed_parts_of(binary, vec![make()], env);
                times.push(t);
                own.extend(parts.map(|p| t.saturating_sub(p)));
            }
        }
        let (a, b) = (median(a), median(b));
        println!(
            "| one-action {name} | {a:>9.1?} | {b:>9.1?} | {:.2} |",
            b.as_secs_f64() / a.as_secs_f64()
        );
        if a_own.len() == 2 * ROUNDS && b_own.len() == 2 * ROUNDS {
            let (a, b) = (median(a_own), median(b_own));
            println!(
                "| one-action {name}, wall minus the unit's job and the listing | {a:>9.1?} | {b:>9.1?} | {:.2} |",
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
    }
    let sizes = args
        .iter()
        .skip_while(|a| *a != "--actions")
        .nth(1)
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.parse::<usize>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for n in sizes {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..4 {
            let mut pair = [(old, &mut a), (new, &mut b)];
            if round % 2 == 1 {
                pair.reverse();
            }
            for (binary, times) in pair {
                times.push(
                    timed_run_of(binary, (0..n).map(|_| activate()).collect(), &[]).0 / n as u32,
                );
            }
        }
        let (a, b) = (median(a), median(b));
        println!(
            "| {n} activate actions, per action | {a:>9.2?} | {b:>9.2?} | {:.2} |",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("end_to_end: not measuring (run `cargo bench --bench end_to_end` as root)");
        return;
    }
    let w = world(&[UserSpec::new("bench").without_test_units()]);
    let user = w.user("bench");
    activate_user(user);
    instant_backup(user);
    let activate = || action("activate", &user.name, &[], None, None);
    let backup = || action("backup", &user.name, &[KEY], Some(NODE), Some(OTHER));
    // Warm the page cache and the user's manager.
    timed_run(vec![activate()]);
    timed_run(vec![backup()]);
    // `-- --profile DIR`: where the time of one run of each goes
    // (`strace -f -ttt -T`), then stop. `-- --perf DIR`: the same with
    // `perf trace`, which slows each system call far less than `strace`;
    // `$BENCH_TRACER` (e.g. `perf record -g`, `perf stat`) replaces
    // `perf trace --sched` (its output goes to the same files).
    let args: Vec<String> = std::env::args().collect();
    let traced = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(std::path::PathBuf::from)
    };
    let tracing = if let Some(dir) = traced("--profile") {
        Some((dir, "trace", "strace -f -ttt -T -y -s 80".to_owned()))
    } else {
        traced("--perf").map(|dir| {
            let tracer = std::env::var("BENCH_TRACER")
                .unwrap_or_else(|_| "perf trace -T --sched".to_owned());
            (dir, "perf", tracer)
        })
    };
    if let Some((dir, ext, tracer)) = tracing {
        for (name, make) in [
            ("activate", &activate as &dyn Fn() -> Value),
            ("backup", &backup),
        ] {
            let out = dir.join(format!("{name}.{ext}"));
            run_traced(
                vec![make()],
                &NodeState::new(),
                &format!("{tracer} -o {} --", out.display()),
            );
            println!("`{tracer}` of a one-action {name} run: {}", out.display());
        }
        return;
    }

    // `-- --manager-trace FILE`: one backup run with the user's systemd
    // manager (and the processes it forks) under `strace -f`, to see where
    // the unit's own start goes (e.g. the kernel's cgroup attach: the
    // writes to `cgroup.procs`), then stop.
    if let Some(out) = traced("--manager-trace") {
        let pid = user.manager_pid().expect("the user's manager runs");
        let mut strace = std::process::Command::new("strace")
            .args(["-f", "-ttt", "-T", "-y", "-s", "80", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace");
        // strace says it attached before it traces anything.
        let mut said = std::io::BufReader::new(strace.stderr.take().expect("stderr"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut said, &mut line).expect("strace attached");
        let (t, _) = timed_run(vec![backup()]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(strace.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = strace.wait();
        println!(
            "a one-action backup run ({t:.1?}) with the user's manager (pid {pid}) under `strace -f`: {}",
            out.display()
        );
        return;
    }

    // `-- --compare OLD NEW [--actions N,M]`: the one-action runs of two
    // binaries, taking turns (so that a noisy neighbour hits both alike),
    // then stop.
    if let Some(i) = args.iter().position(|a| a == "--compare") {
        let (Some(old), Some(new)) = (args.get(i + 1), args.get(i + 2)) else {
            panic!("--compare OLD NEW: two binaries");
        };
        compare(
            std::path::Path::new(old),
            std::path::Path::new(new),
            &activate,
            &backup,
            &args,
        );
        return;
    }
    // `-- --actions N`: one timed run of N `activate` actions, then stop
    // (to profile the per-action path at scale).
    if let Some(n) = args
        .iter()
        .position(|a| a == "--actions")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
    {
        let (t, peak) = timed_run((0..n).map(|_| activate()).collect());
        println!(
            "| {n} | {:>9.2?} per action | peak RSS {peak} KiB |",
            t / n as u32
        );
        return;
    }
    let (activate_floor, backup_floor) = floors(user);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (name, make, bash, env, floor) in [
        (
            "activate",
            &activate as &dyn Fn() -> Value,
            BASH_ACTIVATE,
            &[][..],
            activate_floor,
        ),
        (
            "activate (health check off)",
            &activate,
            BASH_ACTIVATE,
            HEALTH_OFF,
            activate_floor,
        ),
        ("backup", &backup, BASH_BACKUP, &[], backup_floor),
    ] {
        let mut times = Vec::new();
        let (mut parts, mut own) = (Vec::new(), Vec::new());
        let mut peak = 0;
        for _ in 0..ROUNDS {
            let (t, p, logged) = timed_parts_of(node_run::bin(), vec![make()], env);
            times.push(t);
            peak = peak.max(p);
            if let Some(logged) = logged {
                parts.push(logged);
                own.push(t.saturating_sub(logged));
            }
        }
        if parts.len() == ROUNDS {
            notes.push(format!(
                "{name}, as each run logged them: the unit's job plus the snapshot listing {:.1?} (median), wall minus them {:.1?} (median)",
                median(parts),
                median(own)
            ));
        }
        let m = median(times);
        rows.push(format!(
            "| one-action {name} run | {m:>9.1?} | {floor:>9.1?} | {:>9.1?} | {:.3}x of the bash hook's {bash:?} | peak RSS {peak} KiB |",
            m.saturating_sub(floor),
            m.as_secs_f64() / bash.as_secs_f64()
        ));
    }
    println!(
        "hostenv-activate end to end ({}), medians of {ROUNDS}",
        node_run::bin().display()
    );
    println!("(floor: the user's parts run by hand: the activate program alone; `systemctl --user start` of the backup unit, then the wrapper)");
    println!("| run | wall | floor | wall - floor | vs bash | memory |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    for note in notes {
        println!("- {note}");
    }
    if args.iter().any(|a| a == "--one-action") {
        return;
    }
    println!();
    println!("| activate actions | per action | bytes to the state dir per event | fsyncs per event | peak RSS |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 10, 100, 1000] {
        let (t, peak) = timed_run((0..n).map(|_| activate()).collect());
        let io = traced_run((0..n).map(|_| activate()).collect());
        println!(
            "| {n} | {:>9.2?} | {} | {:.2} | {peak} KiB |",
            t / n as u32,
            io.bytes / io.events as u64,
            io.fsyncs as f64 / io.events as f64
        );
    }
}
