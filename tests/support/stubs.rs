//! Stub adapters for engine tests: scripted answers, recorded calls and a
//! clock that advances only when the engine sleeps. Nothing here touches the
//! world.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostenv_activate::engine::{self, Outcome, Settings};
use hostenv_activate::model::journal::{
    ActionRecord, ActionState, Change, Delivery, JobRecord, Posted,
};
use hostenv_activate::model::{
    BackupPayload, DeployStatus, FetchedIntent, IntentDigest, IntentEnvelope, JobId, MigrationKey,
    NodeEvent, NodeName, Op, Phase, RestorePlan, Status, Terminal, UserName,
};
use hostenv_activate::ports::{
    Account, Cancel, Clock, FailedUnits, Health, JobOutcome, Journal, Level, LockAttempt,
    LockHolder, Log, LogFields, PlanStore, Ports, ProgramOutcome, ProgramRun, Provider,
    ProviderError, RunLock, Search, UnitList, UnitRun, UnitStatus, UserPrograms, UserSystemd,
    Users,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

pub const NODE: &str = "node-a";
pub const JOB: &str = "job-1";

/// A queue of scripted answers; the last one repeats.
pub struct Script<T: Clone>(RefCell<VecDeque<T>>);

impl<T: Clone> Script<T> {
    pub fn new(items: impl IntoIterator<Item = T>) -> Self {
        Script(RefCell::new(items.into_iter().collect()))
    }
    fn next(&self) -> Option<T> {
        let mut q = self.0.borrow_mut();
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        }
    }
}

// ------------------------------------------------------------------ clock

/// Both of its clocks move only when it sleeps or is advanced, together.
pub struct FakeClock {
    pub now: Cell<Timestamp>,
    /// Its monotonic time.
    pub instant: Cell<Instant>,
    pub slept: Cell<Duration>,
}

impl FakeClock {
    pub fn new() -> Self {
        FakeClock {
            now: Cell::new("2026-11-22T10:00:00Z".parse().expect("ts")),
            instant: Cell::new(Instant::now()),
            slept: Cell::new(Duration::ZERO),
        }
    }
    pub fn advance(&self, d: Duration) {
        self.instant.set(self.instant.get() + d);
        let d = SignedDuration::try_from(d).expect("duration");
        self.now.set(self.now.get().checked_add(d).expect("time"));
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        self.now.get()
    }
    fn instant(&self) -> Instant {
        self.instant.get()
    }
    fn sleep(&self, d: Duration) {
        self.slept.set(self.slept.get() + d);
        self.advance(d);
    }
}

// ------------------------------------------------------------------ provider

pub type Answer<T> = Result<T, ProviderError>;

pub struct StubProvider {
    pub intent: Script<Answer<Option<FetchedIntent>>>,
    /// Answer for the n-th POST attempt (0-based); default Ok.
    pub post_answers: RefCell<HashMap<usize, ProviderError>>,
    pub post_attempts: Cell<usize>,
    /// Events delivered to job [`JOB`].
    pub posted: RefCell<Vec<NodeEvent>>,
    /// Events delivered to other jobs, with their job.
    pub posted_elsewhere: RefCell<Vec<(String, NodeEvent)>>,
    pub statuses: Script<Answer<Vec<DeployStatus>>>,
    pub backup: Script<Answer<Option<BackupPayload>>>,
    pub intent_calls: Cell<usize>,
    /// Answers of `own_status`; by default the latest delivered event.
    pub own: RefCell<Option<Answer<Option<DeployStatus>>>>,
    /// `backup_snapshot` calls as (source, user).
    pub backup_calls: RefCell<Vec<(String, String)>>,
}

/// The intent lookup's answer for `intent`, parsed as the HTTP adapter does.
pub fn envelope(intent: Value) -> FetchedIntent {
    let envelope: IntentEnvelope = serde_json::from_value(
        json!({"jobId": JOB, "commitSha": "abc", "node": NODE, "intent": intent}),
    )
    .expect("envelope");
    envelope.into()
}

