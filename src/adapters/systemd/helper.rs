//! The root side of a bus helper: start this binary again as the user
//! (`inside.rs`), hand it one [`Envelope`], read its typed [`Line`]s bounded,
//! and kill it when its time is up or the run is being stopped. This is how
//! the root process talks to a user's bus without reading a byte of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::inside::HELPER_ARG;
use super::wire::{Answer, Envelope, Line, MAX_ANSWER};
use crate::adapters::creds::{self, HelperLimits};
use crate::adapters::reaper;
use crate::ports::{Account, Cancel, Deadline};

/// The limits every helper runs under: plenty for one D-Bus exchange
/// (the static binary needs a few MiB), far from what a hostile bus could
/// make it take.
pub(super) const LIMITS: HelperLimits = HelperLimits {
    address_space: 256 * 1024 * 1024,
    cpu_seconds: 60,
    open_files: 256,
};
/// The tail of a helper's stderr kept for messages (a panic says why there).
const STDERR_TAIL: usize = 2048;
/// How long a helper that answered may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// When the helper must be done, by what it has said so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    /// Until the helper says a job is queued: connecting, authenticating and
    /// each call end here.
    pub(super) before_job: Deadline,
    /// Once a job is queued: its deadline plus the time to stop the unit
    /// and kill what will not stop.
    pub(super) after_job: Deadline,
    /// After a stop signal, with a job queued: the helper stops the unit
    /// (it got SIGTERM) and must answer within this.
    pub(super) interrupted: Duration,
}

/// How an exchange ended without an answer that the root side must turn
/// into an outcome of its own.
#[derive(Debug)]
pub(super) enum Ended {
    Answer(Answer),
    /// The stop signal came before any job was queued: nothing to undo.
    Cancelled,
}

/// What the helper said last, for messages about a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Connected,
    JobQueued,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Connecting => "connecting and authenticating to the user's bus",
            Stage::Connected => "waiting for the user's systemd manager to answer",
            Stage::JobQueued => "waiting for the unit's job (and for the unit to stop)",
        }
    }
}

/// A running bus helper: the process, its stdin for requests, and the
/// threads reading its answers. It answers requests one after the other;
/// [`Conversation::ask`] hands it back when it may take another.
pub(super) struct Conversation {
    child: Child,
    stdin: Option<ChildStdin>,
    running: Running,
    /// The account it runs as.
    uid: u32,
    /// It has said [`Line::Connected`]: a later request starts from there.
    connected: bool,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bus helper {} for uid {}", self.running.pid, self.uid)
    }
}

