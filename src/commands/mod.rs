//! Each job of the binary wired to the real adapters: a deployment or its
//! dry run (`deploy`), `status` and `doctor`. The only place that knows
//! which concrete adapters exist; `main` only parses, dispatches, prints
//! the error chain and exits.

mod deploy;
mod doctor;
mod status;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::adapters::journal::FileJournal;
use crate::adapters::lock::FileLock;
use crate::adapters::log::Logger;
use crate::cli::OutputFormat;
use crate::config::StatusConfig;
use crate::ports::{LockHolder, RunLock};

pub use deploy::deploy;
pub use doctor::doctor;
pub use status::status;

/// Writes `report` to standard output, as `render` has it or as JSON.
fn print<T: Serialize>(
    output: OutputFormat,
    report: &T,
    render: fn(&T) -> String,
    what: &str,
) -> anyhow::Result<()> {
    let rendered = match output {
        OutputFormat::Text => render(report),
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .with_context(|| format!("cannot write the {what}"))
}

/// The journal `status` and `doctor` read: the node's, or every node's
/// when no node name is set. Read only.
fn journal_to_read(config: &StatusConfig, log: Arc<Logger>) -> FileJournal {
    match &config.node {
        Some(node) => FileJournal::reader(&config.state_dir, node.clone(), log),
        None => FileJournal::all_nodes(&config.state_dir, log),
    }
}

/// Who holds the run lock now, or why that cannot be told.
fn lock_holder(path: &Path) -> Result<Option<LockHolder>, String> {
    FileLock::new(path).holder().map_err(|e| format!("{e:#}"))
}
