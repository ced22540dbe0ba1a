//! Wire and domain types: what the provider sends, what we post back, and the
//! names that come from the network. No I/O lives here.

pub mod event;
pub mod intent;
pub mod names;
pub mod snapshot;

pub use event::{
    BackupPayload, DeployStatus, EventPayload, NodeEvent, Phase, ProgramFailure, RestorePlan,
    Status, UnitFailure,
};
pub use intent::{validate_intent, Action, Intent, IntentEnvelope, IntentError, JobId, Op};
pub use names::{MigrationKey, NameError, NodeName, UserName};
