//! Executing an action's planned steps: one module per kind of step, and
//! what they share (the action's context: deadline, logging, provider calls,
//! and what earlier steps found out).

mod activate;
mod backup;
mod health;
mod restore;
mod systemd;
pub mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::events::Reporter;
use crate::engine::plan::{self, ActionPlan, Step};
use crate::engine::stop::Stop;
use crate::engine::{retry, Settings};
use crate::model::{Action, MigrationKey, Status, Terminal};
use crate::ports::{Account, Deadline, Level, LogFields, Ports, ProviderError};

/// Why an action's steps stop early: it has its terminal event, or the run
/// must halt (the provider closed the job, refused us, ...).
#[derive(Debug)]
pub enum Ended {
    With(Terminal),
    Halt(Stop),
}

impl From<Stop> for Ended {
    fn from(stop: Stop) -> Self {
        Ended::Halt(stop)
    }
}

impl From<Terminal> for Ended {
    fn from(terminal: Terminal) -> Self {
        Ended::With(terminal)
    }
}

/// What the steps found out so far.
#[derive(Debug, Default)]
pub struct Progress {
    account: Option<Account>,
    wrappers: BTreeMap<MigrationKey, PathBuf>,
    /// Snapshot ids taken (backup) or awaited (restore), per key.
    snapshots: BTreeMap<MigrationKey, String>,
}

impl Progress {
    /// The user, resolved by an earlier `ResolveUser` step.
    fn account(&self, action: &Action) -> Result<&Account, Ended> {
        self.account.as_ref().ok_or_else(|| {
            Ended::With(Terminal::failed(
                format!(
                    "{} for {}: internal error, the plan used the user before looking it up",
                    action.op, action.user
                ),
                None,
            ))
        })
    }
}

/// What an action needs while it runs.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub ports: Ports<'a>,
    pub reporter: &'a Reporter<'a>,
    pub action: &'a Action,
    /// The action's own deadline or the run's, whichever comes first.
    pub deadline: Deadline,
    /// The run deadline comes first: a timeout is the run's.
    run_bound: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        settings: &'a Settings,
        ports: Ports<'a>,
        reporter: &'a Reporter<'a>,
        action: &'a Action,
    ) -> Self {
        let own = Deadline::on(ports.clock, settings.action_timeout);
        let run = settings.deadline();
        Ctx {
            settings,
            ports,
            reporter,
            action,
            deadline: own.earlier(run),
            run_bound: run <= own,
        }
    }

    /// The message of a timeout: `own` when the action's timeout ended it,
    /// else the run deadline's, saying what was going on (`during`).
    pub fn timed_out(&self, own: String, during: &str) -> String {
        if self.run_bound {
            format!(
                "{} while {during}; {} for {} was ended as on its own timeout",
                self.settings.deadline_reached(),
                self.action.op,
                self.action.user
            )
        } else {
            own
        }
    }

    /// Time left before the action's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.remaining_at(self.ports.clock.instant())
    }

    pub fn timeout_secs(&self) -> u64 {
        self.settings.action_timeout.as_secs()
    }

    pub fn log(&self, level: Level, unit: Option<&str>, key: Option<&str>, message: &str) {
        let fields = LogFields {
            node: Some(self.settings.node.as_str()),
            job: Some(self.reporter.job().as_str()),
            op: Some(self.action.op.as_str()),
            user: Some(self.action.user.as_str()),
            unit,
            key,
            ..LogFields::default()
        };
        self.ports.log.line(level, &fields, message);
    }

    /// Posts a non-terminal event (`running`/`waiting`) for this action.
    pub fn post(&self, status: Status, message: &str) -> Result<(), Stop> {
        self.reporter.post_for(self.action, status, message, None)
    }

    /// `running` with the standard message.
    pub fn post_running(&self) -> Result<(), Stop> {
        self.post(Status::Running, &plan::running_message(&self.action.user))
    }

    /// A provider read with retries; failures that must end the run are a `Stop`.
    pub fn provider_call<T>(
        &self,
        step: &str,
        call: impl FnMut() -> Result<T, ProviderError>,
    ) -> Result<T, Stop> {
        let step = format!("{}/{step}", self.action.op);
        retry::retrying(self.settings, self.ports, &step, call)
            .map_err(|e| Stop::from_provider(Some(self.reporter.job()), step.clone(), e))
    }

    /// The terminal event for an action cut short by SIGTERM/SIGINT.
    pub fn interrupted(&self, during: &str) -> Terminal {
        Terminal::failed(
            format!(
                "Interrupted while {during} for {}: hostenv-activate received a stop signal",
                self.action.user
            ),
            None,
        )
    }

    /// The action's end when no time is left to `what` (a step about to
    /// start something): `timed_out`, the run deadline's or the action's.
    pub fn out_of_time(&self, what: &str) -> Option<Terminal> {
        if !self.remaining().is_zero() {
            return None;
        }
        let user = &self.action.user;
        let message = self.timed_out(
            format!(
                "No time left of the {}s action timeout to {what} for {user}; it was not started",
                self.timeout_secs()
            ),
            &format!("about to {what} for {user} (it was not started)"),
        );
        self.log(Level::Error, None, None, &message);
        Some(Terminal::timed_out(message, None))
    }

    /// A failure, logged, as the action's end.
    pub fn fail(&self, unit: Option<&str>, key: Option<&str>, message: String) -> Ended {
        self.log(Level::Error, unit, key, &message);
        Ended::With(Terminal::failed(message, None))
    }
}

