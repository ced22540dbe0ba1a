//! What the engine is told before a run, already validated, and the one
//! place each default lives (the command line shows these same values).

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::model::{CominStatus, NodeName};
use crate::ports::{Clock, Deadline};

use super::retry::RetryPolicy;

/// Everything the engine needs to know, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub node: NodeName,
    pub sha: String,
    /// The system switch's result, as comin reported it.
    pub comin: CominStatus,
    pub action_timeout: Duration,
    pub target_observe_timeout: Duration,
    pub intent_wait: Duration,
    /// How long the services may take to settle after `activate` exits 0
    /// (zero: no health check).
    pub health_timeout: Duration,
    /// How long the whole run may take, from `started`.
    pub run_timeout: Duration,
    /// When the run started, on the monotonic clock: the run deadline
    /// counts from here.
    pub started: Instant,
    /// The same moment on the wall clock.
    pub started_at: Timestamp,
    /// This process, as the journal and the lock name it.
    pub pid: u32,
    /// Between two intent lookups while the provider answers 404.
    pub intent_poll: Duration,
    /// Between two polls for another node's event.
    pub peer_poll: Duration,
    pub retry: RetryPolicy,
}

impl Settings {
    pub const DEFAULT_TARGET_OBSERVE_TIMEOUT: Duration = Duration::from_secs(120);
    pub const DEFAULT_INTENT_WAIT: Duration = Duration::from_secs(30);
    pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
    /// behaviour.md: a 404 intent lookup is retried every 2 s.
    pub const INTENT_POLL: Duration = Duration::from_secs(2);
    /// behaviour.md: another node's event is noticed within 1 s.
    pub const PEER_POLL: Duration = Duration::from_secs(1);
    /// Between two attempts to take the run lock.
    pub const LOCK_POLL: Duration = Duration::from_millis(500);

    /// Settings with every default, for `node` performing `sha`, the run
    /// starting now on `clock` (read once, on both of its clocks).
    pub fn new(node: NodeName, sha: String, action_timeout: Duration, clock: &dyn Clock) -> Self {
        Settings {
            node,
            sha,
            comin: CominStatus::ASSUMED,
            action_timeout,
            target_observe_timeout: Self::DEFAULT_TARGET_OBSERVE_TIMEOUT,
            intent_wait: Self::DEFAULT_INTENT_WAIT,
            health_timeout: Self::DEFAULT_HEALTH_TIMEOUT,
            run_timeout: Self::DEFAULT_RUN_TIMEOUT,
            started: clock.instant(),
            started_at: clock.now(),
            pid: 0,
            intent_poll: Self::INTENT_POLL,
            peer_poll: Self::PEER_POLL,
            retry: RetryPolicy::default(),
        }
    }
}

impl Settings {
    /// When the whole run must be over: `run_timeout` after the run's
    /// start, on the monotonic clock.
    pub fn deadline(&self) -> Deadline {
        Deadline::from(self.started, self.run_timeout)
    }

    /// The start of every message about the run deadline.
    pub fn deadline_reached(&self) -> String {
        format!("run deadline of {} s reached", self.run_timeout.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// behaviour.md: the run reacts to another node's event within 1 s, so
    /// it polls at least every second; the intent lookup every 2 s.
    #[test]
    fn polls_are_as_often_as_the_contract_says() {
        assert!(Settings::PEER_POLL <= Duration::from_secs(1));
        assert_eq!(Settings::INTENT_POLL, Duration::from_secs(2));
    }
}
