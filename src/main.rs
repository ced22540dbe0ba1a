//! Entry point: parse the command line, wire the real adapters, run, print
//! the outcome (error chains with `{:#}`) and exit 0/1/2 (`errors::Exit`).
//! This is the only place that knows which concrete adapters exist.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use hostenv_activate::adapters::metrics::{self, ActionMetric, RunMetrics};
use hostenv_activate::adapters::{
    clock::SystemClock, comin_store, http::HttpProvider, journal::FileJournal, lock::FileLock,
    log::Logger, plan_store::RunPlanStore, process::ProcessRunner, programs::UserProgramsAdapter,
    read_only::ReadOnlySystemd, signals, systemd::UserBus, token, users::SystemUsers,
};
use hostenv_activate::cli::{Cli, Command, OutputFormat};
use hostenv_activate::config::{self, Config, Mode, StatusConfig};
use hostenv_activate::docs;
use hostenv_activate::doctor::{self, Facts, TokenFacts};
use hostenv_activate::dry_run::{self, CommitSource};
use hostenv_activate::engine::{self, Ports};
use hostenv_activate::errors::ConfigError;
use hostenv_activate::errors::Exit;
use hostenv_activate::model::CominStatus;
use hostenv_activate::ports::{Cancel, Level, Log, LogFields, RunLock};

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
    if let Err(e) = config::check_combination(&cli) {
        return usage(&e);
    }
    match cli.command {
        Some(Command::Status) => return finish(status(&cli)),
        Some(Command::Doctor) => return finish(doctor(&cli)),
        None => {}
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
    finish(run(&config, sha))
}

/// Exits as `result` says; an error is printed with its chain.
fn finish(result: anyhow::Result<Exit>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            match e.downcast_ref::<ConfigError>() {
                Some(usage_error) => return usage(usage_error),
                None => eprintln!("hostenv-activate: {e:#}"),
            }
            Exit::Failed.into()
        }
    }
}

