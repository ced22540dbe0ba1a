//! Exists because the NixOS module is how users install the program, and
//! `nix flake check` cannot run on the project's machines (nixpkgs is too
//! large to fetch): this evaluates nix/module.nix for real with nixpkgs'
//! `lib` and comin's option declarations from `../shared/vendor`
//! (nix/module-eval.nix, Debian's `nix-instantiate`), builds the configured
//! wrapper in a throwaway store around this build's binary, and runs it. The
//! option bounds come from the module's evaluated types and must equal the
//! binary's (`config::SECONDS`).
//!
//! Needs `nix-instantiate`/`nix-build` and the vendor folder; run by
//! `.ci/nix-checks`, not by `nix flake check` (whose sandbox has neither).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hostenv_activate::adapters::{journal, lock};
use hostenv_activate::config::{
    Seconds, ACTION_TIMEOUT, HEALTH_TIMEOUT, INTENT_WAIT, MODULE_ACTION_TIMEOUT, RUN_TIMEOUT,
    SECONDS, TARGET_OBSERVE_TIMEOUT,
};
use hostenv_activate::engine::Settings;
use serde_json::Value;

/// The module's option for each of the binary's settings in seconds.
const OPTIONS: [(&str, Seconds); 5] = [
    ("actionTimeoutSeconds", ACTION_TIMEOUT),
    ("targetObserveTimeoutSeconds", TARGET_OBSERVE_TIMEOUT),
    ("intentWaitSeconds", INTENT_WAIT),
    ("runTimeoutSeconds", RUN_TIMEOUT),
    ("healthTimeoutSeconds", HEALTH_TIMEOUT),
];

/// nix-instantiate and nix-build against a store of their own in a
/// temporary directory (no daemon, nothing written to /nix).
struct Nix {
    dir: tempfile::TempDir,
    vendor: PathBuf,
    binary: PathBuf,
}

