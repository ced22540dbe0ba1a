//! The traits through which the engine touches the world, bundled as one
//! [`Ports`], and the words it shares with them (provider errors and their
//! advice, the settings a message points at). The engine, the dry run and
//! `doctor` see only these; `commands` plugs in the real adapters and tests
//! plug in stubs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

mod deadline;

pub use deadline::{Deadline, Over};

use crate::model::journal::{Change, JobRecord};
use crate::model::{
    BackupPayload, DeployStatus, FetchedIntent, JobId, MigrationKey, NodeEvent, NodeName,
    RestorePlan, UnhealthyUnit, UserName,
};

// ---------------------------------------------------------------- the bundle

/// The world, as every job sees it: one port of each kind. The engine uses
/// them all; the dry run and `doctor` only look, and `commands` gives them
/// adapters that refuse to change anything (a read-only systemd, journal and
/// plan store). Each job takes this one bundle, whatever part it uses.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub provider: &'a dyn Provider,
    pub users: &'a dyn Users,
    pub systemd: &'a dyn UserSystemd,
    pub programs: &'a dyn UserPrograms,
    pub plans: &'a dyn PlanStore,
    pub journal: &'a dyn Journal,
    pub lock: &'a dyn RunLock,
    pub clock: &'a dyn Clock,
    pub log: &'a dyn Log,
    pub cancel: &'a Cancel,
}

// ---------------------------------------------------------------- provider

/// How a provider call failed. The mapping from HTTP status is a pure
/// function in `adapters::http`; the engine decides about retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// 403: unknown node or wrong token. Retrying will not heal it.
    Refused,
    /// 409 on an event: the job is closed (finished, failed elsewhere or superseded).
    JobClosed,
    /// 404 where the resource must exist (e.g. an event for a job without an intent for us).
    NotFound(String),
    /// 400: the request itself is wrong (a bug here or a blank node name).
    BadRequest(String),
    /// Any other 4xx.
    Client { status: u16, body: String },
    /// 5xx: the provider is unwell; worth retrying.
    Server { status: u16, body: String },
    /// Could not talk to the provider at all (connect, timeout, TLS); worth retrying.
    Transport(String),
    /// A 200 whose body is not what the contract says.
    Decode(String),
}

