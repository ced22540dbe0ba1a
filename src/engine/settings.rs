//! What the engine is told before a run, already validated, and the one
//! place each default lives (the command line shows these same values).

use std::time::Duration;

use crate::model::{CominStatus, NodeName};

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
    /// Between two intent lookups while the provider answers 404.
    pub intent_poll: Duration,
    /// Between two polls for another node's event.
    pub peer_poll: Duration,
    pub retry: RetryPolicy,
}

impl Settings {
    pub const DEFAULT_TARGET_OBSERVE_TIMEOUT: Duration = Duration::from_secs(120);
    pub const DEFAULT_INTENT_WAIT: Duration = Duration::from_secs(30);
    /// behaviour.md: a 404 intent lookup is retried every 2 s.
    pub const INTENT_POLL: Duration = Duration::from_secs(2);
    /// Between two polls for another node's event.
    pub const PEER_POLL: Duration = Duration::from_secs(2);

    /// Settings with every default, for `node` performing `sha`.
    pub fn new(node: NodeName, sha: String, action_timeout: Duration) -> Self {
        Settings {
            node,
            sha,
            comin: CominStatus::Done,
            action_timeout,
            target_observe_timeout: Self::DEFAULT_TARGET_OBSERVE_TIMEOUT,
            intent_wait: Self::DEFAULT_INTENT_WAIT,
            intent_poll: Self::INTENT_POLL,
            peer_poll: Self::PEER_POLL,
            retry: RetryPolicy::default(),
        }
    }
}
