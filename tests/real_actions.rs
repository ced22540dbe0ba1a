//! The shipped binary on a real node: each test brings up real users with a
//! real `systemd --user` (see `harness`), points the real `hostenv-activate`
//! binary (run as root, configured only through its environment) at the fake
//! provider, and checks the exit status, the exact events the provider
//! received, and what the run left in the real world: the processes, the
//! units, the restic repositories and the files under `/run/hostenv`.
//!
//! Needs root; `.ci/run` runs it. By hand: `cargo test --test real_actions`.

mod harness;

#[path = "support/fake_provider.rs"]
mod fake_provider;

#[path = "support/node_run.rs"]
mod node_run;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use fake_provider::{backup_success, event, Event, FakeHandle, FakeProvider, Route};
use serde_json::{json, Value};

use harness::units::{
    failing_unit, hanging_unit, FAILING_STATUS, FAILING_UNIT, HANGING_SLEEP, HANGING_UNIT,
    HOSTENV_TARGET, TARGET_SERVICE,
};
use harness::{TestUser, UserSpec};
use node_run::{
    action, intent, position, processes_matching, settled, show, spawn, spawn_journaled,
    start_target, world, Finished, NodeConfig, PlanDir, Running, StandInJournal,
};

const NODE: &str = "node-a";
const OTHER: &str = "node-b";
const SHA: &str = "5eed0f00dcafe";
const JOB: &str = "job-real-1";
/// Distinctive, so that a leak anywhere is caught.
const TOKEN: &str = "tok-node-a-R3aL-n0de-SECRET";
const OTHER_TOKEN: &str = "tok-node-b-other";
/// The migration key of the hostenv demo.
const KEY: &str = "drupal-migrate";
/// What root's stdin carries while the binary runs: it must never reach a
/// user's program.
const ROOT_STDIN: &str = "root-stdin-must-not-reach-the-user";
/// Variables only root's environment has; none may reach a user's program.
const NOTIFY_SOCKET: &str = "/run/hat-notify-canary";
const ROOT_CANARY: (&str, &str) = ("HAT_ROOT_ONLY_CANARY", "root-only-value");
/// Bound on one run of the binary, whatever it does.
const RUN_LIMIT: Duration = Duration::from_secs(150);

// ------------------------------------------------------------------ support

/// A provider knowing both nodes, with one job for [`SHA`]: `mine` for
/// node-a and, when given, `theirs` for node-b.
fn provider(mine: Value, theirs: Option<Value>) -> fake_provider::Builder {
    let mut intents = vec![(NODE, mine)];
    if let Some(theirs) = theirs {
        intents.push((OTHER, theirs));
    }
    FakeProvider::builder()
        .node(NODE, TOKEN)
        .node(OTHER, OTHER_TOKEN)
        .job(JOB, SHA, intents)
}

/// A provider whose job gives node-a this one action (and node-b nothing).
fn provider_of(action: Value) -> FakeHandle {
    provider(intent(vec![action]), None).start()
}

fn activate_of(user: &str) -> Value {
    action("activate", user, &[], None, None)
}

/// Backs `key` up on node-a for node-b.
fn backup_of(user: &str, key: &str) -> Value {
    action("backup", user, &[key], Some(NODE), Some(OTHER))
}

/// `user`'s activate is this shell body; node-a runs its one activate.
fn run_activate(user: &TestUser, body: &str, action_timeout: u64) -> (FakeHandle, Finished) {
    write_activate(user, body);
    let fake = provider_of(activate_of(&user.name));
    let ran = run_binary(&fake, action_timeout);
    (fake, ran)
}

/// node-a runs its one backup of `user`'s `key` for node-b.
fn run_backup(user: &TestUser, key: &str, action_timeout: u64) -> (FakeHandle, Finished) {
    let fake = provider_of(backup_of(&user.name, key));
    let ran = run_binary(&fake, action_timeout);
    (fake, ran)
}

/// The events of a backup-only intent that succeeded, and that failed.
const BACKED_UP: &[(&str, &str)] = &[
    ("backup", "running"),
    ("backup", "success"),
    ("intent", "success"),
];
const BACKUP_FAILED: &[(&str, &str)] = &[("backup", "running"), ("backup", "failed")];
/// The events of an activate-only intent whose activate timed out.
const ACTIVATE_TIMED_OUT: &[(&str, &str)] = &[("activate", "running"), ("activate", "timed_out")];

/// Runs the real binary as root, the way comin's wrapper does (see
/// [`node_run::spawn`]), with a `NOTIFY_SOCKET` and a canary variable that a
/// leak would carry to the user's programs in its environment too, and a
/// stdin pipe that carries data and stays open for the whole run. Its output
/// never shows the token.
fn run_binary(fake: &FakeHandle, action_timeout: u64) -> Finished {
    checked(spawn(fake, &node_config(action_timeout)))
}

/// [`run_binary`], its journal lines going to `journal`.
fn run_journaled(fake: &FakeHandle, action_timeout: u64, journal: &StandInJournal) -> Finished {
    checked(spawn_journaled(
        fake,
        &node_config(action_timeout),
        &[],
        journal,
    ))
}