/// A setting the messages of the engine and its ports point the operator
/// at. Its names are the command line's: `config` maps each to its
/// environment variable and flag, and `{}` shows the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    NodeName,
    ApiBaseUrl,
    TokenFile,
    ActionTimeout,
    TargetObserveTimeout,
    IntentWait,
    RunTimeout,
    HealthTimeout,
    StateDir,
    LockFile,
    MetricsFile,
    CominStore,
    CominStatus,
    CominErrorMsg,
    Sha,
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Server { .. } | ProviderError::Transport(_)
        )
    }

    /// What the operator should check after this error, if it says: the
    /// one wording of that advice for the run, the dry run and `doctor`.
    pub fn advice(&self) -> Option<String> {
        match self {
            ProviderError::Refused => Some(format!(
                "check {} and the token in {}",
                Setting::NodeName,
                Setting::TokenFile
            )),
            ProviderError::Transport(_) => Some(format!(
                "check {} and that the provider-service is up and reachable from this node",
                Setting::ApiBaseUrl
            )),
            ProviderError::Server { .. } => {
                Some("the provider-service is failing: check its logs".to_owned())
            }
            ProviderError::Decode(_) => Some(
                "the provider answered something this version does not understand: check that both speak the same API"
                    .to_owned(),
            ),
            ProviderError::Client { status: 401, .. } => Some(format!(
                "the provider asked for authentication: check the token in {}, and any proxy in front of the provider",
                Setting::TokenFile
            )),
            ProviderError::JobClosed
            | ProviderError::NotFound(_)
            | ProviderError::BadRequest(_)
            | ProviderError::Client { .. } => None,
        }
    }

    /// The error followed by its advice (a refusal's is part of it
    /// already).
    pub fn advised(&self) -> String {
        match (self, self.advice()) {
            (ProviderError::Refused, _) | (_, None) => self.to_string(),
            (_, Some(advice)) => format!("{self}; {advice}"),
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Refused => write!(
                f,
                "the provider refused this node's token (403): {}",
                self.advice().unwrap_or_default()
            ),
            ProviderError::JobClosed => {
                f.write_str("the provider has closed this job (409): it finished, failed elsewhere or was superseded")
            }
            ProviderError::NotFound(body) => write!(f, "not found (404): {body}"),
            ProviderError::BadRequest(body) => write!(f, "bad request (400): {body}"),
            ProviderError::Client { status, body } => write!(f, "HTTP {status}: {body}"),
            ProviderError::Server { status, body } => write!(f, "provider error HTTP {status}: {body}"),
            ProviderError::Transport(why) => write!(f, "cannot reach the provider: {why}"),
            ProviderError::Decode(why) => write!(f, "unexpected answer from the provider: {why}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// The node-facing provider API (see provider-api.md). One call, one request:
/// no retries here.
pub trait Provider {
    /// `GET /api/deploy-intents/by-sha?sha=&node=`, its intent parsed;
    /// `Ok(None)` on 404.
    fn intent_by_sha(&self, sha: &str) -> Result<Option<FetchedIntent>, ProviderError>;
    /// The full URL `intent_by_sha` asks, for messages (never the token).
    fn intent_url(&self, sha: &str) -> String;
    /// `POST /api/deploy-jobs/{job}/events`.
    fn post_event(&self, job: &JobId, event: &NodeEvent) -> Result<(), ProviderError>;
    /// `GET /api/deploy-jobs/{job}/statuses?node=<me>`: latest event per node.
    fn statuses(&self, job: &JobId) -> Result<Vec<DeployStatus>, ProviderError>;
    /// `GET /api/deploy-jobs/{job}/status?node=<me>`: this node's latest event.
    fn own_status(&self, job: &JobId) -> Result<Option<DeployStatus>, ProviderError>;
    /// `GET /api/deploy-jobs/{job}/backup-snapshot?node=<me>&source=&user=`.
    fn backup_snapshot(
        &self,
        job: &JobId,
        source: &NodeName,
        user: &UserName,
    ) -> Result<Option<BackupPayload>, ProviderError>;
}

// ---------------------------------------------------------------- users

/// A local account an environment runs as, resolved from the passwd database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: UserName,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from `getgrouplist`), including the primary gid.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl Account {
    /// `/run/user/<uid>`.
    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }
}

/// Resolves environment users. Must refuse uid 0 and unknown names with an
/// error that names the user.
pub trait Users {
    fn lookup(&self, name: &UserName) -> anyhow::Result<Account>;
}

// ---------------------------------------------------------------- cancel

/// Set when SIGTERM/SIGINT arrives. Every wait in the adapters and the engine
/// looks at it and returns early.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- systemd

/// The unit's state after its job ended, for the operator and the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitStatus {
    /// Service `Result` (`success`, `exit-code`, `timeout`, ...).
    pub result: Option<String>,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub exec_main_status: Option<i32>,
}

/// How a start job ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobOutcome {
    /// `JobRemoved` with result `done`.
    Done,
    /// `JobRemoved` with another result (`failed`, `dependency`, `canceled`, ...).
    Failed { job_result: String },
    /// The deadline passed; the job was cancelled and the unit stopped.
    TimedOut,
    /// Cancel was set; the job was cancelled and the unit stopped.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitRun {
    pub outcome: JobOutcome,
    pub status: UnitStatus,
}

/// Some of a user's units, for a hint: at most [`UnitList::MAX_NAMED`]
/// names (sorted), and how many more there are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitList {
    pub names: Vec<String>,
    /// Units that matched but are not named.
    pub more: usize,
}

impl UnitList {
    /// A hint names at most this many units.
    pub const MAX_NAMED: usize = 20;

    /// The first [`Self::MAX_NAMED`] of `names` (sorted, deduplicated) and
    /// a count of the rest.
    pub fn of(names: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = names.into_iter().collect();
        all.sort();
        all.dedup();
        let more = all.len().saturating_sub(Self::MAX_NAMED);
        all.truncate(Self::MAX_NAMED);
        UnitList { names: all, more }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.more == 0
    }
}

impl std::fmt::Display for UnitList {
    /// `a, b and 3 more`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.names.join(", "))?;
        if self.more > 0 {
            write!(f, " and {} more", self.more)?;
        }
        Ok(())
    }
}

/// A unit of the user's that is `failed` now, with its service `Result`
/// (none for units that are not services).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedUnit {
    pub unit: String,
    pub result: Option<String>,
}