/// Runs the action's steps in order and returns its terminal event.
/// Non-terminal events (`running`, `waiting`) are posted on the way.
/// `ready`: the user's systemd was told already that calls follow (at the
/// run's start, for its first action).
pub fn perform(ctx: &Ctx<'_>, plan: &ActionPlan, ready: bool) -> Result<Terminal, Stop> {
    let mut progress = Progress::default();
    let mut prepared = ready;
    for (i, step) in plan.steps.iter().enumerate() {
        if !prepared && plan.needs_user_systemd_next(i) {
            prepare(ctx, &mut progress);
            prepared = true;
        }
        match run_step(ctx, step, &mut progress) {
            Ok(()) => {}
            Err(Ended::With(terminal)) => return Ok(terminal),
            Err(Ended::Halt(stop)) => return Err(stop),
        }
    }
    Ok(Terminal::failed(
        format!(
            "{} for {}: internal error, the plan ended without a result",
            ctx.action.op, ctx.action.user
        ),
        None,
    ))
}

/// Tells the user's systemd that calls follow soon, so that it gets ready
/// while the steps before them run. The user is looked up for that if no
/// step has yet; a failed lookup is left to the `ResolveUser` step to
/// report (and no hint is given).
fn prepare(ctx: &Ctx<'_>, progress: &mut Progress) {
    if progress.account.is_none() {
        progress.account = ctx.ports.users.lookup(&ctx.action.user).ok();
    }
    if let Some(account) = &progress.account {
        ctx.ports.systemd.prepare(account);
    }
}

/// Runs `step`.
fn run_step(ctx: &Ctx<'_>, step: &Step, progress: &mut Progress) -> Result<(), Ended> {
    let action = ctx.action;
    match step {
        Step::Announce { status, message } => Ok(ctx.post(*status, message)?),
        // Looked up already, to get the user's systemd ready.
        Step::ResolveUser if progress.account.is_some() => Ok(()),
        Step::ResolveUser => {
            let account = ctx.ports.users.lookup(&action.user).map_err(|e| {
                ctx.fail(
                    None,
                    None,
                    format!("{} for {} failed: {e:#}", action.op, action.user),
                )
            })?;
            progress.account = Some(account);
            Ok(())
        }
        Step::AwaitBackup { source, keys } => {
            progress.snapshots = wait::await_backup(ctx, source, keys)?;
            Ok(())
        }
        Step::AwaitTarget { target, observe } => wait::await_target(ctx, target, *observe),
        Step::CheckUnit { key, unit } => {
            backup::check_unit(ctx, progress.account(action)?, key, unit)
        }
        Step::FindWrapper { key, wrapper } => {
            let found = backup::find_wrapper(ctx, progress.account(action)?, key, wrapper)?;
            progress.wrappers.insert(key.clone(), found);
            Ok(())
        }
        Step::BackUp { key, unit, .. } => {
            let account = progress.account(action)?;
            let wrapper = progress.wrappers.get(key).cloned().ok_or_else(|| {
                ctx.fail(
                    Some(unit),
                    Some(key.as_str()),
                    format!(
                        "backup for {}: internal error, no wrapper was looked up for {key}",
                        action.user
                    ),
                )
            })?;
            let id = backup::back_up(ctx, account, key, unit, &wrapper)?;
            progress.snapshots.insert(key.clone(), id);
            Ok(())
        }
        Step::PublishBackup { message } => Err(Ended::With(backup::publish(
            ctx,
            message,
            std::mem::take(&mut progress.snapshots),
        ))),
        Step::WriteRestorePlan { source, .. } => restore::write_plan(
            ctx,
            progress.account(action)?,
            source,
            progress.snapshots.clone(),
        ),
        Step::Activate => activate::run(ctx, progress.account(action)?),
        Step::CheckHealth { within, success } => Err(Ended::With(health::check(
            ctx,
            progress.account(action)?,
            *within,
            success,
        ))),
        Step::StopUnit { unit } => systemd::stop_unit(ctx, progress.account(action)?, unit),
        Step::ReloadManager => systemd::reload_manager(ctx, progress.account(action)?),
        Step::Finish { terminal } => Err(Ended::With(terminal.clone())),
    }
}