impl StubProvider {
    pub fn with_intent(intent: Value) -> Self {
        Self::answering(vec![Ok(Some(envelope(intent)))])
    }
    pub fn answering(intent: Vec<Answer<Option<FetchedIntent>>>) -> Self {
        StubProvider {
            intent: Script::new(intent),
            post_answers: RefCell::new(HashMap::new()),
            post_attempts: Cell::new(0),
            posted: RefCell::new(Vec::new()),
            posted_elsewhere: RefCell::new(Vec::new()),
            statuses: Script::new([Ok(vec![])]),
            backup: Script::new([Ok(None)]),
            intent_calls: Cell::new(0),
            own: RefCell::new(None),
            backup_calls: RefCell::new(Vec::new()),
        }
    }
    /// Makes the n-th POST attempt (0-based) fail with `err`.
    pub fn fail_post(self, attempt: usize, err: ProviderError) -> Self {
        self.post_answers.borrow_mut().insert(attempt, err);
        self
    }
    pub fn statuses(mut self, answers: Vec<Answer<Vec<DeployStatus>>>) -> Self {
        self.statuses = Script::new(answers);
        self
    }
    pub fn backups(mut self, answers: Vec<Answer<Option<BackupPayload>>>) -> Self {
        self.backup = Script::new(answers);
        self
    }
    /// (phase, status) of every delivered event, in order.
    pub fn sequence(&self) -> Vec<(Phase, Status)> {
        self.posted
            .borrow()
            .iter()
            .map(|e| (e.phase, e.status))
            .collect()
    }
    pub fn messages(&self) -> Vec<String> {
        self.posted
            .borrow()
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }
    pub fn last(&self) -> NodeEvent {
        self.posted
            .borrow()
            .last()
            .cloned()
            .expect("an event was posted")
    }
    pub fn payload_json(&self, index: usize) -> Value {
        serde_json::to_value(&self.posted.borrow()[index].payload).expect("payload")
    }
}

impl Provider for StubProvider {
    fn intent_by_sha(&self, _sha: &str) -> Answer<Option<FetchedIntent>> {
        self.intent_calls.set(self.intent_calls.get() + 1);
        self.intent.next().expect("scripted intent answer")
    }
    fn intent_url(&self, sha: &str) -> String {
        format!("http://provider.test/api/deploy-intents/by-sha?sha={sha}&node={NODE}")
    }
    fn post_event(&self, job: &JobId, event: &NodeEvent) -> Answer<()> {
        let n = self.post_attempts.get();
        self.post_attempts.set(n + 1);
        if let Some(err) = self.post_answers.borrow_mut().remove(&n) {
            return Err(err);
        }
        if job.as_str() == JOB {
            self.posted.borrow_mut().push(event.clone());
        } else {
            self.posted_elsewhere
                .borrow_mut()
                .push((job.to_string(), event.clone()));
        }
        Ok(())
    }
    fn statuses(&self, _job: &JobId) -> Answer<Vec<DeployStatus>> {
        self.statuses.next().expect("scripted statuses")
    }
    fn own_status(&self, _job: &JobId) -> Answer<Option<DeployStatus>> {
        if let Some(answer) = self.own.borrow().clone() {
            return answer;
        }
        Ok(self.posted.borrow().last().map(|e| DeployStatus {
            event_id: Value::Null,
            node: e.node.to_string(),
            status: e.status,
            phase: e.phase,
            message: Some(e.message.clone()),
            created_at: None,
        }))
    }
    fn backup_snapshot(
        &self,
        _job: &JobId,
        s: &NodeName,
        u: &UserName,
    ) -> Answer<Option<BackupPayload>> {
        self.backup_calls
            .borrow_mut()
            .push((s.to_string(), u.to_string()));
        self.backup.next().expect("scripted backup answer")
    }
}

pub fn status(node: &str, phase: Phase, st: Status) -> DeployStatus {
    DeployStatus {
        event_id: Value::Null,
        node: node.into(),
        status: st,
        phase,
        message: Some(format!("{phase} {st} on {node}")),
        created_at: None,
    }
}

pub fn backup_payload(user: &str, source: &str, snaps: &[(&str, &str)]) -> BackupPayload {
    BackupPayload {
        user: UserName::parse(user).expect("user"),
        source_node: NodeName::parse(source).expect("node"),
        snapshots: map(snaps),
    }
}

// ------------------------------------------------------------------ users

pub struct StubUsers;

impl Users for StubUsers {
    fn lookup(&self, name: &UserName) -> anyhow::Result<Account> {
        match name.as_str() {
            "root" => anyhow::bail!("refusing to act as root: uid 0"),
            "ghost" => anyhow::bail!("user ghost does not exist on this node (no passwd entry)"),
            other => Ok(Account {
                name: name.clone(),
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
                home: PathBuf::from(format!("/home/{other}")),
            }),
        }
    }
}