fn node_config(action_timeout: u64) -> NodeConfig<'static> {
    NodeConfig {
        node: NODE,
        sha: SHA,
        token: TOKEN,
        action_timeout,
        target_observe_timeout: 30,
        intent_wait: 0,
        extra_env: &[("NOTIFY_SOCKET", NOTIFY_SOCKET), ROOT_CANARY],
        stdin: Some(ROOT_STDIN),
        state: None,
        run_timeout: None,
    }
}

fn checked(running: Running) -> Finished {
    let ran = running.wait(RUN_LIMIT);
    if std::env::var_os("REAL_ACTIONS_SHOW_OUTPUT").is_some() {
        eprintln!("{}", ran.output());
    }
    ran.expect_no_token(TOKEN);
    ran
}

/// node-a's events as the provider stored them, as (phase, status). Every
/// event the binary posted must have been accepted.
#[track_caller]
fn steps(fake: &FakeHandle) -> Vec<(String, String)> {
    let refused: Vec<_> = fake
        .requests_to(Route::Events)
        .into_iter()
        .filter(|r| r.status != 200)
        .map(|r| (r.status, r.body))
        .collect();
    assert!(
        refused.is_empty(),
        "events the provider refused: {refused:#?}"
    );
    fake.events_of(JOB, NODE)
        .iter()
        .map(|e| (e.phase.clone(), e.status.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect()
}

#[track_caller]
fn expect_steps(fake: &FakeHandle, ran: &Finished, want: &[(&str, &str)]) {
    assert_eq!(
        steps(fake),
        pairs(want),
        "events: {:#?}\n{}",
        fake.events_of(JOB, NODE),
        ran.output()
    );
}

/// node-a's one event with this phase and status.
#[track_caller]
fn event_of(fake: &FakeHandle, phase: &str, status: &str) -> Event {
    let found: Vec<Event> = fake
        .events_of(JOB, NODE)
        .into_iter()
        .filter(|e| e.is(phase, status))
        .collect();
    assert_eq!(found.len(), 1, "one ({phase}, {status}) event: {found:#?}");
    found.into_iter().next().expect("checked above")
}

#[track_caller]
fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
}

/// `~/.local/bin/activate` with this shell body.
fn write_activate(user: &TestUser, body: &str) {
    user.write_file(".local/bin/activate", &format!("#!/bin/sh\n{body}"), 0o755)
        .expect("write ~/.local/bin/activate");
}

fn data_dir(user: &TestUser, key: &str) -> String {
    format!("{}/data/{key}", user.home.display())
}

fn restic_binary() -> PathBuf {
    ["/usr/bin/restic", "/usr/local/bin/restic", "/bin/restic"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("restic is installed (the world came up with backups)")
}

/// A backup through the user's wrapper, as the user, with this TZ.
fn backup_through_wrapper(user: &TestUser, key: &str, tz: &str) {
    let wrapper = user.home.join(format!(".local/bin/restic-{key}"));
    let wrapper = wrapper.to_str().expect("utf-8 path").to_owned();
    let data = data_dir(user, key);
    let tz = format!("TZ={tz}");
    user.run_ok(
        "env",
        &[&tz, &wrapper, "backup", "--tag", key, "--quiet", &data],
    )
    .unwrap_or_else(|e| panic!("backup through restic-{key}: {e:#}"));
}

/// The key's snapshots as (id, time as written, instant), oldest first.
fn snapshots(user: &TestUser, key: &str) -> Vec<(String, String, jiff::Timestamp)> {
    let list = user
        .restic_snapshots(key)
        .unwrap_or_else(|e| panic!("restic snapshots of {key}: {e:#}"));
    let mut out: Vec<_> = list
        .as_array()
        .expect("restic snapshots --json is an array")
        .iter()
        .map(|s| {
            let id = s["id"].as_str().expect("snapshot id").to_owned();
            let time = s["time"].as_str().expect("snapshot time").to_owned();
            let instant: jiff::Timestamp = time.parse().expect("snapshot time is a timestamp");
            (id, time, instant)
        })
        .collect();
    out.sort_by_key(|(_, _, t)| *t);
    out
}

/// `InactiveExitTimestamp` of a unit: empty until the unit was first started.
fn started_at(user: &TestUser, unit: &str) -> String {
    user.unit_property(unit, "InactiveExitTimestamp")
        .unwrap_or_else(|e| panic!("systemctl show {unit}: {e:#}"))
}

/// A supplementary group the test adds its user to; removed on drop.
struct ExtraGroup {
    name: String,
    gid: u32,
}

impl ExtraGroup {
    fn add(user: &TestUser) -> Self {
        remove_stale_groups();
        let name = format!("hatgrp{}", std::process::id());
        let ran =
            harness::cmd::run_bounded(Command::new("groupadd").arg(&name), Duration::from_secs(30))
                .expect("groupadd");
        assert!(ran.ok(), "groupadd {name}: {}", ran.stderr);
        let group = Self {
            gid: nix::unistd::Group::from_name(&name)
                .expect("group lookup")
                .expect("the new group exists")
                .gid
                .as_raw(),
            name,
        };
        let ran = harness::cmd::run_bounded(
            Command::new("usermod").args(["-a", "-G", &group.name, &user.name]),
            Duration::from_secs(30),
        )
        .expect("usermod");
        assert!(ran.ok(), "usermod -aG {}: {}", group.name, ran.stderr);
        group
    }
}

impl Drop for ExtraGroup {
    fn drop(&mut self) {
        let _ = harness::cmd::run_bounded(
            Command::new("groupdel").arg(&self.name),
            Duration::from_secs(30),
        );
    }
}

/// Groups `hatgrp<pid>` left by a test process that was killed.
fn remove_stale_groups() {
    let Ok(groups) = fs::read_to_string("/etc/group") else {
        return;
    };
    for line in groups.lines() {
        let name = line.split(':').next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("hatgrp") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = harness::cmd::run_bounded(
                Command::new("groupdel").arg(name),
                Duration::from_secs(30),
            );
        }
    }
}

/// Everything about a directory an attacker would like to change.
#[derive(Debug, PartialEq, Eq)]
struct DirState {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    entries: BTreeMap<String, (u32, u32, u32, Vec<u8>)>,
}

fn dir_state(dir: &Path) -> DirState {
    let meta = fs::symlink_metadata(dir).expect("stat the directory");
    let mut entries = BTreeMap::new();
    for entry in fs::read_dir(dir).expect("list the directory").flatten() {
        let m = fs::symlink_metadata(entry.path()).expect("stat an entry");
        let content = if m.is_file() {
            fs::read(entry.path()).expect("read an entry")
        } else {
            Vec::new()
        };
        entries.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (m.mode(), m.uid(), m.gid(), content),
        );
    }
    DirState {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        entries,
    }
}

