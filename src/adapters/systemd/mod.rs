//! The environment user's own systemd manager (`systemctl --user`), driven
//! over the user's session bus with the user's credentials: the real
//! `ports::UserSystemd`.
//!
//! dbus-daemon only lets the bus owner register on `/run/user/<uid>/bus`, so
//! the socket is connected with the user's effective uid
//! (`creds::as_effective_user`) and the EXTERNAL authentication names that
//! uid. A side effect worth having: if the user replaced the socket with a
//! symlink, the connect happens with the user's rights, not root's.
//!
//! Every wait here is bounded and polls in slices of at most 100 ms, looking
//! at the deadline and (where the port passes one) the cancel flag.

mod jobs;
mod proxies;
mod session;

use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zbus::blocking::connection;
use zbus::zvariant::OwnedObjectPath;

use self::jobs::{wait_until, JobEnd};
use self::proxies::ManagerProxy;
use self::session::Session;
use crate::adapters::creds;
use crate::ports::{Account, Cancel, JobOutcome, ManagerNotRunning, UnitRun, UserSystemd};

/// The well-known name of a systemd manager on its bus.
const SYSTEMD_NAME: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
/// The longest single sleep of any wait loop here.
const SLICE: Duration = Duration::from_millis(100);

/// The real [`UserSystemd`]: one D-Bus connection per call, made with the
/// user's credentials (this process must run as root, or as that user).
#[derive(Debug, Clone)]
pub struct UserBus {
    /// How long to wait for `/run/user/<uid>/bus` (and the manager on it)
    /// after starting `user@<uid>.service`.
    bus_wait: Duration,
    /// After a timeout or cancel: how long the stop of the unit may take
    /// before its processes are killed.
    stop_grace: Duration,
    /// How long to wait for the unit to settle after `SIGKILL`.
    kill_grace: Duration,
    /// How long `stop_unit` waits for its stop job.
    stop_timeout: Duration,
    /// Bound on every single D-Bus method call.
    method_timeout: Duration,
    /// Start `user@<uid>.service` when the user's bus is absent (not in a
    /// dry run, which starts nothing).
    start_managers: bool,
    /// The run deadline: waits end at it, and calls past it get a short
    /// bound, so a run is never held up long after its deadline.
    deadline: Option<Instant>,
    /// The stop signal, for the calls whose port takes none.
    cancel: Option<Cancel>,
}

/// What a call still may take once the run deadline has passed.
const PAST_DEADLINE: Duration = Duration::from_secs(2);

impl Default for UserBus {
    fn default() -> Self {
        Self::new()
    }
}

impl UserBus {
    /// The adapter with its production bounds: 30 s for a user's bus to
    /// appear, 10 s to stop a unit after a timeout (then `SIGKILL`), 90 s for
    /// `stop_unit`, 30 s per D-Bus call.
    pub fn new() -> Self {
        Self {
            bus_wait: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(90),
            method_timeout: Duration::from_secs(30),
            start_managers: true,
            deadline: None,
            cancel: None,
        }
    }

