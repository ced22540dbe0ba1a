//! The environment user's own systemd manager (`systemctl --user`), driven
//! over the user's session bus: the real `ports::UserSystemd`.
//!
//! Everything under `/run/user/<uid>` belongs to a user who may be hostile
//! (behaviour.md, "The environment's user is not trusted"), so this root
//! process never talks to a user's bus itself. Each exchange runs in a bus
//! helper: this same binary re-executed with the user's credentials
//! (`inside.rs`), under address-space and CPU limits, which sends back one
//! small typed answer (`wire.rs`) and is killed when its time is up
//! (`helper.rs`). A bus that never answers, floods, or crashes its client
//! costs the run one failed action, bounded in time, never a hang, memory or
//! a panic here. dbus-daemon only lets the bus owner in anyway, so the
//! helper is also how the user's bus can be reached at all.
//!
//! What stays here, as root: starting `user@<uid>.service` on the system bus
//! when the user's bus socket is absent, and waiting for the socket.

mod batch;
mod health;
mod helper;
mod inside;
mod jobs;
mod proxies;
mod session;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Context};
use zbus::blocking::connection;

use self::helper::{Budget, Conversation, Ended};
pub use self::inside::{helper_main, HELPER_ARG};
use self::jobs::wait_until;
use self::proxies::ManagerProxy;
use self::wire::{Answer, Envelope, Request};
use crate::ports::{
    Account, Cancel, Deadline, FailedUnit, FailedUnits, Health, JobOutcome, ManagerNotRunning,
    UnitList, UnitRun, UnitStatus, UserSystemd,
};

/// The well-known name of a systemd manager on its bus.
const SYSTEMD_NAME: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_INTERFACE: &str = "org.freedesktop.systemd1.Service";
/// What a unit that must stop may take past its job's deadline: 5 s for
/// its stop job, then `SIGKILL` and up to 3 s for it to settle, plus the
/// helper's own margin (behaviour.md: the action ends within its deadline
/// plus 10 s).
const ABORT_BUDGET: Duration = Duration::from_secs(10);
/// After a stop signal, what a helper with a job queued may take to stop
/// the unit and answer (the run ends within 5 s of the signal).
const INTERRUPTED_BUDGET: Duration = Duration::from_millis(4500);
/// A helper's own time limits are the exchange's; the root side waits this
/// much longer, so the helper's message (naming what did not answer) wins.
const MARGIN: Duration = Duration::from_millis(500);

/// The real [`UserSystemd`]: bus helpers run with the user's credentials
/// (this process must run as root, or as that user). A helper whose last
/// request left nothing behind ([`Request::keeps_helper`]) is kept for the
/// next call for the same user, so an action's calls share one helper and
/// one connection; one started ahead by [`UserSystemd::prepare`] connects
/// while the user's program runs.
#[derive(Debug, Clone)]
pub struct UserBus {
    /// The binary to re-execute as a bus helper: this one.
    program: PathBuf,
    /// How long to wait for `/run/user/<uid>/bus` after starting
    /// `user@<uid>.service`.
    bus_wait: Duration,
    /// How long `stop_unit` waits for its stop job.
    stop_timeout: Duration,
    /// Bound on an exchange that is not a job (connect, authenticate, call).
    method_timeout: Duration,
    /// Start `user@<uid>.service` when the user's bus is absent (not in a
    /// dry run, which starts nothing).
    start_managers: bool,
    /// The run deadline: exchanges end at it (calls past it get a short
    /// bound, so a run is never held up long after its deadline).
    deadline: Option<Deadline>,
    /// The stop signal, for the calls whose port takes none.
    cancel: Option<Cancel>,
    /// The helper kept for the next call (a clone starts without one).
    kept: Kept,
}

/// The helper kept between calls: idle, or still answering the `Connect`
/// sent ahead by `prepare`.
enum KeptHelper {
    Idle(Conversation),
    Connecting(Conversation),
}

#[derive(Default)]
struct Kept(Mutex<Option<KeptHelper>>);

