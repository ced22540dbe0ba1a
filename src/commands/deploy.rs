//! A deployment, as comin's hook runs it, and its dry run: the engine (or
//! the dry run's report) wired to the real adapters, the run deadline
//! counting from the start, the metrics file written at the end.

use std::sync::Arc;

use anyhow::Context;

use crate::adapters::metrics::{self, RunMetrics};
use crate::adapters::{
    clock::SystemClock, comin_store, http::HttpProvider, journal::FileJournal, lock::FileLock,
    log::Logger, plan_store::RunPlanStore, process::ProcessRunner, programs::UserProgramsAdapter,
    signals, systemd::UserBus, token, users::SystemUsers,
};
use crate::cli::OutputFormat;
use crate::config::{Config, Mode};
use crate::dry_run::{self, CommitSource};
use crate::engine;
use crate::errors::Exit;
use crate::model::CominStatus;
use crate::ports::{Cancel, Level, Log, LogFields, Ports};

use super::{print, ReadOnly};

/// A deployment of `sha` (comin's hook), or with `--dry-run` what one would
/// do (`sha` or else comin's newest deployment).
pub fn deploy(config: &Config, sha: Option<String>) -> anyhow::Result<Exit> {
    let cancel = Cancel::new();
    // The run deadline counts from the settings' start, read on this clock.
    let clock = SystemClock::new(cancel.clone());
    signals::install(&cancel).context("cannot install the SIGTERM/SIGINT handler")?;
    let log = Arc::new(Logger::system());
    let fields = LogFields {
        node: Some(config.node.as_str()),
        ..LogFields::default()
    };
    if let Some(warning) = config.api_base.warning() {
        log.line(Level::Warn, &fields, &warning);
    }
    match config.mode {
        Mode::DryRun { output } => {
            let (sha, source, recorded) = match sha {
                Some(sha) => (sha, CommitSource::Given, None),
                None => newest_deployed_commit(config)?,
            };
            let comin = CominStatus::reported(config.comin.clone(), recorded);
            let settings = config.settings(sha, comin, &clock);
            dry_run(config, settings, source, output, &cancel, &log)
        }
        Mode::Run => {
            let sha = sha.context("no commit to deploy: set COMIN_GIT_SHA or pass --sha")?;
            let comin = CominStatus::reported(config.comin.clone(), None);
            let settings = config.settings(sha, comin, &clock);
            let journal = FileJournal::new(&config.state_dir, config.node.clone(), log.clone());
            let outcome = match provider(config, &settings, &log, &cancel, &clock) {
                Ok(provider) => {
                    let users = SystemUsers::new();
                    let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));
                    let systemd = UserBus::new()
                        .ending_by(settings.deadline())
                        .stopping_with(cancel.clone());
                    let plans = RunPlanStore::new();
                    let lock = FileLock::new(&config.lock_file);
                    let ports = Ports {
                        provider: &provider,
                        users: &users,
                        systemd: &systemd,
                        programs: &programs,
                        plans: &plans,
                        journal: &journal,
                        lock: &lock,
                        clock: &clock,
                        log: log.as_ref(),
                        cancel: &cancel,
                    };
                    engine::run(&settings, ports)
                }
                // The token file or the HTTP client: the run ends before
                // the engine starts, and says so where the others do.
                Err(e) => {
                    let outcome = engine::Outcome::Failed(format!("{e:#}"));
                    engine::announce_start(&settings, log.as_ref());
                    engine::announce_end(&settings, log.as_ref(), &outcome);
                    outcome
                }
            };
            if let Some(path) = &config.metrics_file {
                let metrics = RunMetrics::of_run(
                    &journal.records(),
                    std::process::id(),
                    outcome.is_success(),
                    settings.started_at,
                    jiff::Timestamp::now(),
                );
                if let Err(e) = metrics::write(path, &metrics) {
                    // The deployment's outcome stands; only the metrics are lost.
                    log.line(
                        Level::Warn,
                        &fields,
                        &format!("cannot write the metrics file: {e:#}"),
                    );
                }
            }
            Ok(Exit::of(&outcome))
        }
    }
}

/// The HTTP provider, once the token file has been read (waited for
/// within the run deadline).
fn provider(
    config: &Config,
    settings: &engine::Settings,
    log: &Logger,
    cancel: &Cancel,
    clock: &SystemClock,
) -> anyhow::Result<HttpProvider> {
    let token = token::read_token(
        &config.token_file,
        clock,
        log,
        cancel,
        token::DEFAULT_WAIT,
        Some(settings.deadline()),
    )?;
    Ok(
        HttpProvider::new(&config.api_base, config.node.clone(), token)?
            .stopping_with(cancel.clone())
            .ending_by(settings.deadline()),
    )
}

/// The commit of comin's newest deployment, where it came from, and what
/// comin recorded about its switch.
fn newest_deployed_commit(
    config: &Config,
) -> anyhow::Result<(String, CommitSource, Option<CominStatus>)> {
    let deployment = comin_store::newest(&config.comin_store).with_context(|| {
        "no commit to look at: COMIN_GIT_SHA is not set and comin's newest deployment cannot be read; \
         pass --sha <commit> (or --comin-store <path>)"
    })?;
    let source = CommitSource::CominStore {
        path: config.comin_store.display().to_string(),
        deployment: deployment.uuid.clone(),
        status: deployment.status.clone(),
        ended_at: deployment.ended_at.map(|t| t.to_string()),
        error_msg: deployment.error_msg.clone(),
    };
    Ok((deployment.commit.clone(), source, Some(deployment.switch())))
}

fn dry_run(
    config: &Config,
    settings: engine::Settings,
    source: CommitSource,
    output: OutputFormat,
    cancel: &Cancel,
    log: &Arc<Logger>,
) -> anyhow::Result<Exit> {
    let journal = FileJournal::reader(&config.state_dir, config.node.clone(), log.clone());
    let adapters = ReadOnly::new(journal, &config.lock_file, log.clone(), cancel.clone());
    let provider = provider(config, &settings, log, cancel, &adapters.clock)?;
    let report = dry_run::report(&settings, source, adapters.ports(&provider));
    print(output, &report, dry_run::render_text, "dry-run report")?;
    Ok(Exit::passed(report.ok))
}
