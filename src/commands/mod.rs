//! Each job of the binary wired to the real adapters: a deployment or its
//! dry run (`deploy`), `status`, `doctor` and the generated documents, all
//! chosen by [`run`]. The only place that knows which concrete adapters
//! exist; `main` only parses, calls [`run`], prints the error chain and
//! exits as `errors` maps it.

mod deploy;
mod doctor;
mod status;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::adapters::clock::SystemClock;
use crate::adapters::journal::FileJournal;
use crate::adapters::lock::FileLock;
use crate::adapters::log::Logger;
use crate::adapters::process::ProcessRunner;
use crate::adapters::programs::UserProgramsAdapter;
use crate::adapters::read_only::{ReadOnlyPlans, ReadOnlySystemd};
use crate::adapters::systemd::UserBus;
use crate::adapters::users::SystemUsers;
use crate::cli::{Cli, Command, Generate, OutputFormat};
use crate::config::{self, Config, StatusConfig};
use crate::docs;
use crate::errors::{Error, Exit};
use crate::ports::{Cancel, LockHolder, Ports, Provider, RunLock};

pub use deploy::deploy;
pub use doctor::doctor;
pub use status::status;

/// A job that takes the configuration.
enum Job {
    Status,
    Doctor,
    /// A deployment of this commit, or a dry run (this commit or comin's
    /// newest).
    Deploy(Option<String>),
}

/// Does what `cli` asks for: the exit status, or the error that ends it.
pub fn run(cli: &Cli) -> Result<Exit, Error> {
    let job = match (cli.generate, &cli.command) {
        (Some(what), _) => return generate(what),
        (None, Some(Command::Status)) => Job::Status,
        (None, Some(Command::Doctor)) => Job::Doctor,
        (None, None) => match config::requested_sha(cli)? {
            // behaviour.md: no commit, nothing to do, before any
            // configuration check.
            None if !cli.dry_run => {
                eprintln!(
                    "hostenv-activate: COMIN_GIT_SHA is not set (and no --sha given): no deployment to act on, nothing to do"
                );
                return Ok(Exit::Ok);
            }
            sha => Job::Deploy(sha),
        },
    };
    config::check_combination(cli)?;
    match job {
        Job::Status => status(cli),
        Job::Doctor => doctor(cli),
        Job::Deploy(sha) => Ok(deploy(&Config::from_cli(cli)?, sha)?),
    }
}

/// Writes the man page, a completion script or another generated document.
fn generate(what: Generate) -> Result<Exit, Error> {
    let mut out = std::io::stdout().lock();
    docs::generate(what, &mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {what:?}"))?;
    Ok(Exit::Ok)
}

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

/// The real adapters of a job that only looks (the dry run, `doctor`): one
/// of each port but the provider, none able to change anything (the
/// journal is read only, systemd and the plan store refuse every change).
struct ReadOnly {
    users: SystemUsers,
    systemd: ReadOnlySystemd<UserBus>,
    programs: UserProgramsAdapter,
    plans: ReadOnlyPlans,
    journal: FileJournal,
    lock: FileLock,
    clock: SystemClock,
    log: Arc<Logger>,
    cancel: Cancel,
}

impl ReadOnly {
    /// Around `journal` (opened for reading) and the lock at `lock_file`.
    fn new(journal: FileJournal, lock_file: &Path, log: Arc<Logger>, cancel: Cancel) -> Self {
        ReadOnly {
            users: SystemUsers::new(),
            systemd: ReadOnlySystemd(UserBus::without_starting_managers()),
            programs: UserProgramsAdapter::new(ProcessRunner::new(log.clone())),
            plans: ReadOnlyPlans,
            journal,
            lock: FileLock::new(lock_file),
            clock: SystemClock::new(cancel.clone()),
            log,
            cancel,
        }
    }

    /// The bundle, with `provider`.
    fn ports<'a>(&'a self, provider: &'a dyn Provider) -> Ports<'a> {
        Ports {
            provider,
            users: &self.users,
            systemd: &self.systemd,
            programs: &self.programs,
            plans: &self.plans,
            journal: &self.journal,
            lock: &self.lock,
            clock: &self.clock,
            log: self.log.as_ref(),
            cancel: &self.cancel,
        }
    }
}