impl Kept {
    fn slot(&self) -> MutexGuard<'_, Option<KeptHelper>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clone for Kept {
    fn clone(&self) -> Self {
        Kept::default()
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.slot() {
            Some(KeptHelper::Idle(h) | KeptHelper::Connecting(h)) => write!(f, "kept {h:?}"),
            None => write!(f, "no helper kept"),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(KeptHelper::Idle(h) | KeptHelper::Connecting(h)) = self.slot().take() {
            h.end();
        }
    }
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
    /// appear, 90 s for `stop_unit`, 30 s for any other exchange; helpers
    /// are this binary (`/proc/self/exe`).
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("/proc/self/exe"),
            bus_wait: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(90),
            method_timeout: Duration::from_secs(30),
            start_managers: true,
            deadline: None,
            cancel: None,
            kept: Kept::default(),
        }
    }

    /// Re-executes `program` as the bus helper instead of this binary
    /// (tests, whose own binary is not `hostenv-activate`).
    pub fn helper_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Bounds every exchange that is not a job (a hung bus costs at most this).
    pub fn method_timeout(mut self, limit: Duration) -> Self {
        self.method_timeout = limit;
        self
    }

    /// Bounds every wait and call by the run deadline.
    pub fn ending_by(mut self, deadline: Deadline) -> Self {
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
            Some(deadline) => limit.min(deadline.remaining().max(PAST_DEADLINE)),
            None => limit,
        }
    }

    /// The cancel flag a wait looks at: the call's own, else the adapter's.
    fn cancel_for<'a>(&'a self, cancel: Option<&'a Cancel>) -> Option<&'a Cancel> {
        cancel.or(self.cancel.as_ref())
    }

    /// For `--dry-run` and `doctor`: a user whose manager is not running is
    /// an error, never a reason to start `user@<uid>.service`.
    pub fn without_starting_managers() -> Self {
        Self {
            start_managers: false,
            ..Self::new()
        }
    }

    /// Makes sure the user's bus socket exists, starting the manager first
    /// (on the system bus, as root) when it is absent.
    fn ensure_bus(
        &self,
        account: &Account,
        limit: Duration,
        cancel: Option<&Cancel>,
    ) -> anyhow::Result<()> {
        let who = who(account);
        let path = bus_socket_path(account.uid);
        if path_present(&path) {
            return Ok(());
        }
        if !self.start_managers {
            return Err(ManagerNotRunning {
                who,
                bus: path,
                manager: user_manager_unit(account.uid),
            }
            .into());
        }
        let deadline = Deadline::after(self.bounded(self.bus_wait.min(limit)));
        self.start_user_manager(account)?;
        wait_until(deadline, cancel, || path_present(&path)).map_err(|why| {
            anyhow!(
                "{who}: started {unit} but the user's bus {path} {why}; {hint}",
                unit = user_manager_unit(account.uid),
                path = path.display(),
                why = why.describe(self.bus_wait),
                hint = manager_hint(account),
            )
        })
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

    /// One exchange with the user's manager, in a bus helper, within
    /// `limit` (a job's own limit for `RunUnit`/`StopUnit`, whose helper
    /// may then take [`ABORT_BUDGET`] more to stop the unit).
    fn exchange(
        &self,
        account: &Account,
        mut request: Request,
        limit: Duration,
        cancel: Option<&Cancel>,
    ) -> anyhow::Result<Ended> {
        let cancel = self.cancel_for(cancel);
        // The call's time counts from here, the wait for the bus included.
        let ends = Deadline::after(limit);
        self.ensure_bus(account, limit, cancel)?;
        let budget = Budget {
            before_job: Deadline::from(ends.instant(), MARGIN),
            after_job: match request {
                Request::RunUnit { .. } => Deadline::from(ends.instant(), ABORT_BUDGET),
                _ => Deadline::from(ends.instant(), MARGIN),
            },
            interrupted: INTERRUPTED_BUDGET,
        };
        let keep = request.keeps_helper();
        let what = request.describe();
        let who = who(account);
        if cancel.is_some_and(Cancel::is_cancelled) {
            return Ok(Ended::Cancelled);
        }
        let kept = match self.kept.slot().take() {
            Some(KeptHelper::Idle(h) | KeptHelper::Connecting(h)) if h.uid() != account.uid => {
                h.end();
                None
            }
            Some(KeptHelper::Idle(h)) => Some(h),
            // Started ahead by `prepare`: its connecting is this call's.
            Some(KeptHelper::Connecting(h)) => {
                match h.ask(account, &who, &what, budget, cancel, true) {
                    (Ok(Ended::Answer(Answer::Ready)), Some(ready)) => Some(ready),
                    (Ok(Ended::Answer(other)), back) => {
                        if let Some(back) = back {
                            back.end();
                        }
                        return Err(unexpected(account, &other));
                    }
                    (Ok(Ended::Cancelled), _) => return Ok(Ended::Cancelled),
                    (Err(e), _) => return Err(e),
                }
            }
            None => None,
        };
        // What is left of the call's (or the job's) time from here.
        let left = ends.remaining();
        if let Request::RunUnit { timeout_ms, .. }
        | Request::StopUnit { timeout_ms, .. }
        | Request::CheckHealth { timeout_ms } = &mut request
        {
            *timeout_ms = millis(left);
        }
        let envelope = self.envelope(account, left, request);
        let mut kept = kept;
        let sent = kept.as_mut().is_some_and(|kept| kept.send(&envelope));
        let helper = match kept {
            Some(kept) if sent => kept,
            stale => {
                // Gone since its last answer: a fresh one does the call.
                if let Some(stale) = stale {
                    stale.end();
                }
                let mut fresh = Conversation::start(&self.program, account, &who, &what)?;
                fresh.send(&envelope);
                fresh
            }
        };
        let (outcome, back) = helper.ask(account, &who, &what, budget, cancel, keep);
        if let Some(back) = back {
            self.keep(KeptHelper::Idle(back));
        }
        outcome
    }

    fn envelope(&self, account: &Account, limit: Duration, request: Request) -> Envelope {
        Envelope {
            user: account.name.as_str().to_owned(),
            uid: account.uid,
            limit_ms: millis(limit),
            request,
        }
    }

    /// Keeps `helper` for the next call, ending the one kept before.
    fn keep(&self, helper: KeptHelper) {
        if let Some(KeptHelper::Idle(old) | KeptHelper::Connecting(old)) =
            self.kept.slot().replace(helper)
        {
            old.end();
        }
    }

    /// An exchange whose answer must be `expected`; a stop signal before it
    /// started is an error naming what was not done.
    fn ask(&self, account: &Account, request: Request, limit: Duration) -> anyhow::Result<Answer> {
        let what = request.describe();
        let limit = self.bounded(self.method_timeout.min(limit));
        match self.exchange(account, request, limit, None)? {
            Ended::Answer(answer) => Ok(answer),
            Ended::Cancelled => Err(anyhow!(
                "{}: not {what}: the run is being stopped",
                who(account)
            )),
        }
    }
}

