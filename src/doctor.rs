//! `hostenv-activate doctor`: every read-only check a node needs to pass to
//! deploy, as a list of named checks ([`CHECKS`]), each finding `ok`, `warn`
//! or `fail` with a one-line fix. `commands::doctor` gathers the file facts
//! (configuration, token file, comin's store, the journal, the lock) with
//! the real adapters; this module judges them and asks the read-only ports
//! the rest (one authenticated GET to the provider, and through `preflight`
//! the users, their systemd and programs). It starts, writes and posts
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::adapters::lock;
use crate::engine::plan::{no_intent_message, Uses, TARGET_UNIT};
use crate::model::comin::Deployment;
use crate::model::journal::ActionRecord;
use crate::model::{
    Action, CominStatus, EventPayload, FetchedIntent, IntentError, MigrationKey, UserName,
};
use crate::ports::{Account, JournalScan, LockHolder, Ports, ProviderError, Setting, LOOK_LIMIT};
use crate::preflight::{self, Program};

/// The JSON document's version.
pub const FORMAT_VERSION: u32 = 1;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check: what was looked at, what was found, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub verdict: Verdict,
    pub detail: String,
    /// One line saying what to do; set for `warn` and `fail`.
    pub fix: Option<String>,
}

fn ok(check: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        verdict: Verdict::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        verdict: Verdict::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// The whole examination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    pub format_version: u32,
    pub node: Option<String>,
    pub checks: Vec<Finding>,
    /// Nothing failed.
    pub ok: bool,
}

/// What reading the token file found (`commands::doctor` reads it, without
/// waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFacts {
    /// Not looked at: the configuration is not valid.
    NotConfigured,
    /// Read; `warnings` are what a run would log about it.
    Read {
        path: String,
        bytes: usize,
        warnings: Vec<String>,
    },
    /// Not usable, and why.
    Unusable { path: String, why: String },
}

/// The file facts `commands::doctor` gathered for the doctor.
pub struct Facts {
    pub node: Option<String>,
    /// The configuration, or what is wrong with it (with the variable named).
    pub config: Result<String, String>,
    /// What is probably wrong with the provider's base URL.
    pub base_url_warning: Option<String>,
    pub token: TokenFacts,
    /// comin's store: its newest deployment, or why it cannot be read.
    pub comin_store: (String, Result<Deployment, String>),
    /// The state directory: fine (what was found) or not.
    pub state_dir: Result<String, String>,
    /// What reading the journal found.
    pub journal: JournalScan,
    pub lock: Result<Option<LockHolder>, String>,
    /// The metrics file when one is configured: where it goes, or why it
    /// will not be collected.
    pub metrics: Option<Result<String, String>>,
    /// Whether lingering is on for a user (`/var/lib/systemd/linger/<user>`).
    pub lingering: Box<dyn Fn(&UserName) -> bool>,
}

/// What each user needs, from the last intent and the journal.
#[derive(Debug, Default)]
struct Needs {
    activate: bool,
    keys: Vec<MigrationKey>,
    /// Named by the intent of comin's newest commit (not only by the
    /// journal's newest job): its problems fail, the others only warn.
    from_intent: bool,
}

impl Needs {
    /// What one more action of the user uses (as its plan says).
    fn add(&mut self, uses: &Uses) {
        self.activate |= uses.activate;
        for key in &uses.keys {
            if !self.keys.contains(key) {
                self.keys.push(key.clone());
            }
        }
    }
}

/// A commit to ask the provider about when comin's store names none.
const PROBE_SHA: &str = "0000000000000000000000000000000000000000";

/// One of doctor's checks: its name and how it runs. A run looks at the
/// examination and returns its findings (none when there is nothing to
/// say), each with its verdict and, for `warn` and `fail`, its fix.
pub struct Check {
    pub name: &'static str,
    run: fn(&'static str, &Examination<'_>) -> Vec<Finding>,
}

/// Every check, in the order the report shows them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "configuration",
        run: configuration,
    },
    Check {
        name: "token file",
        run: token_file,
    },
    Check {
        name: "provider URL",
        run: provider_url,
    },
    Check {
        name: "comin",
        run: comin,
    },
    Check {
        name: "provider",
        run: provider,
    },
    Check {
        name: "state directory",
        run: state_directory,
    },
    Check {
        name: "journal",
        run: journal,
    },
    Check {
        name: "undelivered events",
        run: undelivered_events,
    },
    Check {
        name: "run lock",
        run: run_lock,
    },
    Check {
        name: "metrics file",
        run: metrics_file,
    },
    Check {
        name: "users",
        run: users,
    },
];

