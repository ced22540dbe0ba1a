//! Exists so that `real_actions` and `real_migration` run the shipped binary
//! as a node one way, not two: as root, like comin's wrapper does (a cleared
//! environment holding only its configuration, the token in a root-owned
//! 0600 file and never in argv or the environment), bounded, its output
//! captured and checked by the same assertions, optionally with a stand-in
//! journal that receives its journal lines; plus the plan-dir cleanup, the
//! intent builders and the event and process lookups both targets use.
//!
//! Include it with `#[path = "support/node_run.rs"] mod node_run;` in a
//! target that also has `mod harness;` and `mod fake_provider;` (it uses
//! both from the crate root). Each target uses a subset, hence the allow.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::fake_provider::{Builder, Event, FakeHandle, FakeProvider};
use crate::harness::units::HOSTENV_TARGET;
use crate::harness::{TestUser, UserSpec, World};

/// Names the binary under test instead of cargo's build (CI sets it to the
/// static musl binary, which is what nodes run).
pub const BIN_VARIABLE: &str = "HOSTENV_ACTIVATE_BIN";

/// The shipped binary: `$HOSTENV_ACTIVATE_BIN` when set (it must be an
/// executable file, or every test using it fails saying so), else the one
/// cargo built for this test run (for the demo, an example, which cargo
/// gives no such variable: `hostenv-activate` in its build profile's
/// directory, beside `examples/`). Which one is printed once, past the test
/// harness's output capture.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let chosen = BIN.get_or_init(|| {
        let (path, from) = match std::env::var_os(BIN_VARIABLE) {
            Some(path) => (PathBuf::from(path), BIN_VARIABLE),
            None => match option_env!("CARGO_BIN_EXE_hostenv-activate") {
                Some(path) => (PathBuf::from(path), "cargo's build"),
                None => (
                    std::env::current_exe()
                        .ok()
                        .and_then(|exe| Some(exe.parent()?.parent()?.join("hostenv-activate")))
                        .unwrap_or_default(),
                    "the build beside this program (run `cargo build` first)",
                ),
            },
        };
        let executable = fs::metadata(&path)
            .map(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
            .unwrap_or(false);
        // Absolute: the binary runs with its working directory at `/`.
        let path = match fs::canonicalize(&path) {
            Ok(path) if executable => path,
            _ => {
                return Err(format!(
                    "the binary under test {} (from {from}) is not an executable file",
                    path.display()
                ))
            }
        };
        let _ = writeln!(
            std::io::stderr(),
            "binary under test: {} (from {from})",
            path.display()
        );
        Ok(path)
    });
    match chosen {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}
/// The only variable besides the configuration that comin's wrapper passes.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn world(specs: &[UserSpec]) -> World {
    World::up(specs).unwrap_or_else(|e| panic!("cannot bring up the real test node: {e:#}"))
}

// ------------------------------------------------------------ intents

/// One action of an intent.
pub fn action(
    op: &str,
    user: &str,
    migrations: &[&str],
    from: Option<&str>,
    to: Option<&str>,
) -> Value {
    let mut a = json!({"op": op, "user": user, "migrations": migrations});
    if let Some(from) = from {
        a["fromNode"] = json!(from);
    }
    if let Some(to) = to {
        a["toNode"] = json!(to);
    }
    a
}

pub fn intent(actions: Vec<Value>) -> Value {
    json!({"schemaVersion": 1, "actions": actions})
}

