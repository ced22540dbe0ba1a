//! The run itself ("One run" of behaviour.md): fetch the intent, plan it,
//! perform the plan's actions in order, report every step. It sees the
//! world only through the traits in `ports`, so every decision here is
//! tested with stubs and a fake clock.

mod events;
mod memory;
pub mod plan;
mod retry;
mod settings;
mod steps;
mod stop;

use crate::model::journal::{Delivery, EventOf};
use crate::model::{FetchedIntent, Terminal};
use crate::ports::{Level, Log, LogFields, MessageId, Ports, Setting};

pub use memory::recall;
pub use plan::{plan, Plan, Recalled, Resume};
pub use retry::RetryPolicy;
pub use settings::Settings;
pub use steps::wait::target_verdict;
pub use stop::Stop;

use events::Reporter;
use memory::{of_action, RunRecorder};
use plan::{ActionPlan, Body};

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
    /// Whether the run did what was asked (or there was nothing to do).
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::NothingToDo(m) | Outcome::Succeeded(m) | Outcome::Failed(m) => m,
        }
    }
}

/// Performs one deployment for `settings.sha` on `settings.node`: takes the
/// node's run lock, delivers what earlier runs could not, fetches the
/// intent, plans it with what earlier runs left, and performs the plan.
pub fn run(settings: &Settings, ports: Ports<'_>) -> Outcome {
    announce_start(settings, ports.log);
    let outcome = run_to_the_end(settings, ports);
    announce_end(settings, ports.log, &outcome);
    outcome
}

fn run_fields(settings: &Settings) -> LogFields<'_> {
    LogFields {
        node: Some(settings.node.as_str()),
        sha: Some(settings.sha.as_str()),
        ..LogFields::default()
    }
}

/// The "run started" line (`MessageId::RUN_STARTED`).
pub fn announce_start(settings: &Settings, log: &dyn Log) {
    log.line(
        Level::Info,
        &LogFields {
            message_id: Some(MessageId::RUN_STARTED),
            ..run_fields(settings)
        },
        &format!(
            "run started for commit {} (pid {}, run deadline {}s)",
            settings.sha,
            settings.pid,
            settings.run_timeout.as_secs()
        ),
    );
}

/// The "run finished" line (`MessageId::RUN_FINISHED`), also for a run
/// that ended before the engine could start (the token file, say).
pub fn announce_end(settings: &Settings, log: &dyn Log, outcome: &Outcome) {
    let (level, status) = if outcome.is_success() {
        (Level::Info, "success")
    } else {
        (Level::Error, "failed")
    };
    log.line(
        level,
        &LogFields {
            status: Some(status),
            message_id: Some(MessageId::RUN_FINISHED),
            ..run_fields(settings)
        },
        outcome.message(),
    );
}

fn run_to_the_end(settings: &Settings, ports: Ports<'_>) -> Outcome {
    let prepared = memory::take_lock(settings, ports)
        .and_then(|()| memory::deliver_pending(settings, ports))
        .and_then(|()| retry::fetch_intent(settings, ports));
    let fetched = match prepared {
        Ok(Some(fetched)) => fetched,
        Ok(None) => {
            let url = ports.provider.intent_url(&settings.sha);
            return Outcome::NothingToDo(format!(
                "{}, for {}s; nothing to do. If every deployment says this, check {}",
                plan::no_intent_message(&settings.sha, &settings.node, &url),
                settings.intent_wait.as_secs(),
                Setting::ApiBaseUrl
            ));
        }
        Err(stop) => return Outcome::Failed(describe_stop(ports, &stop)),
    };
    perform(settings, ports, &fetched)
}

/// Plans `fetched` and performs the plan, keeping the journal.
fn perform(settings: &Settings, ports: Ports<'_>, fetched: &FetchedIntent) -> Outcome {
    let ready = get_ready_early(settings, ports, fetched);
    let memory = match memory::recall_for_run(settings, ports, fetched) {
        Ok(memory) => memory,
        Err(stop) => return Outcome::Failed(describe_stop(ports, &stop)),
    };
    let plan = plan::plan(settings, fetched, &memory);
    let memo = RunRecorder::open(settings, ports, fetched, &memory);
    let reporter = Reporter::new(settings, ports, plan.job.clone());
    let outcome = match execute(settings, ports, &reporter, &memo, &plan, ready) {
        Ok(outcome) => outcome,
        Err(stop) => Outcome::Failed(describe_stop(ports, &stop)),
    };
    memo.end(&outcome);
    outcome
}

/// Gets the first action's user systemd ready (its bus helper starts and
/// connects) while the run reads its memory and opens its journal. Memory
/// comes after, so this plans as if nothing were remembered: should memory
/// say that action need not run, the helper just goes unused. Returns the
/// index of the action it did this for, whose steps then need not.
fn get_ready_early(
    settings: &Settings,
    ports: Ports<'_>,
    fetched: &FetchedIntent,
) -> Option<usize> {
    let plan = plan::plan(settings, fetched, &Recalled::default());
    let first = plan.ready_at_start()?;
    // A failed lookup is the action's `ResolveUser` step's to report.
    let account = ports.users.lookup(&first.action.user).ok()?;
    ports.systemd.prepare(&account);
    Some(first.index)
}

