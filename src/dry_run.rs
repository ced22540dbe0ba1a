//! `--dry-run`: the real run's own plan (`engine::plan`), rendered without
//! side effects, with read-only preflight checks for the steps that can be
//! checked ahead (user exists, unit load state, restic wrapper and activate
//! program found, with the paths looked at). Posts nothing, starts nothing,
//! writes nothing. What a step does is said by the plan; this module only
//! decides what to check for each kind of step.

use serde::Serialize;

use crate::engine::plan::{self, ActionPlan, Body, PlannedEvent, Refusal, Resume, Step};
use crate::engine::{recall, Settings};
use crate::model::text::escape;
use crate::model::{Action, JobId, Terminal};
use crate::ports::{Account, LockHolder, ManagerNotRunning, Ports, Setting, LOOK_LIMIT};
use crate::preflight::{self, Program};

/// Where the commit the dry run looks at came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum CommitSource {
    /// `--sha` or `COMIN_GIT_SHA`.
    Given,
    /// comin's newest deployment, from its store file.
    CominStore {
        path: String,
        deployment: Option<String>,
        status: Option<String>,
        ended_at: Option<String>,
        error_msg: Option<String>,
    },
}

impl CommitSource {
    fn describe(&self) -> String {
        match self {
            CommitSource::Given => {
                format!("given by --{} or {}", Setting::Sha.flag(), Setting::Sha)
            }
            CommitSource::CominStore {
                path,
                deployment,
                status,
                ended_at,
                error_msg,
            } => {
                let mut parts = Vec::new();
                if let Some(d) = deployment {
                    parts.push(format!("deployment {d}"));
                }
                if let Some(t) = ended_at {
                    parts.push(format!("ended {t}"));
                }
                if let Some(s) = status {
                    parts.push(format!("status {s}"));
                }
                if let Some(e) = error_msg {
                    parts.push(format!("its switch failed: {e}"));
                }
                format!("comin's newest deployment in {path} ({})", parts.join(", "))
            }
        }
    }
}

/// One preflight check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    /// Passed, or could not be made for a reason a real run gets past.
    pub ok: bool,
    /// Could not be made now (the user's systemd is not running; a real
    /// run starts it first): not a failure, not a pass either.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, result: Result<String, String>) -> Check {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        check: name.into(),
        ok,
        unchecked: false,
        detail,
    }
}

/// A check that asks the user's systemd: one whose manager is not running
/// cannot be made, and does not fail (a real run starts the manager).
fn systemd_check(name: String, result: anyhow::Result<Result<String, String>>) -> Check {
    match result {
        Ok(result) => check(name, result),
        Err(e) if e.downcast_ref::<ManagerNotRunning>().is_some() => Check {
            check: name,
            ok: true,
            unchecked: true,
            detail: format!("not checked: {e:#}"),
        },
        Err(e) => check(name, Err(format!("{e:#}"))),
    }
}

/// One action as the dry run shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionReport {
    pub index: usize,
    #[serde(flatten)]
    pub action: Action,
    /// What the journal and the provider say is already done.
    pub resume: Resume,
    /// What the run would do, step by step.
    pub would: Vec<String>,
    /// The plan's steps, typed.
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
    /// The action's failure, when the plan decides it before anything runs.
    pub fails_before_running: Option<Terminal>,
    pub would_post: Vec<PlannedEvent>,
}

/// What a deployment of `sha` would do on `node`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub sha: String,
    pub commit_source: CommitSource,
    pub node: String,
    /// The provider URL the intent was asked at.
    pub intent_url: String,
    pub job_id: Option<JobId>,
    /// A run holding the node's lock now: the real run would wait for it.
    pub run_in_progress: Option<LockHolder>,
    /// Set when there is nothing to plan: no intent, or a provider error.
    pub problem: Option<String>,
    /// What the dry run could not find out (it does not stop the report).
    pub notes: Vec<String>,
    /// Set when nothing of the intent would run, and why.
    pub refused: Option<Refused>,
    pub actions: Vec<ActionReport>,
    /// Every event the run would post when everything goes as planned.
    pub would_post: Vec<PlannedEvent>,
    /// Every check passed and the run would succeed as far as is known.
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    pub why: Refusal,
    pub message: String,
}

