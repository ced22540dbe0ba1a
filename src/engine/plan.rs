//! The plan: one pure function turns (settings, the fetched intent, what
//! earlier runs left) into every step the run will take, decided up front:
//! what each action waits for and on which node, which unit and wrapper
//! each key uses, where the restore plan goes, which unit a deactivate
//! stops, which actions fail before running, and which are already done.
//! The run executes this plan; `--dry-run` renders the same plan. This is
//! the only place that looks at an action's `op`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::model::journal::{ActionState, Delivery, JobRecord};
use crate::model::text::summary;
use crate::model::{
    Action, BackupPayload, CominStatus, EventPayload, FetchedIntent, IntentError, JobId,
    MigrationKey, NodeName, Op, Phase, RestorePlan, Status, Terminal, TerminalStatus, UserName,
};

use super::Settings;

/// The user unit a `deactivate` stops.
pub const TARGET_UNIT: &str = "hostenv.target";

/// What the run will do for one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub node: NodeName,
    pub job: JobId,
    pub body: Body,
    /// An earlier run already delivered the node's final (`intent`, ...)
    /// event for this job: it is not posted again.
    pub closing_delivered: bool,
}

/// What earlier runs left for this job: the journal's record (only one
/// written for this very intent) and the backup payloads the provider
/// already serves for this node's backup actions, by action index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recalled {
    pub record: Option<JobRecord>,
    pub published: BTreeMap<usize, BackupPayload>,
}

/// What an earlier run's work means for an action: behaviour.md, "Resume,
/// never redo finished work".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "resume")]
pub enum Resume {
    /// Nothing is known of it: run it.
    Run,
    /// An earlier run started it and did not finish: run it again (it is
    /// idempotent; a backup is only rerun when the provider has no payload).
    Rerun,
    /// Finished and delivered by an earlier run: post nothing.
    Skip { terminal: Terminal },
    /// Finished by an earlier run, its terminal event not delivered: post
    /// that same event again.
    Redeliver { terminal: Terminal },
    /// A backup whose success payload the provider already serves: take
    /// it as done; start no unit, post nothing.
    Adopt { terminal: Terminal },
}

impl Resume {
    /// Whether the action's steps run.
    pub fn runs(&self) -> bool {
        matches!(self, Resume::Run | Resume::Rerun)
    }

    /// The terminal event an earlier run decided, if any.
    pub fn earlier(&self) -> Option<&Terminal> {
        match self {
            Resume::Skip { terminal }
            | Resume::Redeliver { terminal }
            | Resume::Adopt { terminal } => Some(terminal),
            Resume::Run | Resume::Rerun => None,
        }
    }

    /// One line for the dry run and the log.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            Resume::Run => return None,
            Resume::Rerun => {
                "an earlier run started it and did not finish: it runs again".to_owned()
            }
            Resume::Skip { terminal } => format!(
                "already done: an earlier run posted ({}) \"{}\"; skipped, nothing posted",
                terminal.status, terminal.message
            ),
            Resume::Redeliver { terminal } => format!(
                "already done, its event not delivered: ({}) \"{}\" is posted again",
                terminal.status, terminal.message
            ),
            Resume::Adopt { .. } => "already done: the provider serves this node's backup payload for it; no unit starts, nothing is posted".to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Body {
    /// No action runs: one (`intent`, `failed`) event says why.
    Refuse {
        why: Refusal,
        #[serde(flatten)]
        event: Terminal,
    },
    /// The actions, in order; when all succeed, the closing (`intent`,
    /// `success`) event.
    Perform {
        actions: Vec<ActionPlan>,
        closing: Terminal,
    },
}

/// Why nothing of the intent runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// comin's system switch failed: users are not touched.
    SwitchFailed,
    /// The intent does not follow schema version 1.
    InvalidIntent,
}

/// One action and its steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionPlan {
    /// Position in the intent, from 0.
    pub index: usize,
    pub action: Action,
    pub resume: Resume,
    pub steps: Vec<Step>,
}