/// A provider with the demo's migration job `job` for commit `sha`: the
/// first node, `from` (name, token), backs up `user`'s `key` and then
/// deactivates it; the second, `to`, restores it and then activates it. Not
/// started yet: a test adds what else its provider does.
pub fn migration_provider(
    job: &str,
    sha: &str,
    user: &str,
    key: &str,
    from: (&str, &str),
    to: (&str, &str),
) -> Builder {
    let act = |op, migrations: &[&str]| action(op, user, migrations, Some(from.0), Some(to.0));
    FakeProvider::builder()
        .node(from.0, from.1)
        .node(to.0, to.1)
        .job(
            job,
            sha,
            [
                (
                    from.0,
                    intent(vec![act("backup", &[key]), act("deactivate", &[])]),
                ),
                (
                    to.0,
                    intent(vec![act("restore", &[key]), act("activate", &[])]),
                ),
            ],
        )
}

// ------------------------------------------------------------ running

/// One node's configuration for the binary, and what else its run gets.
pub struct NodeConfig<'a> {
    pub node: &'a str,
    pub sha: &'a str,
    pub token: &'a str,
    pub action_timeout: u64,
    pub target_observe_timeout: u64,
    pub intent_wait: u64,
    /// Variables beyond the configuration and PATH (canaries a leak would
    /// carry to the user's programs).
    pub extra_env: &'a [(&'a str, &'a str)],
    /// What a stdin pipe carries; the pipe stays open (and unread) until the
    /// binary has exited. `None`: stdin is /dev/null.
    pub stdin: Option<&'a str>,
    /// The node's memory (journal, run lock) shared with other runs;
    /// `None`: a fresh one for this run alone.
    pub state: Option<&'a NodeState>,
    /// `HOSTENV_COMIN_RUN_TIMEOUT`; `None`: the default.
    pub run_timeout: Option<u64>,
}

/// A node's memory between runs: its state directory (the journal) and
/// its run lock, in a temporary directory of the test's own.
pub struct NodeState {
    dir: tempfile::TempDir,
}

impl NodeState {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hat-state-")
            .tempdir()
            .expect("a state directory");
        Self { dir }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.dir.path().join("run").join("lock")
    }

    /// Every journal file, as the JSON of the record it holds (its lines
    /// folded as the binary reads them, up to a torn tail a kill may leave).
    pub fn journal(&self) -> Vec<Value> {
        let Ok(entries) = fs::read_dir(self.state_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| {
                let bytes = fs::read(e.path()).expect("read a journal file");
                let folded = hostenv_activate::model::journal::changes::read(&bytes)
                    .expect("a journal file");
                serde_json::to_value(&folded.record).expect("a record is JSON")
            })
            .collect()
    }
}

/// The binary, running (as root, like comin runs it). Killed if dropped
/// while still running, so a failing test leaves no run behind.
pub struct Running {
    node: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    _token_file: tempfile::NamedTempFile,
    /// The memory of a run that was given none.
    _own_state: Option<NodeState>,
}

/// How a run ended.
pub struct Finished {
    pub node: String,
    pub code: Option<i32>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn output(&self) -> String {
        format!(
            "--- {} exit {:?} after {:.1?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.node, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} should exit {code}:\n{}",
            self.node,
            self.output()
        );
        self
    }

