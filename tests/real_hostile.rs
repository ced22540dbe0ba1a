//! A hostile environment user against the shipped binary on a real node
//! (behaviour.md, "The environment's user is not trusted"): the user's bus
//! socket replaced by a server of the test's own that never answers, stops
//! after the SASL `OK`, answers with a bare newline or an endless line,
//! announces a 128 MiB message, or answers with an error text holding
//! control characters and a forged log line; a backup unit that will not
//! stop; thousands of units. Each time the run ends within its bounds,
//! exit 1, naming the user, its peak RSS (sampled from `/proc`) stays under
//! 64 MiB, SIGTERM ends it within 5 s, and the node's next run still works.
//!
//! Needs root; `.ci/run` runs it against the static binary.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use fake_provider::{FakeHandle, FakeProvider};
use harness::{TestUser, UserSpec};
use node_run::{action, intent, spawn, world, Finished, NodeConfig, Running};

const NODE: &str = "node-a";
const OTHER: &str = "node-b";
const SHA: &str = "bad0b05";
const JOB: &str = "job-hostile";
const TOKEN: &str = "tok-hostile-SECRET";
const KEY: &str = "app";
/// The action timeout of the runs against a bad bus.
const ACTION_TIMEOUT: u64 = 5;
/// The bound on this process's peak RSS whatever the user sends.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// A line a hostile user would like to see in the operator's log.
const FORGED: &str = "hostenv-activate: info node=node-a: backup success";

/// What the fake bus does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// Accepts and never reads or writes.
    Silent,
    /// Answers `AUTH` with `OK`, then nothing.
    StopsAfterOk,
    /// Answers `AUTH` with a bare newline.
    BareNewline,
    /// Answers `AUTH` with a line that never ends.
    EndlessLine,
    /// Completes authentication, then announces a 128 MiB reply to
    /// `Hello` and never sends it.
    HugeMessage,
    /// Completes authentication and answers `Hello` with an error whose
    /// text holds CR, LF, NUL, ESC and a forged log line.
    EvilError,
}

/// A server of the test's own on the user's bus socket. Dropped: it stops
/// accepting and the socket is removed.
struct FakeBus {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<UnixStream>>>,
}

impl FakeBus {
    fn replace(user: &TestUser, bad: Bad) -> Self {
        let path = user.bus_path();
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the fake bus");
        // The user's own socket: only the user (and root) can connect.
        chown(&path, Some(user.uid), Some(user.gid)).expect("chown the fake bus");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (stop2, held2) = (Arc::clone(&stop), Arc::clone(&held));
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        if let Ok(copy) = stream.try_clone() {
                            held2.lock().expect("held").push(copy);
                        }
                        let stop3 = Arc::clone(&stop2);
                        thread::spawn(move || serve(stream, bad, &stop3));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakeBus { path, stop, held }
    }
}

impl Drop for FakeBus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.held.lock().expect("held").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// One SASL line (up to CRLF, at most 4 KiB); a leading NUL is dropped.
fn read_line(stream: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            break;
        }
        if !(line.is_empty() && byte[0] == 0) {
            line.push(byte[0]);
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// Authenticates the client (EXTERNAL, fd passing refused) up to `BEGIN`.
fn authenticate(stream: &mut UnixStream) -> Option<()> {
    read_line(stream)?;
    stream
        .write_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
        .ok()?;
    loop {
        let line = read_line(stream)?;
        if line.starts_with("BEGIN") {
            return Some(());
        }
        if line.starts_with("NEGOTIATE_UNIX_FD") {
            stream.write_all(b"AGREE_UNIX_FD\r\n").ok()?;
        } else {
            stream.write_all(b"ERROR\r\n").ok()?;
        }
    }
}

/// Reads one whole message; returns its serial.
fn read_message(stream: &mut UnixStream) -> Option<u32> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).ok()?;
    let le = fixed[0] == b'l';
    let num = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let body = num(&fixed[4..8]) as usize;
    let serial = num(&fixed[8..12]);
    let fields = num(&fixed[12..16]) as usize;
    let padded = fields.div_ceil(8) * 8;
    let mut rest = vec![0u8; padded + body];
    stream.read_exact(&mut rest).ok()?;
    Some(serial)
}

fn pad8(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(8) {
        buf.push(0);
    }
}