/// One step of an action. The last step of every plan ends the action
/// (`CheckHealth`, `PublishBackup` or `Finish`); any step may end it early with
/// a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    /// Post a non-terminal event (`running` or `waiting`) for the action.
    Announce { status: Status, message: String },
    /// Look the user up: an unknown user or root fails the action here.
    ResolveUser,
    /// Wait for `source`'s backup payload to hold a snapshot id per key;
    /// fail if `source` fails, time out at the action's deadline.
    AwaitBackup {
        source: NodeName,
        keys: Vec<MigrationKey>,
    },
    /// Wait for `target` to activate the environment, then post `running`;
    /// fail if it failed; go on if it is not seen within `observe`.
    AwaitTarget {
        target: NodeName,
        #[serde(rename = "observeSeconds", serialize_with = "seconds")]
        observe: Duration,
    },
    /// The key's backup unit must be loaded (no fallback names).
    CheckUnit { key: MigrationKey, unit: String },
    /// The key's restic wrapper must be found.
    FindWrapper { key: MigrationKey, wrapper: String },
    /// Start the unit, wait for its job, then read the id of the snapshot
    /// this run made with `<wrapper> snapshots --tag <key> --json`.
    BackUp {
        key: MigrationKey,
        unit: String,
        wrapper: String,
    },
    /// Write the restore plan with the awaited snapshot ids.
    WriteRestorePlan { path: PathBuf, source: NodeName },
    /// Run the user's `activate` program; anything but exit 0 ends the
    /// action.
    Activate,
    /// Wait up to `within` for the services of `default.target` and
    /// `hostenv.target` to settle; none failed ends the action with
    /// `success` and this message.
    CheckHealth {
        #[serde(rename = "withinSeconds", serialize_with = "seconds")]
        within: Duration,
        success: String,
    },
    /// Stop a unit of the user's systemd (not loaded is fine).
    StopUnit { unit: String },
    /// `daemon-reload` of the user's systemd.
    ReloadManager,
    /// End the action with `success` and the snapshot ids taken.
    PublishBackup { message: String },
    /// End the action with this terminal event.
    Finish { terminal: Terminal },
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// An event the run would post, as the dry run shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEvent {
    pub phase: Phase,
    pub status: Status,
    pub message: String,
}

/// The plan for `fetched` on `settings.node`, given what earlier runs left.
pub fn plan(settings: &Settings, fetched: &FetchedIntent, recalled: &Recalled) -> Plan {
    let node = &settings.node;
    let body = match (&settings.comin, &fetched.intent) {
        (CominStatus::Failed { message }, _) => Body::Refuse {
            why: Refusal::SwitchFailed,
            event: Terminal::failed(
                format!(
                    "System switch failed on node {node}; no user action was run: {}",
                    // A build log can run to kilobytes: one line, its end.
                    summary(message)
                ),
                None,
            ),
        },
        (CominStatus::Done, Err(e)) => Body::Refuse {
            why: Refusal::InvalidIntent,
            event: Terminal::failed(invalid_intent_message(node, e), None),
        },
        (CominStatus::Done, Ok(intent)) if intent.actions.is_empty() => Body::Perform {
            actions: Vec::new(),
            closing: Terminal::success(format!("No user actions for node {node}"), None),
        },
        (CominStatus::Done, Ok(intent)) => Body::Perform {
            actions: intent
                .actions
                .iter()
                .enumerate()
                .map(|(index, action)| ActionPlan {
                    index,
                    action: action.clone(),
                    resume: resume(index, action, recalled),
                    steps: steps(settings, action),
                })
                .collect(),
            closing: Terminal::success(
                format!("Completed all deploy actions for node {node}"),
                None,
            ),
        },
    };
    let closing_delivered = recalled.record.as_ref().is_some_and(|r| {
        r.closing
            .as_ref()
            .is_some_and(|c| c.delivery != Delivery::Pending)
    });
    Plan {
        node: node.clone(),
        job: fetched.job.clone(),
        body,
        closing_delivered,
    }
}

