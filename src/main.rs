//! Entry point: parse the command line, hand the job to `commands::run`,
//! print the error chain (`{:#}`, escaped like every line of ours) and exit
//! as `errors` maps the result (0/1/2).

use std::process::ExitCode;

use clap::Parser;

use hostenv_activate::adapters::systemd;
use hostenv_activate::cli::Cli;
use hostenv_activate::commands;
use hostenv_activate::model::text::escape;

fn main() -> ExitCode {
    // The bus helper (this binary re-executed as an environment's user)
    // takes no command line of its own: its request comes on stdin.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(systemd::HELPER_ARG)) {
        return systemd::helper_main();
    }
    match commands::run(&Cli::parse()) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("hostenv-activate: {}", escape(&format!("{e:#}")));
            e.exit().into()
        }
    }
}