/// Fetches the intent once (a 404 is not retried), plans it as the run
/// would, and checks each step that can be checked ahead. Of `ports` it
/// asks the provider, reads the journal, looks at the lock and checks the
/// users, their systemd and programs; it changes nothing through them.
pub fn report(settings: &Settings, source: CommitSource, ports: Ports<'_>) -> Report {
    let sha = settings.sha.clone();
    let mut report = Report {
        sha: sha.clone(),
        commit_source: source,
        node: settings.node.to_string(),
        intent_url: ports.provider.intent_url(&sha),
        job_id: None,
        run_in_progress: None,
        problem: None,
        notes: Vec::new(),
        refused: None,
        actions: Vec::new(),
        would_post: Vec::new(),
        ok: false,
    };
    match ports.lock.holder() {
        Ok(holder) => report.run_in_progress = holder,
        Err(e) => report
            .notes
            .push(format!("cannot tell whether a run is in progress: {e:#}")),
    }
    let fetched = match ports.provider.intent_by_sha(&sha) {
        Ok(Some(fetched)) => fetched,
        Ok(None) => {
            report.problem = Some(format!(
                "{}: a real run would wait {}s for one, then do nothing",
                plan::no_intent_message(&sha, &settings.node, &report.intent_url),
                settings.intent_wait.as_secs()
            ));
            report.ok = true;
            return report;
        }
        Err(e) => {
            report.problem = Some(format!("cannot fetch the intent: {}", e.advised()));
            return report;
        }
    };
    // The provider's backups are asked once each; one it cannot answer is
    // a note, and the plan assumes it has none.
    let mut unanswered = None;
    let (memory, note) = recall(
        settings,
        &fetched,
        ports.journal.load(&fetched.job),
        |action| {
            Ok(ports
                .provider
                .backup_snapshot(&fetched.job, &settings.node, &action.user)
                .unwrap_or_else(|e| {
                    unanswered.get_or_insert(e);
                    None
                }))
        },
    )
    .unwrap_or_default();
    report.notes.extend(note);
    if let Some(e) = unanswered {
        report.notes.push(format!(
            "cannot ask the provider which backups it already has ({e}); assuming none"
        ));
    }
    let plan = plan::plan(settings, &fetched, &memory);
    report.job_id = Some(plan.job.clone());
    report.would_post = plan.would_post();
    match &plan.body {
        Body::Refuse { why, event } => {
            report.refused = Some(Refused {
                why: why.clone(),
                message: event.message.clone(),
            });
        }
        Body::Perform { actions, .. } => {
            report.actions = actions
                .iter()
                .map(|planned| action_report(planned, ports))
                .collect();
            report.ok = report
                .actions
                .iter()
                .all(|a| a.fails_before_running.is_none() && a.checks.iter().all(|c| c.ok));
        }
    }
    report
}

fn action_report(planned: &ActionPlan, ports: Ports<'_>) -> ActionReport {
    let action = &planned.action;
    let mut account = None;
    let mut checks = Vec::new();
    // Steps that will not run are not checked.
    let steps = if planned.resume.runs() {
        planned.steps.as_slice()
    } else {
        &[]
    };
    for step in steps {
        if let Some(c) = check_step(step, action, &mut account, ports) {
            checks.push(c);
        }
    }
    ActionReport {
        index: planned.index,
        action: action.clone(),
        resume: planned.resume.clone(),
        would: planned.steps.iter().map(|s| s.describe(action)).collect(),
        steps: planned.steps.clone(),
        checks,
        fails_before_running: planned.fails_before_running().cloned(),
        would_post: planned.would_post(),
    }
}

