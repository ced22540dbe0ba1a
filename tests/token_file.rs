//! The token file as the shipped binary meets it (behaviour.md,
//! "Configuration": wait up to 30 s, never show the token), for the files a
//! misconfigured node can really have: a FIFO nobody writes to, a device, a
//! huge file, a file others can read, and a file that never comes while a
//! stop signal arrives. Each must end the run quickly with a message naming
//! the path, or let it proceed with a warning. Hermetic: the fake provider on
//! loopback, an empty intent, no user touched.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fake_provider::{fixture_json, FakeHandle, FakeProvider};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const NODE: &str = "node-a";
const SHA: &str = "0123abcd";
const JOB: &str = "job-1";
/// Distinctive, so that a leak anywhere is caught.
const TOKEN: &str = "tok-a-9Kd2-SECRET-do-not-print";
/// A refusal must not wait for the file: well under the 30 s wait.
const QUICK: Duration = Duration::from_secs(5);

fn provider() -> FakeHandle {
    FakeProvider::builder()
        .node(NODE, TOKEN)
        .job(
            JOB,
            SHA,
            [(NODE, fixture_json("intents/empty-actions.json"))],
        )
        .start()
}

/// A configured invocation, with the run's memory (journal, lock) in a
/// directory of its own that lives as long as it.
struct Invocation {
    cmd: Command,
    _state: tempfile::TempDir,
}

/// The binary configured like comin's wrapper does it, with `token_file`.
fn command(fake: &FakeHandle, token_file: &Path) -> Invocation {
    command_via(fake, token_file, &[])
}

/// Same, started through `wrapper` (e.g. a shell setting a limit).
fn command_via(fake: &FakeHandle, token_file: &Path, wrapper: &[&str]) -> Invocation {
    let state = tempfile::tempdir().expect("a state directory");
    let bin = assert_cmd::cargo::cargo_bin("hostenv-activate");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("COMIN_GIT_SHA", SHA)
        .env("HOSTENV_COMIN_NODE_NAME", NODE)
        .env("HOSTENV_COMIN_API_BASE_URL", fake.url())
        .env("HOSTENV_COMIN_TOKEN_FILE", token_file)
        .env("HOSTENV_COMIN_ACTION_TIMEOUT", "60")
        .env("HOSTENV_COMIN_INTENT_WAIT", "0")
        .env("HOSTENV_COMIN_STATE_DIR", state.path().join("state"))
        .env("HOSTENV_COMIN_LOCK_FILE", state.path().join("run/lock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Invocation { cmd, _state: state }
}

struct Ran {
    output: Output,
    elapsed: Duration,
}

impl Ran {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn all(&self) -> String {
        format!(
            "--- exit {:?} after {:.2?}\n--- stdout\n{}--- stderr\n{}",
            self.output.status.code(),
            self.elapsed,
            String::from_utf8_lossy(&self.output.stdout),
            self.stderr()
        )
    }

    #[track_caller]
    fn expect(&self, code: i32, within: Duration, needles: &[&str]) -> &Self {
        let all = self.all();
        assert_eq!(self.output.status.code(), Some(code), "{all}");
        assert!(self.elapsed < within, "should take < {within:?}: {all}");
        for needle in needles {
            assert!(all.contains(needle), "should mention {needle:?}: {all}");
        }
        assert!(!all.contains(TOKEN), "the token leaked: {all}");
        self
    }
}

/// Runs `cmd` to its end.
fn run(mut invocation: Invocation) -> Ran {
    let start = Instant::now();
    let child = invocation.cmd.spawn().expect("start hostenv-activate");
    finish(child, start)
}

/// Waits for `child` (killing it, and failing, past two minutes) and
/// collects its output.
fn finish(mut child: Child, start: Instant) -> Ran {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hostenv-activate") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hostenv-activate did not exit within 120 s: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Ran {
        output: Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        },
        elapsed,
    }
}

