//! Stub adapters for engine tests: scripted answers, recorded calls and a
//! clock that advances only when the engine sleeps. Nothing here touches the
//! world.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostenv_activate::engine::{self, Outcome, Ports, Settings};
use hostenv_activate::model::{
    BackupPayload, DeployStatus, FetchedIntent, IntentEnvelope, JobId, MigrationKey, NodeEvent,
    NodeName, Phase, RestorePlan, Status, UserName,
};
use hostenv_activate::ports::{
    Account, Cancel, Clock, JobOutcome, Level, Log, LogFields, PlanStore, ProgramOutcome,
    ProgramRun, Provider, ProviderError, Search, UnitRun, UnitStatus, UserPrograms, UserSystemd,
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

pub struct FakeClock {
    pub now: Cell<Timestamp>,
    pub slept: Cell<Duration>,
}

impl FakeClock {
    pub fn new() -> Self {
        FakeClock {
            now: Cell::new("2026-11-22T10:00:00Z".parse().expect("ts")),
            slept: Cell::new(Duration::ZERO),
        }
    }
    pub fn advance(&self, d: Duration) {
        let d = SignedDuration::try_from(d).expect("duration");
        self.now.set(self.now.get().checked_add(d).expect("time"));
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        self.now.get()
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
    pub posted: RefCell<Vec<NodeEvent>>,
    pub statuses: Script<Answer<Vec<DeployStatus>>>,
    pub backup: Script<Answer<Option<BackupPayload>>>,
    pub intent_calls: Cell<usize>,
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
            statuses: Script::new([Ok(vec![])]),
            backup: Script::new([Ok(None)]),
            intent_calls: Cell::new(0),
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
        assert_eq!(job.as_str(), JOB);
        let n = self.post_attempts.get();
        self.post_attempts.set(n + 1);
        if let Some(err) = self.post_answers.borrow_mut().remove(&n) {
            return Err(err);
        }
        self.posted.borrow_mut().push(event.clone());
        Ok(())
    }
    fn statuses(&self, _job: &JobId) -> Answer<Vec<DeployStatus>> {
        self.statuses.next().expect("scripted statuses")
    }
    fn backup_snapshot(
        &self,
        _job: &JobId,
        _s: &NodeName,
        _u: &UserName,
    ) -> Answer<Option<BackupPayload>> {
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

impl UserSystemd for StubSystemd {
    fn load_state(&self, _a: &Account, unit: &str) -> anyhow::Result<String> {
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
    fn stop_unit(&self, _a: &Account, unit: &str, _c: &Cancel) -> anyhow::Result<()> {
        self.stopped.borrow_mut().push(unit.into());
        Ok(())
    }
    fn reload_manager(&self, _a: &Account) -> anyhow::Result<()> {
        self.reloads.set(self.reloads.get() + 1);
        Ok(())
    }
    fn list_units(&self, _a: &Account, prefix: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .load
            .borrow()
            .keys()
            .filter(|u| u.starts_with(prefix))
            .cloned()
            .collect())
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
        self.0.borrow_mut().push(format!(
            "{level:?} job={:?} op={:?} user={:?} unit={:?} key={:?}: {message}",
            f.job, f.op, f.user, f.unit, f.key
        ));
    }
}

// ------------------------------------------------------------------ world

/// All stubs together, with settings for node-a.
pub struct World {
    pub provider: StubProvider,
    pub systemd: StubSystemd,
    pub programs: StubPrograms,
    pub plans: StubPlans,
    pub clock: FakeClock,
    pub log: StubLog,
    pub cancel: Cancel,
    pub settings: Settings,
}

impl World {
    pub fn new(provider: StubProvider) -> Self {
        let settings = Settings::new(
            NodeName::parse(NODE).expect("node"),
            "abc".into(),
            Duration::from_secs(900),
        );
        World {
            provider,
            systemd: StubSystemd::default(),
            programs: StubPrograms::default(),
            plans: StubPlans::default(),
            clock: FakeClock::new(),
            log: StubLog::default(),
            cancel: Cancel::new(),
            settings,
        }
    }

    pub fn run(&self) -> Outcome {
        let ports = Ports {
            provider: &self.provider,
            users: &StubUsers,
            systemd: &self.systemd,
            programs: &self.programs,
            plans: &self.plans,
            clock: &self.clock,
            log: &self.log,
            cancel: &self.cancel,
        };
        engine::run(&self.settings, ports)
    }
}

pub fn intent(actions: Value) -> Value {
    json!({"schemaVersion": 1, "actions": actions})
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