    /// Neither stdout nor stderr shows `token`.
    #[track_caller]
    pub fn expect_no_token(&self, token: &str) -> &Self {
        assert!(
            !self.stdout.contains(token) && !self.stderr.contains(token),
            "a token leaked into {}'s output:\n{}",
            self.node,
            self.output()
        );
        self
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Starts the shipped binary for `cfg` against `fake`: a cleared environment
/// (its configuration, PATH and `cfg.extra_env`), the token in a root-owned
/// 0600 file, the working directory `/`.
pub fn spawn(fake: &FakeHandle, cfg: &NodeConfig<'_>) -> Running {
    spawn_with(fake, cfg, &[])
}

/// [`spawn`], with arguments (`status`, `doctor`, `--dry-run`, ...).
pub fn spawn_with(fake: &FakeHandle, cfg: &NodeConfig<'_>, args: &[&str]) -> Running {
    spawn_in(bin(), fake, cfg, args, None)
}

/// [`spawn_with`], running `program` (a wrapper around the binary, such as
/// the benchmark's `strace`) instead of the binary itself.
pub fn spawn_binary(
    program: &Path,
    fake: &FakeHandle,
    cfg: &NodeConfig<'_>,
    args: &[&str],
) -> Running {
    spawn_in(program, fake, cfg, args, None)
}

/// [`spawn_with`], the binary's journal socket being `journal`'s (see
/// [`StandInJournal`]).
pub fn spawn_journaled(
    fake: &FakeHandle,
    cfg: &NodeConfig<'_>,
    args: &[&str],
    journal: &StandInJournal,
) -> Running {
    spawn_in(bin(), fake, cfg, args, Some(&journal.socket))
}

/// Mounts the socket `$1` over /run/systemd/journal/socket, then runs the
/// rest. For a private mount namespace: as in the harness's managers,
/// /run/systemd exists only inside the namespace's own tmpfs.
const JOURNAL_MOUNT: &str = r#"set -eu
[ -d /run/systemd ] || mkdir /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/systemd/journal
touch /run/systemd/journal/socket
mount --bind "$1" /run/systemd/journal/socket
shift
exec "$@"
"#;

fn spawn_in(
    program: &Path,
    fake: &FakeHandle,
    cfg: &NodeConfig<'_>,
    args: &[&str],
    journal: Option<&Path>,
) -> Running {
    let mut token_file = tempfile::Builder::new()
        .prefix("hat-token-")
        .tempfile()
        .expect("token file");
    writeln!(token_file, "{}", cfg.token).expect("write the token");
    token_file.flush().expect("flush the token");
    let meta = fs::metadata(token_file.path()).expect("stat the token file");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (0, 0o600),
        "the token file is root-owned 0600"
    );

    let own_state = cfg.state.is_none().then(NodeState::new);
    let state = cfg.state.or(own_state.as_ref()).expect("a state");
    // `unshare` and `sh` exec the binary: the child's pid is the binary's.
    let mut cmd = match journal {
        None => Command::new(program),
        Some(socket) => {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c", JOURNAL_MOUNT])
                .arg("sh")
                .arg(socket)
                .arg(program);
            c
        }
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("COMIN_GIT_SHA", cfg.sha)
        .env("HOSTENV_COMIN_NODE_NAME", cfg.node)
        .env("HOSTENV_COMIN_API_BASE_URL", fake.url())
        .env("HOSTENV_COMIN_TOKEN_FILE", token_file.path())
        .env(
            "HOSTENV_COMIN_ACTION_TIMEOUT",
            cfg.action_timeout.to_string(),
        )
        .env(
            "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
            cfg.target_observe_timeout.to_string(),
        )
        .env("HOSTENV_COMIN_INTENT_WAIT", cfg.intent_wait.to_string())
        .env("HOSTENV_COMIN_STATE_DIR", state.state_dir())
        .env("HOSTENV_COMIN_LOCK_FILE", state.lock_file())
        .envs(cfg.extra_env.iter().copied())
        .envs(
            cfg.run_timeout
                .map(|t| ("HOSTENV_COMIN_RUN_TIMEOUT", t.to_string())),
        )
        .current_dir("/")
        .stdin(if cfg.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start hostenv-activate");
    let mut stdin = child.stdin.take();
    if let (Some(pipe), Some(data)) = (stdin.as_mut(), cfg.stdin) {
        let _ = pipe.write_all(format!("{data}\n").as_bytes());
        let _ = pipe.flush();
    }
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    Running {
        node: cfg.node.to_owned(),
        child: Some(child),
        stdin,
        started,
        stdout,
        stderr,
        _token_file: token_file,
        _own_state: own_state,
    }
}

/// A datagram socket standing in for journald: a run started with
/// [`spawn_journaled`] sends its journal lines here, in a private mount
/// namespace (the host's journal, if any, gets nothing).
pub struct StandInJournal {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    server: UnixDatagram,
}

impl StandInJournal {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hat-journal-")
            .tempdir()
            .expect("a directory for the stand-in journal");
        let socket = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&socket).expect("bind the stand-in journal");
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        Self {
            _dir: dir,
            socket,
            server,
        }
    }

    /// The datagrams received since the last call, each as its fields
    /// (waits up to 2 s for the next one).
    pub fn datagrams(&self) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.server.recv(&mut buf) {
            out.push(journal_fields(&buf[..n]));
        }
        out
    }
}