/// The read-only check of one step, if it has one. `account` is what the
/// `ResolveUser` step found; steps that need it are not checked without it.
fn check_step(
    step: &Step,
    action: &Action,
    account: &mut Option<Account>,
    ports: Ports<'_>,
) -> Option<Check> {
    let user = &action.user;
    if let Step::ResolveUser = step {
        let found = preflight::account(ports.users, user);
        let c = check(
            "user exists",
            found
                .as_ref()
                .map(|a| format!("{user} has uid {} and home {}", a.uid, a.home.display()))
                .map_err(Clone::clone),
        );
        *account = found.ok();
        return Some(c);
    }
    let a = account.as_ref()?;
    let not_found = |what: &str, looked_at: String| {
        format!("{what} not found for user {user} (looked at {looked_at})")
    };
    match step {
        Step::CheckUnit { unit, .. } => Some(systemd_check(
            format!("{unit} is loaded"),
            preflight::unit_loaded(ports.systemd, a, unit),
        )),
        Step::FindWrapper { key, wrapper } => Some(check(
            format!("restic wrapper {wrapper} found"),
            preflight::find(ports.programs, a, Program::ResticWrapper(key))
                .map_err(|looked_at| not_found(wrapper, looked_at)),
        )),
        Step::Activate => Some(check(
            "activate program found",
            preflight::find(ports.programs, a, Program::Activate)
                .map_err(|looked_at| not_found("activate script", looked_at)),
        )),
        // Any LoadState is fine to stop (the detail only shows it); what
        // must hold is that the user's systemd answers.
        Step::StopUnit { unit } => Some(systemd_check(
            "user's systemd reachable".into(),
            ports
                .systemd
                .load_state(a, unit, LOOK_LIMIT)
                .map(|s| Ok(format!("{unit} LoadState={s}"))),
        )),
        // The health check reads the user's systemd; what it will find is
        // only known after `activate`, so the dry run asks that it answers.
        Step::CheckHealth { .. } => Some(systemd_check(
            "user's systemd reachable".into(),
            ports
                .systemd
                .load_state(a, plan::TARGET_UNIT, LOOK_LIMIT)
                .map(|s| Ok(format!("{} LoadState={s}", plan::TARGET_UNIT))),
        )),
        // Nothing to look at ahead: they post, wait, or run what the
        // steps above checked.
        Step::ResolveUser
        | Step::Announce { .. }
        | Step::AwaitBackup { .. }
        | Step::AwaitTarget { .. }
        | Step::BackUp { .. }
        | Step::WriteRestorePlan { .. }
        | Step::ReloadManager
        | Step::PublishBackup { .. }
        | Step::Finish { .. } => None,
    }
}

/// Human-readable rendering. Text that may come from a user (check
/// details, messages) is escaped ([`escape`]), as in `status` and `doctor`.
pub fn render_text(report: &Report) -> String {
    let mut out = header_text(report);
    if let Some(problem) = &report.problem {
        out.push_str(&format!("{}\n", escape(problem)));
        return out;
    }
    if let Some(refused) = &report.refused {
        out.push_str(&refused_text(refused));
        return out;
    }
    if report.actions.is_empty() {
        out.push_str("The intent has no actions for this node.\n");
    }
    for planned in &report.actions {
        out.push_str(&action_text(planned));
    }
    if let Some(last) = report.would_post.last() {
        out.push_str(&format!(
            "\nLast event when all goes as planned: ({}, {}) \"{}\"\n",
            last.phase,
            last.status,
            escape(&last.message)
        ));
    }
    out.push('\n');
    out.push_str(&tally_text(report));
    out
}