    /// Bounds every wait and call by the run deadline.
    pub fn ending_by(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Ends the waits of every call at a stop signal.
    pub fn stopping_with(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// `limit`, cut to what is left before the run deadline (and to
    /// [`PAST_DEADLINE`] once it has passed).
    fn bounded(&self, limit: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => limit.min(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(PAST_DEADLINE),
            ),
            None => limit,
        }
    }

    /// The cancel flag a wait looks at: the call's own, else the adapter's.
    fn cancel_for<'a>(&'a self, cancel: Option<&'a Cancel>) -> Option<&'a Cancel> {
        cancel.or(self.cancel.as_ref())
    }

    /// For `--dry-run`: a user whose manager is not running is an error,
    /// never a reason to start `user@<uid>.service`.
    pub fn without_starting_managers() -> Self {
        Self {
            start_managers: false,
            ..Self::new()
        }
    }

    /// Opens a connection to the user's manager, starting the manager first
    /// (on the system bus) when the user's bus socket is absent.
    fn session(&self, account: &Account, cancel: Option<&Cancel>) -> anyhow::Result<Session> {
        let cancel = self.cancel_for(cancel);
        let who = who(account);
        let path = bus_socket_path(account.uid);
        let deadline = Instant::now() + self.bounded(self.bus_wait);
        if !path_present(&path) {
            if !self.start_managers {
                return Err(ManagerNotRunning {
                    who,
                    bus: path,
                    manager: user_manager_unit(account.uid),
                }
                .into());
            }
            self.start_user_manager(account)?;
            wait_until(deadline, cancel, || path_present(&path)).map_err(|why| {
                anyhow::anyhow!(
                    "{who}: started {unit} but the user's bus {path} {why}; {hint}",
                    unit = user_manager_unit(account.uid),
                    path = path.display(),
                    why = why.describe(self.bus_wait),
                    hint = manager_hint(account),
                )
            })?;
        }
        let stream = creds::as_effective_user(account, || UnixStream::connect(&path))
            .with_context(|| format!("{who}: cannot take the user's identity to reach its bus"))?
            .with_context(|| {
                format!(
                    "{who}: cannot connect to the user's bus {}; {}",
                    path.display(),
                    manager_hint(account)
                )
            })?;
        let conn = connection::Builder::async_io_unix_stream(stream)
            .user_id(account.uid)
            .method_timeout(self.bounded(self.method_timeout))
            .build()
            .with_context(|| {
                format!(
                    "{who}: the user's bus {} refused the connection (authenticating as uid {})",
                    path.display(),
                    account.uid
                )
            })?;
        let manager = ManagerProxy::new(&conn)
            .with_context(|| format!("{who}: cannot set up the systemd manager proxy"))?;
        let session = Session { conn, manager, who };
        session.wait_for_manager(deadline, cancel, account)?;
        Ok(session)
    }

    /// `StartUnit("user@<uid>.service")` on the system manager, as root.
    fn start_user_manager(&self, account: &Account) -> anyhow::Result<()> {
        let who = who(account);
        let unit = user_manager_unit(account.uid);
        let path = bus_socket_path(account.uid);
        let conn = connection::Builder::system()
            .and_then(|b| b.method_timeout(self.bounded(self.method_timeout)).build())
            .with_context(|| {
                format!(
                    "{who}: the user's bus {} does not exist, and the system bus (to start {unit}) cannot be reached; {}",
                    path.display(),
                    manager_hint(account)
                )
            })?;
        let manager = ManagerProxy::new(&conn)?;
        manager.start_unit(&unit, "replace").with_context(|| {
            format!(
                "{who}: the user's bus {} does not exist and starting {unit} on the system manager failed; {}",
                path.display(),
                manager_hint(account)
            )
        })?;
        Ok(())
    }
}

impl UserSystemd for UserBus {
    fn load_state(&self, account: &Account, unit: &str) -> anyhow::Result<String> {
        let session = self.session(account, None)?;
        let (_, state) = session.load(unit)?;
        Ok(state)
    }

    fn run_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<UnitRun> {
        let deadline = Instant::now() + timeout;
        let session = self.session(account, Some(cancel))?;
        let who = who(account);
        // Listen before starting: a fast unit's job can end before StartUnit returns.
        let jobs = session.watch_jobs()?;
        if cancel.is_cancelled() {
            return Ok(UnitRun {
                outcome: JobOutcome::Interrupted,
                status: session.status(unit),
            });
        }
        let job = session
            .manager
            .start_unit(unit, "replace")
            .with_context(|| format!("{who}: cannot start {unit} in the user's systemd"))?;
        let outcome = match jobs.wait_for(&job, deadline, Some(cancel)) {
            JobEnd::Removed(result) => job_outcome(&result),
            JobEnd::Deadline => {
                self.abort(&session, unit, Some(&job))?;
                JobOutcome::TimedOut
            }
            JobEnd::Cancelled => {
                self.abort(&session, unit, Some(&job))?;
                JobOutcome::Interrupted
            }
            JobEnd::Lost => {
                // Do not leave the unit running behind the error: stop it
                // over a fresh connection if the bus is still there.
                drop(session);
                let stopped = self
                    .session(account, None)
                    .and_then(|fresh| self.abort(&fresh, unit, None));
                bail!(
                    "{who}: lost the connection to the user's systemd while {unit} was running \
                     ({}); check `systemctl --user status {unit}` as the user and the user's \
                     manager ({})",
                    match stopped {
                        Ok(()) => "the unit was then stopped".to_owned(),
                        Err(e) => format!("stopping it afterwards failed too: {e:#}"),
                    },
                    user_manager_unit(account.uid)
                )
            }
        };
        Ok(UnitRun {
            outcome,
            status: session.status(unit),
        })
    }