// ------------------------------------------------------------------ activate

/// What `activate` records about itself into `~/activate-record`.
const RECORDING_ACTIVATE: &str = r#"out="$HOME/activate-record"
{
  echo "uid=$(id -u)"
  echo "gid=$(id -g)"
  echo "groups=$(id -G)"
  echo "pwd=$(pwd -P)"
  if read -r line; then echo "stdin=data:$line"; else echo "stdin=eof"; fi
  echo "--env--"
  env
} > "$out.tmp" 2>&1
mv "$out.tmp" "$out"
echo "activated"
"#;

#[test]
fn activate_runs_as_the_user_in_a_clean_environment() {
    let w = world(&[UserSpec::new("act").without_test_units()]);
    let user = w.user("act");
    let extra = ExtraGroup::add(user);
    let expected_groups: BTreeSet<u32> = [user.gid, extra.gid].into_iter().collect();
    // What the passwd/group databases say (and what the harness's setpriv sees).
    let harness_groups: BTreeSet<u32> = user
        .run_ok("id", &["-G"])
        .expect("id -G as the user")
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert_eq!(harness_groups, expected_groups, "the extra group is set up");

    let (fake, ran) = run_activate(user, RECORDING_ACTIVATE, 60);
    ran.expect_code(0);
    expect_steps(
        &fake,
        &ran,
        &[
            ("activate", "running"),
            ("activate", "success"),
            ("intent", "success"),
        ],
    );
    assert_eq!(
        event_of(&fake, "activate", "running").message,
        format!("Applying action for {}", user.name)
    );
    assert_eq!(
        event_of(&fake, "intent", "success").message,
        format!("Completed all deploy actions for node {NODE}")
    );

    let record_path = user.home.join("activate-record");
    let record = fs::read_to_string(&record_path).unwrap_or_else(|e| {
        panic!(
            "activate left no record at {}: {e}\n{}",
            record_path.display(),
            ran.output()
        )
    });
    let (head, env_text) = record
        .split_once("--env--\n")
        .expect("record has an env part");
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from the record:\n{record}"))
            .to_owned()
    };
    assert_eq!(field("uid"), user.uid.to_string(), "{record}");
    assert_eq!(field("gid"), user.gid.to_string(), "{record}");
    let groups: BTreeSet<u32> = field("groups")
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert_eq!(groups, expected_groups, "supplementary groups: {record}");
    let home = user.home.canonicalize().expect("canonical home");
    assert_eq!(field("pwd"), home.display().to_string(), "cwd is $HOME");
    assert_eq!(field("stdin"), "eof", "stdin is /dev/null: {record}");

    assert!(
        !record.contains(TOKEN),
        "the token reached activate: {record}"
    );
    assert!(!record.contains(ROOT_STDIN), "{record}");
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let want = [
        ("HOME", user.home.display().to_string()),
        ("USER", user.name.clone()),
        ("LOGNAME", user.name.clone()),
        ("XDG_RUNTIME_DIR", format!("/run/user/{}", user.uid)),
        (
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path=/run/user/{}/bus", user.uid),
        ),
        (
            "XDG_CONFIG_HOME",
            format!("{}/.config", user.home.display()),
        ),
        (
            "XDG_STATE_HOME",
            format!("{}/.local/state", user.home.display()),
        ),
        (
            "XDG_DATA_HOME",
            format!("{}/.local/share", user.home.display()),
        ),
        ("XDG_CACHE_HOME", format!("{}/.cache", user.home.display())),
    ];
    for (key, value) in &want {
        assert_eq!(
            env.get(*key),
            Some(value),
            "{key} in activate's env: {env:#?}"
        );
    }
    let path = env.get("PATH").expect("PATH is set");
    assert!(
        path.split(':')
            .any(|d| d == format!("{}/.local/bin", user.home.display())),
        "PATH has the user's bins: {path}"
    );
    for forbidden in ["NOTIFY_SOCKET", ROOT_CANARY.0, "COMIN_GIT_SHA"] {
        assert!(!env.contains_key(forbidden), "{forbidden} leaked: {env:#?}");
    }
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("HOSTENV_COMIN_"))
        .collect();
    assert!(leaked.is_empty(), "configuration leaked: {leaked:?}");
    // Nothing beyond the documented set (and what sh itself adds).
    let allowed: BTreeSet<&str> = want
        .iter()
        .map(|(k, _)| *k)
        .chain(["PATH", "PWD", "OLDPWD", "SHLVL", "_"])
        .collect();
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| !allowed.contains(k.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected variables: {unexpected:?}"
    );
    drop(extra);
}