/// What the journal and the provider say about action `index`.
fn resume(index: usize, action: &Action, recalled: &Recalled) -> Resume {
    let recorded = recalled
        .record
        .as_ref()
        .and_then(|r| r.action(index, action));
    let finished = match recorded.map(|r| &r.state) {
        Some(ActionState::Finished { event, .. }) => Some(event),
        _ => None,
    };
    if let Some(event) = finished.filter(|e| e.delivery != Delivery::Pending) {
        return Resume::Skip {
            terminal: event.terminal.clone(),
        };
    }
    // The provider serving this node's backup payload means its success
    // reached the provider, whatever the journal could still record: post
    // it never again (a second one would move another backup's row).
    let published = recalled
        .published
        .get(&index)
        .filter(|p| action.op == Op::Backup && p.covers(&action.migrations));
    match (published, finished, recorded) {
        (Some(payload), _, _) => Resume::Adopt {
            terminal: Terminal::success(
                backup_done(action),
                Some(EventPayload::Backup(payload.clone())),
            ),
        },
        (None, Some(event), _) => Resume::Redeliver {
            terminal: event.terminal.clone(),
        },
        (None, None, Some(_)) => Resume::Rerun,
        (None, None, None) => Resume::Run,
    }
}

/// The success message of a backup with migrations.
fn backup_done(action: &Action) -> String {
    format!("Migration backups completed for {}", action.user)
}

/// What an action asks of its user's account, for checks made ahead of a
/// run (`doctor`): whether it runs the `activate` program, and which keys'
/// backup units and restic wrappers it uses. The same as its steps say
/// (a test holds the two together), without needing the run's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uses {
    pub activate: bool,
    pub keys: Vec<MigrationKey>,
}

impl Uses {
    pub fn of(action: &Action) -> Uses {
        match action.op {
            Op::Activate | Op::Reload => Uses {
                activate: true,
                keys: Vec::new(),
            },
            Op::Restore => Uses {
                activate: !action.migrations.is_empty() && action.from_node.is_some(),
                keys: Vec::new(),
            },
            Op::Backup => Uses {
                activate: false,
                keys: action.migrations.clone(),
            },
            Op::Deactivate => Uses::default(),
        }
    }
}

/// The message of an action's (`<op>`, `running`) event.
pub fn running_message(user: &UserName) -> String {
    format!("Applying action for {user}")
}

/// The one wording of "the provider has no intent for this commit": a 404,
/// which a wrong base URL gives too, so the URL asked is always named.
pub fn no_intent_message(sha: &str, node: &dyn std::fmt::Display, url: &str) -> String {
    format!("no intent for {sha} on {node} ({url} answered 404)")
}

/// The one wording of an invalid intent.
pub fn invalid_intent_message(node: &NodeName, e: &IntentError) -> String {
    format!("Invalid deploy intent payload for node {node}: {e}")
}

/// `node`, unless it is this node.
fn other<'a>(settings: &Settings, node: Option<&'a NodeName>) -> Option<&'a NodeName> {
    node.filter(|n| **n != settings.node)
}

/// Run `activate`, then (unless the check is off) the health check, which
/// ends the action with `success`.
fn activation(settings: &Settings, success: String) -> [Step; 2] {
    let within = settings.health_timeout;
    [
        Step::Activate,
        if within.is_zero() {
            Step::Finish {
                terminal: Terminal::success(success, None),
            }
        } else {
            Step::CheckHealth { within, success }
        },
    ]
}

/// The steps of `action`: each op's in the function named for it.
fn steps(settings: &Settings, action: &Action) -> Vec<Step> {
    let running = Step::Announce {
        status: Status::Running,
        message: running_message(&action.user),
    };
    match action.op {
        Op::Activate | Op::Reload => activate_steps(settings, action, running),
        Op::Backup => backup_steps(action, running),
        Op::Restore => restore_steps(settings, action, running),
        Op::Deactivate => deactivate_steps(settings, action, running),
    }
}