/// What the checks look at: the file facts, the read-only ports, and the
/// one answer the provider gave.
pub struct Examination<'a> {
    facts: Facts,
    ports: Ports<'a>,
    /// The provider's answer about comin's newest commit (or [`PROBE_SHA`]),
    /// with the commit and the URL asked; `None` when it was not asked.
    asked: Option<Asked>,
}

/// The one authenticated GET.
struct Asked {
    sha: String,
    url: String,
    answer: Result<Option<FetchedIntent>, ProviderError>,
}

impl Examination<'_> {
    /// Each user the checks look at, with what it needs: the users of the
    /// intent of comin's newest commit, then those of the journal's newest
    /// job. The journal keeps each action's op and user, not its nodes; a
    /// backup's keys are in its terminal event (the snapshots taken, or the
    /// unit that failed), so its units and wrappers are checked too.
    fn needs(&self) -> BTreeMap<UserName, Needs> {
        let mut needs: BTreeMap<UserName, Needs> = BTreeMap::new();
        if let Some(Asked {
            answer: Ok(Some(fetched)),
            ..
        }) = &self.asked
        {
            if let Ok(intent) = &fetched.intent {
                for action in &intent.actions {
                    let need = needs.entry(action.user.clone()).or_default();
                    need.from_intent = true;
                    need.add(&Uses::of(action));
                }
            }
        }
        if let Some(record) = self.facts.journal.records.first() {
            for a in &record.actions {
                let action = Action {
                    op: a.op,
                    user: a.user.clone(),
                    from_node: None,
                    to_node: None,
                    migrations: journal_keys(a),
                };
                needs
                    .entry(a.user.clone())
                    .or_default()
                    .add(&Uses::of(&action));
            }
        }
        needs
    }
}

impl Facts {
    /// Whether the provider can be asked: the configuration is valid and
    /// the token file was read and is usable (`commands::doctor` builds the
    /// provider only then).
    fn provider_usable(&self) -> bool {
        self.config.is_ok() && matches!(self.token, TokenFacts::Read { .. })
    }
}

/// Examines the node: asks the provider once (when the configuration and
/// the token file are usable), then runs every check. Of `ports` it asks
/// the provider and checks the users, their systemd and programs; it
/// changes nothing through them.
pub fn examine(facts: Facts, ports: Ports<'_>) -> Diagnosis {
    let asked = facts.provider_usable().then(|| {
        let provider = ports.provider;
        let sha = facts
            .comin_store
            .1
            .as_ref()
            .map_or(PROBE_SHA, |d| d.commit.as_str())
            .to_owned();
        Asked {
            url: provider.intent_url(&sha),
            answer: provider.intent_by_sha(&sha),
            sha,
        }
    });
    let exam = Examination {
        facts,
        ports,
        asked,
    };
    let checks: Vec<Finding> = CHECKS
        .iter()
        .flat_map(|check| (check.run)(check.name, &exam))
        .collect();
    let ok = checks.iter().all(|c| c.verdict != Verdict::Fail);
    Diagnosis {
        format_version: FORMAT_VERSION,
        node: exam.facts.node.clone(),
        checks,
        ok,
    }
}

fn configuration(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    vec![match &exam.facts.config {
        Ok(summary) => ok(name, summary.clone()),
        Err(problem) => fail(
            name,
            problem.clone(),
            "set the variable named (or its flag); `hostenv-activate --help` lists them",
        ),
    }]
}

fn token_file(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    vec![token(name, &exam.facts.token)]
}

fn provider_url(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    exam.facts
        .base_url_warning
        .iter()
        .map(|warning| {
            warn(
                name,
                warning.clone(),
                format!(
                    "set {} to the provider's base, without /api",
                    Setting::ApiBaseUrl
                ),
            )
        })
        .collect()
}

fn comin(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    let (path, store) = &exam.facts.comin_store;
    vec![comin_store(name, path, store)]
}