impl Conversation {
    /// Starts `program __user-bus-helper` as `account`; `what` names the
    /// first request, for the message when it cannot start.
    pub(super) fn start(
        program: &Path,
        account: &Account,
        who: &str,
        what: &str,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(program);
        cmd.arg(HELPER_ARG)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        creds::as_bus_helper(&mut cmd, account, LIMITS);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "{who}: cannot start the bus helper ({} {HELPER_ARG}) as the user, for {what}",
                program.display()
            )
        })?;
        let running = match Running::watch(&mut child) {
            Ok(running) => running,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // Ours until it is reaped here: no stray of a user's program.
        reaper::spare(running.pid);
        Ok(Conversation {
            stdin: child.stdin.take(),
            child,
            running,
            uid: account.uid,
            connected: false,
        })
    }

    pub(super) fn uid(&self) -> u32 {
        self.uid
    }

    /// Sends one request; `false` when the helper is gone. A request is
    /// small and the helper has read the one before: this never blocks.
    pub(super) fn send(&mut self, envelope: &Envelope) -> bool {
        let Ok(mut line) = serde_json::to_vec(envelope) else {
            return false;
        };
        line.push(b'\n');
        self.stdin
            .as_mut()
            .is_some_and(|stdin| stdin.write_all(&line).and_then(|()| stdin.flush()).is_ok())
    }

    /// Reads the answer to the request sent last. The helper comes back
    /// when it answered and `keep` allows another request; otherwise it is
    /// ended here (killed at once when it did not answer).
    pub(super) fn ask(
        mut self,
        account: &Account,
        who: &str,
        what: &str,
        budget: Budget,
        cancel: Option<&Cancel>,
        keep: bool,
    ) -> (anyhow::Result<Ended>, Option<Conversation>) {
        let start = if self.connected {
            Stage::Connected
        } else {
            Stage::Connecting
        };
        let said = self.running.follow(start, budget, cancel);
        if let Ok(said) = &said {
            self.connected |= said.stage != Stage::Connecting;
        }
        let said = match said {
            Ok(Said {
                last: Some(Line::Done { answer }),
                ..
            }) => {
                if keep {
                    return (Ok(Ended::Answer(answer)), Some(self));
                }
                self.end();
                return (Ok(Ended::Answer(answer)), None);
            }
            Ok(Said {
                last: Some(Line::Failed { message }),
                ..
            }) => {
                // It ends after a failure (a garbled answer was killed).
                self.end();
                return (Err(anyhow!(message)), None);
            }
            no_answer => no_answer,
        };
        let status = self.kill_and_reap();
        let tail = self.running.stderr_tail();
        let outcome = match said {
            Ok(Said {
                cancelled: true,
                stage,
                ..
            }) if stage != Stage::JobQueued => Ok(Ended::Cancelled),
            Ok(Said {
                stage, cancelled, ..
            }) => Err(anyhow!(
                "{who}: the bus helper ended without an answer while {} ({what}): {}{}",
                stage.describe(),
                match status {
                    Some(status) => describe_exit(status),
                    None => "it could not be reaped".to_owned(),
                },
                if cancelled {
                    "; the run is being stopped"
                } else {
                    ""
                }
            ))
            .map_err(|e| with_tail(e, &tail)),
            Err(Silent {
                stage,
                waited,
                cancelled,
            }) => Err(anyhow!(
                "{who}: no answer within {}s while {} ({what}); the bus helper was killed. \
                 The user's bus /run/user/{}/bus may be hung or not a real bus: check \
                 `systemctl status user@{}.service` and what listens on that socket{}",
                waited.as_secs(),
                stage.describe(),
                account.uid,
                account.uid,
                if cancelled {
                    " (the run is being stopped)"
                } else {
                    ""
                }
            ))
            .map_err(|e| with_tail(e, &tail)),
        };
        (outcome, None)
    }

    /// Ends a helper that has nothing more to do: closes its stdin (it
    /// exits at that) and reaps it on a thread of its own, killing it if
    /// it has not closed its stdout within [`EXIT_GRACE`]. The caller goes
    /// on at once; the thread is bounded.
    pub(super) fn end(mut self) {
        self.stdin = None;
        let ender = thread::Builder::new().name("bus-helper-end".into());
        let pid = self.running.pid;
        let spawned = ender.spawn(move || self.reap_within(EXIT_GRACE));
        if let Err(e) = spawned {
            // No thread: end it here, at once.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            drop(e);
        }
    }

    fn reap_within(mut self, grace: Duration) {
        if !self.running.closed_within(grace) {
            self.running.kill();
        }
        let _ = self.child.wait();
        reaper::unspare(self.running.pid);
    }

    /// Kills the helper's group and reaps it. `None`: not reapable.
    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        self.stdin = None;
        self.running.kill();
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        reaper::unspare(self.running.pid);
        status
    }
}

/// What a helper said before it ended.
struct Said {
    stage: Stage,
    /// The answer (`Done`/`Failed`), if it came.
    last: Option<Line>,
    /// A stop signal came while it worked.
    cancelled: bool,
}

/// The helper did not answer in time and was killed.
struct Silent {
    stage: Stage,
    waited: Duration,
    cancelled: bool,
}

/// The threads reading a helper's stdout (parsed lines) and stderr (tail).
struct Running {
    lines: Receiver<Result<Line, String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    pid: Pid,
}

impl Running {
    fn watch(child: &mut Child) -> anyhow::Result<Self> {
        let stdout = child.stdout.take().context("the helper's stdout")?;
        let stderr = child.stderr.take().context("the helper's stderr")?;
        let (tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name("bus-helper-out".into())
            .spawn(move || read_lines(stdout, |line| tx.send(line).is_ok()))
            .context("starting the thread that reads the bus helper")?;
        let kept = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&kept);
        thread::Builder::new()
            .name("bus-helper-err".into())
            .spawn(move || keep_tail(stderr, &shared))
            .context("starting the thread that reads the bus helper's errors")?;
        Ok(Running {
            lines,
            stderr: kept,
            pid: Pid::from_raw(child.id() as i32),
        })
    }

