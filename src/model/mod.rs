//! Wire and domain types: what the provider sends, what we post back, the
//! names that come from the network, and comin's view of a deployment. No
//! I/O lives here: every parser takes bytes or JSON and returns a typed
//! value or a typed error.

pub mod comin;
pub mod event;
pub mod intent;
pub mod journal;
pub mod names;
pub mod snapshot;
pub mod text;

pub use comin::CominStatus;
pub use event::{
    BackupPayload, DeployStatus, EventPayload, HealthFailure, NodeEvent, Phase, ProgramFailure,
    RestorePlan, Status, Terminal, TerminalStatus, UnhealthyUnit, UnitFailure,
};
pub use intent::{
    Action, ActionProblem, FetchedIntent, Intent, IntentDigest, IntentEnvelope, IntentError, JobId,
    Op,
};
pub use names::{MigrationKey, NameError, NodeName, UserName};

/// Characters of an outside value that a message repeats.
pub const SHOWN_CHARS: usize = 64;

/// `raw` cut to [`SHOWN_CHARS`] characters, with `…` and the full length
/// when it was longer: outside text never floods a message.
pub fn cut(raw: &str) -> String {
    let count = raw.chars().count();
    if count <= SHOWN_CHARS {
        raw.to_owned()
    } else {
        let head: String = raw.chars().take(SHOWN_CHARS).collect();
        format!("{head}… ({count} characters)")
    }
}

/// `raw` quoted and escaped for a message, cut like [`cut`].
pub fn shown(raw: &str) -> String {
    let count = raw.chars().count();
    if count <= SHOWN_CHARS {
        format!("{raw:?}")
    } else {
        let head: String = raw.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}… ({count} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_values_are_cut_for_messages() {
        assert_eq!(shown("node-a"), "\"node-a\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 120, "{s}");
        assert!(s.ends_with("… (10000 characters)"), "{s}");
        assert_eq!(cut("short"), "short");
        assert!(cut(&"é".repeat(100)).starts_with(&"é".repeat(64)));
    }
}
