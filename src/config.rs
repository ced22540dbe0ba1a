//! The resolved, validated configuration: command line and environment
//! turned into the engine's settings and what the adapters need, or a
//! `ConfigError` naming the variable and the flag. The accepted range of
//! every number of seconds lives here, once (the NixOS module's option types
//! are checked against it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::http::ApiBase;
use crate::cli::{Cli, OutputFormat};
use crate::engine::Settings;
use crate::errors::{Combination, ConfigError};
use crate::model::{shown, CominStatus, NodeName};
use crate::ports::{Clock, Setting};

/// The names of each setting: its environment variable and its flag. The
/// one mapping from the engine's [`Setting`] to what the operator sets;
/// `cli.rs` declares the same names to clap (a test checks they agree).
impl Setting {
    pub const fn variable(self) -> &'static str {
        match self {
            Setting::NodeName => "HOSTENV_COMIN_NODE_NAME",
            Setting::ApiBaseUrl => "HOSTENV_COMIN_API_BASE_URL",
            Setting::TokenFile => "HOSTENV_COMIN_TOKEN_FILE",
            Setting::ActionTimeout => "HOSTENV_COMIN_ACTION_TIMEOUT",
            Setting::TargetObserveTimeout => "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
            Setting::IntentWait => "HOSTENV_COMIN_INTENT_WAIT",
            Setting::RunTimeout => "HOSTENV_COMIN_RUN_TIMEOUT",
            Setting::HealthTimeout => "HOSTENV_COMIN_HEALTH_TIMEOUT",
            Setting::StateDir => "HOSTENV_COMIN_STATE_DIR",
            Setting::LockFile => "HOSTENV_COMIN_LOCK_FILE",
            Setting::MetricsFile => "HOSTENV_COMIN_METRICS_FILE",
            Setting::CominStore => "HOSTENV_COMIN_STORE",
            Setting::CominStatus => "COMIN_STATUS",
            Setting::CominErrorMsg => "COMIN_ERROR_MSG",
            Setting::Sha => "COMIN_GIT_SHA",
        }
    }

    /// The long flag, without its `--`.
    pub const fn flag(self) -> &'static str {
        match self {
            Setting::NodeName => "node-name",
            Setting::ApiBaseUrl => "api-base-url",
            Setting::TokenFile => "token-file",
            Setting::ActionTimeout => "action-timeout",
            Setting::TargetObserveTimeout => "target-observe-timeout",
            Setting::IntentWait => "intent-wait",
            Setting::RunTimeout => "run-timeout",
            Setting::HealthTimeout => "health-timeout",
            Setting::StateDir => "state-dir",
            Setting::LockFile => "lock-file",
            Setting::MetricsFile => "metrics-file",
            Setting::CominStore => "comin-store",
            Setting::CominStatus => "comin-status",
            Setting::CominErrorMsg => "comin-error-msg",
            Setting::Sha => "sha",
        }
    }

    /// Every setting.
    pub const ALL: [Setting; 15] = [
        Setting::NodeName,
        Setting::ApiBaseUrl,
        Setting::TokenFile,
        Setting::ActionTimeout,
        Setting::TargetObserveTimeout,
        Setting::IntentWait,
        Setting::RunTimeout,
        Setting::HealthTimeout,
        Setting::StateDir,
        Setting::LockFile,
        Setting::MetricsFile,
        Setting::CominStore,
        Setting::CominStatus,
        Setting::CominErrorMsg,
        Setting::Sha,
    ];

    /// Its variable and its flag, for a [`ConfigError`].
    fn names(self) -> (&'static str, &'static str) {
        (self.variable(), self.flag())
    }
}

impl std::fmt::Display for Setting {
    /// The variable: what a message tells the operator to check.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.variable())
    }
}

/// A setting in whole seconds, and the values it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds {
    pub variable: &'static str,
    pub flag: &'static str,
    pub min: u64,
    pub max: u64,
}

/// The longest any of the timeouts may be: a week.
pub const WEEK: u64 = 7 * 24 * 3600;