// ------------------------------------------------------------------ systemd

#[derive(Default)]
pub struct StubSystemd {
    pub load: RefCell<HashMap<String, String>>,
    pub runs: RefCell<HashMap<String, UnitRun>>,
    /// Called when a unit starts (e.g. to make restic see a new snapshot).
    pub started: RefCell<Vec<(String, Duration)>>,
    pub stopped: RefCell<Vec<String>>,
    pub reloads: Cell<usize>,
    pub cancel_on_start: Option<Cancel>,
    pub on_start_advance: Cell<Duration>,
    /// The user's manager is not running, and (as for the dry run and the
    /// doctor) nothing starts it: every question fails.
    pub manager_down: bool,
    /// What each health check finds, in order; none left: healthy.
    pub health: RefCell<VecDeque<anyhow::Result<Health>>>,
    /// The limit of each health check asked for.
    pub health_checks: RefCell<Vec<Duration>>,
    /// What `failed_units` answers (the user's units failed now).
    pub failed: RefCell<FailedUnits>,
    /// Each `prepare` hint: the user, and how many calls that change or
    /// look at units (health checks, units started or stopped, reloads)
    /// had been made by then.
    pub prepared: RefCell<Vec<(String, usize)>>,
}

impl StubSystemd {
    fn answering(&self, a: &Account) -> anyhow::Result<()> {
        if self.manager_down {
            return Err(hostenv_activate::ports::ManagerNotRunning {
                who: format!("user {} (uid {})", a.name, a.uid),
                bus: PathBuf::from(format!("/run/user/{}/bus", a.uid)),
                manager: format!("user@{}.service", a.uid),
            }
            .into());
        }
        Ok(())
    }
}

pub fn unit_ok() -> UnitRun {
    UnitRun {
        outcome: JobOutcome::Done,
        status: UnitStatus {
            result: Some("success".into()),
            active_state: Some("inactive".into()),
            sub_state: Some("dead".into()),
            exec_main_status: Some(0),
        },
    }
}

impl StubSystemd {
    pub fn loaded(self, unit: &str, run: UnitRun) -> Self {
        self.load.borrow_mut().insert(unit.into(), "loaded".into());
        self.runs.borrow_mut().insert(unit.into(), run);
        self
    }
}

impl StubSystemd {
    /// The next health check finds `health`.
    pub fn health_finds(self, health: Health) -> Self {
        self.health.borrow_mut().push_back(Ok(health));
        self
    }
}

impl UserSystemd for StubSystemd {
    fn prepare(&self, a: &Account) {
        let calls = self.health_checks.borrow().len()
            + self.started.borrow().len()
            + self.stopped.borrow().len()
            + self.reloads.get();
        self.prepared
            .borrow_mut()
            .push((a.name.as_str().to_owned(), calls));
    }

    fn check_health(&self, a: &Account, limit: Duration, _c: &Cancel) -> anyhow::Result<Health> {
        self.answering(a)?;
        self.health_checks.borrow_mut().push(limit);
        self.health
            .borrow_mut()
            .pop_front()
            .unwrap_or(Ok(Health::Healthy { looked_at: 0 }))
    }

    fn load_state(&self, a: &Account, unit: &str, _limit: Duration) -> anyhow::Result<String> {
        self.answering(a)?;
        Ok(self
            .load
            .borrow()
            .get(unit)
            .cloned()
            .unwrap_or_else(|| "not-found".into()))
    }
    fn run_unit(
        &self,
        _a: &Account,
        unit: &str,
        timeout: Duration,
        _c: &Cancel,
    ) -> anyhow::Result<UnitRun> {
        self.started.borrow_mut().push((unit.into(), timeout));
        if let Some(c) = &self.cancel_on_start {
            c.cancel();
        }
        self.runs
            .borrow()
            .get(unit)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no scripted run for {unit}"))
    }
    fn stop_unit(
        &self,
        _a: &Account,
        unit: &str,
        _timeout: Duration,
        _c: &Cancel,
    ) -> anyhow::Result<()> {
        self.stopped.borrow_mut().push(unit.into());
        Ok(())
    }
    fn reload_manager(&self, _a: &Account, _limit: Duration) -> anyhow::Result<()> {
        self.reloads.set(self.reloads.get() + 1);
        Ok(())
    }
    fn failed_units(&self, a: &Account, _limit: Duration) -> anyhow::Result<FailedUnits> {
        self.answering(a)?;
        Ok(self.failed.borrow().clone())
    }
    fn list_units(&self, a: &Account, prefix: &str, _limit: Duration) -> anyhow::Result<UnitList> {
        self.answering(a)?;
        Ok(UnitList::of(
            self.load
                .borrow()
                .keys()
                .filter(|u| u.starts_with(prefix))
                .cloned(),
        ))
    }
}

