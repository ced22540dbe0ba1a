//! Configuration: each problem names its variable and flag; values are cut;
//! defaults come from the engine's settings.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;

use super::*;
use crate::adapters::clock::SystemClock;
use crate::ports::{Cancel, Deadline};

/// The real clock, for the start of a run.
fn clock() -> SystemClock {
    SystemClock::new(Cancel::new())
}

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

/// [`FULL`], with `extra` added or replacing the same flag.
fn full(extra: &[&str]) -> Cli {
    let flag = |a: &str| a.split('=').next().unwrap_or_default().to_owned();
    let mut args: Vec<&str> = FULL
        .iter()
        .copied()
        .filter(|a| !extra.iter().any(|e| flag(e) == flag(a)))
        .collect();
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn a_complete_configuration_resolves_to_the_engine_settings() {
    let c = Config::from_cli(&cli(FULL)).expect("valid");
    assert_eq!(c.api_base.to_string(), "https://provider.example.org");
    assert_eq!(c.comin, None);
    assert_eq!(c.mode, Mode::Run);
    let s = c.settings("abc".into(), CominStatus::Done, &clock());
    assert_eq!(s.run_timeout, Settings::DEFAULT_RUN_TIMEOUT);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/hostenv-activate"));
    assert_eq!(c.lock_file, PathBuf::from("/run/hostenv-activate/lock"));
    assert_eq!(s.action_timeout, Duration::from_secs(900));
    assert_eq!(
        s.target_observe_timeout,
        Settings::DEFAULT_TARGET_OBSERVE_TIMEOUT
    );
    assert_eq!(s.intent_wait, Settings::DEFAULT_INTENT_WAIT);
    assert_eq!(s.health_timeout, Settings::DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(s.sha, "abc");
}

#[test]
fn the_health_timeout_reaches_the_engine_and_0_turns_the_check_off() {
    let settings = |extra: &[&str]| {
        Config::from_cli(&full(extra)).expect("valid").settings(
            "abc".into(),
            CominStatus::Done,
            &clock(),
        )
    };
    assert_eq!(
        settings(&["--health-timeout=5"]).health_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        settings(&["--health-timeout=0"]).health_timeout,
        Duration::ZERO
    );
    assert_eq!(
        settings(&["--health-timeout=604800"]).health_timeout,
        Duration::from_secs(WEEK)
    );
    for (value, problem) in [
        (
            "1m",
            "must be whole seconds between 0 and 604800, got \"1m\" (not a whole number)",
        ),
        (
            "-1",
            "is negative (\"-1\"): it must be whole seconds between 0 and 604800",
        ),
        (
            "604801",
            "must be whole seconds between 0 and 604800, got 604801",
        ),
    ] {
        let err = Config::from_cli(&full(&[&format!("--health-timeout={value}")]))
            .expect_err("malformed")
            .to_string();
        assert_eq!(
            err,
            format!("HOSTENV_COMIN_HEALTH_TIMEOUT (--health-timeout) {problem}")
        );
    }
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
            &["--node-name=n", "--api-base-url=http://x", "--token-file=/t"],
            "HOSTENV_COMIN_ACTION_TIMEOUT (--action-timeout) is not set",
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
            "HOSTENV_COMIN_INTENT_WAIT (--intent-wait) is negative",
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
        let err = Config::from_cli(&cli(args))
            .expect_err("invalid")
            .to_string();
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
}

#[test]
fn negative_and_huge_numbers_get_our_own_message() {
    let err = Config::from_cli(&full(&["--action-timeout=-5"]))
        .expect_err("negative")
        .to_string();
    assert_eq!(
        err,
        "HOSTENV_COMIN_ACTION_TIMEOUT (--action-timeout) is negative (\"-5\"): it must be whole seconds between 1 and 604800"
    );
    let err = Config::from_cli(&full(&["--action-timeout=604801"]))
        .expect_err("too big")
        .to_string();
    assert!(err.ends_with("between 1 and 604800, got 604801"), "{err}");
    let err = Config::from_cli(&full(&["--action-timeout=99999999999999999999999"]))
        .expect_err("overflow")
        .to_string();
    assert!(err.contains("between 1 and 604800"), "{err}");
}

#[test]
fn echoed_values_are_cut_to_a_readable_length() {
    let long = format!("--node-name={}", "n ".repeat(5000));
    let err = Config::from_cli(&full(&[&long]))
        .expect_err("whitespace")
        .to_string();
    assert!(
        err.starts_with("HOSTENV_COMIN_NODE_NAME (--node-name)"),
        "{err}"
    );
    assert!(err.len() < 300, "{} characters: {err}", err.len());
}

#[test]
fn a_value_that_is_not_utf8_names_its_variable() {
    let mut c = cli(FULL);
    c.node_name = Some(OsString::from_vec(vec![b'n', 0xff, 0xfe]));
    let err = Config::from_cli(&c).expect_err("not utf-8").to_string();
    assert!(
        err.starts_with("HOSTENV_COMIN_NODE_NAME (--node-name) is not valid UTF-8"),
        "{err}"
    );
    let mut c = cli(FULL);
    c.sha = Some(OsString::from_vec(vec![0xff]));
    let err = requested_sha(&c).expect_err("not utf-8").to_string();
    assert!(err.starts_with("COMIN_GIT_SHA (--sha)"), "{err}");
}

#[test]
fn unix_socket_base_and_comin_status() {
    let c = Config::from_cli(&cli(&[
        "--node-name=n",
        "--api-base-url=unix:/run/provider.sock",
        "--token-file=/t",
        "--action-timeout=5",
        "--comin-status=failed",
        "--comin-error-msg=switch-to-configuration failed",
    ]))
    .expect("valid");
    assert_eq!(c.api_base, ApiBase::Unix("/run/provider.sock".into()));
    assert_eq!(
        c.comin,
        Some(CominStatus::Failed {
            message: "switch-to-configuration failed".into()
        })
    );
    // comin v0.10.0 - v0.13.0: done, but an error message.
    let c =
        Config::from_cli(&full(&["--comin-status=done", "--comin-error-msg=boom"])).expect("valid");
    assert_eq!(
        c.comin,
        Some(CominStatus::Failed {
            message: "boom".into()
        })
    );
}

#[test]
fn blank_sha_means_nothing_to_do() {
    assert_eq!(requested_sha(&cli(&["--sha=  "])), Ok(None));
    assert_eq!(requested_sha(&cli(&["--sha=abc"])), Ok(Some("abc".into())));
}

#[test]
fn output_needs_dry_run() {
    let alone = Cli::try_parse_from(["hostenv-activate", "--output=json"]).expect("parses");
    let err = check_combination(&alone).expect_err("usage");
    assert!(
        err.0
            .contains("--output is for --dry-run, status and doctor"),
        "{err}"
    );
    for ok in [
        &["hostenv-activate", "--dry-run", "--output=json"][..],
        &["hostenv-activate", "status", "--output=json"],
        &["hostenv-activate", "--output=json", "doctor"],
    ] {
        let cli = Cli::try_parse_from(ok).expect("parses");
        assert_eq!(check_combination(&cli), Ok(()), "{ok:?}");
    }
    let both = Cli::try_parse_from(["hostenv-activate", "--dry-run", "status"]).expect("parses");
    assert!(check_combination(&both).is_err());
    let c = Config::from_cli(&full(&["--dry-run", "--output=json"])).expect("valid");
    assert_eq!(
        c.mode,
        Mode::DryRun {
            output: OutputFormat::Json
        }
    );
}

/// The module's bounds are compared with `SECONDS` by evaluating it
/// (tests/nix_module.rs); here, the parser accepts exactly that table.
#[test]
fn the_parser_accepts_exactly_the_bounds_of_its_table() {
    for s in SECONDS {
        assert!(s.parse(&OsString::from(s.min.to_string())).is_ok());
        assert!(s.parse(&OsString::from(s.max.to_string())).is_ok());
        assert!(s.parse(&OsString::from((s.max + 1).to_string())).is_err());
        if s.min > 0 {
            assert!(s.parse(&OsString::from((s.min - 1).to_string())).is_err());
        }
    }
}

#[test]
fn the_commit_must_look_like_a_commit_id() {
    let sha = |value: &str| requested_sha(&cli(&[&format!("--sha={value}")]));
    assert_eq!(sha("  ").expect("blank"), None);
    assert_eq!(
        sha(" 0123abcdef ").expect("hex").as_deref(),
        Some("0123abcdef")
    );
    for bad in ["abc def", "a/b", "x\u{7}", &"f".repeat(MAX_SHA_CHARS + 1)] {
        let e = sha(bad).expect_err(bad);
        let text = e.to_string();
        assert!(
            text.starts_with("COMIN_GIT_SHA (--sha) is not a commit id"),
            "{text}"
        );
        assert!(text.len() < 300, "the value is cut: {text}");
    }
}

#[test]
fn the_run_deadline_reaches_the_engine() {
    let c = Config::from_cli(&full(&["--run-timeout=5"])).expect("valid");
    let s = c.settings("abc".into(), CominStatus::Done, &clock());
    assert_eq!(s.run_timeout, Duration::from_secs(5));
    assert_eq!(
        s.deadline(),
        Deadline::from(s.started, Duration::from_secs(5))
    );
}

#[test]
fn each_settings_names_are_the_ones_clap_reads() {
    use clap::CommandFactory;
    let command = Cli::command();
    for setting in Setting::ALL {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(setting.flag()))
            .unwrap_or_else(|| panic!("no --{} for {setting:?}", setting.flag()));
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(setting.variable()),
            "{setting:?}"
        );
        assert_eq!(setting.to_string(), setting.variable());
    }
}

#[test]
fn help_names_the_modules_action_timeout() {
    use clap::CommandFactory;
    let command = Cli::command();
    let help = command
        .get_arguments()
        .find(|a| a.get_long() == Some(ACTION_TIMEOUT.flag))
        .and_then(|a| a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(
        help.contains(&format!(
            "the NixOS module sets {}",
            MODULE_ACTION_TIMEOUT.as_secs()
        )),
        "{help}"
    );
}