/// A little-endian D-Bus message of `kind` (2 reply, 3 error) replying to
/// `serial`, with the given error name (errors) and one string body.
fn message(
    kind: u8,
    serial: u32,
    error: Option<&str>,
    body: Option<&str>,
    body_len: Option<u32>,
) -> Vec<u8> {
    let mut fields = Vec::new();
    let string_field = |fields: &mut Vec<u8>, code: u8, sig: u8, text: &str| {
        pad8(fields);
        fields.extend([code, 1, sig, 0]);
        if sig == b'g' {
            fields.push(text.len() as u8);
        } else {
            fields.extend((text.len() as u32).to_le_bytes());
        }
        fields.extend(text.as_bytes());
        fields.push(0);
    };
    if let Some(name) = error {
        string_field(&mut fields, 4, b's', name);
    }
    pad8(&mut fields);
    fields.extend([5, 1, b'u', 0]);
    fields.extend(serial.to_le_bytes());
    if body.is_some() {
        string_field(&mut fields, 8, b'g', "s");
    }
    let mut payload = Vec::new();
    if let Some(text) = body {
        payload.extend((text.len() as u32).to_le_bytes());
        payload.extend(text.as_bytes());
        payload.push(0);
    }
    let mut msg = vec![b'l', kind, 0, 1];
    msg.extend(body_len.unwrap_or(payload.len() as u32).to_le_bytes());
    msg.extend(7u32.to_le_bytes());
    msg.extend((fields.len() as u32).to_le_bytes());
    msg.extend(&fields);
    pad8(&mut msg);
    msg.extend(payload);
    msg
}

/// The text of [`Bad::EvilError`].
fn evil_text() -> String {
    format!("denied\r\n{FORGED}\n\u{1b}[2J\u{1b}]0;owned\u{7}\0tail")
}

fn serve(mut stream: UnixStream, bad: Bad, stop: &AtomicBool) {
    let hold = |stop: &AtomicBool| {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
    };
    match bad {
        Bad::Silent => hold(stop),
        Bad::StopsAfterOk => {
            let _ = read_line(&mut stream);
            let _ = stream.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n");
            hold(stop);
        }
        Bad::BareNewline => {
            let _ = read_line(&mut stream);
            let _ = stream.write_all(b"\n");
            hold(stop);
        }
        Bad::EndlessLine => {
            let _ = read_line(&mut stream);
            let chunk = vec![b'x'; 64 * 1024];
            while !stop.load(Ordering::SeqCst) && stream.write_all(&chunk).is_ok() {}
        }
        Bad::HugeMessage => {
            if authenticate(&mut stream).is_some() {
                if let Some(serial) = read_message(&mut stream) {
                    let header = message(2, serial, None, Some(":1.1"), Some(128 << 20));
                    // The header, and the start of the body: never the rest.
                    let _ = stream.write_all(&header[..header.len() - 4]);
                }
            }
            hold(stop);
        }
        Bad::EvilError => {
            if authenticate(&mut stream).is_some() {
                if let Some(serial) = read_message(&mut stream) {
                    let text = evil_text();
                    let _ = stream.write_all(&message(
                        3,
                        serial,
                        Some("org.freedesktop.DBus.Error.AccessDenied"),
                        Some(&text),
                        None,
                    ));
                }
            }
            hold(stop);
        }
    }
}

// ------------------------------------------------------------------ runs

fn backup_of(user: &str) -> Value {
    action("backup", user, &[KEY], Some(NODE), Some(OTHER))
}

fn provider(actions: Vec<Value>) -> FakeHandle {
    FakeProvider::builder()
        .node(NODE, TOKEN)
        .node(OTHER, "tok-other")
        .job(JOB, SHA, [(NODE, intent(actions))])
        .start()
}

fn start(fake: &FakeHandle, action_timeout: u64) -> Running {
    spawn(
        fake,
        &NodeConfig {
            node: NODE,
            sha: SHA,
            token: TOKEN,
            action_timeout,
            target_observe_timeout: 30,
            intent_wait: 0,
            extra_env: &[],
            stdin: None,
            state: None,
            run_timeout: None,
        },
    )
}

/// Waits for the run, sampling its peak RSS until it exits.
fn finish(run: Running, limit: Duration) -> (Finished, u64) {
    run.wait_measuring(limit)
}

fn events(fake: &FakeHandle) -> Vec<(String, String, String)> {
    fake.events_of(JOB, NODE)
        .iter()
        .map(|e| (e.phase.clone(), e.status.clone(), e.message.clone()))
        .collect()
}

/// No raw control character (C0 but the final newline of each line, DEL, C1).
fn control_free(text: &str) -> bool {
    !text
        .chars()
        .any(|c| (c.is_control() && c != '\n') || ('\u{80}'..='\u{9f}').contains(&c))
}