fn provider(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    let Some(Asked { sha, url, answer }) = &exam.asked else {
        return vec![fail(
            name,
            "not asked: the configuration or the token file is not usable",
            "fix the configuration and token file checks above",
        )];
    };
    let from_store = exam.facts.comin_store.1.is_ok();
    vec![match answer {
        Ok(Some(fetched)) => match &fetched.intent {
            Ok(intent) => ok(
                name,
                format!(
                    "reachable, token accepted; {url} names job {} with {} action(s)",
                    fetched.job,
                    intent.actions.len()
                ),
            ),
            Err(e) => fail(
                name,
                format!("reachable, token accepted; the intent of job {} is invalid: {e}", fetched.job),
                match e {
                    IntentError::SchemaVersion(_) => "the provider speaks another intent schema: upgrade hostenv-activate to the provider's version",
                    _ => "the provider serves an intent this node refuses: check the provider's placement plan",
                },
            ),
        },
        // A 404 proves neither: a wrong base URL answers it too.
        Ok(None) => warn(
            name,
            format!(
                "{}{}: normal between deployments, or {} is wrong",
                no_intent_message(sha, &exam.facts.node.as_deref().unwrap_or("this node"), url),
                if from_store { "" } else { " (no comin store: a made-up commit was asked)" },
                Setting::ApiBaseUrl
            ),
            format!("if every deployment reports no intent, check {} (the provider's paths start with /api)", Setting::ApiBaseUrl),
        ),
        Err(e) => fail(
            name,
            match e {
                ProviderError::Refused => {
                    format!("the provider refused this node's token (403) at {url}")
                }
                ProviderError::Transport(_) => e.to_string(),
                _ => format!("{e} (asked {url})"),
            },
            e.advice().unwrap_or_else(|| {
                format!("check the provider-service's logs and {}", Setting::ApiBaseUrl)
            }),
        ),
    }]
}

fn state_directory(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    vec![match &exam.facts.state_dir {
        Ok(detail) => ok(name, detail.clone()),
        Err(problem) => fail(
            name,
            problem.clone(),
            "make it a directory owned by root, mode 0700 (the NixOS module does)",
        ),
    }]
}

fn journal(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    let journal = &exam.facts.journal;
    vec![if let Some(why) = &journal.unlisted {
        fail(
            name,
            format!("not read: {why}"),
            "fix the state directory (see its check); until then runs cannot resume",
        )
    } else if journal.unreadable.is_empty() {
        ok(
            name,
            format!("{} record(s) readable", journal.records.len()),
        )
    } else {
        warn(
            name,
            format!(
                "{} record(s) readable; ignored: {}",
                journal.records.len(),
                journal.unreadable.join("; ")
            ),
            "look at the files named and remove them; runs ignore them anyway",
        )
    }]
}

fn undelivered_events(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    let pending: usize = exam
        .facts
        .journal
        .records
        .iter()
        .map(|r| r.pending().len())
        .sum();
    if pending == 0 {
        return Vec::new();
    }
    vec![warn(
        name,
        format!("{pending} terminal event(s) were not delivered to the provider"),
        "the next run delivers them first; `hostenv-activate status` lists them",
    )]
}

fn run_lock(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    vec![match &exam.facts.lock {
        Ok(None) => ok(name, "no run holds it now"),
        Ok(Some(h)) => ok(name, format!("a run holds it now ({h})")),
        Err(why) => fail(
            name,
            why.clone(),
            format!(
                "check the directory of {} (--{}; default {})",
                Setting::LockFile,
                Setting::LockFile.flag(),
                Path::new(lock::DEFAULT_PATH)
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .display()
            ),
        ),
    }]
}

fn metrics_file(name: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    match &exam.facts.metrics {
        None => Vec::new(),
        Some(Ok(detail)) => vec![ok(name, detail.clone())],
        Some(Err(problem)) => vec![warn(
            name,
            problem.clone(),
            format!(
                "point {} (--{}) at a *.prom file in node_exporter's textfile directory",
                Setting::MetricsFile,
                Setting::MetricsFile.flag()
            ),
        )],
    }
}