/// A step that ends the action as failed with `message`.
fn fail(message: String) -> Step {
    Step::Finish {
        terminal: Terminal::failed(message, None),
    }
}

/// `activate` and `reload`: resolve the user, run `activate`, check health.
fn activate_steps(settings: &Settings, action: &Action, running: Step) -> Vec<Step> {
    let done = if action.op == Op::Reload {
        "Reload completed"
    } else {
        "Activation completed"
    };
    let mut steps = vec![running, Step::ResolveUser];
    steps.extend(activation(settings, format!("{done} for {}", action.user)));
    steps
}

/// `backup`: every key's unit and wrapper checked before any unit starts,
/// then each key backed up, then the snapshots published.
fn backup_steps(action: &Action, running: Step) -> Vec<Step> {
    let keys = &action.migrations;
    if keys.is_empty() {
        return vec![
            running,
            Step::Finish {
                terminal: Terminal::success(
                    format!("No migration backups required for {}", action.user),
                    None,
                ),
            },
        ];
    }
    let mut steps = vec![running, Step::ResolveUser];
    for key in keys {
        steps.push(Step::CheckUnit {
            key: key.clone(),
            unit: key.unit_name(),
        });
        steps.push(Step::FindWrapper {
            key: key.clone(),
            wrapper: key.wrapper_name(),
        });
    }
    steps.extend(keys.iter().map(|key| Step::BackUp {
        key: key.clone(),
        unit: key.unit_name(),
        wrapper: key.wrapper_name(),
    }));
    steps.push(Step::PublishBackup {
        message: backup_done(action),
    });
    steps
}

/// `restore`: refused at once without migrations or without the node that
/// holds the backup; else [`restore_from`] that node.
fn restore_steps(settings: &Settings, action: &Action, running: Step) -> Vec<Step> {
    let user = &action.user;
    let keys = &action.migrations;
    if keys.is_empty() {
        return vec![
            running,
            fail(format!(
                "restore for {user} lists no migrations: there are no snapshots to restore (the provider emits restore only for moves with migrations)"
            )),
        ];
    }
    let Some(source) = &action.from_node else {
        let listed: Vec<&str> = keys.iter().map(MigrationKey::as_str).collect();
        return vec![
            running,
            fail(format!(
                "restore for {user} lists migrations ({}) but no fromNode: the intent does not say where the backup is",
                listed.join(", ")
            )),
        ];
    };
    restore_from(settings, action, source, running)
}

/// `restore` of the backup `source` took: wait for it (announced as
/// waiting when `source` is another node), write the restore plan, then
/// activate.
fn restore_from(
    settings: &Settings,
    action: &Action,
    source: &NodeName,
    running: Step,
) -> Vec<Step> {
    let user = &action.user;
    let remote = other(settings, Some(source)).is_some();
    let mut steps = Vec::new();
    steps.push(if remote {
        Step::Announce {
            status: Status::Waiting,
            message: format!("Waiting for the backup of {user} on {source}"),
        }
    } else {
        running.clone()
    });
    steps.push(Step::ResolveUser);
    steps.push(Step::AwaitBackup {
        source: source.clone(),
        keys: action.migrations.clone(),
    });
    if remote {
        steps.push(running);
    }
    steps.push(Step::WriteRestorePlan {
        path: RestorePlan::path(user),
        source: source.clone(),
    });
    steps.extend(activation(
        settings,
        format!("Restore and activation completed for {user}"),
    ));
    steps
}