// ------------------------------------------------------------------ programs

pub struct StubPrograms {
    pub activate: Option<PathBuf>,
    pub wrappers: bool,
    /// Result per program file name ("activate", "restic-<key>").
    pub results: RefCell<HashMap<String, Script<ProgramRun>>>,
    pub ran: RefCell<Vec<(PathBuf, Vec<String>, Duration)>>,
    pub cancel_on_run: Option<Cancel>,
    /// What a program run with its stdout apart prints on stderr (its
    /// scripted `output` is then its stdout), per program file name.
    pub stderr: RefCell<HashMap<String, String>>,
    /// stdout reaches the consumer in chunks of this many bytes.
    pub stdout_chunk: usize,
}

pub fn exited(code: i32, output: &str) -> ProgramRun {
    ProgramRun {
        outcome: ProgramOutcome::Exited(code),
        output: output.into(),
    }
}

impl Default for StubPrograms {
    fn default() -> Self {
        StubPrograms {
            activate: Some(PathBuf::from("/etc/profiles/per-user/u/bin/activate")),
            wrappers: true,
            results: RefCell::new(HashMap::new()),
            ran: RefCell::new(Vec::new()),
            cancel_on_run: None,
            stderr: RefCell::new(HashMap::new()),
            stdout_chunk: 7,
        }
    }
}

