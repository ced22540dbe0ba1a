//! One module per action kind, and what they share: the action's context
//! (deadline, logging, provider calls) and its terminal result.

mod activate;
mod backup;
mod deactivate;
mod restore;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::model::{Action, EventPayload, Op, Status};
use crate::ports::{Account, Level, LogFields, ProviderError};

use super::report::{Reporter, Stop};
use super::wait::Waited;
use super::{retry, Ports, Settings};

/// The one terminal event of an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    Success(String, Option<EventPayload>),
    Failed(String, Option<EventPayload>),
    TimedOut(String, Option<EventPayload>),
}

impl Terminal {
    pub fn failed(message: impl Into<String>) -> Terminal {
        Terminal::Failed(message.into(), None)
    }

    pub fn into_parts(self) -> (Status, String, Option<EventPayload>) {
        match self {
            Terminal::Success(m, p) => (Status::Success, m, p),
            Terminal::Failed(m, p) => (Status::Failed, m, p),
            Terminal::TimedOut(m, p) => (Status::TimedOut, m, p),
        }
    }
}

/// What an action needs while it runs.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub ports: Ports<'a>,
    pub reporter: &'a Reporter<'a>,
    pub action: &'a Action,
    pub deadline: Timestamp,
}

impl<'a> Ctx<'a> {
    pub fn new(
        settings: &'a Settings,
        ports: Ports<'a>,
        reporter: &'a Reporter<'a>,
        action: &'a Action,
    ) -> Self {
        let timeout =
            SignedDuration::try_from(settings.action_timeout).unwrap_or(SignedDuration::MAX);
        let now = ports.clock.now();
        let deadline = now.checked_add(timeout).unwrap_or(Timestamp::MAX);
        Ctx {
            settings,
            ports,
            reporter,
            action,
            deadline,
        }
    }

    /// Time left before the action's deadline.
    pub fn remaining(&self) -> Duration {
        Duration::try_from(self.deadline.duration_since(self.ports.clock.now()))
            .unwrap_or(Duration::ZERO)
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
        };
        self.ports.log.line(level, &fields, message);
    }

    pub fn log_start(&self) {
        self.log(
            Level::Info,
            None,
            None,
            &format!("starting {} for {}", self.action.op, self.action.user),
        );
    }

    /// Posts a non-terminal event (`running`/`waiting`) for this action.
    pub fn post(&self, status: Status, message: &str) -> Result<(), Stop> {
        self.reporter.post_for(self.action, status, message, None)
    }

    /// `running` with the standard message.
    pub fn post_running(&self) -> Result<(), Stop> {
        self.post(
            Status::Running,
            &format!("Applying action for {}", self.action.user),
        )
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

    /// Between two polls: ends the wait on cancel or past the deadline,
    /// otherwise sleeps one poll interval (or what is left of the deadline).
    pub fn pause<T>(&self) -> Result<Option<Waited<T>>, Stop> {
        if self.ports.cancel.is_cancelled() {
            return Ok(Some(Waited::Interrupted));
        }
        let left = self.remaining();
        if left.is_zero() {
            return Ok(Some(Waited::TimedOut));
        }
        self.ports
            .clock
            .sleep(self.settings.poll_interval.min(left));
        Ok(None)
    }

    /// Resolves the action's user; unknown users and root are refused.
    pub fn account(&self) -> Result<Account, Terminal> {
        self.ports.users.lookup(&self.action.user).map_err(|e| {
            let msg = format!("{} for {} failed: {e:#}", self.action.op, self.action.user);
            self.log(Level::Error, None, None, &msg);
            Terminal::failed(msg)
        })
    }

    /// The terminal event for an action cut short by SIGTERM/SIGINT.
    pub fn interrupted(&self, during: &str) -> Terminal {
        Terminal::failed(format!(
            "Interrupted while {during} for {}: hostenv-activate received a stop signal",
            self.action.user
        ))
    }
}

/// Runs the action and returns its terminal event. Non-terminal events
/// (`running`, `waiting`) are posted on the way.
pub fn perform(ctx: &Ctx<'_>) -> Result<Terminal, Stop> {
    match ctx.action.op {
        Op::Activate | Op::Reload => activate::perform(ctx),
        Op::Backup => backup::perform(ctx),
        Op::Restore => restore::perform(ctx),
        Op::Deactivate => deactivate::perform(ctx),
    }
}

/// Unwraps a `Result<T, Terminal>` inside an action body.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(terminal) => return Ok(terminal),
        }
    };
}
pub(crate) use tri;