impl Nix {
    fn new() -> Nix {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let vendor = root.join("../shared/vendor");
        assert!(
            vendor.join("nixpkgs-lib/lib/default.nix").is_file()
                && vendor.join("comin/nix/module-options.nix").is_file(),
            "{} must hold nixpkgs-lib/ and comin/ (CI puts a copy of shared/ beside the clone)",
            vendor.display()
        );
        let vendor = vendor.canonicalize().expect("vendor folder");
        let binary = match std::env::var_os("HOSTENV_ACTIVATE_BIN") {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(env!("CARGO_BIN_EXE_hostenv-activate")),
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir_all(dir.path().join("etc")).expect("NIX_CONF_DIR");
        Nix {
            dir,
            vendor,
            binary,
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let store = self.dir.path();
        let mut cmd = Command::new(program);
        cmd.env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH")
            .env("NIX_STORE_DIR", store.join("store"))
            .env("NIX_STATE_DIR", store.join("var"))
            .env("NIX_LOG_DIR", store.join("log"))
            .env("NIX_CONF_DIR", store.join("etc"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/module-eval.nix"))
            .arg("--arg")
            .arg("vendor")
            .arg(&self.vendor)
            .arg("--arg")
            .arg("binary")
            .arg(&self.binary)
            .args(args);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} (apt-get install nix-bin): {e}"))
    }

    /// `nix-instantiate --eval --strict --json -A attribute`.
    fn eval(&self, attribute: &str) -> Value {
        let out = self.run(
            "nix-instantiate",
            &["--eval", "--strict", "--json", "-A", attribute],
        );
        assert!(
            out.status.success(),
            "evaluating {attribute} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("nix-instantiate prints JSON")
    }

    /// `nix-build -A attribute`, no sandbox, no substituters: its store path.
    fn build(&self, attribute: &str) -> PathBuf {
        let link = self.dir.path().join("result");
        let out = self.run(
            "nix-build",
            &[
                "-A",
                attribute,
                "--option",
                "sandbox",
                "false",
                "--option",
                "build-users-group",
                "",
                "--option",
                "substituters",
                "",
                "--out-link",
                link.to_str().expect("UTF-8 temporary path"),
            ],
        );
        assert!(
            out.status.success(),
            "building {attribute} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        PathBuf::from(path)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn required(name: &str) -> String {
    format!("services.hostenv-activate.{name} must be set when services.hostenv-activate.enable is true.")
}

#[test]
fn the_module_evaluates_with_comin_and_refuses_what_it_must() {
    let nix = Nix::new();
    let report = nix.eval("report");
    let store = nix.dir.path().join("store");

    // A full configuration: no assertion (comin's own included).
    assert_eq!(strings(&report["full"]["failed"]), Vec::<String>::new());
    let tmpfiles = strings(&report["full"]["tmpfiles"]);
    // The lock's directory is the binary's default one.
    let lock_dir = Path::new(lock::DEFAULT_PATH)
        .parent()
        .expect("the default lock file is in a directory");
    assert_eq!(
        tmpfiles,
        [
            "d /var/lib/hostenv-state 0700 root root - -".to_owned(),
            format!("d {} 0700 root root - -", lock_dir.display()),
            "d /var/lib/textfiles - - - - -".to_owned(),
        ]
    );

    // Each problem, its own message and no other.
    let store_token = format!("{}/00000000000000000000000000000000-token", store.display());
    let expected: BTreeMap<&str, String> = [
        ("noNodeName", required("nodeName")),
        ("emptyNodeName", required("nodeName")),
        ("noApiBaseUrl", required("apiBaseUrl")),
        ("noTokenFile", required("tokenFile")),
        ("tokenInStore", format!("services.hostenv-activate.tokenFile ({store_token}) is in the Nix store, which every user can read; point it at a secret outside the store, e.g. config.sops.secrets.<name>.path.")),
        ("relativeStateDir", "services.hostenv-activate.stateDir (var/state) must be an absolute path.".to_owned()),
        ("relativeMetrics", "services.hostenv-activate.metrics.directory (textfiles) must be an absolute path.".to_owned()),
        ("cominDisabled", "services.hostenv-activate runs as comin's postDeploymentCommand: set services.comin.enable = true.".to_owned()),
    ]
    .into_iter()
    .collect();
    let cases = report["cases"].as_object().expect("cases");
    assert_eq!(
        cases.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for (case, message) in &expected {
        assert_eq!(strings(&cases[*case]), vec![message.clone()], "case {case}");
    }
    assert_eq!(
        strings(&report["noComin"]),
        ["services.hostenv-activate runs as comin's postDeploymentCommand: import comin's NixOS module (e.g. comin.nixosModules.comin) and set services.comin.enable = true."]
    );

    // A timeout the binary refuses is refused at evaluation, naming the
    // option and the range.
    let zero = nix.run(
        "nix-instantiate",
        &["--eval", "--strict", "--json", "-A", "zeroTimeout"],
    );
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert!(!zero.status.success(), "0 s accepted: {stderr}");
    assert!(
        stderr.contains("services.hostenv-activate.actionTimeoutSeconds' is not of type `integer between 1 and 604800 (both inclusive)'"),
        "{stderr}"
    );
}

#[test]
fn the_modules_bounds_and_defaults_are_the_binarys() {
    let report = Nix::new().eval("report");
    let bounds = report["bounds"].as_object().expect("bounds");
    assert_eq!(
        bounds.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut names: Vec<&str> = OPTIONS.iter().map(|(name, _)| *name).collect();
            names.sort();
            names
        },
        "every integer range option of the module is one of the binary's seconds settings"
    );
    assert_eq!(OPTIONS.len(), SECONDS.len());
    for (option, seconds) in OPTIONS {
        assert!(SECONDS.contains(&seconds));
        let range = &bounds[option];
        assert_eq!(
            (range["min"].as_u64(), range["max"].as_u64()),
            (Some(seconds.min), Some(seconds.max)),
            "{option} ({}): the module accepts {range}",
            seconds.variable
        );
    }
    // The module's defaults are the binary's (the action timeout has none in
    // the binary; the module's is config::MODULE_ACTION_TIMEOUT, which
    // --help and the README document).
    let defaults = &report["defaults"];
    for (option, default) in [
        (
            "targetObserveTimeoutSeconds",
            Settings::DEFAULT_TARGET_OBSERVE_TIMEOUT,
        ),
        ("intentWaitSeconds", Settings::DEFAULT_INTENT_WAIT),
        ("runTimeoutSeconds", Settings::DEFAULT_RUN_TIMEOUT),
        ("healthTimeoutSeconds", Settings::DEFAULT_HEALTH_TIMEOUT),
    ] {
        assert_eq!(
            defaults[option].as_u64(),
            Some(default.as_secs()),
            "{option}"
        );
    }
    assert_eq!(
        defaults["actionTimeoutSeconds"].as_u64(),
        Some(MODULE_ACTION_TIMEOUT.as_secs())
    );
    assert_eq!(
        report["stateDirDefault"].as_str(),
        Some(journal::DEFAULT_DIR)
    );
}

#[test]
fn comins_hook_is_a_wrapper_that_runs_the_binary_with_every_setting() {
    let nix = Nix::new();
    let report = nix.eval("report");
    let hook = PathBuf::from(report["full"]["hook"].as_str().expect("hook path"));
    let configured = nix.build("configured");
    assert_eq!(
        strings(&report["full"]["packages"]),
        [configured.display().to_string()]
    );

    // The command on the system's PATH is comin's hook.
    let on_path = configured.join("bin/hostenv-activate");
    assert_eq!(
        std::fs::read_link(&on_path).expect("bin/hostenv-activate is a link"),
        hook
    );
    let text = std::fs::read_to_string(&hook).expect("the hook is built");
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let exec = lines.pop().expect("an exec line");
    assert_eq!(lines.first().copied(), Some("#!/bin/bash"));
    let mut exports = lines[1..].to_vec();
    exports.sort();
    assert_eq!(
        exports,
        [
            "export HOSTENV_COMIN_ACTION_TIMEOUT=901",
            "export HOSTENV_COMIN_API_BASE_URL=https://provider.example",
            "export HOSTENV_COMIN_HEALTH_TIMEOUT=61",
            "export HOSTENV_COMIN_INTENT_WAIT=31",
            "export HOSTENV_COMIN_METRICS_FILE=/var/lib/textfiles/hostenv-activate.prom",
            "export HOSTENV_COMIN_NODE_NAME=node-a",
            "export HOSTENV_COMIN_RUN_TIMEOUT=3601",
            "export HOSTENV_COMIN_STATE_DIR=/var/lib/hostenv-state",
            "export HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT=121",
            "export HOSTENV_COMIN_TOKEN_FILE=/run/secrets/hostenv-token",
        ]
    );
    let program = exec
        .strip_prefix("exec ")
        .and_then(|rest| rest.strip_suffix(" \"$@\""))
        .unwrap_or_else(|| panic!("not an exec of the binary: {exec}"));
    assert!(
        program.starts_with(&nix.dir.path().join("store").display().to_string())
            && program.ends_with("-hostenv-activate-0.1.0/bin/hostenv-activate"),
        "{program}"
    );
    assert_eq!(
        std::fs::read(program).expect("the package's binary"),
        std::fs::read(&nix.binary).expect("this build's binary"),
    );

    // Run as an operator would, from a clean environment: the binary
    // answers, and `doctor` (read-only; no token here, so it asks no
    // provider) shows the settings the wrapper gave it.
    let run = |args: &[&str]| {
        Command::new(&on_path)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .output()
            .expect("run the wrapper")
    };
    let version = run(&["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("hostenv-activate {}", env!("CARGO_PKG_VERSION"))
    );
    let help = run(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("HOSTENV_COMIN_NODE_NAME"));
    let doctor = run(&["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(
        doctor.status.code(),
        Some(1),
        "no token file here:\n{report}"
    );
    for shown in [
        "doctor for node node-a",
        "node node-a, provider https://provider.example, action timeout 901s, run timeout 3601s, health check up to 61s",
        "the token file /run/secrets/hostenv-token does not exist",
        "/var/lib/hostenv-state",
        "metrics directory /var/lib/textfiles",
    ] {
        assert!(
            report.contains(shown),
            "doctor does not show {shown:?}:\n{report}"
        );
    }
}
