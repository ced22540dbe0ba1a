//! The one way a subprocess runs as an environment's user: a command built
//! as a value first (program, args, a clean environment built from scratch,
//! cwd `$HOME`, timeout), then run with the user's credentials in its own
//! process group, bounded by the timeout and the cancel flag, the whole group
//! killed when it must stop. Its output is either combined (stdout and
//! stderr interleaved, the tail kept: `activate`'s summary) or split (stdout
//! handed to a consumer as it is read, stderr's tail kept: restic's list);
//! both are supervised, stopped and swept the same way.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

mod command;
mod output;

pub use command::{user_path, UserCommand};
use output::{Chunks, Output, OutputTail, Sink};

use crate::adapters::{creds, reaper};
use crate::ports::{
    Account, Cancel, Deadline, Level, Log, LogFields, Over, ProgramOutcome, ProgramRun,
};

/// How often the deadline and the cancel flag are looked at.
const SLICE: Duration = Deadline::SLICE;
/// Between SIGTERM and SIGKILL to the process group.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// After SIGKILL, how long to wait for the output pipe to close.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long processes left behind by an exited program may hold its output.
const LINGER: Duration = Duration::from_secs(2);
/// Serialises [`ProcessRunner::run`] within this process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Only the tail of the output is kept.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Why the program was cut short before its output was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    TimedOut,
    Interrupted,
    /// The program exited; processes it left in its group still hold the output.
    Lingering,
}

/// Runs [`UserCommand`]s; logs each start through `log`.
#[derive(Clone)]
pub struct ProcessRunner {
    log: Arc<dyn Log + Send + Sync>,
}

impl ProcessRunner {
    pub fn new(log: Arc<dyn Log + Send + Sync>) -> Self {
        ProcessRunner { log }
    }

    /// Runs `cmd` as `account` until it exits, its timeout passes or `cancel`
    /// is set; in the last two cases its whole process group is killed.
    /// The run's output is the tail of stdout and stderr, interleaved.
    /// The error case is "could not start".
    pub fn run(
        &self,
        cmd: &UserCommand,
        account: &Account,
        cancel: &Cancel,
    ) -> anyhow::Result<ProgramRun> {
        self.run_with(cmd, account, cancel, None)
    }