pub const ACTION_TIMEOUT: Seconds = Seconds {
    variable: Setting::ActionTimeout.variable(),
    flag: Setting::ActionTimeout.flag(),
    min: 1,
    max: WEEK,
};

/// The action timeout the NixOS module sets unless told otherwise (the
/// binary has no default: it is required). `--help` says it and the
/// module's default is tested against it.
pub const MODULE_ACTION_TIMEOUT: Duration = Duration::from_secs(900);

pub const TARGET_OBSERVE_TIMEOUT: Seconds = Seconds {
    variable: Setting::TargetObserveTimeout.variable(),
    flag: Setting::TargetObserveTimeout.flag(),
    // 0 would deactivate before the target could post anything.
    min: 1,
    max: WEEK,
};

pub const INTENT_WAIT: Seconds = Seconds {
    variable: Setting::IntentWait.variable(),
    flag: Setting::IntentWait.flag(),
    min: 0,
    max: WEEK,
};

pub const RUN_TIMEOUT: Seconds = Seconds {
    variable: Setting::RunTimeout.variable(),
    flag: Setting::RunTimeout.flag(),
    min: 1,
    max: WEEK,
};

/// How long the environment's services may take to settle after
/// `activate` exits 0; 0 turns the health check off.
pub const HEALTH_TIMEOUT: Seconds = Seconds {
    variable: Setting::HealthTimeout.variable(),
    flag: Setting::HealthTimeout.flag(),
    min: 0,
    max: WEEK,
};

/// Every setting in seconds, for the check against the NixOS module.
pub const SECONDS: [Seconds; 5] = [
    ACTION_TIMEOUT,
    TARGET_OBSERVE_TIMEOUT,
    INTENT_WAIT,
    RUN_TIMEOUT,
    HEALTH_TIMEOUT,
];

impl Seconds {
    fn error(&self, problem: String) -> ConfigError {
        ConfigError {
            variable: self.variable,
            flag: self.flag,
            problem,
        }
    }

    /// Whole seconds within the bounds; negative numbers and other text
    /// get a message that says what is accepted.
    pub fn parse(&self, raw: &OsString) -> Result<Duration, ConfigError> {
        let (min, max) = (self.min, self.max);
        let text = utf8(raw, self.variable, self.flag)?.trim();
        let accepted = format!("whole seconds between {min} and {max}");
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
            Ok(n) => Err(self.error(format!("must be {accepted}, got {n}"))),
            Err(_) if text.starts_with('-') && text[1..].parse::<u64>().is_ok() => Err(self.error(
                format!("is negative ({}): it must be {accepted}", shown(text)),
            )),
            Err(_) if text.parse::<u128>().is_ok() => {
                Err(self.error(format!("must be {accepted}, got {}", shown(text))))
            }
            Err(_) => Err(self.error(format!(
                "must be {accepted}, got {} (not a whole number)",
                shown(text)
            ))),
        }
    }
}

/// What the program was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Perform the deployment (comin's hook).
    Run,
    /// Show what it would do.
    DryRun { output: OutputFormat },
}

/// The configuration, checked; the commit comes separately (see
/// [`requested_sha`]) because a dry run may find it in comin's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: NodeName,
    pub api_base: ApiBase,
    pub token_file: PathBuf,
    pub action_timeout: Duration,
    pub target_observe_timeout: Duration,
    pub intent_wait: Duration,
    pub run_timeout: Duration,
    /// How long the services may take to settle after `activate` (zero:
    /// no health check).
    pub health_timeout: Duration,
    /// The run journal's directory.
    pub state_dir: PathBuf,
    pub lock_file: PathBuf,
    /// Where each run writes its metrics, if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// comin's switch result from `COMIN_STATUS`/`COMIN_ERROR_MSG`; `None`
    /// when neither is set.
    pub comin: Option<CominStatus>,
    pub comin_store: PathBuf,
    pub mode: Mode,
}