impl std::fmt::Display for FailedUnit {
    /// `app.service (exit-code)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.unit)?;
        if let Some(result) = &self.result {
            write!(f, " ({result})")?;
        }
        Ok(())
    }
}

/// The user's failed units, for `doctor`: at most `limit` of them named
/// (sorted by name), and how many more there are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedUnits {
    pub units: Vec<FailedUnit>,
    /// Failed units that are not named.
    pub more: usize,
}

impl FailedUnits {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.more == 0
    }
}

impl std::fmt::Display for FailedUnits {
    /// `a.service (exit-code), b.service (signal) and 3 more`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let named: Vec<String> = self.units.iter().map(ToString::to_string).collect();
        f.write_str(&named.join(", "))?;
        if self.more > 0 {
            write!(f, " and {} more", self.more)?;
        }
        Ok(())
    }
}

/// What the health check after an activation found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Health {
    /// Every unit `default.target` and `hostenv.target` want or require is
    /// settled and none failed (or there are none).
    Healthy { looked_at: usize },
    /// Units failed, or still activating at the bound.
    Unhealthy { units: Vec<UnhealthyUnit> },
    /// A stop signal came first.
    Interrupted,
}

/// A read-only [`UserSystemd`] found the user's manager not running (its
/// bus socket absent) and did not start it, as a real run would: what it
/// was asked cannot be told, which need not stop a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerNotRunning {
    /// `user <name> (uid <uid>)`.
    pub who: String,
    pub bus: PathBuf,
    /// `user@<uid>.service`.
    pub manager: String,
}

impl std::fmt::Display for ManagerNotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the user's systemd manager is not running (no {}); a real run would start {} first",
            self.who,
            self.bus.display(),
            self.manager
        )
    }
}

impl std::error::Error for ManagerNotRunning {}

/// How long a read-only look at a user's systemd may take (`doctor`,
/// `--dry-run`): a user's bus that does not answer costs at most this.
pub const LOOK_LIMIT: Duration = Duration::from_secs(10);

/// The environment user's own systemd instance (`systemctl --user`).
/// Implementations do the D-Bus work with the user's credentials and bring
/// the user's manager up (`user@<uid>.service`) when its bus is absent.
/// Whether a unit's `LoadState` says it is loaded: the one place that
/// value is compared.
pub fn is_loaded(load_state: &str) -> bool {
    load_state == "loaded"
}