    /// Follows the helper until it answers or must be killed.
    fn follow(
        &mut self,
        start: Stage,
        budget: Budget,
        cancel: Option<&Cancel>,
    ) -> Result<Said, Silent> {
        let mut said = Said {
            stage: start,
            last: None,
            cancelled: false,
        };
        let asked = Instant::now();
        let mut kill_at = budget.before_job;
        loop {
            if !said.cancelled && cancel.is_some_and(Cancel::is_cancelled) {
                said.cancelled = true;
                if said.stage == Stage::JobQueued {
                    // It stops the unit it started, then answers.
                    let _ = kill(self.pid, Signal::SIGTERM);
                    kill_at = kill_at.earlier(Deadline::after(budget.interrupted));
                } else {
                    // Nothing started: nothing to wait for.
                    self.kill();
                    return Ok(said);
                }
            }
            if kill_at.reached() {
                self.kill();
                return Err(Silent {
                    stage: said.stage,
                    waited: asked.elapsed(),
                    cancelled: said.cancelled,
                });
            }
            let slice = if cancel.is_some() && !said.cancelled {
                Deadline::SLICE.min(kill_at.remaining())
            } else {
                kill_at.remaining()
            };
            match self.lines.recv_timeout(slice) {
                Ok(Ok(Line::Connected)) if said.stage == Stage::Connecting => {
                    said.stage = Stage::Connected;
                }
                Ok(Ok(Line::Connected)) => {}
                Ok(Ok(Line::JobQueued)) => {
                    said.stage = Stage::JobQueued;
                    kill_at = if said.cancelled {
                        kill_at
                    } else {
                        budget.after_job
                    };
                }
                Ok(Ok(line @ (Line::Done { .. } | Line::Failed { .. }))) => {
                    said.last = Some(line);
                    return Ok(said);
                }
                Ok(Err(garbage)) => {
                    self.kill();
                    said.last = Some(Line::Failed { message: garbage });
                    return Ok(said);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(said),
            }
        }
    }

    /// Waits until the helper closes its stdout (it exits), at most `limit`.
    fn closed_within(&self, limit: Duration) -> bool {
        let until = Deadline::after(limit);
        loop {
            match self.lines.recv_timeout(until.remaining()) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    fn kill(&self) {
        let _ = killpg(self.pid, Signal::SIGKILL);
        let _ = kill(self.pid, Signal::SIGKILL);
    }

    fn stderr_tail(&self) -> String {
        let kept = self
            .stderr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&kept).trim().to_owned()
    }
}

/// Reads lines (at most [`MAX_ANSWER`] bytes in all, over the helper's
/// life) and hands each, parsed, to `deliver` until it declines, the pipe
/// ends or the bound is reached (which is delivered as an error).
fn read_lines(stdout: impl Read, mut deliver: impl FnMut(Result<Line, String>) -> bool) {
    let mut reader = BufReader::new(stdout.take(MAX_ANSWER as u64 + 1));
    let mut total = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
        if total > MAX_ANSWER || line.last() != Some(&b'\n') {
            let why = if total > MAX_ANSWER {
                format!("the bus helper said more than {MAX_ANSWER} bytes")
            } else {
                "the bus helper's answer ended in the middle of a line".to_owned()
            };
            deliver(Err(why));
            return;
        }
        let parsed = serde_json::from_slice::<Line>(&line)
            .map_err(|e| format!("the bus helper's answer is not one this program sends ({e})"));
        if !deliver(parsed) {
            return;
        }
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes of `stderr`.
fn keep_tail(mut stderr: impl Read, kept: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match stderr.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(STDERR_TAIL);
                kept.drain(..excess);
            }
        }
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(101), _) => "it crashed (panic)".to_owned(),
        (Some(code), _) => format!("it exited with status {code}"),
        (None, Some(signal)) => format!(
            "it was killed by signal {signal}{}",
            match Signal::try_from(signal) {
                Ok(Signal::SIGABRT | Signal::SIGSEGV) =>
                    " (out of memory under its address-space limit, or a crash)",
                Ok(Signal::SIGXCPU) => " (CPU time limit)",
                _ => "",
            }
        ),
        (None, None) => "it ended in an unknown way".to_owned(),
    }
}

fn with_tail(e: anyhow::Error, tail: &str) -> anyhow::Error {
    if tail.is_empty() {
        e
    } else {
        let tail: String = tail
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        anyhow!("{e:#}; its last words: {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<Result<Line, String>> {
        let mut got = Vec::new();
        read_lines(bytes, |line| {
            got.push(line);
            true
        });
        got
    }

    #[test]
    fn answers_are_read_line_by_line() {
        let got = lines_of(b"{\"line\":\"connected\"}\n{\"line\":\"failed\",\"message\":\"x\"}\n");
        assert_eq!(
            got,
            vec![
                Ok(Line::Connected),
                Ok(Line::Failed {
                    message: "x".into()
                })
            ]
        );
    }

    #[test]
    fn too_much_or_garbage_is_an_error_never_a_panic() {
        let flood = vec![b'x'; MAX_ANSWER * 4];
        let got = lines_of(&flood);
        assert_eq!(got.len(), 1);
        assert!(got[0].as_ref().is_err_and(|e| e.contains("more than")));
        let got = lines_of(b"\n\x00\xff\n{\"line\":\"nope\"}\n");
        assert!(got.iter().all(Result::is_err), "{got:?}");
        let got = lines_of(b"{\"line\":\"connected\"}");
        assert!(got[0]
            .as_ref()
            .is_err_and(|e| e.contains("middle of a line")));
    }

    #[test]
    fn exits_are_described_for_the_operator() {
        assert!(describe_exit(ExitStatus::from_raw(101 << 8)).contains("panic"));
        assert!(describe_exit(ExitStatus::from_raw(6)).contains("address-space"));
        assert!(describe_exit(ExitStatus::from_raw(24)).contains("CPU"));
    }
}