    /// [`run`](Self::run), with stdout read apart from stderr: each chunk of
    /// stdout is handed to `stdout` as it is read (on this thread; nothing
    /// of it is kept here), and the run's output is the tail of stderr.
    pub fn run_with_stdout(
        &self,
        cmd: &UserCommand,
        account: &Account,
        cancel: &Cancel,
        stdout: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<ProgramRun> {
        self.run_with(cmd, account, cancel, Some(stdout))
    }

    fn run_with(
        &self,
        cmd: &UserCommand,
        account: &Account,
        cancel: &Cancel,
        stdout: Option<Sink<'_>>,
    ) -> anyhow::Result<ProgramRun> {
        let user = account.name.as_str();
        let fields = LogFields {
            user: Some(user),
            ..LogFields::default()
        };
        // One program at a time: the sweep after it treats every other child
        // of this process as something the program left behind.
        let _one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (action, timeout) = (cmd.display(), cmd.timeout.as_secs());
        if cancel.is_cancelled() {
            self.log.line(
                Level::Info,
                &fields,
                &format!("not running {action}: the run is being stopped"),
            );
            return Ok(ProgramRun {
                outcome: ProgramOutcome::Interrupted,
                output: "(not started: the run is being stopped)".to_owned(),
            });
        }
        let message = format!("running {action} as {user} (timeout {timeout}s)");
        self.log.line(Level::Info, &fields, &message);
        if let Err(e) = reaper::become_subreaper() {
            self.log.line(
                Level::Warn,
                &fields,
                &format!("cannot become a child subreaper ({e}): processes that leave the program's process group cannot be ended"),
            );
        }
        if let Some(warning) = reaper::fallback_warning() {
            self.log.line(Level::Warn, &fields, warning);
        }
        let (handle, mut output) = spawn(cmd, account, stdout)?;
        let Some(&pid) = handle.pids().first() else {
            anyhow::bail!(
                "started {} as {user} but got no process id",
                cmd.program.display()
            );
        };
        let group = Pid::from_raw(pid as i32);
        let result = self.supervise(&handle, &mut output, group, cmd, cancel, &fields);
        let swept = reaper::end_strays(group, KILL_GRACE);
        if swept > 0 {
            self.log.line(
                Level::Warn,
                &fields,
                &format!(
                    "ended {swept} process(es) {} left behind (orphaned to this process, or outside its process group)",
                    cmd.program.display()
                ),
            );
        }
        result
    }

    /// Waits for the program and stops it when it must stop.
    fn supervise(
        &self,
        handle: &duct::Handle,
        output: &mut Output<'_>,
        group: Pid,
        cmd: &UserCommand,
        cancel: &Cancel,
        fields: &LogFields<'_>,
    ) -> anyhow::Result<ProgramRun> {
        let stop = match wait(handle, output, group, cmd.timeout, cancel) {
            Ok(Supervised::Finished(status)) => {
                self.end_leftovers(group, cmd, fields);
                return Ok(ProgramRun {
                    outcome: outcome_of_status(status),
                    output: output.text(),
                });
            }
            Ok(Supervised::CutShort(stop)) => stop,
            Err(e) => {
                // Whatever went wrong, nothing of the user's may keep running.
                let _ = killpg(group, Signal::SIGKILL);
                return Err(e);
            }
        };
        let why = match stop {
            Cut::TimedOut => format!("timed out after {}s", cmd.timeout.as_secs()),
            Cut::Interrupted => "was interrupted".to_owned(),
            Cut::Lingering => "exited but left processes holding its output".to_owned(),
        };
        let program = cmd.program.display();
        self.log.line(
            Level::Warn,
            fields,
            &format!("{program} {why}: killing its process group {group}"),
        );
        let status = kill_group(group, handle, output)?;
        let mut text = output.text();
        if !output.complete_by(Deadline::after(Duration::ZERO)) {
            self.log.line(
                Level::Warn,
                fields,
                &format!("a process of {program} still holds the output pipe: giving up on it"),
            );
            text.push_str(
                "\n(output incomplete: a process that left the process group still holds it)",
            );
        }
        Ok(ProgramRun {
            outcome: outcome_of_cut(stop, status),
            output: text,
        })
    }
}

/// Starts `cmd` as `account` in a new process group: stdout and stderr into
/// one pipe whose tail is kept, or, with a `stdout` consumer, each into its
/// own pipe. The expression, and with it this process's copy of the pipes'
/// write ends, is gone when this returns: the output ends when the program
/// and everything it left behind have closed it.
fn spawn<'a>(
    cmd: &UserCommand,
    account: &Account,
    stdout: Option<Sink<'a>>,
) -> anyhow::Result<(duct::Handle, Output<'a>)> {
    let (reader, writer) = std::io::pipe().context("creating the program's output pipe")?;
    let spawn_account = account.clone();
    let expression = duct::cmd(&cmd.program, &cmd.args)
        .full_env(cmd.env.iter().map(|(k, v)| (k, v)))
        .dir(&cmd.cwd)
        .stdin_null()
        .unchecked()
        .before_spawn(move |c| {
            creds::run_as(c, &spawn_account);
            Ok(())
        });
    let (expression, output) = match stdout {
        None => (
            expression.stderr_to_stdout().stdout_file(writer),
            Output::combined(OutputTail::read(reader)?),
        ),
        Some(sink) => {
            let (err_reader, err_writer) =
                std::io::pipe().context("creating the program's stderr pipe")?;
            (
                expression.stdout_file(writer).stderr_file(err_writer),
                Output::split(Chunks::read(reader)?, sink, OutputTail::read(err_reader)?),
            )
        }
    };
    let handle = expression.start().with_context(|| {
        let user = &account.name;
        format!(
            "could not start {} as user {user} (cwd {}): check that it exists, is executable \
             by {user} and that the home directory is accessible",
            cmd.program.display(),
            cmd.cwd.display()
        )
    })?;
    Ok((handle, output))
}