/// Every stderr line is one of ours: it starts with our name, no forged
/// line stands on its own, and no raw control character is left.
#[track_caller]
fn assert_truthful(ran: &Finished) {
    for line in ran.stderr.lines() {
        assert!(
            line.starts_with("hostenv-activate"),
            "a line that is not ours: {line:?}\n{}",
            ran.output()
        );
        assert_ne!(line, FORGED, "a forged line stands on its own");
    }
    assert!(
        control_free(&ran.stderr),
        "raw control characters:\n{:?}",
        ran.stderr
    );
}

/// The run against `bad`: the backup fails naming the user, within the
/// action timeout plus a few seconds, RSS under the bound; then SIGTERM
/// during the exchange ends a run within 5 s; then the next run, for a
/// healthy user, succeeds.
fn against(bad: Bad) {
    let w = world(&[
        UserSpec::new("evil").without_manager().without_test_units(),
        UserSpec::new("good").without_test_units(),
    ]);
    let (evil, good) = (w.user("evil"), w.user("good"));
    let _bus = FakeBus::replace(evil, bad);

    let fake = provider(vec![backup_of(&evil.name)]);
    let (ran, peak) = finish(start(&fake, ACTION_TIMEOUT), Duration::from_secs(60));
    eprintln!(
        "{bad:?}: exit {:?} after {:.2?}, peak RSS {peak} KiB",
        ran.code, ran.elapsed
    );
    ran.expect_code(1).expect_no_token(TOKEN);
    assert!(
        ran.elapsed < Duration::from_secs(ACTION_TIMEOUT + 5),
        "{bad:?}: the run took {:.1?} against a {ACTION_TIMEOUT} s action timeout:\n{}",
        ran.elapsed,
        ran.output()
    );
    assert!(
        peak > 0 && peak < RSS_BOUND_KIB,
        "{bad:?}: peak RSS {peak} KiB"
    );
    let got = events(&fake);
    let last = got.last().expect("events");
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("backup", "failed"),
        "{got:?}"
    );
    assert!(
        last.2.contains(&evil.name),
        "the message names the user: {got:?}"
    );
    assert!(
        control_free(&last.2),
        "raw control characters in the event: {:?}",
        last.2
    );
    assert!(!last.2.contains('\n'), "{:?}", last.2);
    assert_truthful(&ran);

    // SIGTERM while the helper is stuck (where it got stuck rather than
    // failing at once): the run ends within 5 s.
    if ran.elapsed >= Duration::from_secs(ACTION_TIMEOUT) {
        sigterm_during_the_exchange(bad, &evil.name);
    }

    // The node takes the next deployment, for another user.
    good.write_file(".local/bin/activate", "#!/bin/sh\necho activated\n", 0o755)
        .expect("activate");
    let fake = provider(vec![action("activate", &good.name, &[], None, None)]);
    let (ran, _) = finish(start(&fake, 30), Duration::from_secs(60));
    ran.expect_code(0);
}

fn sigterm_during_the_exchange(bad: Bad, user: &str) {
    let fake = provider(vec![backup_of(user)]);
    let run = start(&fake, 300);
    let seen = Instant::now();
    while fake.events_of(JOB, NODE).is_empty() && seen.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    run.sigterm();
    let signalled = Instant::now();
    let (ran, peak) = finish(run, Duration::from_secs(30));
    let took = signalled.elapsed();
    eprintln!("{bad:?}: SIGTERM ended the run in {took:.2?}, peak RSS {peak} KiB");
    ran.expect_code(1);
    assert!(
        took < Duration::from_secs(5),
        "{bad:?}: SIGTERM took {took:.1?}:\n{}",
        ran.output()
    );
    assert!(
        peak > 0 && peak < RSS_BOUND_KIB,
        "{bad:?}: peak RSS {peak} KiB"
    );
    assert_truthful(&ran);
}

#[test]
fn a_bus_that_accepts_and_never_answers() {
    against(Bad::Silent);
}

#[test]
fn a_bus_that_stops_after_the_sasl_ok() {
    against(Bad::StopsAfterOk);
}

#[test]
fn a_bus_that_answers_auth_with_a_bare_newline() {
    against(Bad::BareNewline);
}

#[test]
fn a_bus_that_answers_auth_with_an_endless_line() {
    against(Bad::EndlessLine);
}