/// The fields of one journald native-protocol datagram.
pub fn journal_fields(mut data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(nl) = data.iter().position(|b| *b == b'\n') {
        let head = &data[..nl];
        match head.iter().position(|b| *b == b'=') {
            Some(eq) => {
                out.push((
                    String::from_utf8_lossy(&head[..eq]).into_owned(),
                    String::from_utf8_lossy(&head[eq + 1..]).into_owned(),
                ));
                data = &data[nl + 1..];
            }
            None => {
                // NAME\n<u64 le length><value>\n
                let rest = &data[nl + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
                out.push((
                    String::from_utf8_lossy(head).into_owned(),
                    String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
                ));
                data = &rest[8 + len + 1..];
            }
        }
    }
    out
}

impl Running {
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("still owned");
        i32::try_from(child.id()).expect("pid fits i32")
    }

    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL, as the OOM killer or a power cut would end the run; reaped.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sigterm(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).expect("send SIGTERM");
    }

    /// [`Running::wait`], sampling the binary's peak resident memory
    /// (`VmHWM`, KiB) from /proc every 2 ms until it exits: a high-water
    /// mark, so any reading after the peak shows it.
    pub fn wait_measuring(mut self, limit: Duration) -> (Finished, u64) {
        let pid = self.pid();
        let mut peak = 0;
        let until = Instant::now() + limit;
        loop {
            if let Some(kib) = peak_rss_kib(pid) {
                peak = peak.max(kib);
            }
            if self.has_exited() || Instant::now() >= until {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let left = until.saturating_duration_since(Instant::now());
        (self.wait(left.max(Duration::from_secs(1))), peak)
    }

    /// Waits for the exit, at most `limit`; past it the run is killed and
    /// the test fails with what it printed.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let mut child = self.child.take().expect("still owned");
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for hostenv-activate") {
                break status;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("reap hostenv-activate");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        drop(self.stdin.take());
        let finished = Finished {
            node: self.node.clone(),
            code: status.code(),
            elapsed,
            stdout: self
                .stdout
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
        };
        assert!(
            !timed_out,
            "{} did not finish within {}s; killed:\n{}",
            self.node,
            limit.as_secs(),
            finished.output()
        );
        finished
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------ plan dir

/// `/run/hostenv/user/<user>` (where a restore plan goes; the harness does
/// not know about it): removed on drop, and the two shared parents too when
/// this test created them and they are empty.
pub struct PlanDir {
    pub user_dir: PathBuf,
    created_parents: Vec<PathBuf>,
}

impl PlanDir {
    /// The user's directory, which must not exist yet.
    pub fn of(user: &TestUser) -> Self {
        let parents = [
            PathBuf::from("/run/hostenv/user"),
            PathBuf::from("/run/hostenv"),
        ];
        let user_dir = parents[0].join(&user.name);
        assert!(
            !user_dir.exists(),
            "{} exists before the test",
            user_dir.display()
        );
        Self {
            user_dir,
            created_parents: parents.into_iter().filter(|p| !p.exists()).collect(),
        }
    }

    /// The user's directory, after removing one a killed run left behind.
    pub fn clearing_stale(user: &TestUser) -> Self {
        let _ = fs::remove_dir_all(format!("/run/hostenv/user/{}", user.name));
        Self::of(user)
    }

    pub fn restore_dir(&self) -> PathBuf {
        self.user_dir.join("restore")
    }

    pub fn plan(&self) -> PathBuf {
        self.restore_dir().join("plan.json")
    }
}

impl Drop for PlanDir {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks: a planted link goes, its
        // target stays.
        let _ = fs::remove_dir_all(&self.user_dir);
        for parent in &self.created_parents {
            let _ = fs::remove_dir(parent); // only if empty
        }
    }
}

// ------------------------------------------------------------ events

/// The events, one a line, for failure messages.
pub fn show(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  #{} {} {}/{}: {}",
                e.id, e.node, e.phase, e.status, e.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Index of the first stored event of `node` with (`phase`, `status`).
#[track_caller]
pub fn position(events: &[Event], node: &str, phase: &str, status: &str) -> usize {
    events
        .iter()
        .position(|e| e.node == node && e.is(phase, status))
        .unwrap_or_else(|| {
            panic!(
                "no ({phase}, {status}) from {node} in the job's events:\n{}",
                show(events)
            )
        })
}

// ------------------------------------------------------------ the user's side

/// Processes of `user` whose command line contains any of `needles`.
pub fn processes_matching(user: &TestUser, needles: &[&str]) -> Vec<(i32, String)> {
    user.processes()
        .into_iter()
        .filter(|(_, cmd)| needles.iter().any(|n| cmd.contains(n)))
        .collect()
}

/// A unit in one of these states is not running.
pub fn settled(state: &str) -> bool {
    matches!(state, "inactive" | "failed")
}

/// Starts the user's `hostenv.target`, as an activated environment has it.
pub fn start_target(user: &TestUser) {
    let ran = user
        .systemctl(&["start", HOSTENV_TARGET])
        .expect("systemctl start");
    assert!(ran.ok(), "start {HOSTENV_TARGET}: {}", ran.stderr);
}

/// `len` random hex characters (from the kernel; no extra dependency).
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len].to_owned()
}

