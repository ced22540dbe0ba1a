//! Entry point: parse the command line, wire the real adapters, run, print
//! the outcome (error chains with `{:#}`) and exit 0/1/2 (`errors::Exit`).
//! This is the only place that knows which concrete adapters exist.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use hostenv_activate::adapters::{
    clock::SystemClock, comin_store, http::HttpProvider, journal::FileJournal, lock::FileLock,
    log::Logger, plan_store::RunPlanStore, process::ProcessRunner, programs::UserProgramsAdapter,
    read_only::ReadOnlySystemd, signals, systemd::UserBus, token, users::SystemUsers,
};
use hostenv_activate::cli::{Cli, OutputFormat};
use hostenv_activate::config::{self, Config, Mode};
use hostenv_activate::docs;
use hostenv_activate::dry_run::{self, CommitSource};
use hostenv_activate::engine::{self, Outcome, Ports};
use hostenv_activate::errors::Exit;
use hostenv_activate::model::CominStatus;
use hostenv_activate::ports::{Cancel, Level, Log, LogFields};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(what) = cli.generate {
        let mut out = std::io::stdout().lock();
        return match docs::generate(what, &mut out).and_then(|()| out.flush()) {
            Ok(()) => Exit::Ok.into(),
            Err(e) => {
                eprintln!("hostenv-activate: cannot write {what:?}: {e}");
                Exit::Failed.into()
            }
        };
    }
    let sha = match config::requested_sha(&cli) {
        Ok(sha) => sha,
        Err(e) => return usage(&e),
    };
    if sha.is_none() && !cli.dry_run {
        eprintln!(
            "hostenv-activate: COMIN_GIT_SHA is not set (and no --sha given): no deployment to act on, nothing to do"
        );
        return Exit::Ok.into();
    }
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    match run(&config, sha) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("hostenv-activate: {e:#}");
            Exit::Failed.into()
        }
    }
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("hostenv-activate: {e}");
    Exit::Usage.into()
}

fn run(config: &Config, sha: Option<String>) -> anyhow::Result<Exit> {
    // The run deadline counts from here.
    let started_at = jiff::Timestamp::now();
    let deadline = std::time::Instant::now() + config.run_timeout;
    let cancel = Cancel::new();
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
            let comin = dry_run::comin_status(config.comin.clone(), recorded);
            let settings = config.settings(sha, comin, started_at);
            dry_run(config, settings, source, output, &cancel, &log, deadline)
        }
        Mode::Run => {
            let sha = sha.context("no commit to deploy: set COMIN_GIT_SHA or pass --sha")?;
            let comin = config.comin.clone().unwrap_or(CominStatus::Done);
            let settings = config.settings(sha, comin, started_at);
            let clock = SystemClock::new(cancel.clone());
            let provider = provider(config, &settings, &log, &cancel, &clock, deadline)?;
            let users = SystemUsers::new();
            let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));
            let systemd = UserBus::new();
            let plans = RunPlanStore::new();
            let journal = FileJournal::new(&config.state_dir, config.node.clone(), log.clone());
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
            let outcome = engine::run(&settings, ports);
            let level = match outcome {
                Outcome::Failed(_) => Level::Error,
                _ => Level::Info,
            };
            log.line(level, &fields, outcome.message());
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
    deadline: std::time::Instant,
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
            .ending_by(deadline),
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
    deadline: std::time::Instant,
) -> anyhow::Result<Exit> {
    let clock = SystemClock::new(cancel.clone());
    let provider = provider(config, &settings, log, cancel, &clock, deadline)?;
    let users = SystemUsers::new();
    let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));
    let systemd = ReadOnlySystemd(UserBus::without_starting_managers());
    let journal = FileJournal::reader(&config.state_dir, config.node.clone(), log.clone());
    let lock = FileLock::new(&config.lock_file);
    let world = dry_run::Preflight {
        provider: &provider,
        users: &users,
        systemd: &systemd,
        programs: &programs,
        journal: &journal,
        lock: &lock,
    };
    let report = dry_run::report(&settings, source, world);
    let rendered = match output {
        OutputFormat::Text => dry_run::render_text(&report),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .context("cannot write the dry-run report")?;
    Ok(Exit::passed(report.ok))
}
