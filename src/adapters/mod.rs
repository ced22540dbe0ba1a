//! The real effects behind the traits in `ports`: one module per effect.
//! Adapters never call into the engine.

pub mod clock;
pub mod comin_store;
pub mod creds;
pub mod files;
pub mod http;
pub mod journal;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod plan_store;
pub mod process;
pub mod programs;
pub mod read_only;
pub mod reaper;
pub mod signals;
pub mod systemd;
pub mod token;
pub mod users;