/// Each user's checks; the findings are named by the user.
fn users(_: &'static str, exam: &Examination<'_>) -> Vec<Finding> {
    let mut checks = Vec::new();
    for (user, need) in &exam.needs() {
        let start = checks.len();
        user_checks(&mut checks, user, need, &exam.facts, &exam.ports);
        if !need.from_intent {
            // Known only from the journal's newest job: it may have left this
            // node since, so its problems are worth a look, not a failure.
            for c in &mut checks[start..] {
                if c.verdict == Verdict::Fail {
                    c.verdict = Verdict::Warn;
                    c.detail = format!("{} (known from the journal only)", c.detail);
                }
            }
        }
    }
    checks
}

/// The migration keys a journal's action record names in its terminal
/// event: a backup's snapshots, or its backup unit that failed.
fn journal_keys(action: &ActionRecord) -> Vec<MigrationKey> {
    match action
        .finished()
        .and_then(|posted| posted.terminal.payload.as_ref())
    {
        Some(EventPayload::Backup(backup)) => backup.snapshots.keys().cloned().collect(),
        Some(EventPayload::UnitFailed(failure)) => vec![failure.migration_key.clone()],
        _ => Vec::new(),
    }
}

fn token(name: &'static str, facts: &TokenFacts) -> Finding {
    match facts {
        TokenFacts::NotConfigured => fail(
            name,
            "not checked: the configuration is not valid (see its check above)",
            "fix the configuration first; then the token file is checked",
        ),
        TokenFacts::Read {
            path,
            bytes,
            warnings,
        } if warnings.is_empty() => ok(
            name,
            format!("{path}: a regular file of {bytes} bytes, owned by root, mode 0600 or stricter"),
        ),
        // The warnings name the file and say what to run.
        TokenFacts::Read { path, warnings, .. } => warn(
            name,
            warnings.join("; "),
            format!("chown root: {path} && chmod 0400 {path} (or set the sops secret's owner and mode)"),
        ),
        // `why` names the file already.
        TokenFacts::Unusable { why, .. } => fail(
            name,
            why.clone(),
            format!("point {} (--{}) at the rendered sops secret (a regular file holding only the token)", Setting::TokenFile, Setting::TokenFile.flag()),
        ),
    }
}

fn comin_store(name: &'static str, path: &str, store: &Result<Deployment, String>) -> Finding {
    match store {
        Ok(d) => {
            let when = d
                .when()
                .map_or("at an unknown time".to_owned(), |t| t.to_string());
            let what = format!(
                "{path}: newest deployment {} of commit {} ({when}, status {})",
                d.uuid.as_deref().unwrap_or("?"),
                d.commit,
                d.status.as_deref().unwrap_or("unknown")
            );
            match d.switch() {
                CominStatus::Done => ok(name, what),
                CominStatus::Failed { message } => warn(
                    name,
                    format!("{what}; its switch failed: {message}"),
                    "look at comin's logs (journalctl -u comin) and fix the node's configuration",
                ),
            }
        }
        Err(why) => warn(
            name,
            why.clone(),
            format!(
                "check that comin runs on this node (systemctl status comin) or set {} (--{})",
                Setting::CominStore,
                Setting::CominStore.flag()
            ),
        ),
    }
}

fn user_checks(
    checks: &mut Vec<Finding>,
    user: &UserName,
    need: &Needs,
    facts: &Facts,
    ports: &Ports<'_>,
) {
    let account: Account = match preflight::account(ports.users, user) {
        Ok(account) => {
            checks.push(ok(
                format!("user {user}"),
                format!("uid {}, home {}", account.uid, account.home.display()),
            ));
            account
        }
        Err(e) => {
            checks.push(fail(
                format!("user {user}"),
                e,
                format!("check that the environment of {user} is deployed on this node"),
            ));
            return;
        }
    };
    checks.push(if (facts.lingering)(user) {
        ok(format!("lingering of {user}"), "enabled")
    } else {
        warn(
            format!("lingering of {user}"),
            "not enabled: the user's systemd stops when nobody is logged in",
            format!("loginctl enable-linger {user}"),
        )
    });
    let manager = format!("systemd of {user}");
    match ports.systemd.load_state(&account, TARGET_UNIT, LOOK_LIMIT) {
        Ok(_) => checks.push(ok(manager, "reachable on the user's bus")),
        Err(e) => {
            checks.push(fail(
                manager,
                format!("{e:#}"),
                format!(
                    "systemctl start user@{}.service and loginctl enable-linger {user}",
                    account.uid
                ),
            ));
            return;
        }
    }
    checks.push(failed_units(user, &account, ports));
    for key in &need.keys {
        let unit = key.unit_name();
        checks.push(
            match preflight::unit_loaded(ports.systemd, &account, &unit) {
                Ok(Ok(loaded)) => ok(unit, loaded),
                Ok(Err(state)) => fail(
                    unit,
                    state,
                    format!("define a restic backup named {key} in the environment of {user}"),
                ),
                Err(e) => fail(
                    unit,
                    format!("{e:#}"),
                    format!("check the systemd of {user}"),
                ),
            },
        );
        let wrapper = key.wrapper_name();
        checks.push(
            match preflight::find(ports.programs, &account, Program::ResticWrapper(key)) {
                Ok(path) => ok(wrapper, path),
                Err(looked_at) => fail(
                    wrapper,
                    not_found(looked_at),
                    format!("install the restic wrapper of {key} in ~{user}/.local/bin"),
                ),
            },
        );
    }
    if need.activate {
        checks.push(
            match preflight::find(ports.programs, &account, Program::Activate) {
                Ok(path) => ok(format!("activate program of {user}"), path),
                Err(looked_at) => fail(
                    format!("activate program of {user}"),
                    not_found(looked_at),
                    format!("deploy the environment of {user}: it provides `activate`"),
                ),
            },
        );
    }
}

