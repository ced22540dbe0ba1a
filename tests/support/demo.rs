//! `cargo run --example demo`: starts the fake provider serving
//! `fixtures/demo/intent.json` for node `node-a` at commit `demo`, then runs
//! the real `hostenv-activate --dry-run` against it: as an operator types it
//! on a node (the commit from comin's store, text), then for one commit
//! (JSON).
//! Needs no root and no provider; on a machine without the demo users the
//! preflight reports them missing, which is the expected outcome here.

#[path = "fake_provider.rs"]
mod fake_provider;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use fake_provider::{fixture_json, fixture_text, FakeProvider, Route};

const NODE: &str = "node-a";
const SHA: &str = "demo";
const JOB: &str = "demo-job-1";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(why) => {
            eprintln!("demo: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `target/debug/hostenv-activate`, next to `target/debug/examples/demo`.
fn binary() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the demo's own path: {e}"))?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("hostenv-activate"))
        .ok_or("unexpected location of the demo executable")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} does not exist: run `cargo build` first (or `cargo build && cargo run --example demo`)",
            bin.display()
        ))
    }
}

fn run() -> Result<ExitCode, String> {
    let bin = binary()?;
    // A token made up for this run only; the program reads it from the file.
    let token = format!("demo-token-{}", std::process::id());
    let fake = FakeProvider::builder()
        .node(NODE, &token)
        .job(JOB, SHA, [(NODE, fixture_json("demo/intent.json"))])
        .start();
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let token_file = dir.path().join("node-token");
    write_secret(&token_file, &token)?;

    println!(
        "== fake provider at {} serves job {JOB} (sha {SHA}) for {NODE}",
        fake.url()
    );
    print!(
        "== intent (fixtures/demo/intent.json):\n{}",
        fixture_text("demo/intent.json")
    );

    // comin's store, as on a node: its newest deployment is of commit SHA.
    let store = dir.path().join("comin-store.json");
    std::fs::write(
        &store,
        format!(
            r#"{{"deployments": [{{"uuid": "demo-deployment", "generation": {{"selected_commit_id": "{SHA}"}},
               "ended_at": "2026-12-01T08:15:41Z", "status": "done", "error_msg": ""}}]}}"#
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", store.display()))?;

    let mut worst = 0;
    // Text as an operator types it on a node (the commit from comin's
    // store); JSON as a script asks for one commit.
    for (title, sha, extra) in [
        ("text", None, None),
        ("JSON", Some(SHA), Some("--output=json")),
    ] {
        let shown = match extra {
            Some(flag) => format!("--dry-run {flag}"),
            None => "--dry-run".to_owned(),
        };
        println!("\n== hostenv-activate {shown}   ({title} output; stderr carries the log lines)");
        println!(
            "   environment: {}HOSTENV_COMIN_NODE_NAME={NODE} HOSTENV_COMIN_API_BASE_URL={} HOSTENV_COMIN_TOKEN_FILE={} HOSTENV_COMIN_ACTION_TIMEOUT=900 HOSTENV_COMIN_STORE={}\n",
            sha.map(|s| format!("COMIN_GIT_SHA={s} ")).unwrap_or_default(),
            fake.url(),
            token_file.display(),
            store.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTENV_COMIN_NODE_NAME", NODE)
            .env("HOSTENV_COMIN_API_BASE_URL", fake.url())
            .env("HOSTENV_COMIN_TOKEN_FILE", &token_file)
            .env("HOSTENV_COMIN_ACTION_TIMEOUT", "900")
            .env("HOSTENV_COMIN_STORE", &store)
            .env("HOSTENV_COMIN_STATE_DIR", dir.path().join("state"))
            .env("HOSTENV_COMIN_LOCK_FILE", dir.path().join("run/lock"))
            .arg("--dry-run");
        if let Some(sha) = sha {
            cmd.env("COMIN_GIT_SHA", sha);
        }
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let code = status.code().unwrap_or(1);
        println!(
            "\n== exit status {code} ({})",
            match code {
                0 => "every preflight check passed",
                1 => "some preflight check failed: expected here, the demo users do not exist",
                _ => "usage or configuration error",
            }
        );
        worst = worst.max(code);
    }

    let requests = fake.requests();
    println!("\n== the provider saw {} request(s):", requests.len());
    for r in &requests {
        println!("   {} {} -> {}", r.method, r.raw_url, r.status);
    }
    let posts = fake.requests_to(Route::Events).len();
    println!("== events posted: {posts} (a dry run posts nothing)");
    Ok(if worst >= 2 || posts > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_secret(path: &std::path::Path, token: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{token}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
