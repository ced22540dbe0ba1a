//! The resolved, validated configuration: command line and environment turned
//! into one struct, or a `ConfigError` naming the variable and the flag.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, OutputFormat};
use crate::errors::ConfigError;
use crate::model::NodeName;

/// What comin reported about the system switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CominStatus {
    Done,
    Failed { message: String },
}

/// Where the provider listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiBase {
    /// `http://` or `https://` base URL, without a trailing slash.
    Http(String),
    /// `unix:/path/to.sock`: HTTP over a unix socket (the local demo provider).
    Unix(PathBuf),
}

impl std::fmt::Display for ApiBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiBase::Http(url) => f.write_str(url),
            ApiBase::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub sha: String,
    pub node: NodeName,
    pub api_base: ApiBase,
    pub token_file: PathBuf,
    pub action_timeout: Duration,
    pub target_observe_timeout: Duration,
    pub intent_wait: Duration,
    pub comin: CominStatus,
    pub dry_run: bool,
    pub output: OutputFormat,
}

/// The commit to look at, if any: `--sha` or `COMIN_GIT_SHA`, blank = none.
pub fn requested_sha(cli: &Cli) -> Option<String> {
    cli.sha
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Config {
    /// Validates everything except the sha, which the caller has already found.
    pub fn from_cli(cli: &Cli, sha: String) -> Result<Config, ConfigError> {
        let node = required(&cli.node_name, "HOSTENV_COMIN_NODE_NAME", "node-name")?;
        let node = NodeName::parse(node).map_err(|e| ConfigError {
            variable: "HOSTENV_COMIN_NODE_NAME",
            flag: "node-name",
            problem: format!("is not valid: {e}"),
        })?;
        let api_base = parse_api_base(required(
            &cli.api_base_url,
            "HOSTENV_COMIN_API_BASE_URL",
            "api-base-url",
        )?)?;
        let token_file = PathBuf::from(required(
            &cli.token_file,
            "HOSTENV_COMIN_TOKEN_FILE",
            "token-file",
        )?);
        if !token_file.is_absolute() {
            return Err(ConfigError {
                variable: "HOSTENV_COMIN_TOKEN_FILE",
                flag: "token-file",
                problem: format!("must be an absolute path, got {:?}", token_file),
            });
        }
        let action_timeout = seconds(
            required(
                &cli.action_timeout,
                "HOSTENV_COMIN_ACTION_TIMEOUT",
                "action-timeout",
            )?,
            "HOSTENV_COMIN_ACTION_TIMEOUT",
            "action-timeout",
            1,
        )?;
        let target_observe_timeout = seconds(
            &cli.target_observe_timeout,
            "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
            "target-observe-timeout",
            // 0 would deactivate before the target could post anything.
            1,
        )?;
        let intent_wait = seconds(
            &cli.intent_wait,
            "HOSTENV_COMIN_INTENT_WAIT",
            "intent-wait",
            0,
        )?;
        let comin = match cli.comin_status.as_deref().map(str::trim) {
            None | Some("") | Some("done") => CominStatus::Done,
            Some("failed") => CominStatus::Failed {
                message: cli
                    .comin_error_msg
                    .clone()
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or_else(|| "no error message from comin".into()),
            },
            Some(other) => {
                return Err(ConfigError {
                    variable: "COMIN_STATUS",
                    flag: "comin-status",
                    problem: format!("must be `done` or `failed`, got {other:?}"),
                })
            }
        };
        Ok(Config {
            sha,
            node,
            api_base,
            token_file,
            action_timeout,
            target_observe_timeout,
            intent_wait,
            comin,
            dry_run: cli.dry_run,
            output: cli.output,
        })
    }
}

fn required<'a>(
    value: &'a Option<String>,
    variable: &'static str,
    flag: &'static str,
) -> Result<&'a str, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError {
            variable,
            flag,
            problem: "is not set (required)".into(),
        }),
    }
}

/// Whole seconds, at least `min`, at most a week.
fn seconds(
    raw: &str,
    variable: &'static str,
    flag: &'static str,
    min: u64,
) -> Result<Duration, ConfigError> {
    const MAX: u64 = 7 * 24 * 3600;
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=MAX).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(ConfigError {
            variable,
            flag,
            problem: format!("must be whole seconds between {min} and {MAX}, got {raw:?}"),
        }),
    }
}

