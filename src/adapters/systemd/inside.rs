//! The bus helper's side: this same binary, re-executed with an environment
//! user's credentials (`hostenv-activate __user-bus-helper`), does one
//! exchange with that user's systemd manager and prints [`Line`]s.
//!
//! Everything the user controls (the socket, the bytes on it, its units)
//! is met here, in a process that holds only the user's rights and is
//! bounded from outside (address space, CPU, and a kill at the deadline by
//! the root process). A hostile bus can make this process hang, crash or
//! grow; the root run then reports a failed action and goes on.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zbus::blocking::connection;
use zbus::zvariant::OwnedObjectPath;

use super::health;
use super::jobs::JobEnd;
use super::proxies::ManagerProxy;
use super::session::Session;
use super::user_manager_unit;
use super::wire::{bounded_message, Answer, Envelope, Line, Request};
use super::{bus_socket_path, is_settled, job_outcome, manager_hint_for, prefix_pattern};
use crate::ports::{
    is_loaded, Cancel, Deadline, FailedUnit, FailedUnits, JobOutcome, UnitList, UnitRun,
};

/// The first argument that makes the binary a bus helper.
pub const HELPER_ARG: &str = "__user-bus-helper";

/// The most a helper reads of its request.
const MAX_REQUEST: u64 = 64 * 1024;

/// How long a unit that must stop may take before its processes are
/// killed (behaviour.md: 5 s), and how long to wait after `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(3);
/// The same after a stop signal: the whole run must end within 5 s.
const STOP_GRACE_INTERRUPTED: Duration = Duration::from_secs(2);
const KILL_GRACE_INTERRUPTED: Duration = Duration::from_secs(1);

