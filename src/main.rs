//! Entry point: parse the command line, hand the job to `commands`, print
//! the error chain (`{:#}`, escaped like every line of ours) and exit 0/1/2
//! (`errors::Exit`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use hostenv_activate::adapters::systemd;
use hostenv_activate::cli::{Cli, Command};
use hostenv_activate::commands;
use hostenv_activate::config::{self, Config};
use hostenv_activate::docs;
use hostenv_activate::errors::{ConfigError, Exit};
use hostenv_activate::model::text::escape;

fn main() -> ExitCode {
    // The bus helper (this binary re-executed as an environment's user)
    // takes no command line of its own: its request comes on stdin.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(systemd::HELPER_ARG)) {
        return systemd::helper_main();
    }
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
    if let Some(command) = cli.command {
        if let Err(e) = config::check_combination(&cli) {
            return usage(&e);
        }
        return finish(match command {
            Command::Status => commands::status(&cli),
            Command::Doctor => commands::doctor(&cli),
        });
    }
    let sha = match config::requested_sha(&cli) {
        Ok(sha) => sha,
        Err(e) => return usage(&e),
    };
    // behaviour.md: no commit, nothing to do, before any configuration check.
    if sha.is_none() && !cli.dry_run {
        eprintln!(
            "hostenv-activate: COMIN_GIT_SHA is not set (and no --sha given): no deployment to act on, nothing to do"
        );
        return Exit::Ok.into();
    }
    if let Err(e) = config::check_combination(&cli) {
        return usage(&e);
    }
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => return usage(&e),
    };
    finish(commands::deploy(&config, sha))
}

/// Exits as `result` says; an error is printed with its chain.
fn finish(result: anyhow::Result<Exit>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            match e.downcast_ref::<ConfigError>() {
                Some(usage_error) => return usage(usage_error),
                None => eprintln!("hostenv-activate: {}", escape(&format!("{e:#}"))),
            }
            Exit::Failed.into()
        }
    }
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("hostenv-activate: {}", escape(&e.to_string()));
    Exit::Usage.into()
}