fn parse_api_base(raw: &str) -> Result<ApiBase, ConfigError> {
    let bad = |problem: String| ConfigError {
        variable: "HOSTENV_COMIN_API_BASE_URL",
        flag: "api-base-url",
        problem,
    };
    if let Some(path) = raw.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(bad(format!(
                "must name an absolute socket path after unix:, got {raw:?}"
            )));
        }
        return Ok(ApiBase::Unix(path));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("is not a URL ({e}): {raw:?}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!(
            "must be an http(s):// URL with a host, or unix:/path, got {raw:?}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; the token comes from HOSTENV_COMIN_TOKEN_FILE".into(),
        ));
    }
    Ok(ApiBase::Http(raw.trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["hostenv-activate"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).expect("parses")
    }

    const FULL: &[&str] = &[
        "--node-name=node-a",
        "--api-base-url=https://provider.example.org/",
        "--token-file=/run/secrets/token",
        "--action-timeout=900",
    ];

    #[test]
    fn a_complete_configuration_resolves() {
        let c = Config::from_cli(&cli(FULL), "abc".into()).expect("valid");
        assert_eq!(
            c.api_base,
            ApiBase::Http("https://provider.example.org".into())
        );
        assert_eq!(c.action_timeout, Duration::from_secs(900));
        assert_eq!(c.target_observe_timeout, Duration::from_secs(120));
        assert_eq!(c.intent_wait, Duration::from_secs(30));
        assert_eq!(c.comin, CominStatus::Done);
    }

    #[test]
    fn each_problem_names_its_variable_and_flag() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=1",
                ],
                "HOSTENV_COMIN_NODE_NAME (--node-name) is not set",
            ),
            (
                &["--node-name=n", "--token-file=/t", "--action-timeout=1"],
                "HOSTENV_COMIN_API_BASE_URL (--api-base-url)",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=ftp://x",
                    "--token-file=/t",
                    "--action-timeout=1",
                ],
                "HOSTENV_COMIN_API_BASE_URL (--api-base-url) must be",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--action-timeout=1",
                ],
                "HOSTENV_COMIN_TOKEN_FILE (--token-file)",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=rel",
                    "--action-timeout=1",
                ],
                "must be an absolute path",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                ],
                "HOSTENV_COMIN_ACTION_TIMEOUT (--action-timeout)",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=soon",
                ],
                "must be whole seconds",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=0",
                ],
                "must be whole seconds between 1",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=1",
                    "--intent-wait=-1",
                ],
                "HOSTENV_COMIN_INTENT_WAIT (--intent-wait)",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=1",
                    "--target-observe-timeout=0",
                ],
                "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT (--target-observe-timeout) must be whole seconds between 1",
            ),
            (
                &[
                    "--node-name=n",
                    "--api-base-url=http://x",
                    "--token-file=/t",
                    "--action-timeout=1",
                    "--comin-status=meh",
                ],
                "COMIN_STATUS (--comin-status)",
            ),
        ];
        for (args, expected) in cases {
            let err = Config::from_cli(&cli(args), "abc".into())
                .expect_err("invalid")
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn unix_socket_base_and_failed_switch() {
        let c = Config::from_cli(
            &cli(&[
                "--node-name=n",
                "--api-base-url=unix:/run/provider.sock",
                "--token-file=/t",
                "--action-timeout=5",
                "--comin-status=failed",
                "--comin-error-msg=switch-to-configuration failed",
            ]),
            "abc".into(),
        )
        .expect("valid");
        assert_eq!(c.api_base, ApiBase::Unix("/run/provider.sock".into()));
        assert_eq!(
            c.comin,
            CominStatus::Failed {
                message: "switch-to-configuration failed".into()
            }
        );
    }

    #[test]
    fn blank_sha_means_nothing_to_do() {
        assert_eq!(requested_sha(&cli(&["--sha=  "])), None);
        assert_eq!(requested_sha(&cli(&["--sha=abc"])), Some("abc".into()));
    }
}