pub trait UserSystemd {
    /// A hint that calls for `account` follow soon, with no wait for
    /// another node before them (a backup's unit checks after the
    /// announcement, the health check after the user's `activate`
    /// program): the adapter may get ready meanwhile, e.g. connect to the
    /// user's bus. Starts nothing and never fails: the calls themselves
    /// report any problem.
    fn prepare(&self, _account: &Account) {}
    /// The unit's `LoadState` (`loaded`, `not-found`, `masked`, ...),
    /// within `limit` whatever the user's bus does.
    fn load_state(&self, account: &Account, unit: &str, limit: Duration) -> anyhow::Result<String>;
    /// Starts `unit` (subscribed to job removal first) and waits for its job
    /// to end, at most `timeout`. On timeout or cancel the job is cancelled
    /// and the unit stopped before returning.
    fn run_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<UnitRun>;
    /// Stops `unit` and waits for it, at most `timeout`; a unit that is
    /// not loaded is not an error. On cancel it returns early with an error
    /// (systemd carries on with the stop job).
    fn stop_unit(
        &self,
        account: &Account,
        unit: &str,
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<()>;
    /// Waits, at most `limit`, until the units that `default.target` and
    /// `hostenv.target` (each where loaded) want or require have no job
    /// pending and none is `activating`, looking again at units that became
    /// active less than 2 s ago; then tells which are failed or still not
    /// settled (behaviour.md, "Healthy, not just exited").
    fn check_health(
        &self,
        account: &Account,
        limit: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<Health>;
    /// `systemctl --user daemon-reload`, within `limit`.
    fn reload_manager(&self, account: &Account, limit: Duration) -> anyhow::Result<()>;
    /// The user's loaded units whose names start with `prefix`, for a
    /// hint: a bounded list, whatever the user has.
    fn list_units(
        &self,
        account: &Account,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<UnitList>;
    /// The user's units that are `failed` now, each with its service
    /// `Result`: at most [`UnitList::MAX_NAMED`] named, the rest counted,
    /// within `limit` (read-only; for `doctor`).
    fn failed_units(&self, account: &Account, limit: Duration) -> anyhow::Result<FailedUnits>;
}

// ---------------------------------------------------------------- programs

/// How a program run as the user ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramOutcome {
    Exited(i32),
    /// Killed by a signal it did not expect (not by us).
    Signalled(i32),
    /// Past its timeout; the whole process group was killed.
    TimedOut,
    /// Cancel was set; the whole process group was killed.
    Interrupted,
}

impl std::fmt::Display for ProgramOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgramOutcome::Exited(code) => write!(f, "exit code {code}"),
            ProgramOutcome::Signalled(signal) => write!(f, "killed by signal {signal}"),
            ProgramOutcome::TimedOut => f.write_str("timed out"),
            ProgramOutcome::Interrupted => f.write_str("interrupted by a stop signal"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRun {
    pub outcome: ProgramOutcome,
    /// The tail of stdout and stderr, interleaved as written (lossy UTF-8);
    /// of stderr alone when stdout went to a consumer
    /// ([`UserPrograms::run_with_stdout`]).
    pub output: String,
}

/// Where a program was looked for, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The first candidate that is an executable file.
    pub found: Option<PathBuf>,
    /// Every candidate, in lookup order.
    pub looked: Vec<PathBuf>,
}

impl Search {
    /// The candidates, comma-separated, for a message.
    pub fn looked_at(&self) -> String {
        let paths: Vec<String> = self
            .looked
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        paths.join(", ")
    }
}

/// Finding and running the user's programs as the user, in the clean
/// environment of behaviour.md (never root's environment, never the token).
pub trait UserPrograms {
    /// The user's `activate` program, in the documented lookup order.
    fn find_activate(&self, account: &Account) -> Search;
    /// The user's `restic-<key>` wrapper, in the documented lookup order.
    fn find_restic_wrapper(&self, account: &Account, key: &MigrationKey) -> Search;
    /// Runs `program args...` as the user; the error case is "could not start".
    fn run(
        &self,
        account: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<ProgramRun>;
    /// [`run`](Self::run), with stdout read apart from stderr: stdout goes
    /// to `stdout` chunk by chunk as it is read (cut anywhere; never held
    /// whole), the run's `output` is the tail of stderr alone.
    fn run_with_stdout(
        &self,
        account: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        cancel: &Cancel,
        stdout: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<ProgramRun>;
}

// ---------------------------------------------------------------- plans

/// Writes `/run/hostenv/user/<user>/restore/plan.json` safely.
pub trait PlanStore {
    /// Writes the plan atomically (dir 0700, file 0600, owned by the user,
    /// never following a symlink as root) and returns its path.
    fn write_restore_plan(&self, account: &Account, plan: &RestorePlan) -> anyhow::Result<PathBuf>;
}

// ---------------------------------------------------------------- memory

/// The journal of this node's runs (behaviour.md, "Run memory"): one record
/// per job. A run writes the record whole when it starts and when it ends
/// (compaction), and in between only the changes, one at a time: what one
/// change writes does not grow with the number of actions. A record that
/// cannot be read is reported (logged) and treated as absent, never fatal.
pub trait Journal {
    /// This node's record of `job`, if there is a readable one.
    fn load(&self, job: &JobId) -> Option<JobRecord>;
    /// Replaces this node's record of `record.job` with `record`, whole and
    /// atomically (whatever was there: an earlier state, a record for
    /// another intent, an unreadable file). A record that replaces nothing
    /// may reach the disk only with the next change that must be durable:
    /// lost in a crash before that, nothing is lost that a run needs.
    fn rewrite(&self, record: &JobRecord) -> anyhow::Result<()>;
    /// Adds one change to this node's record of `job` (written whole
    /// before); see [`Journal::append_all`].
    fn append(&self, job: &JobId, change: &Change) -> anyhow::Result<()> {
        self.append_all(job, std::slice::from_ref(change))
    }
    /// Adds `changes`, in order, to this node's record of `job` (written
    /// whole before), with one sync if any of them must be durable
    /// ([`Change::must_be_durable`]): when it returns, a crash keeps those,
    /// and every change before them.
    fn append_all(&self, job: &JobId, changes: &[Change]) -> anyhow::Result<()>;
    /// This node's records that hold undelivered terminal events.
    fn with_pending(&self) -> Vec<JobRecord>;
    /// Removes old records: those beyond the newest 50 that are also older
    /// than 30 days.
    fn prune(&self, now: Timestamp);
}

/// What reading a whole journal found (`status`, `doctor`, the metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalScan {
    /// The readable records, newest first.
    pub records: Vec<JobRecord>,
    /// Files that could not be used, each with why.
    pub unreadable: Vec<String>,
    /// Why the directory could not be listed: then `records` says nothing.
    pub unlisted: Option<String>,
}

/// Who holds the node's run lock, as it says about itself (the line the
/// holder writes into the lock file; each part may be unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub pid: Option<u32>,
    pub since: Option<Timestamp>,
    pub sha: Option<String>,
}

impl std::fmt::Display for LockHolder {
    /// `pid P, since T, commit S`, each `unknown` when not said.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unknown = || "unknown".to_owned();
        write!(
            f,
            "pid {}, since {}, commit {}",
            self.pid.map_or_else(unknown, |p| p.to_string()),
            self.since.map_or_else(unknown, |t| t.to_string()),
            self.sha.as_deref().unwrap_or("unknown")
        )
    }
}

/// What an attempt to take the run lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// This process holds the lock now, until it exits.
    Taken,
    /// Another run holds it.
    Busy(LockHolder),
}

