//! hostenv-activate: after each comin deployment, perform this node's deploy
//! intent (activate, reload, backup, restore, deactivate) as each
//! environment's user and report every step to the provider.
//!
//! Layout: `model` (wire and domain types and their parsers, no I/O),
//! `ports` (the traits the engine talks through), `engine` (the plan of a
//! run, a pure function, and its execution through the ports), `adapters`
//! (the real HTTP, D-Bus, process, restic, file, clock and log effects),
//! `dry_run` (the plan rendered, with the read-only `preflight` checks),
//! `status` and `doctor` (the operator's view of the node),
//! `cli`/`config`/`errors` (the command line, its checked configuration,
//! exit codes), `commands` (each job wired to the real adapters).

pub mod adapters;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docs;
pub mod doctor;
pub mod dry_run;
pub mod engine;
pub mod errors;
pub mod model;
pub mod ports;
pub mod preflight;
pub mod secret;
pub mod status;
