//! Posting events: every step becomes one `NodeEvent`, delivered with bounded
//! retries (`retry`); a provider answer that must end the run becomes a
//! [`Stop`].

use crate::model::{Action, EventPayload, JobId, NodeEvent, Phase, Status, Terminal};
use crate::ports::{Level, LogFields, MessageId, Ports, ProviderError};

use crate::engine::stop::Stop;
use crate::engine::{retry, Settings};

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