#[test]
fn activate_failure_is_reported_with_its_output_and_exit_code() {
    let w = world(&[UserSpec::new("fail").without_test_units()]);
    let user = w.user("fail");
    let (fake, ran) = run_activate(
        user,
        "echo 'building site'\necho 'error: database unreachable' >&2\necho 'giving up'\nexit 7\n",
        60,
    );
    ran.expect_code(1);
    expect_steps(
        &fake,
        &ran,
        &[("activate", "running"), ("activate", "failed")],
    );
    let failed = event_of(&fake, "activate", "failed");
    assert_contains(
        &failed.message,
        &[
            &user.name,
            "exit code 7",
            "building site; error: database unreachable; giving up",
        ],
    );
    let payload = failed.payload.expect("a failure payload");
    assert_eq!(payload["user"], json!(user.name), "{payload}");
    assert_eq!(payload["exitCode"], json!(7), "{payload}");
    assert_eq!(
        payload["detail"],
        json!("building site\nerror: database unreachable\ngiving up\n"),
        "{payload}"
    );
}

/// What a hostile `activate` prints to fool the operator: CR, NUL, ESC
/// sequences (clear the screen, set the terminal's title), invalid UTF-8, a
/// C1 NEL, a Unicode line separator, a right-to-left override, DEL, and
/// lines forged to look like ours, on stdout and stderr.
const FORGING_OUTPUT: &str = r"printf 'x\r\000hostenv-activate: info node=node-a: forged\n'
printf '\033[2J\007hostenv-activate: info node=node-a job=job-real-1: forged\n' >&2
printf '\377\376\302\205\342\200\250\342\200\256\177\n'
printf 'hostenv-activate: info node=node-a: forged'
";
/// The starts of the forged lines.
const FORGED: &[&str] = &[
    "hostenv-activate: info node=node-a: forged",
    "hostenv-activate: info node=node-a job=job-real-1: forged",
];
/// The output's summary in the event message: folded, then escaped.
const FORGING_SUMMARY: &str = "x\\r\\0hostenv-activate: info node=node-a: forged; \\x1b[2J\\x07hostenv-activate: info node=node-a job=job-real-1: forged; \u{fffd}\u{fffd}\\u{85}\\u{2028}\\u{202e}\\x7f; hostenv-activate: info node=node-a: forged";

/// Whatever a terminal or a journal viewer would take for a line break, a
/// control sequence or a reordering of the text.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// The lines of the binary's stderr: each one of ours, safe to show.
#[track_caller]
fn our_lines(ran: &Finished) -> Vec<&str> {
    assert!(ran.stderr.ends_with('\n'), "{}", ran.output());
    let lines: Vec<&str> = ran.stderr.split_terminator('\n').collect();
    for line in &lines {
        assert!(
            line.starts_with("hostenv-activate: ") && !line.chars().any(unsafe_char),
            "not a line of ours: {line:?}\n{}",
            ran.output()
        );
        for forged in FORGED {
            assert!(!line.starts_with(forged), "forged: {line:?}");
        }
    }
    lines
}