fn utf8<'a>(
    raw: &'a OsString,
    variable: &'static str,
    flag: &'static str,
) -> Result<&'a str, ConfigError> {
    raw.to_str().ok_or_else(|| ConfigError {
        variable,
        flag,
        problem: format!("is not valid UTF-8 (got {})", shown(&raw.to_string_lossy())),
    })
}

fn required<'a>(
    value: &'a Option<OsString>,
    variable: &'static str,
    flag: &'static str,
) -> Result<&'a str, ConfigError> {
    let text = match value {
        Some(raw) => utf8(raw, variable, flag)?.trim(),
        None => "",
    };
    if text.is_empty() {
        return Err(ConfigError {
            variable,
            flag,
            problem: "is not set (required)".into(),
        });
    }
    Ok(text)
}

fn optional<'a>(
    value: &'a Option<OsString>,
    variable: &'static str,
    flag: &'static str,
) -> Result<Option<&'a str>, ConfigError> {
    value
        .as_ref()
        .map(|raw| utf8(raw, variable, flag))
        .transpose()
}

/// An absolute path setting.
fn absolute(raw: &OsString, setting: Setting) -> Result<PathBuf, ConfigError> {
    let (variable, flag) = setting.names();
    let path = PathBuf::from(utf8(raw, variable, flag)?.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ConfigError {
            variable,
            flag,
            problem: format!(
                "must be an absolute path, got {}",
                shown(&path.to_string_lossy())
            ),
        })
    }
}

/// Flags that only make sense together: a usage error says which.
pub fn check_combination(cli: &Cli) -> Result<(), Combination> {
    if cli.dry_run && cli.command.is_some() {
        return Err(Combination(
            "--dry-run is for a deployment; status and doctor never change anything anyway",
        ));
    }
    if cli.output.is_some() && !cli.dry_run && cli.command.is_none() {
        return Err(Combination(
            "--output is for --dry-run, status and doctor; a deployment has no report to format",
        ));
    }
    Ok(())
}

/// What `status` needs: the journal and the lock, and which node's records
/// to show (all when the node name is not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub node: Option<NodeName>,
    pub state_dir: PathBuf,
    pub lock_file: PathBuf,
    pub output: OutputFormat,
}

impl StatusConfig {
    pub fn from_cli(cli: &Cli) -> Result<StatusConfig, ConfigError> {
        let (var, flag) = Setting::NodeName.names();
        let node = match optional(&cli.node_name, var, flag)?.map(str::trim) {
            None | Some("") => None,
            Some(name) => Some(NodeName::parse(name).map_err(|e| ConfigError {
                variable: var,
                flag,
                problem: format!("is not valid ({}): {}", shown(&e.value), e.rule),
            })?),
        };
        Ok(StatusConfig {
            node,
            state_dir: absolute(&cli.state_dir, Setting::StateDir)?,
            lock_file: absolute(&cli.lock_file, Setting::LockFile)?,
            output: cli.output.unwrap_or_default(),
        })
    }
}

/// The longest commit id accepted (a SHA-256 git id is 64 hex digits).
pub const MAX_SHA_CHARS: usize = 128;

/// The commit to look at, if any: `--sha` or `COMIN_GIT_SHA`, blank = none.
/// It goes into URLs, the journal and every log line, so it must look like
/// a commit id: letters, digits, `.`, `_`, `-`, at most [`MAX_SHA_CHARS`].
pub fn requested_sha(cli: &Cli) -> Result<Option<String>, ConfigError> {
    let Some(sha) = optional(&cli.sha, Setting::Sha.variable(), Setting::Sha.flag())?
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let fits = sha.chars().count() <= MAX_SHA_CHARS
        && sha
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !fits {
        return Err(ConfigError {
            variable: Setting::Sha.variable(),
            flag: Setting::Sha.flag(),
            problem: format!(
                "is not a commit id ({}): it must be at most {MAX_SHA_CHARS} letters, digits, '.', '_' or '-'",
                shown(sha)
            ),
        });
    }
    Ok(Some(sha.to_owned()))
}

