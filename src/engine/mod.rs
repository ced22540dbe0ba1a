//! The run itself ("One run" of behaviour.md): fetch the intent, plan it,
//! perform the plan's actions in order, report every step. It sees the
//! world only through the traits in `ports`, so every decision here is
//! tested with stubs and a fake clock.

pub mod plan;
mod report;
mod retry;
mod settings;
mod steps;
mod text;

use crate::model::{FetchedIntent, Phase, Status, Terminal};
use crate::ports::{Cancel, Clock, Log, PlanStore, Provider, UserPrograms, UserSystemd, Users};

pub use plan::{plan, Plan};
pub use report::Stop;
pub use retry::RetryPolicy;
pub use settings::Settings;
pub use steps::wait::target_verdict;

use plan::{ActionPlan, Body};
use report::Reporter;

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

/// How a run ended; `errors::Exit::of` maps it to the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (no intent for this node).
    NothingToDo(String),
    /// Every action succeeded (or there were none).
    Succeeded(String),
    /// An action failed or timed out, the switch failed, the intent was
    /// invalid, or the provider stopped us.
    Failed(String),
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Outcome::NothingToDo(m) | Outcome::Succeeded(m) | Outcome::Failed(m) => m,
        }
    }
}

/// Performs one deployment for `settings.sha` on `settings.node`.
pub fn run(settings: &Settings, ports: Ports<'_>) -> Outcome {
    let fetched = match retry::fetch_intent(settings, ports) {
        Ok(Some(fetched)) => fetched,
        Ok(None) => {
            let url = ports.provider.intent_url(&settings.sha);
            return Outcome::NothingToDo(format!(
                "no deploy intent for commit {} on node {} (waited {}s; {url} answered 404); nothing to do. If every deployment says this, check HOSTENV_COMIN_API_BASE_URL",
                settings.sha,
                settings.node,
                settings.intent_wait.as_secs()
            ));
        }
        Err(stop) => return Outcome::Failed(describe_stop(ports, &stop)),
    };
    perform(settings, ports, &fetched)
}

/// Plans `fetched` and performs the plan.
fn perform(settings: &Settings, ports: Ports<'_>, fetched: &FetchedIntent) -> Outcome {
    let plan = plan::plan(settings, fetched);
    let reporter = Reporter::new(settings, ports, plan.job.clone());
    match execute(settings, ports, &reporter, &plan) {
        Ok(outcome) => outcome,
        Err(stop) => Outcome::Failed(describe_stop(ports, &stop)),
    }
}

fn execute(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    plan: &Plan,
) -> Result<Outcome, Stop> {
    let (actions, closing) = match &plan.body {
        Body::Refuse { event, .. } => {
            reporter.post_intent(event)?;
            return Ok(Outcome::Failed(event.message.clone()));
        }
        Body::Perform { actions, closing } => (actions, closing),
    };
    let node = &settings.node;
    let total = actions.len();
    for planned in actions {
        let action = &planned.action;
        let number = planned.index + 1;
        if ports.cancel.is_cancelled() {
            let msg = format!(
                "Interrupted before action {number} of {total} ({} for {}) on node {node}; no further action was run",
                action.op, action.user
            );
            reporter.post(Phase::Intent, Status::Failed, &msg, None)?;
            return Ok(Outcome::Failed(msg));
        }
        let terminal = match run_action(settings, ports, reporter, planned) {
            Ok(terminal) => terminal,
            Err(stop) => return Err(close_action(reporter, planned, stop)),
        };
        reporter.post_terminal(action, &terminal)?;
        if !terminal.is_success() {
            return Ok(Outcome::Failed(format!(
                "action {number} of {total} ({} for {}) ended {}: {}",
                action.op, action.user, terminal.status, terminal.message
            )));
        }
    }
    reporter.post_intent(closing)?;
    Ok(Outcome::Succeeded(closing.message.clone()))
}

/// An action cut short by a provider failure or a signal still gets its one
/// terminal event if the provider takes it at the first try (not after 409
/// or 403: the job is closed or we are not heard), so the job does not wait
/// for it forever.
fn close_action(reporter: &Reporter<'_>, planned: &ActionPlan, stop: Stop) -> Stop {
    if matches!(stop, Stop::Provider { .. } | Stop::Interrupted { .. }) {
        let action = &planned.action;
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
    planned: &ActionPlan,
) -> Result<Terminal, Stop> {
    let ctx = steps::Ctx::new(settings, ports, reporter, &planned.action);
    ctx.log(
        crate::ports::Level::Info,
        None,
        None,
        &format!("starting {} for {}", planned.action.op, planned.action.user),
    );
    steps::perform(&ctx, planned)
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
