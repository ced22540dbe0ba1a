//! Posting events: every step becomes one `NodeEvent`, delivered with bounded
//! retries, and a provider answer that must end the run becomes a `Stop`.

use std::fmt;

use crate::model::{Action, EventPayload, JobId, NodeEvent, Phase, Status, Terminal};
use crate::ports::{Level, LogFields, MessageId, ProviderError, Setting};

use crate::engine::{retry, Ports, Settings};

/// Why the run had to stop outside of an action's own result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The provider closed the job (409): nothing more may be done for it.
    JobClosed { job: JobId, step: String },
    /// The provider refused our token (403).
    Refused { step: String },
    /// The provider could not be reached or answered wrongly, after retries.
    Provider { step: String, error: ProviderError },
    /// SIGTERM/SIGINT while no action was running.
    Interrupted { step: String },
    /// The run deadline passed while no action was running.
    Deadline { reached: String, step: String },
    /// The node's run lock cannot be taken (not: another run holds it).
    Lock { why: String },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::JobClosed { job, step } => write!(
                f,
                "the provider closed job {job} (409) at step {step}: it finished, failed on another node or was superseded; no further action was run"
            ),
            Stop::Refused { step } => write!(
                f,
                "the provider refused this node's token (403) at step {step}: {}",
                ProviderError::Refused.advice().unwrap_or_default()
            ),
            Stop::Provider { step, error } => {
                write!(f, "provider call failed at step {step}: {}", error.advised())
            }
            Stop::Interrupted { step } => write!(
                f,
                "interrupted by a stop signal (SIGTERM/SIGINT: comin, systemd or an operator stopped the run) at step {step}"
            ),
            // The lock adapter's errors name the path and what to do.
            Stop::Lock { why } => write!(f, "cannot take this node's run lock: {why}"),
            Stop::Deadline { reached, step } => write!(
                f,
                "{reached} at step {step}; check what held the run up ({} sets the deadline)",
                Setting::RunTimeout
            ),
        }
    }
}

impl Stop {
    pub fn from_provider(job: Option<&JobId>, step: String, error: ProviderError) -> Stop {
        match (error, job) {
            (ProviderError::JobClosed, Some(job)) => Stop::JobClosed {
                job: job.clone(),
                step,
            },
            (ProviderError::Refused, _) => Stop::Refused { step },
            (error, _) => Stop::Provider { step, error },
        }
    }
}

/// Posts this node's events for one job.
pub struct Reporter<'a> {
    settings: &'a Settings,
    ports: Ports<'a>,
    job: JobId,
}

impl<'a> Reporter<'a> {
    pub fn new(settings: &'a Settings, ports: Ports<'a>, job: JobId) -> Self {
        Reporter {
            settings,
            ports,
            job,
        }
    }

    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// Posts an event for the node as a whole or for an action's phase.
    pub fn post(
        &self,
        phase: Phase,
        status: Status,
        message: &str,
        payload: Option<EventPayload>,
    ) -> Result<(), Stop> {
        self.post_with(phase, status, message, payload, LogFields::default(), true)
    }

    /// Posts an event for `action`, logging its user.
    pub fn post_for(
        &self,
        action: &Action,
        status: Status,
        message: &str,
        payload: Option<EventPayload>,
    ) -> Result<(), Stop> {
        let fields = LogFields {
            user: Some(action.user.as_str()),
            ..LogFields::default()
        };
        self.post_with(action.op.into(), status, message, payload, fields, true)
    }

    /// The terminal event of the node's run as a whole (phase `intent`).
    pub fn post_intent(&self, terminal: &Terminal) -> Result<(), Stop> {
        self.post(
            Phase::Intent,
            terminal.status.into(),
            &terminal.message,
            terminal.payload.clone(),
        )
    }

    /// The terminal event of `action`.
    pub fn post_terminal(&self, action: &Action, terminal: &Terminal) -> Result<(), Stop> {
        self.post_for(
            action,
            terminal.status.into(),
            &terminal.message,
            terminal.payload.clone(),
        )
    }

    /// `failed` for `action` in a single attempt, no retries: the last word
    /// on an action cut short while the provider is already failing.
    pub fn post_failed_once(&self, action: &Action, message: &str) -> Result<(), Stop> {
        let fields = LogFields {
            user: Some(action.user.as_str()),
            ..LogFields::default()
        };
        self.post_with(
            action.op.into(),
            Status::Failed,
            message,
            None,
            fields,
            false,
        )
    }

    fn post_with(
        &self,
        phase: Phase,
        status: Status,
        message: &str,
        payload: Option<EventPayload>,
        fields: LogFields<'_>,
        retry: bool,
    ) -> Result<(), Stop> {
        let event = NodeEvent::new(self.settings.node.clone(), status, phase, message, payload);
        let level = if status.is_failure() {
            Level::Error
        } else {
            Level::Info
        };
        let terminal = matches!(status, Status::Success | Status::Failed | Status::TimedOut);
        let fields = LogFields {
            node: Some(self.settings.node.as_str()),
            job: Some(self.job.as_str()),
            sha: Some(self.settings.sha.as_str()),
            op: Some(phase.as_str()),
            status: Some(status.as_str()),
            ..fields
        };
        let step = format!("{phase}/{status}");
        let post = || self.ports.provider.post_event(&self.job, &event);
        let delivered = if retry {
            retry::retrying(self.settings, self.ports, &step, post)
        } else {
            post()
        };
        match delivered {
            Ok(()) => {
                let fields = LogFields {
                    message_id: (terminal && phase != Phase::Intent)
                        .then_some(MessageId::ACTION_FINISHED),
                    ..fields
                };
                let line = format!("{status}: {message}");
                self.ports.log.line(level, &fields, &line);
                Ok(())
            }
            Err(e) => {
                // The operator still learns what happened, even though the
                // provider did not take the event; a terminal event stays in
                // the journal for a later run (unless the job is closed).
                let kept = terminal && retry && !matches!(e, ProviderError::JobClosed);
                let fields = LogFields {
                    message_id: kept.then_some(MessageId::EVENT_UNDELIVERED),
                    ..fields
                };
                let line = if kept {
                    format!("{status}: {message} (not delivered to the provider: {e}; kept in the journal, a later run delivers it)")
                } else {
                    format!("{status}: {message} (not delivered to the provider: {e})")
                };
                self.ports.log.line(Level::Error, &fields, &line);
                Err(Stop::from_provider(Some(&self.job), step, e))
            }
        }
    }
}