impl StubPrograms {
    pub fn answer(self, program: &str, runs: Vec<ProgramRun>) -> Self {
        self.results
            .borrow_mut()
            .insert(program.into(), Script::new(runs));
        self
    }
    /// `program`, when run with its stdout apart, prints `text` on stderr.
    pub fn with_stderr(self, program: &str, text: &str) -> Self {
        self.stderr.borrow_mut().insert(program.into(), text.into());
        self
    }
    pub fn ran_names(&self) -> Vec<String> {
        self.ran
            .borrow()
            .iter()
            .map(|(p, _, _)| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl UserPrograms for StubPrograms {
    fn find_activate(&self, a: &Account) -> Search {
        Search {
            found: self.activate.clone(),
            looked: vec![
                a.home.join(".local/bin/activate"),
                PathBuf::from(format!("/etc/profiles/per-user/{}/bin/activate", a.name)),
            ],
        }
    }
    fn find_restic_wrapper(&self, a: &Account, key: &MigrationKey) -> Search {
        let canonical = a.home.join(".local/bin").join(key.wrapper_name());
        Search {
            found: self.wrappers.then(|| canonical.clone()),
            looked: vec![canonical],
        }
    }
    fn run(
        &self,
        _a: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        _c: &Cancel,
    ) -> anyhow::Result<ProgramRun> {
        self.ran
            .borrow_mut()
            .push((program.to_path_buf(), args.to_vec(), timeout));
        if let Some(c) = &self.cancel_on_run {
            c.cancel();
        }
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let results = self.results.borrow();
        Ok(match results.get(&name) {
            Some(script) => script.next().expect("scripted run"),
            None => exited(0, ""),
        })
    }
    /// The scripted run's `output` is its stdout, handed over in chunks of
    /// `stdout_chunk` bytes (cut anywhere, even inside a UTF-8 character);
    /// its `output` then is what `with_stderr` set.
    fn run_with_stdout(
        &self,
        a: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        c: &Cancel,
        stdout: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<ProgramRun> {
        let run = self.run(a, program, args, timeout, c)?;
        for chunk in run.output.as_bytes().chunks(self.stdout_chunk.max(1)) {
            stdout(chunk);
        }
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stderr = self.stderr.borrow().get(&name).cloned().unwrap_or_default();
        Ok(ProgramRun {
            outcome: run.outcome,
            output: stderr,
        })
    }
}

// ------------------------------------------------------------------ plans, log

#[derive(Default)]
pub struct StubPlans {
    pub written: RefCell<Vec<(String, RestorePlan)>>,
    pub fail: bool,
}

impl PlanStore for StubPlans {
    fn write_restore_plan(&self, a: &Account, plan: &RestorePlan) -> anyhow::Result<PathBuf> {
        if self.fail {
            anyhow::bail!(
                "refusing to follow symlink /run/hostenv/user/{}/restore",
                a.name
            );
        }
        self.written
            .borrow_mut()
            .push((a.name.to_string(), plan.clone()));
        Ok(PathBuf::from(format!(
            "/run/hostenv/user/{}/restore/plan.json",
            a.name
        )))
    }
}

#[derive(Default)]
pub struct StubLog(pub RefCell<Vec<String>>);

impl Log for StubLog {
    fn line(&self, level: Level, f: &LogFields<'_>, message: &str) {
        let id = f.message_id.map(|m| m.0).unwrap_or("-");
        self.0.borrow_mut().push(format!(
            "{level:?} id={id} job={:?} op={:?} user={:?} unit={:?} key={:?} status={:?}: {message}",
            f.job, f.op, f.user, f.unit, f.key, f.status
        ));
    }
}

// ------------------------------------------------------------------ memory

/// The journal in memory: records by job, every write applied; `saves`
/// counts the writes (whole records and appended changes), `rewrites` the
/// whole ones.
#[derive(Default)]
pub struct StubJournal {
    pub records: RefCell<BTreeMap<String, JobRecord>>,
    pub saves: Cell<usize>,
    pub rewrites: Cell<usize>,
    pub fail_saves: Cell<bool>,
    /// How many of the next appends fail (the disk fills up for a moment).
    pub fail_appends: Cell<usize>,
}

impl StubJournal {
    pub fn record(&self, job: &str) -> Option<JobRecord> {
        self.records.borrow().get(job).cloned()
    }
    pub fn put(&self, record: JobRecord) {
        self.records
            .borrow_mut()
            .insert(record.job.to_string(), record);
    }
    fn write(&self) -> anyhow::Result<()> {
        if self.fail_saves.get() {
            anyhow::bail!("disk full");
        }
        self.saves.set(self.saves.get() + 1);
        Ok(())
    }
}

impl Journal for StubJournal {
    fn load(&self, job: &JobId) -> Option<JobRecord> {
        self.record(job.as_str())
    }
    fn rewrite(&self, record: &JobRecord) -> anyhow::Result<()> {
        self.write()?;
        self.rewrites.set(self.rewrites.get() + 1);
        self.put(record.clone());
        Ok(())
    }
    fn append_all(&self, job: &JobId, changes: &[Change]) -> anyhow::Result<()> {
        let mut records = self.records.borrow_mut();
        let Some(record) = records.get_mut(job.as_str()) else {
            anyhow::bail!("no record of {job} to add to");
        };
        if self.fail_appends.get() > 0 {
            self.fail_appends.set(self.fail_appends.get() - 1);
            anyhow::bail!("disk full for a moment");
        }
        self.write()?;
        for change in changes {
            record.apply(change);
        }
        Ok(())
    }
    fn with_pending(&self) -> Vec<JobRecord> {
        self.records
            .borrow()
            .values()
            .filter(|r| !r.pending().is_empty())
            .cloned()
            .collect()
    }
    fn prune(&self, _now: Timestamp) {}
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The record an earlier run (pid 99, an hour before the [`FakeClock`]'s
/// start) of `intent` left for job [`JOB`], holding `actions`.
pub fn earlier_record(
    intent: &Value,
    actions: impl IntoIterator<Item = ActionRecord>,
) -> JobRecord {
    let mut r = JobRecord::new(
        NodeName::parse(NODE).expect("node"),
        JobId::new(JOB),
        "abc".into(),
        IntentDigest::of(intent),
    );
    r.begin_run(99, ts("2026-11-22T09:00:00Z"));
    for action in actions {
        r.put(action);
    }
    r
}

/// Action `index` (`op` for acme), finished in an earlier run with
/// `terminal`, its event `delivery`.
pub fn finished(index: usize, op: Op, terminal: Terminal, delivery: Delivery) -> ActionRecord {
    let t = ts("2026-11-22T09:00:01Z");
    ActionRecord {
        index,
        op,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Finished {
            started_at: t,
            finished_at: t,
            adopted: false,
            event: Posted { terminal, delivery },
        },
    }
}

/// Action `index` (`op` for acme), started in an earlier run that ended
/// before it did.
pub fn started(index: usize, op: Op) -> ActionRecord {
    ActionRecord {
        index,
        op,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Started {
            started_at: ts("2026-11-22T09:00:01Z"),
        },
    }
}

/// The run lock: busy (held by pid 4242) until the clock reaches
/// `busy_until`.
pub struct StubLock<'c> {
    pub clock: &'c FakeClock,
    pub busy_until: Cell<Option<Timestamp>>,
    pub taken_at: Cell<Option<Timestamp>>,
    pub attempts: Cell<usize>,
}

impl StubLock<'_> {
    pub fn holder() -> LockHolder {
        LockHolder {
            pid: Some(4242),
            since: "2026-11-22T09:59:00Z".parse().ok(),
            sha: Some("0ther".into()),
        }
    }
}

impl RunLock for StubLock<'_> {
    fn try_lock(&self, _sha: &str, now: Timestamp) -> anyhow::Result<LockAttempt> {
        self.attempts.set(self.attempts.get() + 1);
        if self
            .busy_until
            .get()
            .is_some_and(|until| self.clock.now() < until)
        {
            return Ok(LockAttempt::Busy(Self::holder()));
        }
        self.taken_at.set(Some(now));
        Ok(LockAttempt::Taken)
    }
    fn holder(&self) -> anyhow::Result<Option<LockHolder>> {
        Ok(self
            .busy_until
            .get()
            .is_some_and(|until| self.clock.now() < until)
            .then(Self::holder))
    }
}

// ------------------------------------------------------------------ world

/// All stubs together, with settings for node-a.
pub struct World {
    pub provider: StubProvider,
    pub systemd: StubSystemd,
    pub programs: StubPrograms,
    pub plans: StubPlans,
    pub journal: StubJournal,
    pub clock: FakeClock,
    /// The lock is busy until then (None: free).
    pub lock_busy_until: Option<Timestamp>,
    pub log: StubLog,
    pub cancel: Cancel,
    pub settings: Settings,
}

impl World {
    pub fn new(provider: StubProvider) -> Self {
        let clock = FakeClock::new();
        let mut settings = Settings::new(
            NodeName::parse(NODE).expect("node"),
            "abc".into(),
            Duration::from_secs(900),
            &clock,
        );
        settings.pid = 777;
        World {
            provider,
            systemd: StubSystemd::default(),
            programs: StubPrograms::default(),
            plans: StubPlans::default(),
            journal: StubJournal::default(),
            clock,
            lock_busy_until: None,
            log: StubLog::default(),
            cancel: Cancel::new(),
            settings,
        }
    }

    pub fn lock(&self) -> StubLock<'_> {
        StubLock {
            clock: &self.clock,
            busy_until: Cell::new(self.lock_busy_until),
            taken_at: Cell::new(None),
            attempts: Cell::new(0),
        }
    }

    pub fn run(&self) -> Outcome {
        self.run_with(&self.lock())
    }

    pub fn run_with(&self, lock: &StubLock<'_>) -> Outcome {
        engine::run(&self.settings, self.ports(lock))
    }

    /// Every stub as the one bundle of ports, with `lock`.
    pub fn ports<'a>(&'a self, lock: &'a StubLock<'_>) -> Ports<'a> {
        Ports {
            provider: &self.provider,
            users: &StubUsers,
            systemd: &self.systemd,
            programs: &self.programs,
            plans: &self.plans,
            journal: &self.journal,
            lock,
            clock: &self.clock,
            log: &self.log,
            cancel: &self.cancel,
        }
    }

    /// Log lines containing `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        self.log
            .0
            .borrow()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

pub fn intent(actions: Value) -> Value {
    json!({"schemaVersion": 1, "actions": actions})
}

/// A restic-shaped snapshot id (64 lowercase hex) made from `seed` (at
/// most 32 bytes): its bytes in hex, padded with zeros.
pub fn restic_id(seed: &str) -> String {
    let hex: String = seed.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(hex.len() <= 64, "seed {seed:?} is too long");
    format!("{hex:0<64}")
}

pub fn snapshots_json(entries: &[(&str, &str)]) -> String {
    let list: Vec<Value> = entries.iter().map(|(time, id)| json!({"time": time, "id": id, "short_id": &id[..id.len().min(8)], "tags": ["drupal-migrate"]})).collect();
    serde_json::to_string(&list).expect("json")
}

pub fn map(entries: &[(&str, &str)]) -> BTreeMap<MigrationKey, String> {
    entries
        .iter()
        .map(|(k, v)| (MigrationKey::parse(k).expect("key"), v.to_string()))
        .collect()
}