/// `deactivate`: wait for the target node to activate the user (when it is
/// another node), then stop the user's target and reload its manager.
fn deactivate_steps(settings: &Settings, action: &Action, running: Step) -> Vec<Step> {
    let user = &action.user;
    let mut steps = Vec::new();
    match other(settings, action.to_node.as_ref()) {
        Some(target) => {
            steps.push(Step::Announce {
                status: Status::Waiting,
                message: format!("Waiting for {target} to activate {user}"),
            });
            // An unknown user fails now, not after the wait.
            steps.push(Step::ResolveUser);
            steps.push(Step::AwaitTarget {
                target: target.clone(),
                observe: settings.target_observe_timeout,
            });
        }
        None => steps.extend([running, Step::ResolveUser]),
    }
    steps.extend([
        Step::StopUnit {
            unit: TARGET_UNIT.to_owned(),
        },
        Step::ReloadManager,
        Step::Finish {
            terminal: Terminal::success(format!("Deactivated {user}"), None),
        },
    ]);
    steps
}

impl Step {
    /// What the step does, in one line, for the dry run.
    pub fn describe(&self, action: &Action) -> String {
        let (op, user) = (action.op, &action.user);
        match self {
            Step::Announce { status, message } => format!("post ({op}, {status}) \"{message}\""),
            Step::ResolveUser => format!("look up user {user} (must exist, must not be root)"),
            Step::AwaitBackup { source, keys } => {
                let keys: Vec<&str> = keys.iter().map(MigrationKey::as_str).collect();
                format!(
                    "wait for {source}'s backup of {user} to name a snapshot for {}; fail if {source} fails",
                    keys.join(", ")
                )
            }
            Step::AwaitTarget { target, observe } => format!(
                "wait for {target} to activate {user}, then post ({op}, running); refuse if {target} failed; go on if {target} is not seen within {}s",
                observe.as_secs()
            ),
            Step::CheckUnit { unit, .. } => {
                format!("check that {unit} is loaded in {user}'s systemd")
            }
            Step::FindWrapper { wrapper, .. } => {
                format!("find {user}'s restic wrapper {wrapper}")
            }
            Step::BackUp { key, unit, wrapper } => format!(
                "start {unit} in {user}'s systemd and wait for its job, then read the new snapshot id with {wrapper} snapshots --tag {key} --json"
            ),
            Step::WriteRestorePlan { path, source } => format!(
                "write {} with the snapshot ids from {source}",
                path.display()
            ),
            Step::Activate => format!("run {user}'s activate program as {user}"),
            Step::CheckHealth { within, success } => format!(
                "wait up to {}s for the services that default.target and hostenv.target want in {user}'s systemd to settle; none failed: post ({op}, success) \"{success}\"",
                within.as_secs()
            ),
            Step::StopUnit { unit } => format!("stop {unit} in {user}'s systemd"),
            Step::ReloadManager => format!("reload {user}'s systemd manager"),
            Step::PublishBackup { message } => format!(
                "post ({op}, success) \"{message}\" with the snapshot ids as this node's backup of {user}"
            ),
            Step::Finish { terminal } => {
                format!("post ({op}, {}) \"{}\"", terminal.status, terminal.message)
            }
        }
    }
}

/// What a step needs of the world while it runs, as far as getting ready
/// for it goes (see [`ActionPlan::needs_user_systemd_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It calls the user's systemd.
    UserSystemd,
    /// It waits for another node, which may take minutes.
    OtherNode,
    /// Neither.
    Other,
}

impl Step {
    /// What the step reaches out to.
    pub fn reach(&self) -> Reach {
        match self {
            Step::CheckUnit { .. }
            | Step::BackUp { .. }
            | Step::CheckHealth { .. }
            | Step::StopUnit { .. }
            | Step::ReloadManager => Reach::UserSystemd,
            Step::AwaitBackup { .. } | Step::AwaitTarget { .. } => Reach::OtherNode,
            Step::Announce { .. }
            | Step::ResolveUser
            | Step::FindWrapper { .. }
            | Step::WriteRestorePlan { .. }
            | Step::Activate
            | Step::PublishBackup { .. }
            | Step::Finish { .. } => Reach::Other,
        }
    }
}