fn token_file_with(dir: &Path, contents: &[u8], mode: u32) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, contents).expect("write the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn a_fifo_without_a_writer_ends_the_run_at_once() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("token");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let path = fifo.display().to_string();
    run(command(&fake, &fifo)).expect(1, QUICK, &[&path, "a FIFO", "not a regular file"]);
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

#[test]
fn dev_zero_is_refused_in_bounded_memory() {
    let fake = provider();
    // 256 MiB of address space: reading /dev/zero without a bound would
    // abort on allocation instead of exiting 1.
    let limited = ["/bin/sh", "-c", "ulimit -v 262144 && exec \"$@\"", "sh"];
    let cmd = command_via(&fake, Path::new("/dev/zero"), &limited);
    run(cmd).expect(
        1,
        QUICK,
        &["/dev/zero", "a character device", "not a regular file"],
    );
    assert!(fake.requests().is_empty());
}

#[test]
fn a_huge_file_is_refused_naming_the_limit() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = token_file_with(dir.path(), &vec![b'x'; 10 * 1024 * 1024], 0o400);
    let shown = path.display().to_string();
    run(command(&fake, &path)).expect(1, QUICK, &[&shown, "4096-byte limit"]);
    assert!(fake.requests().is_empty());
}

#[test]
fn a_file_others_can_read_is_used_with_a_warning_saying_how_to_fix_it() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = token_file_with(dir.path(), format!("{TOKEN}\n").as_bytes(), 0o644);
    let shown = path.display().to_string();
    let ran = run(command(&fake, &path));
    ran.expect(0, Duration::from_secs(60), &["No user actions"]);
    let stderr = ran.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("mode 0644"))
        .unwrap_or_else(|| panic!("a warning about the mode: {}", ran.all()));
    assert!(warning.contains("warn"), "{warning}");
    assert!(warning.contains(&shown), "{warning}");
    assert!(
        warning.contains(&format!("chmod 0400 {shown}")),
        "{warning}"
    );
    assert_eq!(fake.posted().len(), 1, "the run went on and reported");
}

#[test]
fn a_sops_nix_style_symlink_to_a_private_file_is_followed_quietly() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("secrets.d").join("1");
    std::fs::create_dir_all(&rendered).expect("mkdir");
    let target = token_file_with(&rendered, format!("{TOKEN}\n").as_bytes(), 0o400);
    let link = dir.path().join("node-token");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let ran = run(command(&fake, &link));
    ran.expect(0, Duration::from_secs(60), &["No user actions"]);
    if nix::unistd::geteuid().is_root() {
        assert!(
            !ran.stderr().contains("token file"),
            "a root-owned 0400 file needs no warning: {}",
            ran.all()
        );
    }
}

#[test]
fn a_stop_signal_ends_the_wait_for_a_missing_file_within_two_seconds() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-rendered-yet");
    let start = Instant::now();
    let mut invocation = command(&fake, &missing);
    let child = invocation.cmd.spawn().expect("start hostenv-activate");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    std::thread::sleep(Duration::from_millis(500));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let signalled = Instant::now();
    let ran = finish(child, start);
    let reaction = ran.elapsed.saturating_sub(signalled.duration_since(start));
    let shown = missing.display().to_string();
    ran.expect(
        1,
        Duration::from_secs(60),
        &[
            "interrupted by a stop signal while waiting for the token file",
            &shown,
        ],
    );
    assert!(
        reaction < Duration::from_secs(2),
        "exited {reaction:?} after SIGTERM: {}",
        ran.all()
    );
    assert!(fake.requests().is_empty());
}

#[test]
fn the_run_deadline_ends_the_wait_for_a_missing_file() {
    let fake = provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-rendered-yet");
    let mut invocation = command(&fake, &missing);
    invocation.cmd.env("HOSTENV_COMIN_RUN_TIMEOUT", "2");
    let ran = run(invocation);
    let shown = missing.display().to_string();
    // The 30 s token wait is cut by the 2 s run deadline.
    ran.expect(
        1,
        Duration::from_secs(10),
        &["when the run's deadline was reached", &shown],
    );
    assert!(fake.requests().is_empty());
}
