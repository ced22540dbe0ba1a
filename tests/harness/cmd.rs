//! Bounded command runs for the harness: every external command the harness
//! starts has a deadline, and on timeout its whole process group is killed.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// What a finished command left behind.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin `/dev/null`, in its own process group) for at most
/// `limit`; on timeout the group is killed and an error says which command.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> anyhow::Result<Ran> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let pid = child.id();
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            kill_group(pid);
            let _ = child.wait();
            bail!("timed out after {}s: {shown}", limit.as_secs_f32());
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The group may hold the pipes open after the leader exits; kill it so
    // the readers end.
    kill_group(pid);
    let stdout = out.map(join_text).unwrap_or_default();
    let stderr = err.map(join_text).unwrap_or_default();
    Ok(Ran {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_bounded`], but a non-zero exit is an error carrying the output.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let ran = run_bounded(cmd, limit)?;
    if !ran.ok() {
        bail!(
            "{shown} failed ({}):\nstdout: {}\nstderr: {}",
            ran.status,
            ran.stdout.trim(),
            ran.stderr.trim()
        );
    }
    Ok(ran.stdout)
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_text(handle: thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}