    fn stop_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let limit = self.bounded(self.stop_timeout.min(timeout));
        let session = self.session(account, Some(cancel))?;
        let who = &session.who;
        let (path, load_state) = session.load(unit)?;
        let active_state = session.unit(&path)?.active_state().with_context(|| {
            format!("{who}: cannot read the ActiveState of {unit} in the user's systemd")
        })?;
        if load_state != "loaded" && is_settled(&active_state) {
            return Ok(());
        }
        let jobs = session.watch_jobs()?;
        let job = session
            .manager
            .stop_unit(unit, "replace")
            .with_context(|| format!("{who}: cannot stop {unit} in the user's systemd"))?;
        let hint = format!("check `systemctl --user status {unit}` as the user");
        match jobs.wait_for(&job, Instant::now() + limit, Some(cancel)) {
            JobEnd::Removed(result) if result == "done" => Ok(()),
            JobEnd::Removed(result) => {
                bail!("{who}: stopping {unit} ended with job result {result:?}; {hint}")
            }
            JobEnd::Cancelled => bail!(
                "{who}: interrupted by a stop signal while stopping {unit} (systemd carries on with the stop); {hint}"
            ),
            JobEnd::Deadline => bail!(
                "{who}: {unit} did not stop within {}s; {hint}",
                limit.as_secs()
            ),
            JobEnd::Lost => {
                bail!("{who}: lost the connection to the user's systemd while stopping {unit}; {hint}")
            }
        }
    }

    fn reload_manager(&self, account: &Account) -> anyhow::Result<()> {
        let session = self.session(account, None)?;
        session.manager.reload().with_context(|| {
            format!(
                "{}: daemon-reload of the user's systemd failed; check `systemctl --user status` as the user",
                session.who
            )
        })
    }

    fn list_units(&self, account: &Account, prefix: &str) -> anyhow::Result<Vec<String>> {
        let session = self.session(account, None)?;
        let who = &session.who;
        let pattern = prefix_pattern(prefix);
        let mut names = BTreeSet::new();
        // Units in memory...
        let rows = session
            .manager
            .list_units_by_patterns(&[], &[&pattern])
            .with_context(|| format!("{who}: cannot list the user's units matching {pattern}"))?;
        names.extend(
            rows.into_iter()
                .filter(|row| row.2 == "loaded")
                .map(|row| row.0),
        );
        // ...and unit files that load: an idle oneshot is often not in memory.
        let files = session
            .manager
            .list_unit_files_by_patterns(&[], &[&pattern])
            .with_context(|| {
                format!("{who}: cannot list the user's unit files matching {pattern}")
            })?;
        for (file, _enablement) in files {
            let Some(name) = unit_name_of_file(&file) else {
                continue;
            };
            if names.contains(name) || is_template(name) {
                continue;
            }
            if matches!(session.load(name), Ok((_, state)) if state == "loaded") {
                names.insert(name.to_owned());
            }
        }
        Ok(names.into_iter().collect())
    }
}

impl UserBus {
    /// After a timeout or cancel: cancel the start job, stop the unit, and
    /// make sure nothing of it is left running (`SIGKILL` after the grace).
    fn abort(
        &self,
        session: &Session,
        unit: &str,
        job: Option<&OwnedObjectPath>,
    ) -> anyhow::Result<()> {
        let who = &session.who;
        // The job may already be gone; stopping the unit below covers that.
        if let Some(proxy) = job.and_then(|job| session.job(job).ok()) {
            let _ = proxy.cancel();
        }
        let stop_error = session.manager.stop_unit(unit, "replace").err();
        if session.wait_settled(unit, self.bounded(self.stop_grace)) {
            return Ok(());
        }
        let _ = session.manager.kill_unit(unit, "all", libc_sigkill());
        if session.wait_settled(unit, self.bounded(self.kill_grace)) {
            return Ok(());
        }
        let state = session
            .unit_by_name(unit)
            .and_then(|u| Ok(u.active_state()?))
            .unwrap_or_else(|e| format!("unknown ({e})"));
        bail!(
            "{who}: {unit} is still {state} after stopping it ({}) and SIGKILL; \
             check `systemctl --user status {unit}` as the user",
            match stop_error {
                Some(e) => format!("StopUnit failed: {e}"),
                None => format!("waited {}s", self.stop_grace.as_secs()),
            }
        )
    }
}

// ------------------------------------------------------------ pure helpers

/// `/run/user/<uid>/bus`: where the user's session bus listens.
pub fn bus_socket_path(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/user/{uid}/bus"))
}

/// The system unit that runs a user's manager.
pub fn user_manager_unit(uid: u32) -> String {
    format!("user@{uid}.service")
}

/// Maps a `JobRemoved` result to the port's outcome.
pub fn job_outcome(result: &str) -> JobOutcome {
    match result {
        "done" => JobOutcome::Done,
        other => JobOutcome::Failed {
            job_result: other.to_owned(),
        },
    }
}

/// A unit in one of these states has no process left that systemd tracks.
fn is_settled(active_state: &str) -> bool {
    matches!(active_state, "inactive" | "failed")
}

/// A `fnmatch` pattern for names starting with `prefix` (its own glob
/// characters escaped).
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// `/home/u/.config/systemd/user/x.service` -> `x.service`.
fn unit_name_of_file(path: &str) -> Option<&str> {
    Path::new(path).file_name().and_then(|n| n.to_str())
}