impl ActionPlan {
    /// Whether, from step `from` on, the user's systemd is called before
    /// any wait for another node: then it is worth getting ready for now
    /// (the bus helper's start overlaps the announcement and the user's
    /// program), and not before a wait that may take minutes.
    pub fn needs_user_systemd_next(&self, from: usize) -> bool {
        self.steps
            .iter()
            .skip(from)
            .map(Step::reach)
            .find(|reach| *reach != Reach::Other)
            == Some(Reach::UserSystemd)
    }

    /// The terminal event the plan decides before anything runs, if it is
    /// a failure (e.g. a restore without migrations, or one an earlier run
    /// already reported).
    pub fn fails_before_running(&self) -> Option<&Terminal> {
        if let Some(earlier) = self.resume.earlier() {
            return (!earlier.is_success()).then_some(earlier);
        }
        self.steps.iter().find_map(|step| {
            let Step::Finish { terminal } = step else {
                return None;
            };
            (terminal.status != TerminalStatus::Success).then_some(terminal)
        })
    }

    /// The events the action posts when every step goes as planned (the
    /// other node activates, the units and programs succeed).
    pub fn would_post(&self) -> Vec<PlannedEvent> {
        let phase = Phase::from(self.action.op);
        let event = |status: Status, message: &str| PlannedEvent {
            phase,
            status,
            message: message.to_owned(),
        };
        let mut events = Vec::new();
        match &self.resume {
            Resume::Run | Resume::Rerun => {}
            Resume::Redeliver { terminal } => {
                events.push(event(terminal.status.into(), &terminal.message));
                return events;
            }
            Resume::Skip { .. } | Resume::Adopt { .. } => return events,
        }
        for step in &self.steps {
            match step {
                Step::Announce { status, message } => events.push(event(*status, message)),
                Step::AwaitTarget { .. } => {
                    events.push(event(Status::Running, &running_message(&self.action.user)));
                }
                Step::CheckHealth { success, .. } => events.push(event(Status::Success, success)),
                Step::PublishBackup { message } => events.push(event(Status::Success, message)),
                Step::Finish { terminal } => {
                    events.push(event(terminal.status.into(), &terminal.message));
                }
                // These post nothing of their own.
                Step::ResolveUser
                | Step::AwaitBackup { .. }
                | Step::CheckUnit { .. }
                | Step::FindWrapper { .. }
                | Step::BackUp { .. }
                | Step::WriteRestorePlan { .. }
                | Step::Activate
                | Step::StopUnit { .. }
                | Step::ReloadManager => {}
            }
        }
        events
    }
}

impl Plan {
    /// The action whose user's systemd is worth getting ready for as the
    /// run starts (before it reads its memory and opens its journal): the
    /// first action, when it calls the user's systemd before any wait for
    /// another node ([`ActionPlan::needs_user_systemd_next`] from its first
    /// step).
    pub fn ready_at_start(&self) -> Option<&ActionPlan> {
        let Body::Perform { actions, .. } = &self.body else {
            return None;
        };
        actions
            .first()
            .filter(|first| first.needs_user_systemd_next(0))
    }

    /// Every event the run posts when everything goes as planned.
    pub fn would_post(&self) -> Vec<PlannedEvent> {
        let intent = |t: &Terminal| PlannedEvent {
            phase: Phase::Intent,
            status: t.status.into(),
            message: t.message.clone(),
        };
        let mut events = Vec::new();
        let closing = match &self.body {
            Body::Refuse { event, .. } => event,
            Body::Perform { actions, closing } => {
                for action in actions {
                    events.extend(action.would_post());
                    if action.fails_before_running().is_some() {
                        return events;
                    }
                }
                closing
            }
        };
        if !self.closing_delivered {
            events.push(intent(closing));
        }
        events
    }
}

#[cfg(test)]
mod tests;
