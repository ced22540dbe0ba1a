//! `hostenv-activate status`, wired: the journal and the lock read with
//! the real adapters, no network, then shown by `crate::status`.

use std::sync::Arc;

use crate::adapters::log::Logger;
use crate::cli::Cli;
use crate::config::StatusConfig;
use crate::errors::{Error, Exit};
use crate::status;

use super::{journal_to_read, lock_holder, print};

/// `hostenv-activate status`: the journal and the lock, no network.
pub fn status(cli: &Cli) -> Result<Exit, Error> {
    let config = StatusConfig::from_cli(cli)?;
    let journal = journal_to_read(&config, Arc::new(Logger::system()));
    let report = status::gather(
        config.node.as_ref().map(|n| n.as_str()),
        &config.state_dir.display().to_string(),
        &journal.scan(),
        lock_holder(&config.lock_file),
    );
    print(config.output, &report, status::render_text, "status report")?;
    Ok(Exit::Ok)
}
