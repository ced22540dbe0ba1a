//! Entry point: parse the command line, wire the real adapters, run, print
//! the outcome (error chains with `{:#}`) and exit 0/1/2. This is the only
//! place that knows which concrete adapters exist.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use hostenv_activate::adapters::{
    clock::SystemClock, http::HttpProvider, log::Logger, plan_store::RunPlanStore,
    process::ProcessRunner, programs::UserProgramsAdapter, read_only::ReadOnlySystemd, signals,
    systemd::UserBus, token, users::SystemUsers,
};
use hostenv_activate::cli::{Cli, OutputFormat};
use hostenv_activate::config::{self, Config};
use hostenv_activate::engine::{self, Outcome, Ports, Settings};
use hostenv_activate::errors::Exit;
use hostenv_activate::ports::{Cancel, Level, Log, LogFields};
use hostenv_activate::{docs, dry_run};

/// How long the token file may take to appear (sops-nix renders it late at boot).
const TOKEN_WAIT: Duration = Duration::from_secs(30);

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
    let Some(sha) = config::requested_sha(&cli) else {
        eprintln!(
            "hostenv-activate: COMIN_GIT_SHA is not set (and no --sha given): no deployment to act on, nothing to do{}",
            if cli.dry_run { "; pass --sha <commit> to see what a deployment of that commit would do" } else { "" }
        );
        return Exit::Ok.into();
    };
    let config = match Config::from_cli(&cli, sha) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hostenv-activate: {e}");
            return Exit::Usage.into();
        }
    };
    match run(&config) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("hostenv-activate: {e:#}");
            Exit::Failed.into()
        }
    }
}

fn run(config: &Config) -> anyhow::Result<Exit> {
    let cancel = Cancel::new();
    signals::install(&cancel).context("cannot install the SIGTERM/SIGINT handler")?;
    let log = Arc::new(Logger::system());
    let clock = SystemClock::new(cancel.clone());
    // No run deadline exists yet: the wait is bounded by TOKEN_WAIT and cancel.
    let token = token::read_token(
        &config.token_file,
        &clock,
        log.as_ref(),
        &cancel,
        TOKEN_WAIT,
        None,
    )?;
    let provider = HttpProvider::new(&config.api_base, config.node.clone(), token)?
        .stopping_with(cancel.clone());
    let users = SystemUsers::new();
    let programs = UserProgramsAdapter::new(ProcessRunner::new(log.clone()));

    if config.dry_run {
        let systemd = ReadOnlySystemd(UserBus::without_starting_managers());
        let world = dry_run::Preflight {
            provider: &provider,
            users: &users,
            systemd: &systemd,
            programs: &programs,
        };
        let report = dry_run::plan(&config.sha, config.node.as_str(), world);
        let rendered = match config.output {
            OutputFormat::Text => dry_run::render_text(&report),
            OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        };
        std::io::stdout()
            .lock()
            .write_all(rendered.as_bytes())
            .context("cannot write the dry-run report")?;
        return Ok(if report.ok { Exit::Ok } else { Exit::Failed });
    }

    let systemd = UserBus::new();
    let plans = RunPlanStore::new();
    let mut settings = Settings::new(
        config.node.clone(),
        config.sha.clone(),
        config.action_timeout,
    );
    settings.target_observe_timeout = config.target_observe_timeout;
    settings.intent_wait = config.intent_wait;
    settings.comin = config.comin.clone();
    let ports = Ports {
        provider: &provider,
        users: &users,
        systemd: &systemd,
        programs: &programs,
        plans: &plans,
        clock: &clock,
        log: log.as_ref(),
        cancel: &cancel,
    };
    let outcome = engine::run(&settings, ports);
    let fields = LogFields {
        node: Some(config.node.as_str()),
        ..LogFields::default()
    };
    let level = match outcome {
        Outcome::Failed(_) => Level::Error,
        _ => Level::Info,
    };
    log.line(level, &fields, outcome.message());
    Ok(outcome.exit())
}