/// The program's exit status once it has exited and its output has ended,
/// waiting until `until` at most. The leader is only collected after the
/// output ended, so that its pid keeps naming the group until then.
fn finished_by(
    handle: &duct::Handle,
    output: &mut Output<'_>,
    until: Deadline,
) -> anyhow::Result<Option<ExitStatus>> {
    if !output.complete_by(until) {
        return Ok(None);
    }
    let out = handle
        .wait_timeout(until.remaining())
        .context("waiting for the program")?;
    Ok(out.map(|out| out.status))
}

/// How supervising the program ended.
enum Supervised {
    Finished(ExitStatus),
    CutShort(Cut),
}

/// Waits in short slices until the program and its output are done, or it
/// must be stopped (deadline, cancel, or leftovers holding the output).
fn wait(
    handle: &duct::Handle,
    output: &mut Output<'_>,
    group: Pid,
    timeout: Duration,
    cancel: &Cancel,
) -> anyhow::Result<Supervised> {
    let deadline = Deadline::after(timeout);
    // Set once the program exited: how long what it left may hold the output.
    let mut linger: Option<Deadline> = None;
    loop {
        if let Some(status) = finished_by(handle, output, Deadline::after(SLICE))? {
            return Ok(Supervised::Finished(status));
        }
        match deadline.check(cancel) {
            Err(Over::Stopped) => return Ok(Supervised::CutShort(Cut::Interrupted)),
            Err(Over::Reached) => return Ok(Supervised::CutShort(Cut::TimedOut)),
            Ok(()) => {}
        }
        if linger.is_none() && leader_exited(group) {
            linger = Some(Deadline::after(LINGER));
        }
        if linger.is_some_and(Deadline::reached) {
            return Ok(Supervised::CutShort(Cut::Lingering));
        }
    }
}

impl ProcessRunner {
    /// Processes the program left in its group (not holding the output) must
    /// not outlive the report: SIGTERM, a grace period, then SIGKILL.
    fn end_leftovers(&self, group: Pid, cmd: &UserCommand, fields: &LogFields<'_>) {
        if killpg(group, None).is_err() {
            return; // the group is empty: nothing left behind
        }
        self.log.line(
            Level::Warn,
            fields,
            &format!(
                "{} exited but left processes in its group {group}: ending them",
                cmd.program.display()
            ),
        );
        let _ = killpg(group, Signal::SIGTERM);
        let grace = Deadline::after(TERM_GRACE);
        while !grace.reached() {
            if killpg(group, None).is_err() {
                return;
            }
            std::thread::sleep(SLICE);
        }
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Whether the group's leader (the program itself) has exited. `WNOWAIT`
/// leaves the status for duct to collect; `ECHILD` means duct already did.
fn leader_exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(Errno::ECHILD) => true,
        Err(_) => false,
    }
}

/// SIGTERM to the group, a grace period, SIGKILL (and to what left the
/// group), then a last grace period for the output to end. The program's
/// status if it could be collected.
fn kill_group(
    group: Pid,
    handle: &duct::Handle,
    output: &mut Output<'_>,
) -> anyhow::Result<Option<ExitStatus>> {
    // ESRCH: the group is already gone, which is what we want.
    let _ = killpg(group, Signal::SIGTERM);
    if let Some(status) = finished_by(handle, output, Deadline::after(TERM_GRACE))? {
        return Ok(Some(status));
    }
    let _ = killpg(group, Signal::SIGKILL);
    // Whatever left the group may hold the output pipe: end it too.
    reaper::end_strays(group, KILL_GRACE);
    let until = Deadline::after(KILL_GRACE);
    output.complete_by(until);
    let out = handle
        .wait_timeout(until.remaining())
        .context("waiting for the program after SIGKILL")?;
    Ok(out.map(|out| out.status))
}

fn outcome_of_cut(stop: Cut, status: Option<ExitStatus>) -> ProgramOutcome {
    match stop {
        Cut::TimedOut => ProgramOutcome::TimedOut,
        Cut::Interrupted => ProgramOutcome::Interrupted,
        Cut::Lingering => status.map_or(ProgramOutcome::Exited(-1), outcome_of_status),
    }
}