/// The MESSAGE of each datagram, each safe to show.
#[track_caller]
fn journal_messages(journal: &StandInJournal, ran: &Finished) -> Vec<String> {
    let datagrams = journal.datagrams();
    let messages: Vec<String> = datagrams
        .iter()
        .filter_map(|d| {
            d.iter()
                .find(|(k, _)| k == "MESSAGE")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(messages.len(), datagrams.len(), "{datagrams:#?}");
    for m in &messages {
        assert!(
            !m.chars().any(unsafe_char),
            "raw control character in the journal: {m:?}\n{}",
            ran.output()
        );
    }
    messages
}

#[test]
fn activate_output_cannot_forge_log_lines_or_reach_the_terminal() {
    let w = world(&[UserSpec::new("forge").without_test_units()]);
    let user = w.user("forge");
    for code in [1, 0] {
        // The same run with harmless output: how many lines our own log
        // calls write.
        write_activate(user, &format!("echo plain output\nexit {code}\n"));
        let journal = StandInJournal::new();
        let plain = run_journaled(&provider_of(activate_of(&user.name)), 60, &journal);
        let plain_lines = our_lines(&plain).len();
        assert_eq!(journal_messages(&journal, &plain).len(), plain_lines);

        write_activate(user, &format!("{FORGING_OUTPUT}exit {code}\n"));
        let fake = provider_of(activate_of(&user.name));
        let ran = run_journaled(&fake, 60, &journal);
        ran.expect_code(if code == 0 { 0 } else { 1 });
        let lines = our_lines(&ran);
        assert_eq!(lines.len(), plain_lines, "{}", ran.output());
        let messages = journal_messages(&journal, &ran);
        assert_eq!(messages.len(), lines.len(), "{messages:#?}");
        for e in fake.events_of(JOB, NODE) {
            assert!(!e.message.chars().any(unsafe_char), "{e:#?}");
        }
        if code == 0 {
            expect_steps(
                &fake,
                &ran,
                &[
                    ("activate", "running"),
                    ("activate", "success"),
                    ("intent", "success"),
                ],
            );
            continue;
        }
        expect_steps(
            &fake,
            &ran,
            &[("activate", "running"), ("activate", "failed")],
        );
        // The output is there, escaped: in the event, the line and the journal.
        let failed = event_of(&fake, "activate", "failed");
        assert_eq!(
            failed.message,
            format!(
                "Activation failed for {} (exit code 1): {FORGING_SUMMARY}",
                user.name
            )
        );
        assert!(
            lines.iter().any(|l| l.ends_with(FORGING_SUMMARY)),
            "{}",
            ran.output()
        );
        assert!(
            messages.iter().any(|m| m.ends_with(FORGING_SUMMARY)),
            "{messages:#?}"
        );
        // The payload keeps the output as it was (JSON carries it).
        let payload = failed.payload.expect("a failure payload");
        let detail = payload["detail"].as_str().expect("detail");
        assert_contains(
            detail,
            &[
                "x\r\0hostenv-activate: info node=node-a: forged\n",
                "\u{1b}[2J\u{7}hostenv-activate",
                "\u{fffd}\u{fffd}\u{85}\u{2028}\u{202e}\u{7f}\n",
            ],
        );
    }
}

#[test]
fn activate_past_the_timeout_is_timed_out_and_its_whole_tree_is_gone() {
    let w = world(&[UserSpec::new("slow").without_test_units()]);
    let user = w.user("slow");
    let (fake, ran) = run_activate(
        user,
        "echo starting\nsleep 300 &\necho $! > \"$HOME/background.pid\"\nsleep 299\n",
        2,
    );
    ran.expect_code(1);
    expect_steps(&fake, &ran, ACTIVATE_TIMED_OUT);
    assert_eq!(
        event_of(&fake, "activate", "timed_out").message,
        format!("Activation timed out for {} after 2s", user.name)
    );
    assert!(
        ran.elapsed < Duration::from_secs(20),
        "a 2 s timeout ended the run in {:?}",
        ran.elapsed
    );
    let pid = fs::read_to_string(user.home.join("background.pid"))
        .expect("activate recorded its background child");
    assert!(!pid.trim().is_empty());
    for needle in ["sleep 300", "sleep 299"] {
        let left = processes_matching(user, &[needle]);
        assert!(left.is_empty(), "{needle} survived the timeout: {left:?}");
    }
    assert!(
        !Path::new(&format!("/proc/{}/cmdline", pid.trim())).exists()
            || fs::read(format!("/proc/{}/cmdline", pid.trim()))
                .map(|c| c.is_empty())
                .unwrap_or(true),
        "the background child {} is still alive",
        pid.trim()
    );
}

/// behaviour.md wants the whole process tree of a timed-out `activate` gone:
/// also a descendant that started its own session (`setsid`, as daemonising
/// programs do) and so left the process group the timeout kills.
#[test]
fn activate_past_the_timeout_leaves_no_descendant_in_another_session() {
    let w = world(&[UserSpec::new("sid").without_test_units()]);
    let user = w.user("sid");
    let (fake, ran) = run_activate(
        user,
        "setsid sleep 298 >/dev/null 2>&1 </dev/null &\nsleep 297\n",
        2,
    );
    ran.expect_code(1);
    expect_steps(&fake, &ran, ACTIVATE_TIMED_OUT);
    assert!(processes_matching(user, &["sleep 297"]).is_empty());
    let left = processes_matching(user, &["sleep 298"]);
    assert!(
        left.is_empty(),
        "a descendant of the timed-out activate is still running after the report: {left:?}"
    );
}

// ------------------------------------------------------------------ backup

#[test]
fn backup_posts_the_full_id_of_the_snapshot_this_run_made() {
    let w = world(&[UserSpec::new("bak").backups(&[KEY])]);
    let user = w.user("bak");
    backup_through_wrapper(user, KEY, "UTC");
    let before = snapshots(user, KEY);
    assert_eq!(before.len(), 1, "one old snapshot: {before:?}");
    let old_id = before[0].0.clone();

    let (fake, ran) = run_backup(user, KEY, 120);
    ran.expect_code(0);
    expect_steps(&fake, &ran, BACKED_UP);
    let after = snapshots(user, KEY);
    assert_eq!(after.len(), 2, "the run made one snapshot: {after:?}");
    let newest = after.last().expect("two snapshots").0.clone();
    assert_ne!(newest, old_id);
    assert_eq!(newest.len(), 64, "a full id: {newest}");
    let success = event_of(&fake, "backup", "success");
    assert_eq!(
        success.payload,
        Some(json!({"user": user.name, "sourceNode": NODE, "snapshots": {KEY: newest}})),
        "old snapshot was {old_id}\n{}",
        ran.output()
    );
}

#[test]
fn backup_compares_snapshot_times_as_instants_across_utc_offsets() {
    let w = world(&[UserSpec::new("tz").backups(&[KEY])]);
    let user = w.user("tz");
    // An old UTC snapshot, from before the run.
    backup_through_wrapper(user, KEY, "UTC");
    // The unit itself first makes a UTC snapshot, then (seconds later) its
    // real backup with TZ=America/New_York: both are from this run, and the
    // newer one sorts first as a string.
    let unit = format!("restic-backups-{KEY}.service");
    user.write_unit(
        &format!("{unit}.d/tz.conf"),
        &format!(
            "[Service]\nEnvironment=TZ=America/New_York\n\
             ExecStartPre=/usr/bin/env TZ=UTC {restic} backup --tag {KEY} --quiet {data}\n",
            restic = restic_binary().display(),
            data = data_dir(user, KEY),
        ),
    )
    .expect("write the drop-in");
    user.daemon_reload().expect("daemon-reload");

    let (fake, ran) = run_backup(user, KEY, 120);
    ran.expect_code(0);
    expect_steps(&fake, &ran, BACKED_UP);
    let all = snapshots(user, KEY);
    assert_eq!(all.len(), 3, "{all:#?}");
    let (in_run_utc, new_york) = (&all[1], &all[2]);
    assert!(in_run_utc.1.ends_with('Z'), "UTC time: {in_run_utc:?}");
    assert!(
        !new_york.1.ends_with('Z') && new_york.1.contains("-0"),
        "a New York offset: {new_york:?}"
    );
    // The trap is set: the newer instant is the smaller string.
    assert!(
        new_york.2 > in_run_utc.2 && new_york.1 < in_run_utc.1,
        "{all:#?}"
    );
    let posted = event_of(&fake, "backup", "success")
        .payload
        .expect("backup payload");
    assert_eq!(
        posted["snapshots"][KEY],
        json!(new_york.0),
        "the newest instant is {new_york:?}; all: {all:#?}"
    );
}

#[test]
fn backup_of_a_unit_that_is_not_found_fails_and_starts_nothing() {
    let w = world(&[UserSpec::new("nf").backups(&[KEY])]);
    let user = w.user("nf");
    let missing_key = "nokey-migrate";
    let missing_unit = format!("restic-backups-{missing_key}.service");
    // The fallback names the contract forbids, as units that leave a mark.
    let decoys = [
        format!("restic-backups-{}-{missing_key}.service", user.name),
        format!("restic-backups-{}.service", user.name),
        "restic-backups-nokey.service".to_owned(),
    ];
    for (i, decoy) in decoys.iter().enumerate() {
        user.write_unit(
            decoy,
            &format!(
                "[Unit]\nDescription=decoy\n[Service]\nType=oneshot\n\
                 ExecStart=/bin/sh -c 'touch %h/decoy-{i}-started'\n"
            ),
        )
        .expect("write a decoy unit");
    }
    let own_unit = format!("restic-backups-{KEY}.service");
    // The user's own backup unit is in the manager's memory, as a node's
    // backup units are through their timers (the hint lists those).
    user.write_unit(
        "default.target.d/hat-backups.conf",
        &format!("[Unit]\nWants={own_unit}\n"),
    )
    .expect("write drop-in");
    user.daemon_reload().expect("daemon-reload");
    let watched: Vec<String> = decoys
        .iter()
        .cloned()
        .chain([
            own_unit.clone(),
            FAILING_UNIT.to_owned(),
            HANGING_UNIT.to_owned(),
        ])
        .collect();
    for unit in &watched {
        assert_eq!(started_at(user, unit), "", "{unit} has not run yet");
    }
    let snapshots_before = snapshots(user, KEY).len();

    let (fake, ran) = run_backup(user, missing_key, 60);
    ran.expect_code(1);
    expect_steps(&fake, &ran, BACKUP_FAILED);
    let failed = event_of(&fake, "backup", "failed");
    assert_contains(
        &failed.message,
        &[
            &user.name,
            missing_key,
            &missing_unit,
            "not-found",
            &own_unit,
        ],
    );
    let payload = failed.payload.expect("a failure payload");
    assert_eq!(payload["unitName"], json!(missing_unit), "{payload}");
    assert_eq!(payload["migrationKey"], json!(missing_key), "{payload}");
    assert_eq!(payload["user"], json!(user.name), "{payload}");

    // A oneshot that ran and succeeded is unloaded at once, and with it its
    // timestamps: the decisive checks are the decoys' marks and the
    // snapshot count; the timestamps catch units left failed.
    for unit in &watched {
        assert_eq!(started_at(user, unit), "", "{unit} was started");
    }
    for i in 0..decoys.len() {
        assert!(!user.home.join(format!("decoy-{i}-started")).exists());
    }
    assert_eq!(snapshots(user, KEY).len(), snapshots_before);
}

#[test]
fn backup_of_a_failing_unit_reports_result_and_exec_main_status() {
    let key = "broken-migrate";
    let w = world(&[UserSpec::new("bf").backups(&[key]).without_test_units()]);
    let user = w.user("bf");
    let unit = format!("restic-backups-{key}.service");
    user.write_unit(&unit, &failing_unit()).expect("write unit");
    user.daemon_reload().expect("daemon-reload");

    let (fake, ran) = run_backup(user, key, 60);
    ran.expect_code(1);
    expect_steps(&fake, &ran, BACKUP_FAILED);
    let failed = event_of(&fake, "backup", "failed");
    assert_contains(
        &failed.message,
        &[
            &user.name,
            key,
            &unit,
            "Result=exit-code",
            &format!("ExecMainStatus={FAILING_STATUS}"),
        ],
    );
    let payload = failed.payload.expect("a failure payload");
    for (field, value) in [
        ("user", json!(user.name)),
        ("migrationKey", json!(key)),
        ("unitName", json!(unit)),
        ("result", json!("exit-code")),
        ("execMainStatus", json!(FAILING_STATUS)),
        ("exitCode", json!(FAILING_STATUS)),
        ("activeState", json!("failed")),
        ("subState", json!("failed")),
    ] {
        assert_eq!(payload[field], value, "{field} in {payload}");
    }
    assert_eq!(
        user.unit_property(&unit, "ExecMainStatus").expect("show"),
        FAILING_STATUS.to_string()
    );
}

#[test]
fn backup_of_a_hanging_unit_times_out_and_the_unit_is_stopped() {
    let key = "slow-migrate";
    let w = world(&[UserSpec::new("bh").backups(&[key]).without_test_units()]);
    let user = w.user("bh");
    let unit = format!("restic-backups-{key}.service");
    user.write_unit(&unit, &hanging_unit()).expect("write unit");
    user.daemon_reload().expect("daemon-reload");
    let sleeping = format!("sleep {HANGING_SLEEP}");

    let (fake, ran) = run_backup(user, key, 3);
    ran.expect_code(1);
    expect_steps(
        &fake,
        &ran,
        &[("backup", "running"), ("backup", "timed_out")],
    );
    let timed_out = event_of(&fake, "backup", "timed_out");
    assert_contains(&timed_out.message, &[&user.name, key, &unit, "after 3s"]);
    let payload = timed_out.payload.expect("a payload");
    assert_eq!(payload["unitName"], json!(unit), "{payload}");
    assert!(
        ran.elapsed < Duration::from_secs(40),
        "a 3 s timeout ended the run in {:?}",
        ran.elapsed
    );
    assert_ne!(started_at(user, &unit), "", "the unit did start");
    let state = user.unit_property(&unit, "ActiveState").expect("show");
    assert!(settled(&state), "{unit} is left {state}");
    let left = processes_matching(user, &[&sleeping]);
    assert!(left.is_empty(), "the unit's {sleeping} survived: {left:?}");
}

#[test]
fn backup_without_a_new_snapshot_fails_and_never_posts_the_stale_id() {
    let key = "stale-migrate";
    let w = world(&[UserSpec::new("st").backups(&[key]).without_test_units()]);
    let user = w.user("st");
    backup_through_wrapper(user, key, "UTC");
    let stale = snapshots(user, key);
    assert_eq!(stale.len(), 1, "{stale:?}");
    let stale_id = stale[0].0.clone();
    let unit = format!("restic-backups-{key}.service");
    user.write_unit(
        &unit,
        "[Unit]\nDescription=backs up nothing\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'echo ran > %h/unit-ran'\n",
    )
    .expect("write unit");
    user.daemon_reload().expect("daemon-reload");

    let (fake, ran) = run_backup(user, key, 60);
    ran.expect_code(1);
    expect_steps(&fake, &ran, BACKUP_FAILED);
    let failed = event_of(&fake, "backup", "failed");
    assert_contains(&failed.message, &["snapshot id missing", key, &user.name]);
    // (A oneshot that succeeded is unloaded at once: its mark says it ran.)
    assert!(user.home.join("unit-ran").exists(), "the unit did run");
    assert_eq!(snapshots(user, key).len(), 1);
    let short = &stale_id[..8];
    for request in fake.requests_to(Route::Events) {
        assert!(
            !request.body.contains(short),
            "the stale snapshot {stale_id} was posted: {}",
            request.body
        );
    }
}

// ------------------------------------------------------------------ restore

/// A provider where node-b already backed `user` up.
fn restore_provider(user: &str, snapshot: &str) -> FakeHandle {
    provider(
        intent(vec![action(
            "restore",
            user,
            &[KEY],
            Some(OTHER),
            Some(NODE),
        )]),
        Some(intent(vec![action(
            "backup",
            user,
            &[KEY],
            Some(OTHER),
            Some(NODE),
        )])),
    )
    .event(JOB, backup_success(OTHER, user, &[(KEY, snapshot)]))
    .start()
}

const SNAPSHOT_ID: &str = "3f1c9e0b7a2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a";

#[test]
fn restore_writes_the_plan_for_the_user_then_activates() {
    let w = world(&[UserSpec::new("rs").without_test_units()]);
    let user = w.user("rs");
    let run_dir = PlanDir::of(user);
    write_activate(
        user,
        "cat \"/run/hostenv/user/$USER/restore/plan.json\" > \"$HOME/plan-seen\"\n",
    );
    let fake = restore_provider(&user.name, SNAPSHOT_ID);
    let ran = run_binary(&fake, 60);
    ran.expect_code(0);
    expect_steps(
        &fake,
        &ran,
        &[
            ("restore", "waiting"),
            ("restore", "running"),
            ("restore", "success"),
            ("intent", "success"),
        ],
    );
    let plan_path = run_dir.plan();
    let text = fs::read_to_string(&plan_path).expect("the plan exists");
    let plan: Value = serde_json::from_str(&text).expect("the plan is JSON");
    assert_eq!(
        plan,
        json!({"sourceNode": OTHER, "snapshots": {KEY: SNAPSHOT_ID}})
    );
    for (path, mode, kind) in [
        (plan_path.clone(), 0o600, "file"),
        (run_dir.restore_dir(), 0o700, "dir"),
    ] {
        let meta = fs::symlink_metadata(&path).expect("stat");
        assert_eq!(
            meta.is_dir(),
            kind == "dir",
            "{} is a {kind}",
            path.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            mode,
            "mode of {}",
            path.display()
        );
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "owner of {}",
            path.display()
        );
    }
    let seen = fs::read_to_string(user.home.join("plan-seen")).expect("activate read the plan");
    assert_eq!(seen, text, "activate ran after the plan was written");
}

#[test]
fn restore_refuses_a_planted_symlink_and_leaves_its_target_untouched() {
    let w = world(&[UserSpec::new("sym").without_test_units()]);
    let user = w.user("sym");
    let run_dir = PlanDir::of(user);
    write_activate(user, "touch \"$HOME/activate-ran\"\n");
    // A root-owned directory, and the user's runtime tree pointing at it.
    let target = tempfile::Builder::new()
        .prefix("hat-rootdir-")
        .tempdir()
        .expect("a root-owned directory");
    fs::set_permissions(target.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let keep = target.path().join("keep.conf");
    fs::write(&keep, "root's own file\n").expect("write");
    fs::set_permissions(&keep, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::create_dir_all(&run_dir.user_dir).expect("mkdir the user's run dir");
    fs::set_permissions(&run_dir.user_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&run_dir.user_dir, Some(user.uid), Some(user.gid)).expect("chown");
    std::os::unix::fs::symlink(target.path(), run_dir.restore_dir()).expect("plant the link");
    let before = dir_state(target.path());
    assert_eq!((before.uid, before.mode & 0o7777), (0, 0o755));

    let fake = restore_provider(&user.name, SNAPSHOT_ID);
    let ran = run_binary(&fake, 60);
    ran.expect_code(1);
    expect_steps(
        &fake,
        &ran,
        &[
            ("restore", "waiting"),
            ("restore", "running"),
            ("restore", "failed"),
        ],
    );
    let failed = event_of(&fake, "restore", "failed");
    assert_contains(&failed.message, &[&user.name, "symlink"]);
    assert_eq!(
        dir_state(target.path()),
        before,
        "the link's target changed"
    );
    assert!(!target.path().join("plan.json").exists());
    assert!(
        !user.home.join("activate-ran").exists(),
        "activate ran without a plan"
    );
}

// ------------------------------------------------------------------ deactivate

#[test]
fn deactivate_waits_for_the_target_then_stops_hostenv_target_and_reloads() {
    let w = world(&[UserSpec::new("de")]);
    let user = w.user("de");
    start_target(user);
    for unit in [HOSTENV_TARGET, TARGET_SERVICE] {
        assert_eq!(
            user.unit_property(unit, "ActiveState").expect("show"),
            "active",
            "{unit} runs before the deactivation"
        );
    }
    // A loaded unit whose file changed: only a manager reload clears this.
    let _ = user.systemctl(&["start", FAILING_UNIT]);
    thread::sleep(Duration::from_millis(1100));
    user.write_unit(
        FAILING_UNIT,
        &failing_unit().replace("fails on purpose", "fails, edited"),
    )
    .expect("rewrite unit");
    assert_eq!(
        user.unit_property(FAILING_UNIT, "NeedDaemonReload")
            .expect("show"),
        "yes"
    );

    let fake = provider(
        intent(vec![action(
            "deactivate",
            &user.name,
            &[],
            Some(NODE),
            Some(OTHER),
        )]),
        Some(intent(vec![action(
            "activate",
            &user.name,
            &[],
            None,
            None,
        )])),
    )
    .start();
    let ran = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(1500));
            let status = fake.append_event(
                JOB,
                event(
                    OTHER,
                    "intent",
                    "success",
                    "Completed all deploy actions for node node-b",
                ),
            );
            assert_eq!(status, 200, "node-b's event was accepted");
        });
        run_binary(&fake, 60)
    });
    ran.expect_code(0);
    expect_steps(
        &fake,
        &ran,
        &[
            ("deactivate", "waiting"),
            ("deactivate", "running"),
            ("deactivate", "success"),
            ("intent", "success"),
        ],
    );
    assert_eq!(
        event_of(&fake, "deactivate", "running").message,
        format!("Applying action for {}", user.name),
        "it saw the target activate (not 'not visible; proceeding')"
    );
    // node-a waited, node-b activated, only then node-a went on.
    let events = fake.events(JOB);
    let at = |node: &str, phase: &str, status: &str| position(&events, node, phase, status);
    assert!(
        at(NODE, "deactivate", "waiting") < at(OTHER, "intent", "success")
            && at(OTHER, "intent", "success") < at(NODE, "deactivate", "running"),
        "{}",
        show(&events)
    );
    for unit in [HOSTENV_TARGET, TARGET_SERVICE] {
        assert_eq!(
            user.unit_property(unit, "ActiveState").expect("show"),
            "inactive",
            "{unit} after the deactivation"
        );
    }
    assert_eq!(
        user.unit_property(FAILING_UNIT, "NeedDaemonReload")
            .expect("show"),
        "no",
        "the user's manager was reloaded"
    );
    assert_eq!(
        user.unit_property(FAILING_UNIT, "Description")
            .expect("show"),
        "hostenv test: fails, edited"
    );
    assert!(processes_matching(user, &["sleep infinity"]).is_empty());
}