fn execute(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    memo: &RunRecorder<'_>,
    plan: &Plan,
    ready: Option<usize>,
) -> Result<Outcome, Stop> {
    let (actions, closing) = match &plan.body {
        Body::Refuse { event, .. } => {
            post_closing(reporter, memo, plan, event)?;
            return Ok(Outcome::Failed(event.message.clone()));
        }
        Body::Perform { actions, closing } => (actions, closing),
    };
    let node = &settings.node;
    let total = actions.len();
    for (n, planned) in actions.iter().enumerate() {
        let action = &planned.action;
        let number = planned.index + 1;
        let what = format!(
            "action {number} of {total} ({} for {})",
            action.op, action.user
        );
        if planned.resume.runs() {
            let stopped = if ports.cancel.is_cancelled() {
                Some(Terminal::failed(
                    format!("Interrupted before {what} on node {node}; no further action was run"),
                    None,
                ))
            } else if settings.deadline().reached_at(ports.clock.instant()) {
                Some(Terminal::timed_out(
                    format!(
                        "{} before {what} on node {node}; no further action was run",
                        settings.deadline_reached()
                    ),
                    None,
                ))
            } else {
                None
            };
            if let Some(stopped) = stopped {
                post_closing(reporter, memo, plan, &stopped)?;
                return Ok(Outcome::Failed(stopped.message));
            }
        }
        log_resume(settings, ports, reporter, planned);
        let terminal = match &planned.resume {
            Resume::Skip { terminal } => terminal.clone(),
            Resume::Adopt { terminal } => {
                memo.finished(planned, terminal, true, Delivery::Delivered);
                terminal.clone()
            }
            Resume::Redeliver { terminal } => {
                let event = terminal.event(node, action.op.into());
                let posted = if memory::already_there(ports, reporter.job(), &event) {
                    Ok(())
                } else {
                    reporter.post_terminal(action, terminal)
                };
                memo.delivery(&of_action(planned), &posted);
                posted?;
                terminal.clone()
            }
            Resume::Run | Resume::Rerun => {
                memo.started(planned);
                let ready = ready == Some(planned.index);
                let terminal = match run_action(settings, ports, reporter, planned, ready) {
                    Ok(terminal) => terminal,
                    Err(stop) => return Err(close_action(reporter, memo, planned, stop)),
                };
                // The last action's success decides the closing event:
                // recorded with it, one sync for both.
                let closes = n + 1 == total && terminal.is_success() && !plan.closing_delivered;
                if closes {
                    memo.finished_closing(planned, &terminal, closing);
                } else {
                    memo.finished(planned, &terminal, false, Delivery::Pending);
                }
                let posted = reporter.post_terminal(action, &terminal);
                memo.delivery(&of_action(planned), &posted);
                if closes && matches!(posted, Err(Stop::JobClosed { .. })) {
                    // The job is closed: the closing event cannot go either.
                    memo.delivery(&EventOf::Closing, &posted);
                }
                posted?;
                terminal
            }
        };
        if !terminal.is_success() {
            let earlier = if planned.resume.runs() {
                ""
            } else {
                " (in an earlier run)"
            };
            return Ok(Outcome::Failed(format!(
                "{what} ended {}{earlier}: {}",
                terminal.status, terminal.message
            )));
        }
    }
    post_closing(reporter, memo, plan, closing)?;
    Ok(Outcome::Succeeded(closing.message.clone()))
}

/// Posts the node's final (`intent`, ...) event, unless an earlier run
/// delivered it already.
fn post_closing(
    reporter: &Reporter<'_>,
    memo: &RunRecorder<'_>,
    plan: &Plan,
    terminal: &Terminal,
) -> Result<(), Stop> {
    if plan.closing_delivered {
        return Ok(());
    }
    memo.closing(terminal);
    let posted = reporter.post_intent(terminal);
    memo.delivery(&EventOf::Closing, &posted);
    posted
}

fn log_resume(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    planned: &ActionPlan,
) {
    let Some(line) = planned.resume.describe() else {
        return;
    };
    let action = &planned.action;
    let fields = LogFields {
        node: Some(settings.node.as_str()),
        job: Some(reporter.job().as_str()),
        op: Some(action.op.as_str()),
        user: Some(action.user.as_str()),
        ..LogFields::default()
    };
    ports.log.line(
        Level::Info,
        &fields,
        &format!("{} for {}: {line}", action.op, action.user),
    );
}

/// An action cut short by a provider failure or a signal still gets its one
/// terminal event if the provider takes it at the first try (not after 409
/// or 403: the job is closed or we are not heard), so the job does not wait
/// for it forever.
///
/// In the journal the action stays started unless that event was delivered:
/// a later run runs it again rather than report a failure the provider
/// never heard of.
fn close_action(
    reporter: &Reporter<'_>,
    memo: &RunRecorder<'_>,
    planned: &ActionPlan,
    stop: Stop,
) -> Stop {
    // (A deadline never stops an action: its steps end as timed out.)
    if matches!(stop, Stop::Provider { .. } | Stop::Interrupted { .. }) {
        let action = &planned.action;
        let msg = format!("{} for {} could not finish: {stop}", action.op, action.user);
        let terminal = Terminal::failed(msg, None);
        // Best effort: the run already fails with `stop`, whatever happens here.
        if reporter.post_failed_once(action, &terminal.message).is_ok() {
            memo.finished(planned, &terminal, false, Delivery::Delivered);
        }
    }
    stop
}

/// `ready`: the user's systemd was got ready for it at the run's start.
fn run_action(
    settings: &Settings,
    ports: Ports<'_>,
    reporter: &Reporter<'_>,
    planned: &ActionPlan,
    ready: bool,
) -> Result<Terminal, Stop> {
    let ctx = steps::Ctx::new(settings, ports, reporter, &planned.action);
    ctx.log(
        Level::Info,
        None,
        None,
        &format!("starting {} for {}", planned.action.op, planned.action.user),
    );
    steps::perform(&ctx, planned, ready)
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