fn outcome_of_status(status: ExitStatus) -> ProgramOutcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => ProgramOutcome::Exited(code),
        (None, Some(sig)) => ProgramOutcome::Signalled(sig),
        (None, None) => ProgramOutcome::Exited(-1),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Instant;

    use nix::unistd::{getegid, geteuid};

    use std::path::PathBuf;

    use super::*;
    use crate::model::UserName;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Log for Recorder {
        fn line(&self, _level: Level, _fields: &LogFields<'_>, message: &str) {
            self.0.lock().expect("lock").push(message.to_owned());
        }
    }

    fn account(home: &Path) -> Account {
        let gid = getegid().as_raw();
        Account {
            name: UserName::parse("hostenv-test").expect("name"),
            uid: geteuid().as_raw(),
            gid,
            groups: vec![gid],
            home: home.to_path_buf(),
        }
    }

    fn runner() -> (ProcessRunner, Arc<Recorder>) {
        let log = Arc::new(Recorder::default());
        (ProcessRunner::new(log.clone()), log)
    }

    /// A tool from the test's own PATH (the Nix build sandbox has no
    /// /usr/bin); a missing one fails the test.
    fn tool(name: &str) -> PathBuf {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{name} is not on PATH ({path}): the test needs it"))
    }

    /// `sh -c script`, with the test's PATH after the user's so that tools
    /// are found in a build sandbox too.
    fn sh(account: &Account, script: &str, timeout: Duration) -> UserCommand {
        let args = vec!["-c".to_owned(), script.to_owned()];
        let mut cmd = UserCommand::for_account(account, tool("sh"), args, timeout);
        let extra = std::env::var("PATH").unwrap_or_default();
        for (key, value) in &mut cmd.env {
            if key == "PATH" {
                value.push(':');
                value.push_str(&extra);
            }
        }
        cmd
    }

    /// Alive and not a zombie; waits up to 5 s for a killed process to go.
    fn still_running(pid: i32) -> bool {
        let start = Instant::now();
        loop {
            let alive = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z'),
                Err(_) => false,
            };
            if !alive || start.elapsed() > Duration::from_secs(5) {
                return alive;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_pid(path: &Path) -> i32 {
        std::fs::read_to_string(path)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    #[test]
    fn exit_code_and_interleaved_output_are_captured() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let (runner, log) = runner();
        let cmd = sh(
            &acct,
            "echo out; echo err >&2; exit 3",
            Duration::from_secs(60),
        );
        let run = runner.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Exited(3));
        assert_eq!(run.output, "out\nerr\n");
        let lines = log.0.lock().expect("lock").clone();
        assert!(lines[0].contains("/bin/sh -c echo out"), "{lines:?}");
        assert!(!lines
            .iter()
            .any(|l| l.contains("PATH") || l.contains(".local/state")));

        let cmd = sh(&acct, "kill -9 $$", Duration::from_secs(60));
        let run = runner.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Signalled(9));
    }

    #[test]
    fn the_program_sees_exactly_the_built_environment() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cmd = UserCommand::for_account(&acct, tool("env"), Vec::new(), Duration::from_secs(60));
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Exited(0));
        let seen: BTreeSet<String> = run.output.lines().map(str::to_owned).collect();
        let built: BTreeSet<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(seen, built);
    }

    #[test]
    fn stdin_is_at_eof_and_cwd_is_home() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cmd = sh(
            &acct,
            "if read x; then echo got; else echo eof; fi; pwd -P",
            Duration::from_secs(60),
        );
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        let real_home = home.path().canonicalize().expect("canonical home");
        assert_eq!(run.output, format!("eof\n{}\n", real_home.display()));
    }

    #[test]
    fn a_timeout_kills_the_whole_tree() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let pidfile = home.path().join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; sleep 60", pidfile.display());
        let cmd = sh(&acct, &script, Duration::from_secs(1));
        let start = Instant::now();
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(!still_running(read_pid(&pidfile)), "the grandchild is gone");
    }

    #[test]
    fn a_timeout_also_ends_what_left_the_process_group() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let pidfile = home.path().join("escaped.pid");
        let setsid = tool("setsid");
        let script = format!(
            "{} sh -c 'echo $$ > {}; exec sleep 60' >/dev/null 2>&1 & sleep 60",
            setsid.display(),
            pidfile.display()
        );
        let cmd = sh(&acct, &script, Duration::from_secs(1));
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::TimedOut);
        let escaped = read_pid(&pidfile);
        let group = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap_or_default();
        assert!(
            !still_running(escaped),
            "the process in its own session is gone ({group})"
        );
    }

    #[test]
    fn a_program_ignoring_sigterm_is_killed() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cmd = sh(&acct, "trap '' TERM; sleep 60", Duration::from_secs(1));
        let start = Instant::now();
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn cancel_stops_the_program_quickly() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cancel = Cancel::new();
        let setter = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            setter.cancel();
        });
        let cmd = sh(&acct, "sleep 600", Duration::from_secs(600));
        let start = Instant::now();
        let run = runner().0.run(&cmd, &acct, &cancel).expect("run");
        t.join().expect("thread");
        assert_eq!(run.outcome, ProgramOutcome::Interrupted);
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn processes_left_behind_are_ended_and_the_exit_code_kept() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let (runner, _) = runner();
        // One holds the output pipe, one does not; neither may outlive the run.
        let holder = home.path().join("holder.pid");
        let quiet = home.path().join("quiet.pid");
        let script = format!(
            "sleep 60 & echo $! > {}; sleep 60 >/dev/null 2>&1 & echo $! > {}; echo done; exit 4",
            holder.display(),
            quiet.display()
        );
        let start = Instant::now();
        let run = runner
            .run(
                &sh(&acct, &script, Duration::from_secs(300)),
                &acct,
                &Cancel::new(),
            )
            .expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Exited(4));
        assert_eq!(run.output, "done\n");
        assert!(start.elapsed() < Duration::from_secs(60));
        assert!(!still_running(read_pid(&holder)));
        assert!(!still_running(read_pid(&quiet)));
    }

    #[test]
    fn a_spawn_failure_names_the_program_and_the_user() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cmd = UserCommand::for_account(
            &acct,
            Path::new("/nonexistent/activate"),
            &[],
            Duration::from_secs(5),
        );
        let err = runner()
            .0
            .run(&cmd, &acct, &Cancel::new())
            .expect_err("no such program");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/nonexistent/activate") && msg.contains("hostenv-test"),
            "{msg}"
        );
    }

    /// Peak resident memory of this process (`VmHWM`), in KiB.
    fn peak_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM");
        line.split_whitespace()
            .nth(1)
            .expect("value")
            .parse()
            .expect("KiB")
    }

    #[test]
    fn a_huge_output_is_not_held_in_memory() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        // 50 MB through the pipe; only the last MAX_OUTPUT bytes are kept.
        let cmd = sh(
            &acct,
            "yes | head -c 50000000; echo END",
            Duration::from_secs(120),
        );
        // Resets VmHWM to the current RSS (Linux >= 4.0); if that is not
        // allowed the baseline is an older peak, which only loosens the check.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = peak_kib();
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        let growth_kib = peak_kib().saturating_sub(before);
        assert_eq!(run.outcome, ProgramOutcome::Exited(0));
        let want = format!("{}END\n", "y\n".repeat((MAX_OUTPUT - 4) / 2));
        assert_eq!(run.output.len(), MAX_OUTPUT);
        assert!(
            run.output == want,
            "ends with {:?}",
            &run.output[MAX_OUTPUT - 20..]
        );
        // Buffering it all would add about 50 MB (more with Vec doubling);
        // other tests run in parallel threads, hence the generous bound.
        assert!(
            growth_kib < 20 * 1024,
            "peak memory grew by {growth_kib} KiB"
        );
    }

    /// `cmd` with its stdout apart: (what the consumer got, the run).
    fn run_split(cmd: &UserCommand, acct: &Account, cancel: &Cancel) -> (Vec<u8>, ProgramRun) {
        let mut seen = Vec::new();
        let run = runner()
            .0
            .run_with_stdout(cmd, acct, cancel, &mut |chunk| {
                seen.extend_from_slice(chunk)
            })
            .expect("run");
        (seen, run)
    }

    #[test]
    fn stdout_apart_goes_to_the_consumer_and_stderr_is_the_output() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let cmd = sh(
            &acct,
            "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3",
            Duration::from_secs(60),
        );
        let (seen, run) = run_split(&cmd, &acct, &Cancel::new());
        assert_eq!(run.outcome, ProgramOutcome::Exited(3));
        assert_eq!(String::from_utf8_lossy(&seen), "out1\nout2\n");
        assert_eq!(run.output, "err1\nerr2\n");
    }

    #[test]
    fn a_huge_stdout_is_streamed_not_held() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        // 50 MB of stdout, and more stderr than its tail keeps.
        let cmd = sh(
            &acct,
            "yes err | head -c 300000 >&2; yes | head -c 50000000; echo END",
            Duration::from_secs(120),
        );
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = peak_kib();
        let (mut count, mut tail) = (0usize, Vec::new());
        let run = runner()
            .0
            .run_with_stdout(&cmd, &acct, &Cancel::new(), &mut |chunk| {
                count += chunk.len();
                tail.extend_from_slice(chunk);
                let excess = tail.len().saturating_sub(4);
                tail.drain(..excess);
            })
            .expect("run");
        let growth_kib = peak_kib().saturating_sub(before);
        assert_eq!(run.outcome, ProgramOutcome::Exited(0));
        assert_eq!(count, 50_000_004);
        assert_eq!(tail, b"END\n");
        assert_eq!(run.output.len(), MAX_OUTPUT);
        assert!(
            run.output.ends_with("err\n") && !run.output.contains('y'),
            "stderr's tail alone"
        );
        assert!(
            growth_kib < 20 * 1024,
            "peak memory grew by {growth_kib} KiB"
        );
    }

    #[test]
    fn with_stdout_apart_timeouts_and_leftovers_are_handled_alike() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let pidfile = home.path().join("grandchild.pid");
        let script = format!(
            "sleep 60 & echo $! > {}; echo partial; sleep 60",
            pidfile.display()
        );
        let start = Instant::now();
        let (seen, run) = run_split(
            &sh(&acct, &script, Duration::from_secs(1)),
            &acct,
            &Cancel::new(),
        );
        assert_eq!(run.outcome, ProgramOutcome::TimedOut);
        assert_eq!(seen, b"partial\n");
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(!still_running(read_pid(&pidfile)), "the grandchild is gone");

        // A process left behind holding stdout does not hold the run.
        let holder = home.path().join("holder.pid");
        let script = format!(
            "sleep 60 & echo $! > {}; echo done; exit 4",
            holder.display()
        );
        let start = Instant::now();
        let (seen, run) = run_split(
            &sh(&acct, &script, Duration::from_secs(300)),
            &acct,
            &Cancel::new(),
        );
        assert_eq!(run.outcome, ProgramOutcome::Exited(4));
        assert_eq!(seen, b"done\n");
        assert!(start.elapsed() < Duration::from_secs(60));
        assert!(!still_running(read_pid(&holder)));
    }

    #[test]
    fn nothing_is_started_once_cancel_is_set() {
        let home = tempfile::tempdir().expect("tempdir");
        let acct = account(home.path());
        let marker = home.path().join("started");
        let cmd = sh(
            &acct,
            &format!("touch {}", marker.display()),
            Duration::from_secs(60),
        );
        let cancel = Cancel::new();
        cancel.cancel();
        let (runner, log) = runner();
        let run = runner.run(&cmd, &acct, &cancel).expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Interrupted);
        assert!(run.output.contains("not started"), "{}", run.output);
        assert!(!marker.exists(), "the program was not started");
        let lines = log.0.lock().expect("lock").clone();
        assert!(!lines.iter().any(|l| l.starts_with("running")), "{lines:?}");
    }

    #[test]
    fn as_root_the_program_runs_with_only_the_users_ids() {
        if !geteuid().is_root() {
            return eprintln!("skipped: needs root to switch users");
        }
        let Some(nobody) = nix::unistd::User::from_name("nobody").expect("passwd") else {
            return eprintln!("skipped: no nobody account");
        };
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let acct = Account {
            name: UserName::parse("nobody").expect("name"),
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
            groups: vec![nobody.gid.as_raw()],
            home: home.path().to_path_buf(),
        };
        let cmd = sh(&acct, "id -u; id -g; id -G", Duration::from_secs(60));
        let run = runner().0.run(&cmd, &acct, &Cancel::new()).expect("run");
        let gid = nobody.gid.as_raw();
        assert_eq!(
            run.output,
            format!("{}\n{gid}\n{gid}\n", nobody.uid.as_raw())
        );
    }
}
