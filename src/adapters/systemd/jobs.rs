//! Waiting for systemd jobs and other bounded conditions: `JobRemoved`
//! signals forwarded to a channel, matched by job path, with deadline and
//! cancel checks every slice.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::Duration;

use zbus::message::Type as MessageType;
use zbus::zvariant::OwnedObjectPath;
use zbus::Message;

use super::MANAGER_INTERFACE;
use crate::ports::{Cancel, Deadline, Over};

/// A `JobRemoved(id, job, unit, result)` from the manager (`owner`), or `None`.
pub(super) fn job_removed(message: &Message, owner: &str) -> Option<JobRemoved> {
    let header = message.header();
    let ours = message.message_type() == MessageType::Signal
        && header.sender().is_some_and(|s| s.as_str() == owner)
        && header
            .interface()
            .is_some_and(|i| i.as_str() == MANAGER_INTERFACE)
        && header.member().is_some_and(|m| m.as_str() == "JobRemoved");
    if !ours {
        return None;
    }
    let (_id, job, _unit, result): (u32, OwnedObjectPath, String, String) =
        message.body().deserialize().ok()?;
    Some(JobRemoved {
        job: job.as_str().to_owned(),
        result,
    })
}

pub(super) struct JobRemoved {
    pub(super) job: String,
    pub(super) result: String,
}

/// How a wait for one job ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum JobEnd {
    /// `JobRemoved` with this result.
    Removed(String),
    Deadline,
    Cancelled,
    /// The connection closed (the manager or its bus went away).
    Lost,
}

pub(super) struct JobWatch {
    pub(super) rx: Receiver<JobRemoved>,
}

impl JobWatch {
    pub(super) fn wait_for(
        &self,
        job: &OwnedObjectPath,
        deadline: Deadline,
        cancel: Option<&Cancel>,
    ) -> JobEnd {
        let job = job.as_str();
        loop {
            let pause = match deadline.slice(Deadline::SLICE, cancel) {
                Ok(pause) => pause,
                // A job that ended just now still counts as ended.
                Err(over) => {
                    return self.drain_for(job).unwrap_or(match over {
                        Over::Stopped => JobEnd::Cancelled,
                        Over::Reached => JobEnd::Deadline,
                    })
                }
            };
            match self.rx.recv_timeout(pause) {
                Ok(removed) if removed.job == job => return JobEnd::Removed(removed.result),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return JobEnd::Lost,
            }
        }
    }

    pub(super) fn drain_for(&self, job: &str) -> Option<JobEnd> {
        loop {
            match self.rx.try_recv() {
                Ok(removed) if removed.job == job => return Some(JobEnd::Removed(removed.result)),
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
            }
        }
    }
}

/// Why a bounded wait gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GaveUp {
    Deadline,
    Cancelled,
}

impl GaveUp {
    pub(super) fn describe(self, waited: Duration) -> String {
        match self {
            GaveUp::Deadline if waited.is_zero() => "did not appear in time".to_owned(),
            GaveUp::Deadline => format!("did not appear within {}s", waited.as_secs()),
            GaveUp::Cancelled => "was still missing when this run was interrupted".to_owned(),
        }
    }
}

/// Polls `ready` every 100 ms until it holds, the deadline passes or
/// `cancel` is set. `ready` is always tried at least once.
pub(super) fn wait_until(
    deadline: Deadline,
    cancel: Option<&Cancel>,
    mut ready: impl FnMut() -> bool,
) -> Result<(), GaveUp> {
    loop {
        if ready() {
            return Ok(());
        }
        match deadline.slice(Deadline::SLICE, cancel) {
            Ok(pause) => thread::sleep(pause),
            Err(Over::Stopped) => return Err(GaveUp::Cancelled),
            Err(Over::Reached) => return Err(GaveUp::Deadline),
        }
    }
}
