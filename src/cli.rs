//! The command line: every setting is a flag and an environment variable
//! (flags win). Also the single source for `--help`, the man page and the
//! shell completions. Values are kept raw here (`OsString`, so that even a
//! value that is not UTF-8 reaches `config`) and checked in `config`, so a
//! bad value is reported naming both its variable and its flag.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

use crate::adapters::{journal, lock};
use crate::engine::Settings;

pub const AFTER_HELP: &str = "\
Without a command: perform the deployment of COMIN_GIT_SHA (what comin runs),
or with --dry-run show what it would do. Configuration comes from the
environment (comin's postDeploymentCommand wrapper exports it); each variable
also has a flag, and a flag wins over its variable.
COMIN_GIT_SHA unset or empty (and no --sha): nothing to do, exit 0; with
--dry-run, the commit of comin's newest deployment (from --comin-store).

Exit status:
  0  success, or nothing to do (no COMIN_GIT_SHA, no intent for this node)
  1  a deployment action failed, the switch had failed, or the provider
     failed or refused us; for --dry-run, a check failed or the run would fail
  2  usage or configuration error (the message names the variable and flag)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Brings this node's hosted environments to the state the provider's deploy
/// intent asks for, after a comin deployment. Runs as root.
#[derive(Debug, Clone, Parser)]
#[command(name = "hostenv-activate", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Commit whose deploy intent to perform (set by comin).
    #[arg(
        long,
        global = true,
        env = "COMIN_GIT_SHA",
        value_name = "SHA",
        hide_env_values = true
    )]
    pub sha: Option<OsString>,

    /// This node's logical name, as the provider knows it. [required]
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_NODE_NAME",
        value_name = "NAME",
        hide_env_values = true
    )]
    pub node_name: Option<OsString>,

    /// Provider API base URL: https://..., http://... or unix:/path/to.sock;
    /// the API's /api/... paths are joined below it. [required]
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_API_BASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub api_base_url: Option<OsString>,

    /// File holding this node's bearer token (waited for up to 30 s). [required]
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_TOKEN_FILE",
        value_name = "PATH",
        hide_env_values = true
    )]
    pub token_file: Option<OsString>,

    /// Seconds one action may take. [required; the NixOS module sets 900]
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_ACTION_TIMEOUT",
        value_name = "SECONDS",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub action_timeout: Option<OsString>,

    /// Seconds a deactivate waits to see the target node at all.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
        value_name = "SECONDS",
        default_value_os_t = Settings::DEFAULT_TARGET_OBSERVE_TIMEOUT.as_secs().to_string().into(),
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub target_observe_timeout: OsString,

    /// Seconds to keep retrying when the provider has no intent yet (404).
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_INTENT_WAIT",
        value_name = "SECONDS",
        default_value_os_t = Settings::DEFAULT_INTENT_WAIT.as_secs().to_string().into(),
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub intent_wait: OsString,

    /// Seconds the whole run may take, from start to exit: every wait ends
    /// at it, and an action still running is ended as on its own timeout.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_RUN_TIMEOUT",
        value_name = "SECONDS",
        default_value_os_t = Settings::DEFAULT_RUN_TIMEOUT.as_secs().to_string().into(),
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub run_timeout: OsString,

    /// Seconds the environment's services may take to settle after the
    /// user's activate program exits 0: the units default.target and
    /// hostenv.target want must then run (none failed, none still
    /// activating), else the action fails. 0 turns the check off.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_HEALTH_TIMEOUT",
        value_name = "SECONDS",
        default_value_os_t = Settings::DEFAULT_HEALTH_TIMEOUT.as_secs().to_string().into(),
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub health_timeout: OsString,

    /// Directory of the run journal (one file per job), which lets a run
    /// resume after a crash without redoing finished work.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_STATE_DIR",
        value_name = "DIR",
        default_value = journal::DEFAULT_DIR,
        hide_env_values = true
    )]
    pub state_dir: OsString,

    /// The node's run lock: one run at a time; a second run waits for it.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_LOCK_FILE",
        value_name = "PATH",
        default_value = lock::DEFAULT_PATH,
        hide_env_values = true
    )]
    pub lock_file: OsString,

    /// Prometheus text file every run ends by writing (atomically), for
    /// node_exporter's textfile collector; unset: no metrics.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_METRICS_FILE",
        value_name = "PATH",
        hide_env_values = true
    )]
    pub metrics_file: Option<OsString>,

    /// Result of comin's system switch: `done` or `failed` (set by comin).
    #[arg(
        long,
        global = true,
        env = "COMIN_STATUS",
        value_name = "STATUS",
        hide_env_values = true
    )]
    pub comin_status: Option<OsString>,

    /// comin's error message; non-empty means the switch failed, whatever
    /// COMIN_STATUS says (set by comin).
    #[arg(
        long,
        global = true,
        env = "COMIN_ERROR_MSG",
        value_name = "TEXT",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub comin_error_msg: Option<OsString>,

    /// comin's store file: where --dry-run without a commit finds comin's
    /// newest deployment.
    #[arg(
        long,
        global = true,
        env = "HOSTENV_COMIN_STORE",
        value_name = "PATH",
        default_value = "/var/lib/comin/store.json",
        hide_env_values = true
    )]
    pub comin_store: OsString,

    /// Show what the deployment would do and check its preconditions;
    /// posts nothing, starts nothing, writes nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Output format of --dry-run, status and doctor [default: text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Print the man page or a shell completion script and exit (used by the
    /// package build).
    #[arg(long, value_enum, hide = true, value_name = "WHAT")]
    pub generate: Option<Generate>,
}

/// What to do instead of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// What the last deployments did on this node and whether a run holds
    /// the lock now, from the journal alone (works with the provider down).
    /// Exit 0.
    Status,
    /// Checks, read-only, everything this node needs to deploy: each check
    /// ok, warn or fail with a one-line fix. Starts, writes and posts
    /// nothing. Exit 0 when nothing fails, 1 otherwise.
    Doctor,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    Man,
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