/// `~/.local/bin/activate` as a hostenv environment's activation behaves
/// during a migration: with a restore plan, restore its snapshot of `key`
/// with the environment's own restic wrapper and check the data came back
/// (`marker.txt` holds `expected_marker`). Each call appends one line to
/// `~/activate.log`: `restored <id> marker-ok|marker-MISSING <what was
/// found>` or `no-plan`. With `start_target`, a successful call then starts
/// the environment's `hostenv.target`, as a real activation starts its
/// services.
pub fn restoring_activate(key: &str, expected_marker: &str, start_target: bool) -> String {
    let start = if start_target {
        format!("systemctl --user start {HOSTENV_TARGET}\n")
    } else {
        String::new()
    };
    format!(
        r#"#!/bin/sh
log="$HOME/activate.log"
plan="/run/hostenv/user/$USER/restore/plan.json"
if [ ! -f "$plan" ]; then
  echo "no-plan" >> "$log"
  {start}exit 0
fi
id=$(sed -n 's/.*"{key}" *: *"\([0-9a-f]*\)".*/\1/p' "$plan")
if [ -z "$id" ]; then
  echo "no-id-in-plan" >> "$log"
  echo "no snapshot id for {key} in $plan"
  exit 3
fi
rm -rf "$HOME/restored"
if ! restic-{key} restore "$id" --target "$HOME/restored" > "$HOME/restore.out" 2>&1; then
  echo "restore-failed $id" >> "$log"
  cat "$HOME/restore.out"
  exit 4
fi
found=$(find "$HOME/restored" -name marker.txt -type f -exec cat {{}} \;)
if [ "$found" = "{expected_marker}" ]; then
  echo "restored $id marker-ok $found" >> "$log"
else
  echo "restored $id marker-MISSING [$found]" >> "$log"
  echo "the restored data does not hold the marker"
  exit 5
fi
{start}"#
    )
}

/// `VmHWM` (peak resident memory, KiB) of `pid`; `None` once it has exited.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