#[test]
fn a_bus_that_announces_a_128_mib_message() {
    against(Bad::HugeMessage);
}

#[test]
fn a_bus_whose_error_text_forges_log_lines() {
    against(Bad::EvilError);
}

/// A backup unit that ignores SIGTERM (`trap '' TERM`, inherited by its
/// `sleep`) with `TimeoutStopSec=infinity`: past the action timeout it is
/// stopped, then killed 5 s later; the action is `timed_out` and the run
/// ends within the timeout plus 10 s, nothing of the unit left running.
#[test]
fn a_unit_that_will_not_stop_is_killed_within_the_bound() {
    const TIMEOUT: u64 = 3;
    let w = world(&[UserSpec::new("stuck").backups(&[KEY]).without_test_units()]);
    let user = w.user("stuck");
    user.write_unit(
        &format!("restic-backups-{KEY}.service"),
        "[Service]\nType=oneshot\nTimeoutStopSec=infinity\n\
         ExecStart=/bin/sh -c \"trap '' TERM; while :; do sleep 1 hat-stuck-marker; done\"\n",
    )
    .expect("unit");
    user.daemon_reload().expect("daemon-reload");
    let fake = provider(vec![backup_of(&user.name)]);
    let (ran, peak) = finish(start(&fake, TIMEOUT), Duration::from_secs(60));
    eprintln!(
        "stuck unit: exit {:?} after {:.2?}, peak RSS {peak} KiB",
        ran.code, ran.elapsed
    );
    ran.expect_code(1);
    assert!(
        ran.elapsed < Duration::from_secs(TIMEOUT + 10),
        "the run took {:.1?}:\n{}",
        ran.elapsed,
        ran.output()
    );
    let got = events(&fake);
    let last = got.last().expect("events");
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("backup", "timed_out"),
        "{got:?}"
    );
    let left: Vec<_> = user
        .processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("hat-stuck-marker") || cmd.contains("trap"))
        .collect();
    assert!(
        left.is_empty(),
        "the unit left processes: {left:?}\n{}",
        ran.output()
    );
    let state = user
        .unit_property(&format!("restic-backups-{KEY}.service"), "ActiveState")
        .expect("ActiveState");
    assert!(matches!(state.as_str(), "inactive" | "failed"), "{state}");
    assert_truthful(&ran);
}

/// 4,000 `restic-backups-*` units and the key's own missing: the backup
/// fails within its timeout, the hint names at most 20 and counts the rest.
#[test]
fn thousands_of_units_give_a_bounded_hint_in_bounded_time() {
    const UNITS: usize = 4000;
    let w = world(&[UserSpec::new("many").without_test_units()]);
    let user = w.user("many");
    let dir = user.unit_dir();
    fs::create_dir_all(&dir).expect("unit dir");
    let mut names = Vec::with_capacity(UNITS);
    for i in 0..UNITS {
        let name = format!("restic-backups-k{i:04}.service");
        let path = dir.join(&name);
        fs::write(&path, "[Service]\nType=oneshot\nExecStart=/bin/true\n").expect("unit");
        chown(&path, Some(user.uid), Some(user.gid)).expect("chown");
        names.push(name);
    }
    // In the manager's memory, as backup units are through their timers.
    user.write_unit(
        "default.target.d/hat-many.conf",
        &format!("[Unit]\nWants={}\n", names.join(" ")),
    )
    .expect("drop-in");
    user.daemon_reload().expect("daemon-reload");
    let fake = provider(vec![backup_of(&user.name)]);
    let (ran, peak) = finish(start(&fake, ACTION_TIMEOUT), Duration::from_secs(120));
    eprintln!(
        "{UNITS} units: exit {:?} after {:.2?}, peak RSS {peak} KiB",
        ran.code, ran.elapsed
    );
    ran.expect_code(1);
    assert!(
        ran.elapsed < Duration::from_secs(ACTION_TIMEOUT + 5),
        "the run took {:.1?}:\n{}",
        ran.elapsed,
        ran.output()
    );
    let got = events(&fake);
    let last = got.last().expect("events");
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("backup", "failed"),
        "{got:?}"
    );
    let message = &last.2;
    eprintln!("the operator reads: {message}");
    assert!(message.contains("not loaded"), "{message}");
    assert!(
        message.contains("restic-backups-k0000.service"),
        "{message}"
    );
    assert!(
        message.contains(&format!("and {} more", UNITS - 20)),
        "{message}"
    );
    assert!(message.len() < 2000, "{} bytes: {message}", message.len());
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
}