/// A program's detail when it is not found.
fn not_found(looked_at: String) -> String {
    format!("not found (looked at {looked_at})")
}

/// The user's units that are failed now: a warning naming each with its
/// `Result` (an activation with one of its services among them fails its
/// health check).
fn failed_units(user: &UserName, account: &Account, ports: &Ports<'_>) -> Finding {
    let check = format!("failed units of {user}");
    match ports.systemd.failed_units(account, LOOK_LIMIT) {
        Ok(failed) if failed.is_empty() => ok(check, "none failed now"),
        Ok(failed) => {
            let count = failed.units.len() + failed.more;
            let first = failed
                .units
                .first()
                .map_or("<unit>", |u| u.unit.as_str())
                .to_owned();
            warn(
                check,
                format!("{count} unit(s) failed now: {failed}"),
                format!(
                    "as {user}: systemctl --user status {first} and journalctl --user -u {first}; once fixed, systemctl --user reset-failed"
                ),
            )
        }
        Err(e) => warn(
            check,
            format!("cannot list them: {e:#}"),
            format!("check the systemd of {user} (systemctl --user --failed as the user)"),
        ),
    }
}

/// Human-readable rendering. Each check's text is escaped
/// ([`crate::model::text::escape`]): a detail may carry a user's text (a bus
/// error, a file name, a journal message) and stays on its one line. The
/// JSON rendering keeps it as it is.
pub fn render_text(d: &Diagnosis) -> String {
    use crate::model::text::escape;

    let mut out = format!(
        "hostenv-activate doctor{}\n",
        d.node
            .as_deref()
            .map(|n| format!(" for node {n}"))
            .unwrap_or_default()
    );
    for c in &d.checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!(
            "[{mark}] {}: {}\n",
            escape(&c.check),
            escape(&c.detail)
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("       fix: {}\n", escape(fix)));
        }
    }
    let count = |v: Verdict| d.checks.iter().filter(|c| c.verdict == v).count();
    out.push_str(&format!(
        "\n{} check(s): {} ok, {} warning(s), {} failed.\n",
        d.checks.len(),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_run_in_the_order_the_report_shows() {
        let names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "configuration",
                "token file",
                "provider URL",
                "comin",
                "provider",
                "state directory",
                "journal",
                "undelivered events",
                "run lock",
                "metrics file",
                "users",
            ]
        );
    }

    #[test]
    fn a_user_text_in_a_check_stays_on_its_line() {
        let d = Diagnosis {
            format_version: FORMAT_VERSION,
            node: Some("node-a".into()),
            checks: vec![fail(
                "systemd of acme",
                "org.freedesktop.DBus.Error.Failed: no\n[ok  ] forged: fine\x1b[2J",
                "check the systemd of acme",
            )],
            ok: false,
        };
        let text = render_text(&d);
        assert!(
            text.contains("[FAIL] systemd of acme: org.freedesktop.DBus.Error.Failed: no\\n[ok  ] forged: fine\\x1b[2J\n"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("[ok  ]")), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
    }
}