/// An answer of the wrong kind: a helper that is not ours (or a bug).
fn unexpected(account: &Account, answer: &Answer) -> anyhow::Error {
    anyhow!(
        "{}: the bus helper answered something else than asked ({:?})",
        who(account),
        std::mem::discriminant(answer)
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl UserSystemd for UserBus {
    fn prepare(&self, account: &Account) {
        // Never starts the user's manager: only a bus that is there.
        if !path_present(&bus_socket_path(account.uid))
            || self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
        {
            return;
        }
        if let Some(KeptHelper::Idle(h) | KeptHelper::Connecting(h)) = &*self.kept.slot() {
            if h.uid() == account.uid {
                return;
            }
        }
        let request = Request::Connect;
        let what = request.describe();
        let envelope = self.envelope(account, self.bounded(self.method_timeout), request);
        if let Ok(mut helper) = Conversation::start(&self.program, account, &who(account), &what) {
            if helper.send(&envelope) {
                self.keep(KeptHelper::Connecting(helper));
            } else {
                helper.end();
            }
        }
    }

    fn load_state(&self, account: &Account, unit: &str, limit: Duration) -> anyhow::Result<String> {
        match self.ask(account, Request::LoadState { unit: unit.into() }, limit)? {
            Answer::LoadState { state } => Ok(state),
            other => Err(unexpected(account, &other)),
        }
    }

    fn run_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<UnitRun> {
        let request = Request::RunUnit {
            unit: unit.into(),
            timeout_ms: millis(timeout),
        };
        match self.exchange(account, request, timeout, Some(cancel))? {
            Ended::Answer(Answer::UnitRun { run }) => Ok(run),
            Ended::Answer(other) => Err(unexpected(account, &other)),
            Ended::Cancelled => Ok(UnitRun {
                outcome: JobOutcome::Interrupted,
                status: UnitStatus::default(),
            }),
        }
    }

    fn stop_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()> {
        let limit = self.bounded(self.stop_timeout.min(timeout));
        let request = Request::StopUnit {
            unit: unit.into(),
            timeout_ms: millis(limit),
        };
        match self.exchange(account, request, limit, Some(cancel))? {
            Ended::Answer(Answer::Stopped) => Ok(()),
            Ended::Answer(other) => Err(unexpected(account, &other)),
            Ended::Cancelled => Err(anyhow!(
                "{}: interrupted by a stop signal before stopping {unit}; check `systemctl --user status {unit}` as the user",
                who(account)
            )),
        }
    }

    fn check_health(
        &self,
        account: &Account,
        limit: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<Health> {
        let request = Request::CheckHealth {
            timeout_ms: millis(limit),
        };
        match self.exchange(account, request, limit, Some(cancel))? {
            Ended::Answer(Answer::Health { health }) => Ok(health),
            Ended::Answer(other) => Err(unexpected(account, &other)),
            Ended::Cancelled => Ok(Health::Interrupted),
        }
    }

    fn reload_manager(&self, account: &Account, limit: Duration) -> anyhow::Result<()> {
        match self.ask(account, Request::ReloadManager, limit)? {
            Answer::Reloaded => Ok(()),
            other => Err(unexpected(account, &other)),
        }
    }

    fn list_units(
        &self,
        account: &Account,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<UnitList> {
        match self.ask(
            account,
            Request::ListUnits {
                prefix: prefix.into(),
            },
            limit,
        )? {
            Answer::Units { list } => Ok(list),
            other => Err(unexpected(account, &other)),
        }
    }

    fn failed_units(&self, account: &Account, limit: Duration) -> anyhow::Result<FailedUnits> {
        match self.ask(account, Request::FailedUnits, limit)? {
            Answer::Failed { failed } => Ok(bounded_failed(failed)),
            other => Err(unexpected(account, &other)),
        }
    }
}

// ------------------------------------------------------------ pure helpers

/// A helper's list of failed units made fit to show: it comes from a
/// process the user can take over, so no more names than asked, each text
/// cut and without control characters.
pub fn bounded_failed(failed: FailedUnits) -> FailedUnits {
    let clean = |text: &str| {
        crate::model::cut(text)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
    };
    let more = failed
        .more
        .saturating_add(failed.units.len().saturating_sub(UnitList::MAX_NAMED));
    let units = failed
        .units
        .iter()
        .take(UnitList::MAX_NAMED)
        .map(|u| FailedUnit {
            unit: clean(&u.unit),
            result: u.result.as_deref().map(clean),
        })
        .collect();
    FailedUnits { units, more }
}

/// The object path of `unit` in a systemd manager: its name escaped as
/// systemd's `bus_label_escape` does (every byte but a letter, or a digit
/// after the first, as `_` and two lowercase hex digits). A call on that
/// path loads the unit if needed, as `LoadUnit` does, so a unit's state
/// can be read without asking for its path first.
pub fn unit_object_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        path.push('_');
    }
    for (i, byte) in unit.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (i > 0 && byte.is_ascii_digit()) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

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

fn path_present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn who(account: &Account) -> String {
    format!("user {} (uid {})", account.name, account.uid)
}

/// What an operator should look at when a user's manager is unreachable.
fn manager_hint(account: &Account) -> String {
    manager_hint_for(account.name.as_str(), account.uid)
}

fn manager_hint_for(name: &str, uid: u32) -> String {
    format!(
        "check that the user's systemd manager runs (`systemctl status {unit}`, `journalctl -u {unit}`) \
         and that lingering is enabled for it (`loginctl enable-linger {name}`)",
        unit = user_manager_unit(uid),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use zbus::zvariant::OwnedObjectPath;

    use super::jobs::{GaveUp, JobEnd, JobRemoved, JobWatch};
    use super::*;
    use crate::model::UserName;
    use std::time::Instant;

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
    fn unit_paths_are_escaped_as_systemd_escapes_them() {
        let path = |unit| unit_object_path(unit);
        assert_eq!(
            path("restic-backups-app.service"),
            "/org/freedesktop/systemd1/unit/restic_2dbackups_2dapp_2eservice"
        );
        assert_eq!(
            path("default.target"),
            "/org/freedesktop/systemd1/unit/default_2etarget"
        );
        assert_eq!(
            path("2fa_x@1.service"),
            "/org/freedesktop/systemd1/unit/_32fa_5fx_401_2eservice"
        );
        assert_eq!(path(""), "/org/freedesktop/systemd1/unit/_");
        // Whatever the name, a valid object path: [A-Za-z0-9_] after the prefix.
        for odd in ["ä.service", "a b", "../x", "\n"] {
            let p = path(odd);
            let tail = p.trim_start_matches("/org/freedesktop/systemd1/unit/");
            assert!(
                tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{p}"
            );
            assert!(
                zbus::zvariant::ObjectPath::try_from(p.as_str()).is_ok(),
                "{p}"
            );
        }
    }

    #[test]
    fn prefix_patterns_escape_glob_characters() {
        assert_eq!(prefix_pattern("restic-backups-"), "restic-backups-*");
        assert_eq!(prefix_pattern("a*b?[c]"), "a\\*b\\?\\[c\\]*");
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
            wait_until(Deadline::at(past), None, || {
                tries += 1;
                false
            }),
            Err(GaveUp::Deadline)
        );
        assert_eq!(tries, 1);
        assert_eq!(wait_until(Deadline::at(past), None, || true), Ok(()));
        let cancel = Cancel::new();
        cancel.cancel();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_until(Deadline::at(far), Some(&cancel), || false),
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
            watch.wait_for(&job, Deadline::after(Duration::ZERO), None),
            JobEnd::Removed("done".into())
        );
        assert_eq!(
            watch.wait_for(&job, Deadline::after(Duration::from_millis(150)), None),
            JobEnd::Deadline
        );
        let cancel = Cancel::new();
        cancel.cancel();
        assert_eq!(
            watch.wait_for(
                &job,
                Deadline::after(Duration::from_secs(60)),
                Some(&cancel)
            ),
            JobEnd::Cancelled
        );
        drop(tx);
        assert_eq!(
            watch.wait_for(&job, Deadline::after(Duration::from_secs(60)), None),
            JobEnd::Lost
        );
    }

    #[test]
    fn a_helpers_failed_units_are_bounded_before_anyone_shows_them() {
        let many = FailedUnits {
            units: (0..UnitList::MAX_NAMED + 5)
                .map(|i| FailedUnit {
                    unit: format!("u{i:02}\x1b[2J.service"),
                    result: Some("x".repeat(10_000)),
                })
                .collect(),
            more: 7,
        };
        let shown = bounded_failed(many);
        assert_eq!(shown.units.len(), UnitList::MAX_NAMED);
        assert_eq!(shown.more, 12);
        assert_eq!(shown.units[0].unit, "u00?[2J.service");
        let result = shown.units[0].result.as_deref().unwrap_or_default();
        assert!(result.len() < 500, "{} characters", result.len());
    }
}
