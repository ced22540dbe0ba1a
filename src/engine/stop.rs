//! Why a run stops outside of an action's own result (the provider closed
//! the job or refused us, a signal, the deadline, the lock), and the one
//! message each says.

use std::fmt;

use crate::model::JobId;
use crate::ports::{ProviderError, Setting};

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