/// `foo@.service` cannot be loaded by itself.
fn is_template(name: &str) -> bool {
    name.contains("@.")
}

fn path_present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn who(account: &Account) -> String {
    format!("user {} (uid {})", account.name, account.uid)
}

/// What an operator should look at when a user's manager is unreachable.
fn manager_hint(account: &Account) -> String {
    format!(
        "check that the user's systemd manager runs (`systemctl status {unit}`, `journalctl -u {unit}`) \
         and that lingering is enabled for it (`loginctl enable-linger {name}`)",
        unit = user_manager_unit(account.uid),
        name = account.name
    )
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::jobs::{GaveUp, JobRemoved, JobWatch};
    use super::*;
    use crate::model::UserName;

    fn account() -> Account {
        Account {
            name: UserName::parse("site1").expect("valid name"),
            uid: 1234,
            gid: 1234,
            groups: vec![1234],
            home: PathBuf::from("/home/site1"),
        }
    }

    #[test]
    fn bus_path_and_manager_unit_follow_the_uid() {
        assert_eq!(bus_socket_path(1234), PathBuf::from("/run/user/1234/bus"));
        assert_eq!(user_manager_unit(1234), "user@1234.service");
    }

    #[test]
    fn only_done_is_done() {
        assert_eq!(job_outcome("done"), JobOutcome::Done);
        for other in [
            "failed",
            "canceled",
            "timeout",
            "dependency",
            "skipped",
            "invalid",
        ] {
            assert_eq!(
                job_outcome(other),
                JobOutcome::Failed {
                    job_result: other.to_owned()
                }
            );
        }
    }

    #[test]
    fn settled_means_no_process_left() {
        assert!(is_settled("inactive"));
        assert!(is_settled("failed"));
        for busy in [
            "active",
            "activating",
            "deactivating",
            "reloading",
            "refreshing",
        ] {
            assert!(!is_settled(busy), "{busy}");
        }
    }

    #[test]
    fn prefix_patterns_escape_glob_characters() {
        assert_eq!(prefix_pattern("restic-backups-"), "restic-backups-*");
        assert_eq!(prefix_pattern("a*b?[c]"), "a\\*b\\?\\[c\\]*");
    }

    #[test]
    fn unit_names_from_files_and_templates() {
        assert_eq!(
            unit_name_of_file("/home/u/.config/systemd/user/restic-backups-x.service"),
            Some("restic-backups-x.service")
        );
        assert!(is_template("restic-backups-@.service"));
        assert!(!is_template("restic-backups-x.service"));
    }

    #[test]
    fn hints_name_the_user_and_what_to_check() {
        let hint = manager_hint(&account());
        assert!(hint.contains("user@1234.service"));
        assert!(hint.contains("loginctl enable-linger site1"));
        assert_eq!(who(&account()), "user site1 (uid 1234)");
    }

    #[test]
    fn waits_try_once_and_stop_on_deadline_or_cancel() {
        let past = Instant::now();
        let mut tries = 0;
        assert_eq!(
            wait_until(past, None, || {
                tries += 1;
                false
            }),
            Err(GaveUp::Deadline)
        );
        assert_eq!(tries, 1);
        assert_eq!(wait_until(past, None, || true), Ok(()));
        let cancel = Cancel::new();
        cancel.cancel();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_until(far, Some(&cancel), || false),
            Err(GaveUp::Cancelled)
        );
    }

    #[test]
    fn job_waits_match_the_job_path_and_see_late_results() {
        let (tx, rx) = mpsc::channel();
        let watch = JobWatch { rx };
        let job = OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7").expect("path");
        tx.send(JobRemoved {
            job: "/org/freedesktop/systemd1/job/6".into(),
            result: "failed".into(),
        })
        .expect("send");
        tx.send(JobRemoved {
            job: job.as_str().into(),
            result: "done".into(),
        })
        .expect("send");
        // Past the deadline, a result already queued still wins.
        assert_eq!(
            watch.wait_for(&job, Instant::now(), None),
            JobEnd::Removed("done".into())
        );
        assert_eq!(
            watch.wait_for(&job, Instant::now() + Duration::from_millis(150), None),
            JobEnd::Deadline
        );
        let cancel = Cancel::new();
        cancel.cancel();
        assert_eq!(
            watch.wait_for(
                &job,
                Instant::now() + Duration::from_secs(60),
                Some(&cancel)
            ),
            JobEnd::Cancelled
        );
        drop(tx);
        assert_eq!(
            watch.wait_for(&job, Instant::now() + Duration::from_secs(60), None),
            JobEnd::Lost
        );
    }
}
