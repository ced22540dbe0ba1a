//! The run itself ("One run" of behaviour.md): fetch the intent, perform its
//! actions in order, report every step. It sees the world only through the
//! traits in `ports`, so every decision here is tested with stubs and a fake
//! clock.

mod actions;
mod report;
mod retry;
mod text;
mod wait;

use std::time::Duration;

use crate::config::CominStatus;
use crate::model::{validate_intent, Action, NodeName, Phase, Status};
use crate::ports::{Cancel, Clock, Log, PlanStore, Provider, UserPrograms, UserSystemd, Users};

pub use report::Stop;
pub use retry::RetryPolicy;

use actions::Terminal;
use report::Reporter;

/// Everything the engine needs to know, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeName,
    pub sha: String,
    pub action_timeout: Duration,
    pub target_observe_timeout: Duration,
    pub intent_wait: Duration,
    pub comin: CominStatus,
    /// Interval between polls of the provider (404 intent, other nodes).
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
}

impl Settings {
    pub fn new(node: NodeName, sha: String, action_timeout: Duration) -> Self {
        Settings {
            node,
            sha,
            action_timeout,
            target_observe_timeout: Duration::from_secs(120),
            intent_wait: Duration::from_secs(30),
            comin: CominStatus::Done,
            poll_interval: Duration::from_secs(2),
            retry: RetryPolicy::default(),
        }
    }
}

/// The world, as the engine sees it.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub provider: &'a dyn Provider,
    pub users: &'a dyn Users,
    pub systemd: &'a dyn UserSystemd,
    pub programs: &'a dyn UserPrograms,
    pub plans: &'a dyn PlanStore,
    pub clock: &'a dyn Clock,
    pub log: &'a dyn Log,
    pub cancel: &'a Cancel,
}

/// How a run ended. `exit_code()` maps it to the documented exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (no intent for this node); exit 0.
    NothingToDo(String),
    /// Every action succeeded (or there were none); exit 0.
    Succeeded(String),
    /// An action failed or timed out, the switch failed, the intent was
    /// invalid, or the provider stopped us; exit 1.
    Failed(String),
}

impl Outcome {
    pub fn exit(&self) -> crate::errors::Exit {
        match self {
            Outcome::NothingToDo(_) | Outcome::Succeeded(_) => crate::errors::Exit::Ok,
            Outcome::Failed(_) => crate::errors::Exit::Failed,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::NothingToDo(m) | Outcome::Succeeded(m) | Outcome::Failed(m) => m,
        }
    }
}

/// Performs one deployment for `settings.sha` on `settings.node`.
pub fn run(settings: &Settings, ports: Ports<'_>) -> Outcome {
    let envelope = match retry::fetch_intent(settings, ports) {
        Ok(Some(envelope)) => envelope,
        Ok(None) => {
            return Outcome::NothingToDo(format!(
                "no deploy intent for commit {} on node {} (waited {}s); nothing to do",
                settings.sha,
                settings.node,
                settings.intent_wait.as_secs()
            ))
        }
        Err(stop) => return Outcome::Failed(describe_stop(ports, &stop)),
    };
    let reporter = Reporter::new(settings, ports, envelope.job_id.clone());
    match run_job(settings, ports, &reporter, &envelope.intent) {
        Ok(outcome) => outcome,
        Err(stop) => Outcome::Failed(describe_stop(ports, &stop)),
    }
}

fn run_job(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    raw_intent: &serde_json::Value,
) -> Result<Outcome, Stop> {
    let node = &settings.node;
    if let CominStatus::Failed { message } = &settings.comin {
        let msg = format!("System switch failed on node {node}; no user action was run: {message}");
        reporter.post(Phase::Intent, Status::Failed, &msg, None)?;
        return Ok(Outcome::Failed(msg));
    }
    let intent = match validate_intent(raw_intent) {
        Ok(intent) => intent,
        Err(e) => {
            let msg = format!("Invalid deploy intent payload for node {node}: {e}");
            reporter.post(Phase::Intent, Status::Failed, &msg, None)?;
            return Ok(Outcome::Failed(msg));
        }
    };
    if intent.actions.is_empty() {
        let msg = format!("No user actions for node {node}");
        reporter.post(Phase::Intent, Status::Success, &msg, None)?;
        return Ok(Outcome::Succeeded(msg));
    }
    let total = intent.actions.len();
    for (index, action) in intent.actions.iter().enumerate() {
        if ports.cancel.is_cancelled() {
            let msg = format!(
                "Interrupted before action {} of {total} ({} for {}) on node {node}; no further action was run",
                index + 1,
                action.op,
                action.user
            );
            reporter.post(Phase::Intent, Status::Failed, &msg, None)?;
            return Ok(Outcome::Failed(msg));
        }
        let terminal = match run_action(settings, ports, reporter, action) {
            Ok(terminal) => terminal,
            Err(stop) => return Err(close_action(reporter, action, stop)),
        };
        let (status, message, payload) = terminal.into_parts();
        reporter.post_for(action, status, &message, payload)?;
        if status != Status::Success {
            return Ok(Outcome::Failed(format!(
                "action {} of {total} ({} for {}) ended {status}: {message}",
                index + 1,
                action.op,
                action.user
            )));
        }
    }
    let msg = format!("Completed all deploy actions for node {node}");
    reporter.post(Phase::Intent, Status::Success, &msg, None)?;
    Ok(Outcome::Succeeded(msg))
}

/// An action cut short by a provider failure or a signal still gets its one
/// terminal event if the provider takes it at the first try (not after 409
/// or 403: the job is closed or we are not heard), so the job does not wait
/// for it forever.
fn close_action(reporter: &Reporter<'_>, action: &Action, stop: Stop) -> Stop {
    if matches!(stop, Stop::Provider { .. } | Stop::Interrupted { .. }) {
        let msg = format!("{} for {} could not finish: {stop}", action.op, action.user);
        // Best effort: the run already fails with `stop`, whatever happens here.
        let _ = reporter.post_failed_once(action, &msg);
    }
    stop
}

fn run_action(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    action: &Action,
) -> Result<Terminal, Stop> {
    let ctx = actions::Ctx::new(settings, ports, reporter, action);
    ctx.log_start();
    actions::perform(&ctx)
}

/// Why the run stopped; a provider failure after SIGTERM/SIGINT says so,
/// since the signal (not the provider) is what the operator must look at.
fn describe_stop(ports: Ports<'_>, stop: &Stop) -> String {
    if ports.cancel.is_cancelled() && !matches!(stop, Stop::Interrupted { .. }) {
        format!("interrupted by a stop signal; then {stop}")
    } else {
        stop.to_string()
    }
}