/// `hostenv-activate status`: the journal and the lock, no network.
fn status(cli: &Cli) -> anyhow::Result<Exit> {
    let config = StatusConfig::from_cli(cli)?;
    let log: Arc<Logger> = Arc::new(Logger::system());
    let journal = match &config.node {
        Some(node) => FileJournal::reader(&config.state_dir, node.clone(), log),
        None => FileJournal::all_nodes(&config.state_dir, log),
    };
    let holder = FileLock::new(&config.lock_file)
        .holder()
        .map_err(|e| format!("{e:#}"));
    let (records, problems) = journal.records_and_problems();
    let report = hostenv_activate::status::gather(
        config.node.as_ref().map(|n| n.as_str()),
        &config.state_dir.display().to_string(),
        (&records, problems),
        holder,
    );
    let rendered = match config.output {
        OutputFormat::Text => hostenv_activate::status::render_text(&report),
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .context("cannot write the status report")?;
    Ok(Exit::Ok)
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
            let journal = FileJournal::new(&config.state_dir, config.node.clone(), log.clone());
            let outcome = match provider(config, &settings, &log, &cancel, &clock, deadline) {
                Ok(provider) => {
                    let users = SystemUsers::new();
                    let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));
                    let systemd = UserBus::new()
                        .ending_by(deadline)
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
                let finished = jiff::Timestamp::now();
                let metrics = run_metrics(&journal, &outcome, started_at, finished);
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

/// `hostenv-activate doctor`: gathers the file facts with the real
/// adapters, read-only, and lets `doctor` judge them.
fn doctor(cli: &Cli) -> anyhow::Result<Exit> {
    let log: Arc<Logger> = Arc::new(Logger::system());
    let paths = StatusConfig::from_cli(cli)?;
    let config = Config::from_cli(cli);
    let node = paths.node.as_ref().map(|n| n.to_string());
    let (summary, token) = match &config {
        Ok(c) => (
            Ok(format!(
                "valid: node {}, provider {}, action timeout {}s, run timeout {}s",
                c.node,
                c.api_base,
                c.action_timeout.as_secs(),
                c.run_timeout.as_secs()
            )),
            token_facts(&c.token_file),
        ),
        Err(e) => (Err(e.to_string()), (TokenFacts::NotConfigured, None)),
    };
    let (token_shown, token) = token;
    let provider = match (&config, token) {
        (Ok(c), Some(t)) => HttpProvider::new(&c.api_base, c.node.clone(), t).ok(),
        _ => None,
    };
    let store_path = match &config {
        Ok(c) => c.comin_store.clone(),
        Err(_) => std::path::PathBuf::from(cli.comin_store.to_string_lossy().into_owned()),
    };
    let store = comin_store::newest(&store_path).map_err(|e| format!("{e:#}"));
    let journal = match &paths.node {
        Some(node) => FileJournal::reader(&paths.state_dir, node.clone(), log.clone()),
        None => FileJournal::all_nodes(&paths.state_dir, log.clone()),
    };
    let (records, mut unreadable) = journal.records_and_problems();
    // A journal that cannot even be listed is the state directory's problem.
    let unlisted = unreadable
        .iter()
        .position(|p| p.starts_with("cannot list"))
        .map(|i| unreadable.remove(i));
    let facts = Facts {
        node,
        config: summary,
        base_url_warning: config.as_ref().ok().and_then(|c| c.api_base.warning()),
        token: token_shown,
        comin_store: (store_path.display().to_string(), store),
        state_dir: match unlisted {
            Some(why) => Err(why),
            None => journal.check_dir(),
        },
        records,
        unreadable,
        lock: FileLock::new(&paths.lock_file)
            .holder()
            .map_err(|e| format!("{e:#}")),
        metrics: config
            .as_ref()
            .ok()
            .and_then(|c| c.metrics_file.as_deref())
            .map(metrics_destination),
        lingering: Box::new(|user| {
            std::path::Path::new("/var/lib/systemd/linger")
                .join(user.as_str())
                .exists()
        }),
    };
    let users = SystemUsers::new();
    let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));
    let systemd = ReadOnlySystemd(UserBus::without_starting_managers());
    let diagnosis = doctor::examine(
        facts,
        doctor::Ports {
            provider: provider
                .as_ref()
                .map(|p| p as &dyn hostenv_activate::ports::Provider),
            users: &users,
            systemd: &systemd,
            programs: &programs,
        },
    );
    let rendered = match paths.output {
        OutputFormat::Text => doctor::render_text(&diagnosis),
        OutputFormat::Json => serde_json::to_string_pretty(&diagnosis)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(rendered.as_bytes())
        .context("cannot write the doctor's report")?;
    Ok(Exit::passed(diagnosis.ok))
}

/// What reading the token file now, without waiting, finds, and the token
/// when it is usable.
fn token_facts(path: &std::path::Path) -> (TokenFacts, Option<hostenv_activate::secret::Token>) {
    /// Keeps the warnings a run would log about the file.
    #[derive(Default)]
    struct Warnings(std::cell::RefCell<Vec<String>>);
    impl Log for Warnings {
        fn line(&self, _: Level, _: &LogFields<'_>, message: &str) {
            self.0.borrow_mut().push(message.to_owned());
        }
    }
    let clock = SystemClock::new(Cancel::new());
    let warnings = Warnings::default();
    let shown = path.display().to_string();
    let read = token::read_token(
        path,
        &clock,
        &warnings,
        &Cancel::new(),
        std::time::Duration::ZERO,
        None,
    );
    match read {
        Ok(t) => (
            TokenFacts::Read {
                path: shown,
                bytes: t.expose().len(),
                warnings: warnings.0.into_inner(),
            },
            Some(t),
        ),
        Err(e) => (
            TokenFacts::Unusable {
                path: shown,
                why: format!("{e:#}"),
            },
            None,
        ),
    }
}

/// What this run did, for the metrics file: its outcome and the actions of
/// the job it worked on (its journal record: the one whose newest run is
/// this process), in the intent's order.
fn run_metrics(
    journal: &FileJournal,
    outcome: &engine::Outcome,
    started: jiff::Timestamp,
    finished: jiff::Timestamp,
) -> RunMetrics {
    use hostenv_activate::model::journal::ActionState;
    let records = journal.records();
    let pid = std::process::id();
    let actions = records
        .iter()
        .find(|r| {
            // This process's run, not one of an earlier boot with its pid.
            r.runs
                .last()
                .is_some_and(|run| run.pid == pid && run.started_at >= started)
        })
        .map(|record| {
            record
                .actions
                .iter()
                .map(|a| {
                    let (from, to, success) = match &a.state {
                        ActionState::Started { started_at } => (*started_at, finished, false),
                        ActionState::Finished {
                            started_at,
                            finished_at,
                            event,
                            ..
                        } => (*started_at, *finished_at, event.terminal.is_success()),
                    };
                    ActionMetric {
                        op: a.op.to_string(),
                        user: a.user.to_string(),
                        duration: duration_between(from, to),
                        success,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    RunMetrics {
        finished_at: finished,
        success: !matches!(outcome, engine::Outcome::Failed(_)),
        duration: duration_between(started, finished),
        actions,
        undelivered_events: records.iter().map(|r| r.pending().len()).sum(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

fn duration_between(from: jiff::Timestamp, to: jiff::Timestamp) -> std::time::Duration {
    std::time::Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// Whether node_exporter's textfile collector will find the metrics file.
fn metrics_destination(path: &std::path::Path) -> Result<String, String> {
    let shown = path.display();
    if path.extension().is_none_or(|e| e != "prom") {
        return Err(format!(
            "{shown} does not end in .prom: the textfile collector reads only *.prom files"
        ));
    }
    match path.parent().map(std::fs::metadata) {
        Some(Ok(meta)) if meta.is_dir() => Ok(format!("{shown} (its directory exists)")),
        _ => Err(format!(
            "the directory of {shown} does not exist; runs will log that they cannot write it"
        )),
    }
}