impl Config {
    /// Checks everything except the commit.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let (var, flag) = Setting::NodeName.names();
        let node =
            NodeName::parse(required(&cli.node_name, var, flag)?).map_err(|e| ConfigError {
                variable: var,
                flag,
                problem: format!("is not valid ({}): {}", shown(&e.value), e.rule),
            })?;
        let (var, flag) = Setting::ApiBaseUrl.names();
        let api_base =
            ApiBase::parse(required(&cli.api_base_url, var, flag)?).map_err(|problem| {
                ConfigError {
                    variable: var,
                    flag,
                    problem,
                }
            })?;
        let (var, flag) = Setting::TokenFile.names();
        let token_file = PathBuf::from(required(&cli.token_file, var, flag)?);
        if !token_file.is_absolute() {
            return Err(ConfigError {
                variable: var,
                flag,
                problem: format!(
                    "must be an absolute path, got {}",
                    shown(&token_file.to_string_lossy())
                ),
            });
        }
        let action_timeout = match &cli.action_timeout {
            Some(raw) => ACTION_TIMEOUT.parse(raw)?,
            None => {
                required(&None, ACTION_TIMEOUT.variable, ACTION_TIMEOUT.flag)?;
                Duration::ZERO
            }
        };
        let target_observe_timeout = TARGET_OBSERVE_TIMEOUT.parse(&cli.target_observe_timeout)?;
        let intent_wait = INTENT_WAIT.parse(&cli.intent_wait)?;
        let run_timeout = RUN_TIMEOUT.parse(&cli.run_timeout)?;
        let health_timeout = HEALTH_TIMEOUT.parse(&cli.health_timeout)?;
        let state_dir = absolute(&cli.state_dir, Setting::StateDir)?;
        let lock_file = absolute(&cli.lock_file, Setting::LockFile)?;
        let metrics_file = match &cli.metrics_file {
            Some(raw) if !raw.is_empty() => Some(absolute(raw, Setting::MetricsFile)?),
            _ => None,
        };
        let status = optional(
            &cli.comin_status,
            Setting::CominStatus.variable(),
            Setting::CominStatus.flag(),
        )?;
        let error_msg = optional(
            &cli.comin_error_msg,
            Setting::CominErrorMsg.variable(),
            Setting::CominErrorMsg.flag(),
        )?;
        let comin = CominStatus::from_comin(status, error_msg).map_err(|e| ConfigError {
            variable: Setting::CominStatus.variable(),
            flag: Setting::CominStatus.flag(),
            problem: e.to_string(),
        })?;
        let comin_given = status.is_some_and(|s| !s.trim().is_empty())
            || error_msg.is_some_and(|m| !m.trim().is_empty());
        let comin_store = PathBuf::from(utf8(
            &cli.comin_store,
            Setting::CominStore.variable(),
            Setting::CominStore.flag(),
        )?);
        let mode = if cli.dry_run {
            Mode::DryRun {
                output: cli.output.unwrap_or_default(),
            }
        } else {
            Mode::Run
        };
        Ok(Config {
            node,
            api_base,
            token_file,
            action_timeout,
            target_observe_timeout,
            intent_wait,
            run_timeout,
            health_timeout,
            state_dir,
            lock_file,
            metrics_file,
            comin: comin_given.then_some(comin),
            comin_store,
            mode,
        })
    }

    /// The engine's settings for performing `sha` after a switch that
    /// ended as `comin` says, in the run that starts now on `clock`.
    pub fn settings(&self, sha: String, comin: CominStatus, clock: &dyn Clock) -> Settings {
        Settings {
            comin,
            target_observe_timeout: self.target_observe_timeout,
            intent_wait: self.intent_wait,
            run_timeout: self.run_timeout,
            health_timeout: self.health_timeout,
            pid: std::process::id(),
            ..Settings::new(self.node.clone(), sha, self.action_timeout, clock)
        }
    }
}

#[cfg(test)]
mod tests;