/// The helper's whole life: read requests from stdin, one JSON line each,
/// do each and print its answer on stdout, until stdin ends. One
/// connection serves them all. A failed request ends the helper (the root
/// side starts a fresh one for anything after it). The exit status says
/// only whether every request got an answer.
pub fn helper_main() -> ExitCode {
    let cancel = Cancel::new();
    // SIGTERM from the root process: stop what was started, then answer.
    let _ = crate::adapters::signals::install(&cancel);
    let mut input = std::io::stdin().lock();
    let mut helper: Option<Helper> = None;
    loop {
        let envelope = match read_request(&mut input) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                send(&Line::Failed {
                    message: bounded_message(&format!("bus helper: {e:#}")),
                });
                return ExitCode::from(1);
            }
        };
        let helper = match &mut helper {
            Some(helper) if helper.envelope.uid == envelope.uid => {
                helper.envelope = envelope;
                helper.started = Instant::now();
                helper
            }
            Some(_) => {
                send(&Line::Failed {
                    message: "bus helper: a request for another user".to_owned(),
                });
                return ExitCode::from(1);
            }
            None => helper.insert(Helper {
                who: format!("user {} (uid {})", envelope.user, envelope.uid),
                envelope,
                started: Instant::now(),
                cancel: cancel.clone(),
                session: None,
            }),
        };
        match helper.exchange() {
            Ok(answer) => send(&Line::Done { answer }),
            Err(e) => {
                send(&Line::Failed {
                    message: bounded_message(&format!("{e:#}")),
                });
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// The next request: one line of at most [`MAX_REQUEST`] bytes; `None`
/// when stdin ends.
fn read_request(input: &mut impl BufRead) -> anyhow::Result<Option<Envelope>> {
    let mut text = Vec::new();
    input
        .take(MAX_REQUEST)
        .read_until(b'\n', &mut text)
        .context("cannot read the request")?;
    if text.is_empty() {
        return Ok(None);
    }
    if text.last() != Some(&b'\n') {
        bail!("the request is not one line of at most {MAX_REQUEST} bytes");
    }
    serde_json::from_slice(&text)
        .map(Some)
        .context("the request does not parse")
}

/// One line on stdout; a root process that went away ends us.
fn send(line: &Line) {
    let Ok(mut text) = serde_json::to_vec(line) else {
        std::process::exit(1);
    };
    text.push(b'\n');
    let mut out = std::io::stdout().lock();
    if out.write_all(&text).and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
}

struct Helper {
    /// The request being answered.
    envelope: Envelope,
    who: String,
    /// When the request was read: its limits count from here.
    started: Instant,
    cancel: Cancel,
    /// The connection, made by the first request that needs it.
    session: Option<Session>,
}

impl Helper {
    fn deadline(&self) -> Deadline {
        Deadline::from(self.started, Duration::from_millis(self.envelope.limit_ms))
    }

    fn exchange(&mut self) -> anyhow::Result<Answer> {
        let request = self.envelope.request.clone();
        let job_deadline =
            |timeout_ms: u64| Deadline::from(self.started, Duration::from_millis(timeout_ms));
        let deadline = match &request {
            Request::RunUnit { timeout_ms, .. }
            | Request::StopUnit { timeout_ms, .. }
            | Request::CheckHealth { timeout_ms } => job_deadline(*timeout_ms),
            _ => self.deadline(),
        };
        self.connect(deadline)?;
        let session = self
            .session
            .as_ref()
            .context("bus helper: no connection after connecting")?;
        match request {
            Request::Connect => Ok(Answer::Ready),
            Request::LoadState { unit } => {
                let (_, state) = session.load(&unit)?;
                Ok(Answer::LoadState { state })
            }
            Request::RunUnit { unit, .. } => Ok(Answer::UnitRun {
                run: self.run_unit(session, &unit, deadline)?,
            }),
            Request::StopUnit { unit, .. } => {
                self.stop_unit(session, &unit, deadline)?;
                Ok(Answer::Stopped)
            }
            Request::ReloadManager => {
                session.manager.reload().with_context(|| {
                    format!(
                        "{}: daemon-reload of the user's systemd failed; check `systemctl --user status` as the user",
                        self.who
                    )
                })?;
                Ok(Answer::Reloaded)
            }
            Request::CheckHealth { .. } => Ok(Answer::Health {
                health: health::check(session, deadline)?,
            }),
            Request::ListUnits { prefix } => Ok(Answer::Units {
                list: list_units(session, &prefix)?,
            }),
            Request::FailedUnits => Ok(Answer::Failed {
                failed: failed_units(session)?,
            }),
        }
    }

    /// Connects once: later requests use the same connection.
    fn connect(&mut self, deadline: Deadline) -> anyhow::Result<()> {
        if self.session.is_none() {
            self.session = Some(self.open(deadline)?);
        }
        Ok(())
    }

    /// Connects to the user's bus (as the user: this process is the user)
    /// and waits for the manager on it; says [`Line::Connected`].
    fn open(&self, deadline: Deadline) -> anyhow::Result<Session> {
        let who = &self.who;
        let uid = self.envelope.uid;
        let path = bus_socket_path(uid);
        let hint = manager_hint_for(&self.envelope.user, uid);
        let stream = UnixStream::connect(&path).with_context(|| {
            format!(
                "{who}: cannot connect to the user's bus {}; {hint}",
                path.display()
            )
        })?;
        let conn = connection::Builder::async_io_unix_stream(stream)
            .user_id(uid)
            .method_timeout(deadline.remaining())
            .build()
            .with_context(|| {
                format!(
                    "{who}: the user's bus {} refused the connection (authenticating as uid {uid})",
                    path.display()
                )
            })?;
        let manager = ManagerProxy::new(&conn)
            .with_context(|| format!("{who}: cannot set up the systemd manager proxy"))?;
        let session = Session {
            conn,
            manager,
            who: who.clone(),
        };
        session.wait_for_manager(deadline, Some(&self.cancel), &hint)?;
        send(&Line::Connected);
        Ok(session)
    }

    fn run_unit(
        &self,
        session: &Session,
        unit: &str,
        deadline: Deadline,
    ) -> anyhow::Result<UnitRun> {
        let who = &self.who;
        let cancel = &self.cancel;
        if cancel.is_cancelled() {
            return Ok(UnitRun {
                outcome: JobOutcome::Interrupted,
                status: session.status(unit),
            });
        }
        // Listening before starting: a fast unit's job can end before
        // StartUnit returns.
        let (jobs, job) = session.queue_job("StartUnit", unit)?;
        let job =
            job.with_context(|| format!("{who}: cannot start {unit} in the user's systemd"))?;
        send(&Line::JobQueued);
        let outcome = match jobs.wait_for(&job, deadline, Some(cancel)) {
            JobEnd::Removed(result) => job_outcome(&result),
            JobEnd::Deadline => {
                self.abort(session, unit, Some(&job))?;
                JobOutcome::TimedOut
            }
            JobEnd::Cancelled => {
                self.abort(session, unit, Some(&job))?;
                JobOutcome::Interrupted
            }
            JobEnd::Lost => {
                // Do not leave the unit running behind the error: stop it
                // over a fresh connection if the bus is still there (the
                // root side ends this helper after a `RunUnit`).
                let stopped = self
                    .open(Deadline::after(STOP_GRACE))
                    .and_then(|fresh| self.abort(&fresh, unit, None));
                bail!(
                    "{who}: lost the connection to the user's systemd while {unit} was running \
                     ({}); check `systemctl --user status {unit}` as the user and the user's \
                     manager ({})",
                    match stopped {
                        Ok(()) => "the unit was then stopped".to_owned(),
                        Err(e) => format!("stopping it afterwards failed too: {e:#}"),
                    },
                    user_manager_unit(self.envelope.uid)
                )
            }
        };
        Ok(UnitRun {
            outcome,
            status: session.status(unit),
        })
    }

    fn stop_unit(&self, session: &Session, unit: &str, deadline: Deadline) -> anyhow::Result<()> {
        let who = &session.who;
        let (path, load_state) = session.load(unit)?;
        let active_state = session.unit(&path)?.active_state().with_context(|| {
            format!("{who}: cannot read the ActiveState of {unit} in the user's systemd")
        })?;
        if !is_loaded(&load_state) && is_settled(&active_state) {
            return Ok(());
        }
        let (jobs, job) = session.queue_job("StopUnit", unit)?;
        let job =
            job.with_context(|| format!("{who}: cannot stop {unit} in the user's systemd"))?;
        send(&Line::JobQueued);
        let hint = format!("check `systemctl --user status {unit}` as the user");
        match jobs.wait_for(&job, deadline, Some(&self.cancel)) {
            JobEnd::Removed(result) if result == "done" => Ok(()),
            JobEnd::Removed(result) => {
                bail!("{who}: stopping {unit} ended with job result {result:?}; {hint}")
            }
            JobEnd::Cancelled => bail!(
                "{who}: interrupted by a stop signal while stopping {unit} (systemd carries on with the stop); {hint}"
            ),
            JobEnd::Deadline => bail!(
                "{who}: {unit} did not stop within {}s; {hint}",
                deadline.instant().saturating_duration_since(self.started).as_secs()
            ),
            JobEnd::Lost => {
                bail!("{who}: lost the connection to the user's systemd while stopping {unit}; {hint}")
            }
        }
    }

    /// After a timeout or cancel: cancel the start job, stop the unit, and
    /// when its stop has not finished within the grace, `KillUnit(all, 9)`.
    fn abort(
        &self,
        session: &Session,
        unit: &str,
        job: Option<&OwnedObjectPath>,
    ) -> anyhow::Result<()> {
        let who = &session.who;
        let (stop_grace, kill_grace) = if self.cancel.is_cancelled() {
            (STOP_GRACE_INTERRUPTED, KILL_GRACE_INTERRUPTED)
        } else {
            (STOP_GRACE, KILL_GRACE)
        };
        // The job may already be gone; stopping the unit below covers that.
        if let Some(proxy) = job.and_then(|job| session.job(job).ok()) {
            let _ = proxy.cancel();
        }
        let stop_error = session.manager.stop_unit(unit, "replace").err();
        if session.wait_settled(unit, stop_grace) {
            return Ok(());
        }
        let killed =
            session
                .manager
                .kill_unit(unit, "all", nix::sys::signal::Signal::SIGKILL as i32);
        if session.wait_settled(unit, kill_grace) {
            return Ok(());
        }
        let state = session
            .unit_by_name(unit)
            .and_then(|u| Ok(u.active_state()?))
            .unwrap_or_else(|e| format!("unknown ({e})"));
        bail!(
            "{who}: {unit} is still {state} after stopping it ({}) and killing its processes ({}); \
             check `systemctl --user status {unit}` as the user",
            match stop_error {
                Some(e) => format!("StopUnit failed: {e}"),
                None => format!("waited {}s", stop_grace.as_secs()),
            },
            match killed {
                Ok(()) => "SIGKILL sent".to_owned(),
                Err(e) => format!("KillUnit failed: {e}"),
            }
        )
    }
}

/// The loaded units named `prefix*`: one `ListUnitsByPatterns` (the units
/// in the manager's memory; a backup unit is there through its timer),
/// at most [`UnitList::MAX_NAMED`] named, the rest counted. Unit files are
/// not listed: with thousands of them that call alone outlasts an action.
fn list_units(session: &Session, prefix: &str) -> anyhow::Result<UnitList> {
    let who = &session.who;
    let pattern = prefix_pattern(prefix);
    let rows = session
        .manager
        .list_units_by_patterns(&[], &[&pattern])
        .with_context(|| format!("{who}: cannot list the user's units matching {pattern}"))?;
    Ok(UnitList::of(
        rows.into_iter()
            .filter(|row| is_loaded(&row.2))
            .map(|row| row.0),
    ))
}

/// The units that are `failed` now: one `ListUnitsByPatterns(["failed"],
/// [])`, the first [`UnitList::MAX_NAMED`] by name each with its service
/// `Result` (none for other kinds of unit), the rest counted.
fn failed_units(session: &Session) -> anyhow::Result<FailedUnits> {
    let who = &session.who;
    let mut rows = session
        .manager
        .list_units_by_patterns(&["failed"], &[])
        .with_context(|| format!("{who}: cannot list the user's failed units"))?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0);
    let more = rows.len().saturating_sub(UnitList::MAX_NAMED);
    rows.truncate(UnitList::MAX_NAMED);
    let units = rows
        .into_iter()
        .map(|row| FailedUnit {
            result: row
                .0
                .ends_with(".service")
                .then(|| session.service_result(&row.6))
                .flatten(),
            unit: row.0,
        })
        .collect();
    Ok(FailedUnits { units, more })
}