/// One run at a time per node: an exclusive lock, held until the process
/// exits (so a crash releases it).
pub trait RunLock {
    /// Tries once, without waiting; on success records who holds it.
    fn try_lock(&self, sha: &str, now: Timestamp) -> anyhow::Result<LockAttempt>;
    /// Who holds the lock now, if anyone; takes nothing, writes nothing.
    fn holder(&self) -> anyhow::Result<Option<LockHolder>>;
}

// ---------------------------------------------------------------- clock

/// Wall time, monotonic time and waiting. The real clock's `sleep` returns
/// early on cancel; the test clock advances instantly.
pub trait Clock {
    /// Wall time: what events and the journal say.
    fn now(&self) -> Timestamp;
    /// Monotonic time: what a [`Deadline`] is checked against.
    fn instant(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

// ---------------------------------------------------------------- log

/// One step of the run, as the operator sees it in the journal and on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where step lines go. Fields are the context every line carries.
pub trait Log {
    fn line(&self, level: Level, fields: &LogFields<'_>, message: &str);
}

/// A stable journal `MESSAGE_ID` (128 bits, as systemd's catalog uses):
/// `journalctl MESSAGE_ID=<id>` finds every line of that kind on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId(pub &'static str);

impl MessageId {
    /// A run starts (`HOSTENV_SHA` says for which commit).
    pub const RUN_STARTED: MessageId = MessageId("a2c87e5e79624c00a5ad24f0e451d4f8");
    /// A run ends; `PRIORITY` 3 when it failed, 6 otherwise.
    pub const RUN_FINISHED: MessageId = MessageId("cf85c54d5f08479cbf1f778bd5ce9e94");
    /// An action's terminal event was posted (`HOSTENV_STATUS` says how it ended).
    pub const ACTION_FINISHED: MessageId = MessageId("d51dba628d354d67b3fe6a3a1f26ca3b");
    /// A terminal event could not be delivered; it stays in the journal.
    pub const EVENT_UNDELIVERED: MessageId = MessageId("e2d0a1adfc9244328abdc0bc21e918f9");

    pub const ALL: [(&'static str, MessageId); 4] = [
        ("run started", Self::RUN_STARTED),
        ("run finished", Self::RUN_FINISHED),
        ("action finished", Self::ACTION_FINISHED),
        ("event undelivered", Self::EVENT_UNDELIVERED),
    ];
}

/// Context of a log line: which node, job, commit, op, user, unit or key,
/// and for the lines an operator searches for, their message id.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields<'a> {
    pub node: Option<&'a str>,
    pub job: Option<&'a str>,
    pub sha: Option<&'a str>,
    pub op: Option<&'a str>,
    pub user: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The event status the line reports (`success`, `failed`, ...).
    pub status: Option<&'a str>,
    pub message_id: Option<MessageId>,
}