/// The first lines: the commit and where it came from, the intent's URL, a
/// run holding the lock, the notes.
fn header_text(report: &Report) -> String {
    let job = report
        .job_id
        .as_ref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default();
    let mut out = format!(
        "Dry run for commit {} on node {}{job}; nothing is posted, started or written.\n",
        report.sha, report.node
    );
    out.push_str(&format!(
        "Commit: {}, {}.\n",
        report.sha,
        report.commit_source.describe()
    ));
    out.push_str(&format!("Intent: {}\n", report.intent_url));
    if let Some(run) = &report.run_in_progress {
        out.push_str(&format!(
            "A run holds this node's run lock now ({run}): a real run would wait for it to finish.\n"
        ));
    }
    for note in &report.notes {
        out.push_str(&format!("Note: {}\n", escape(note)));
    }
    out
}

/// Why nothing of the intent would run, and what would be posted.
fn refused_text(refused: &Refused) -> String {
    let why = match refused.why {
        Refusal::SwitchFailed => "The system switch failed",
        Refusal::InvalidIntent => "The intent is invalid",
    };
    format!(
        "{why}: nothing would run; (intent, failed) \"{}\" would be posted.\n",
        escape(&refused.message)
    )
}

/// One action: its heading, where it stands, what it would do, and its
/// checks.
fn action_text(planned: &ActionReport) -> String {
    let a = &planned.action;
    let mut out = format!(
        "\n{}. {} {}{}\n",
        planned.index + 1,
        a.op,
        a.user,
        route_text(a)
    );
    if let Some(resume) = planned.resume.describe() {
        out.push_str(&format!("   {resume}\n"));
    }
    let would: &[String] = if planned.resume.runs() {
        &planned.would
    } else {
        &[]
    };
    for step in would {
        out.push_str(&format!("   would: {step}\n"));
    }
    if let Some(t) = &planned.fails_before_running {
        out.push_str(&format!(
            "   [FAIL] fails before running: ({}, {}) \"{}\"\n",
            a.op,
            t.status,
            escape(&t.message)
        ));
    }
    for c in &planned.checks {
        out.push_str(&check_line(c));
    }
    out
}

/// ` (from A, to B, migrations k1, k2)`, with only what the action names.
fn route_text(a: &Action) -> String {
    let mut route = Vec::new();
    if let Some(from) = &a.from_node {
        route.push(format!("from {from}"));
    }
    if let Some(to) = &a.to_node {
        route.push(format!("to {to}"));
    }
    if !a.migrations.is_empty() {
        let keys: Vec<&str> = a.migrations.iter().map(|k| k.as_str()).collect();
        route.push(format!("migrations {}", keys.join(", ")));
    }
    if route.is_empty() {
        String::new()
    } else {
        format!(" ({})", route.join(", "))
    }
}

/// `   [ok  ] check: detail`, `[FAIL]` or `[skip]`.
fn check_line(c: &Check) -> String {
    let mark = match (c.ok, c.unchecked) {
        (_, true) => "skip",
        (true, false) => "ok  ",
        (false, false) => "FAIL",
    };
    format!("   [{mark}] {}: {}\n", escape(&c.check), escape(&c.detail))
}

/// The closing lines: how many checks passed, could not be made or failed,
/// and how many actions would fail before running.
fn tally_text(report: &Report) -> String {
    let checks = || report.actions.iter().flat_map(|a| &a.checks);
    let failed = checks().filter(|c| !c.ok).count();
    let unchecked = checks().filter(|c| c.unchecked).count();
    let fails_early = report
        .actions
        .iter()
        .filter(|a| a.fails_before_running.is_some())
        .count();
    let mut out = String::new();
    if failed == 0 && fails_early == 0 {
        out.push_str(if unchecked == 0 {
            "All preflight checks passed.\n"
        } else {
            "All preflight checks that could be made passed.\n"
        });
    }
    if unchecked > 0 {
        out.push_str(&format!(
            "{unchecked} check(s) could not be made now ([skip]); a real run makes them as it goes.\n"
        ));
    }
    if failed > 0 {
        out.push_str(&format!("{failed} preflight check(s) failed.\n"));
    }
    if fails_early > 0 {
        out.push_str(&format!(
            "{fails_early} action(s) would fail before running.\n"
        ));
    }
    out
}
