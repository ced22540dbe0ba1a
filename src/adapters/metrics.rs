//! The Prometheus metrics file each run ends by writing, so an operator's
//! node_exporter (textfile collector) can alert on a node whose deployments
//! fail, hang or stop happening: what the last run did, in the text
//! exposition format 0.0.4, replaced atomically so a scrape never reads
//! half a file.
//!
//! Rendered by hand, not with a metrics crate. `prometheus-client` writes
//! OpenMetrics (`# EOF`, counters renamed `_total`), not the 0.0.4 format
//! the textfile collector's parser expects, keeps one sample per label set
//! (two actions with the same op and user would merge) and brings a derive
//! macro and `parking_lot`; the `prometheus` crate writes 0.0.4 but is built
//! around long-lived registries of atomic metrics, pulls `protobuf` by
//! default, `parking_lot`, `lazy_static` and `fnv`. This file is seven
//! gauge families written once per run: their HELP and TYPE lines, samples
//! without timestamps (the textfile collector rejects those) and the three
//! label-value escapes fit in a few lines, and the tests read every
//! rendering back with an independent, strict parser of the format.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fchmod, Mode};

use crate::adapters::files::replace_atomically;
use crate::model::journal::{ActionState, JobRecord};

/// What one run did, for the metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    pub finished_at: jiff::Timestamp,
    pub success: bool,
    pub duration: Duration,
    /// The actions of the run, in the order they ran.
    pub actions: Vec<ActionMetric>,
    pub undelivered_events: usize,
    /// `env!("CARGO_PKG_VERSION")` in production.
    pub version: &'static str,
}

/// One action of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionMetric {
    pub op: String,
    pub user: String,
    pub duration: Duration,
    pub success: bool,
}

pub const LAST_RUN_TIMESTAMP: &str = "hostenv_activate_last_run_timestamp_seconds";
pub const LAST_RUN_SUCCESS: &str = "hostenv_activate_last_run_success";
pub const LAST_RUN_DURATION: &str = "hostenv_activate_last_run_duration_seconds";
pub const ACTION_DURATION: &str = "hostenv_activate_action_duration_seconds";
pub const ACTION_SUCCESS: &str = "hostenv_activate_action_success";
pub const UNDELIVERED_EVENTS: &str = "hostenv_activate_undelivered_events";
pub const BUILD_INFO: &str = "hostenv_activate_build_info";

/// The Prometheus text exposition format (version 0.0.4, what
/// node_exporter's textfile collector reads).
///
/// Every family is a gauge and is always described, also when it has no
/// sample (a run without actions): parsers drop a family without samples.
/// The per-action families carry `op`, `user` and `index`, the action's
/// position in [`RunMetrics::actions`] counting from 1 (as in the log's
/// "action N of M"): an intent may hold the same op for the same user
/// twice, and two samples with one label set would make the whole file
/// invalid. Aggregate `without (index)` for one series per op and user.
pub fn render(metrics: &RunMetrics) -> String {
    let indexes: Vec<String> = (1..=metrics.actions.len()).map(|i| i.to_string()).collect();
    let actions = |value: fn(&ActionMetric) -> f64| per_action(&metrics.actions, &indexes, value);
    let families = [
        (
            LAST_RUN_TIMESTAMP,
            "Unix time at which the last run of hostenv-activate finished.",
            alone(metrics.finished_at.as_duration().as_secs_f64()),
        ),
        (
            LAST_RUN_SUCCESS,
            "1 if the last run succeeded (or had nothing to do), 0 if it failed.",
            alone(flag(metrics.success)),
        ),
        (
            LAST_RUN_DURATION,
            "How long the last run took, in seconds.",
            alone(metrics.duration.as_secs_f64()),
        ),
        (
            ACTION_DURATION,
            "How long each action of the last run took, in seconds; index is its position in the run, from 1.",
            actions(|a| a.duration.as_secs_f64()),
        ),
        (
            ACTION_SUCCESS,
            "1 if the action of the last run succeeded, 0 if it failed or timed out; index is its position in the run, from 1.",
            actions(|a| flag(a.success)),
        ),
        (
            UNDELIVERED_EVENTS,
            "Events the provider has not received yet, kept for a later run to deliver.",
            // A count far below 2^53: exact as f64.
            alone(metrics.undelivered_events as f64),
        ),
        (
            BUILD_INFO,
            "Always 1; version is the hostenv-activate that wrote this file.",
            vec![(vec![("version", metrics.version)], 1.0)],
        ),
    ];
    let mut out = String::new();
    for (name, help, samples) in families {
        // Writing into a String cannot fail. `help` is one of the constant
        // texts above: no backslash, no newline to escape.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            sample(&mut out, name, &labels, value);
        }
    }
    out
}

/// Writes `render(metrics)` to `path` atomically: a temp file in the same
/// directory, fsync, mode 0644, rename over `path`, fsync of the directory.
/// The directory must exist (it is the node exporter's textfile
/// directory); it is never created. The collector reads only `*.prom`
/// files.
pub fn write(path: &Path, metrics: &RunMetrics) -> anyhow::Result<()> {
    let (dir, name) = split(path)?;
    let dir_fd = open_textfile_dir(dir)?;
    // The temp file is `.<name>.<pid>.<nanos>.tmp`: the textfile collector
    // only reads `*.prom`, so it never collects a half-written file.
    replace_atomically(&dir_fd, dir, name, render(metrics).as_bytes(), |file| {
        fchmod(file, Mode::from_bits_truncate(0o644)).context("chmod 0644")
    })
}

/// Whether node_exporter's textfile collector will find a metrics file at
/// `path` (`doctor`): a `*.prom` name in a directory that exists. The same
/// rules [`write`] meets, checked without writing.
pub fn check_destination(path: &Path) -> Result<String, String> {
    let shown = path.display();
    if path.extension().is_none_or(|e| e != "prom") {
        return Err(format!(
            "{shown} does not end in .prom: the textfile collector reads only *.prom files"
        ));
    }
    let (dir, _) = split(path).map_err(|e| format!("{e:#}"))?;
    match open_textfile_dir(dir) {
        Ok(_) => Ok(format!("{shown} (its directory exists)")),
        Err(e) => Err(format!("{e:#}; runs will log that they cannot write it")),
    }
}

impl RunMetrics {
    /// What the run of this process did, from the journal's `records`:
    /// its outcome, and the actions of the job it worked on (the record
    /// whose newest run is `pid`, started at `started` or later, so not one
    /// of an earlier boot with the same pid), in the intent's order. An
    /// action still started when the run ended counts as failed, up to
    /// `finished`.
    pub fn of_run(
        records: &[JobRecord],
        pid: u32,
        success: bool,
        started: Timestamp,
        finished: Timestamp,
    ) -> RunMetrics {
        let mine = records.iter().find(|r| {
            r.runs
                .last()
                .is_some_and(|run| run.pid == pid && run.started_at >= started)
        });
        let actions = mine
            .map(|record| {
                record
                    .actions
                    .iter()
                    .map(|a| {
                        let (from, to, success) = match &a.state {
                            ActionState::Started { started_at } => (*started_at, finished, false),
                            ActionState::Finished {
                                started_at,
                                finished_at,
                                event,
                                ..
                            } => (*started_at, *finished_at, event.terminal.is_success()),
                        };
                        ActionMetric {
                            op: a.op.to_string(),
                            user: a.user.to_string(),
                            duration: between(from, to),
                            success,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        RunMetrics {
            finished_at: finished,
            success,
            duration: between(started, finished),
            actions,
            undelivered_events: records.iter().map(|r| r.pending().len()).sum(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// From `from` to `to`, zero if `to` is earlier.
fn between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// `path` as its directory and its file name.
fn split(path: &Path) -> anyhow::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("metrics file {} has no file name", path.display()))?;
    let name = name
        .to_str()
        .ok_or_else(|| anyhow!("metrics file name {} is not UTF-8", path.display()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn open_textfile_dir(dir: &Path) -> anyhow::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    open(dir, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => anyhow!(
            "metrics directory {} does not exist: it must be node_exporter's textfile \
             directory (--collector.textfile.directory), which this program does not create",
            dir.display()
        ),
        Errno::ENOTDIR => anyhow!("metrics directory {} is not a directory", dir.display()),
        e => anyhow!("cannot open metrics directory {}: {e}", dir.display()),
    })
}

/// One sample of a family: its labels (name, value) and its value.
type Sample<'a> = (Vec<(&'static str, &'a str)>, f64);

/// The one sample of a family without labels.
fn alone(value: f64) -> Vec<Sample<'static>> {
    vec![(Vec::new(), value)]
}

/// One sample per action, labelled with its op, user and `indexes` entry.
fn per_action<'a>(
    actions: &'a [ActionMetric],
    indexes: &'a [String],
    value: fn(&ActionMetric) -> f64,
) -> Vec<Sample<'a>> {
    actions
        .iter()
        .zip(indexes)
        .map(|(action, index)| {
            let labels = vec![
                ("op", action.op.as_str()),
                ("user", action.user.as_str()),
                ("index", index.as_str()),
            ];
            (labels, value(action))
        })
        .collect()
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// One sample line, without a timestamp. Every value here is finite (a
/// duration, a Unix time, a count, 0 or 1), which Rust prints as a plain
/// decimal that reads back as the same f64.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, text)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing into a String cannot fail.
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(text));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format spells it between double quotes.
fn escape_label_value(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

// Declared here, not in `tests`: a `#[path]` inside an inline module is
// taken relative to `src/adapters/metrics/`, which does not exist.
#[cfg(test)]
#[path = "../../tests/support/prometheus.rs"]
mod prometheus;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::prometheus::{labels, parse, read, Families, Labels};
    use super::*;
    use crate::model::journal::Delivery;

    const FILE: &str = "hostenv_activate.prom";

    fn action(op: &str, user: &str, millis: u64, success: bool) -> ActionMetric {
        ActionMetric {
            op: op.into(),
            user: user.into(),
            duration: Duration::from_millis(millis),
            success,
        }
    }

    fn successful_run() -> RunMetrics {
        RunMetrics {
            finished_at: "2024-05-01T12:00:00.25Z".parse().expect("timestamp"),
            success: true,
            duration: Duration::from_millis(2500),
            actions: vec![
                action("activate", "alice", 1500, true),
                action("backup", "bob", 250, true),
            ],
            undelivered_events: 0,
            version: "1.2.3",
        }
    }

    /// The same op for the same user twice, the second failing, and two
    /// events the provider never received.
    fn failed_run() -> RunMetrics {
        RunMetrics {
            finished_at: "2024-05-02T00:00:00Z".parse().expect("timestamp"),
            success: false,
            duration: Duration::from_secs(905),
            actions: vec![
                action("activate", "alice", 3000, true),
                action("activate", "alice", 900_500, false),
            ],
            undelivered_events: 2,
            version: "1.2.3",
        }
    }

    fn unlabelled(value: f64) -> Vec<(Labels, f64)> {
        vec![(Labels::new(), value)]
    }

    fn action_sample(op: &str, user: &str, index: &str, value: f64) -> (Labels, f64) {
        (
            labels(&[("op", op), ("user", user), ("index", index)]),
            value,
        )
    }

    fn written(run: &RunMetrics) -> Families {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        write(&path, run).expect("write");
        read(&path)
    }

    /// What a file written by version 1.2.3 must read back as: the last
    /// run's finish time, success and duration, each action as (index, op,
    /// user, seconds, success), and the undelivered events.
    fn every_family(
        last_run: [f64; 3],
        actions: &[(&str, &str, &str, f64, f64)],
        undelivered: f64,
    ) -> Families {
        let [finished_at, success, duration] = last_run;
        let per_action = |seconds: bool| {
            actions
                .iter()
                .map(|&(index, op, user, secs, ok)| {
                    action_sample(op, user, index, if seconds { secs } else { ok })
                })
                .collect()
        };
        [
            (LAST_RUN_TIMESTAMP, unlabelled(finished_at)),
            (LAST_RUN_SUCCESS, unlabelled(success)),
            (LAST_RUN_DURATION, unlabelled(duration)),
            (ACTION_DURATION, per_action(true)),
            (ACTION_SUCCESS, per_action(false)),
            (UNDELIVERED_EVENTS, unlabelled(undelivered)),
            (BUILD_INFO, vec![(labels(&[("version", "1.2.3")]), 1.0)]),
        ]
        .into_iter()
        .map(|(name, samples)| (name.to_string(), samples))
        .collect()
    }

    #[test]
    fn a_successful_run_reads_back_with_every_family() {
        let expected = every_family(
            [1_714_564_800.25, 1.0, 2.5],
            &[
                ("1", "activate", "alice", 1.5, 1.0),
                ("2", "backup", "bob", 0.25, 1.0),
            ],
            0.0,
        );
        assert_eq!(written(&successful_run()), expected);
    }

    #[test]
    fn a_failed_run_reads_back_with_every_family_and_both_repeated_actions() {
        let expected = every_family(
            [1_714_608_000.0, 0.0, 905.0],
            &[
                ("1", "activate", "alice", 3.0, 1.0),
                ("2", "activate", "alice", 900.5, 0.0),
            ],
            2.0,
        );
        assert_eq!(written(&failed_run()), expected);
    }

    #[test]
    fn a_run_without_actions_still_describes_every_family() {
        let run = RunMetrics {
            actions: Vec::new(),
            ..successful_run()
        };
        let families = written(&run);
        let names: Vec<&str> = families.keys().map(String::as_str).collect();
        let mut all = [
            LAST_RUN_TIMESTAMP,
            LAST_RUN_SUCCESS,
            LAST_RUN_DURATION,
            ACTION_DURATION,
            ACTION_SUCCESS,
            UNDELIVERED_EVENTS,
            BUILD_INFO,
        ];
        all.sort_unstable();
        assert_eq!(names, all);
        assert_eq!(families[ACTION_DURATION], Vec::new());
        assert_eq!(families[ACTION_SUCCESS], Vec::new());
        assert_eq!(families[LAST_RUN_SUCCESS], unlabelled(1.0));
    }

    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_survive_the_parser() {
        let odd_op = "re\"load\\";
        let odd_user = "a\\\"b\nc\\n";
        let odd_version = "1.0\n\"dirty\"\\";
        let run = RunMetrics {
            actions: vec![action(odd_op, odd_user, 1000, false)],
            version: odd_version,
            ..successful_run()
        };
        let text = render(&run);
        let families = parse(&text);
        assert_eq!(
            families[ACTION_SUCCESS],
            vec![action_sample(odd_op, odd_user, "1", 0.0)]
        );
        assert_eq!(
            families[ACTION_DURATION],
            vec![action_sample(odd_op, odd_user, "1", 1.0)]
        );
        assert_eq!(
            families[BUILD_INFO],
            vec![(labels(&[("version", odd_version)]), 1.0)]
        );
    }

    struct SetOnDrop<'a>(&'a AtomicBool);

    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn readers_see_one_whole_file_or_the_other_while_it_is_rewritten() {
        // The writer goes on until both counts are reached.
        const REWRITES: usize = 300;
        const READS: usize = 200;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let runs = [successful_run(), failed_run()];
        let renderings = runs.each_ref().map(render);
        let parsed = renderings.each_ref().map(|r| parse(r));
        assert_ne!(renderings[0], renderings[1]);
        write(&path, &runs[0]).expect("first write");
        let done = AtomicBool::new(false);
        let reads = AtomicUsize::new(0);
        let reader_gone = AtomicBool::new(false);
        let mut seen = [0; 2];
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut rewrites = 0;
                let written = loop {
                    let enough = rewrites >= REWRITES && reads.load(Ordering::Acquire) >= READS;
                    if enough || reader_gone.load(Ordering::Acquire) {
                        break Ok(());
                    }
                    if let Err(e) = write(&path, &runs[(rewrites + 1) % 2]) {
                        break Err(e);
                    }
                    rewrites += 1;
                };
                done.store(true, Ordering::Release);
                written
            });
            // A failing read panics: the writer must not wait for more reads.
            let _stop_writer = SetOnDrop(&reader_gone);
            while !done.load(Ordering::Acquire) {
                let text = std::fs::read_to_string(&path).expect("read while rewritten");
                let families = parse(&text);
                let which = renderings
                    .iter()
                    .position(|r| *r == text)
                    .unwrap_or_else(|| panic!("neither rendering, a mix or a cut:\n{text}"));
                assert_eq!(families, parsed[which]);
                seen[which] += 1;
                reads.fetch_add(1, Ordering::Release);
            }
            writer
                .join()
                .expect("writer thread")
                .expect("every rewrite succeeds");
        });
        assert!(
            seen.iter().all(|&n| n > 0),
            "the reads did not overlap the rewrites: {seen:?}"
        );
    }

    #[test]
    fn a_missing_directory_is_named_and_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("textfile_collector");
        let err = write(&missing.join(FILE), &successful_run()).expect_err("no directory");
        let message = format!("{err:#}");
        assert!(
            message.contains(&format!(
                "metrics directory {} does not exist",
                missing.display()
            )),
            "{message}"
        );
        assert!(!missing.exists());

        let file = dir.path().join("plain");
        std::fs::write(&file, b"").expect("write");
        let err = write(&file.join(FILE), &successful_run()).expect_err("not a directory");
        assert_eq!(
            format!("{err:#}"),
            format!("metrics directory {} is not a directory", file.display())
        );
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_file_is_0644_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // The new file's mode is set, not inherited from the old one or
        // left at the temp file's 0600.
        write(&path, &successful_run()).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            render(&successful_run())
        );
        assert_eq!(names_in(dir.path()), [FILE]);
    }

    #[test]
    fn a_write_that_fails_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: the rename cannot replace it.
        let path = dir.path().join(FILE);
        std::fs::create_dir(&path).expect("mkdir");
        let err = write(&path, &successful_run()).expect_err("a directory is in the way");
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
        assert_eq!(names_in(dir.path()), [FILE]);
        assert!(path.is_dir());
    }

    #[test]
    fn the_path_splits_into_directory_and_file_name_a_bare_name_in_the_current_directory() {
        let (dir, name) = split(Path::new(FILE)).expect("split");
        assert_eq!((dir, name), (Path::new("."), FILE));
        let (dir, name) =
            split(Path::new("/var/lib/prometheus-node-exporter/x.prom")).expect("split");
        assert_eq!(
            (dir, name),
            (Path::new("/var/lib/prometheus-node-exporter"), "x.prom")
        );
        assert!(split(Path::new("/")).is_err());
        assert!(split(Path::new("textfiles/..")).is_err());
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    /// A job record of node-a whose newest run is `pid`'s, started at `at`,
    /// with a finished (delivered) activate and a started backup.
    fn record(job: &str, pid: u32, at: &str, closing: Option<Delivery>) -> JobRecord {
        use crate::model::journal::{ActionRecord, Posted};
        use crate::model::{IntentDigest, JobId, NodeName, Op, Terminal, UserName};
        let mut r = JobRecord::new(
            NodeName::parse("node-a").expect("node"),
            JobId::new(job),
            "abc".into(),
            IntentDigest::of(&serde_json::json!({})),
        );
        r.begin_run(pid, ts(at));
        let user = UserName::parse("acme").expect("user");
        r.put(ActionRecord {
            index: 0,
            op: Op::Activate,
            user: user.clone(),
            state: ActionState::Finished {
                started_at: ts("2026-12-01T10:00:01Z"),
                finished_at: ts("2026-12-01T10:00:04Z"),
                adopted: false,
                event: Posted {
                    terminal: Terminal::success("done", None),
                    delivery: Delivery::Delivered,
                },
            },
        });
        r.put(ActionRecord {
            index: 1,
            op: Op::Backup,
            user,
            state: ActionState::Started {
                started_at: ts("2026-12-01T10:00:05Z"),
            },
        });
        r.closing = closing.map(|delivery| Posted {
            terminal: Terminal::failed("cut short", None),
            delivery,
        });
        r
    }

    #[test]
    fn a_runs_metrics_come_from_its_own_record_and_count_every_undelivered_event() {
        let started = ts("2026-12-01T10:00:00Z");
        let finished = ts("2026-12-01T10:00:10Z");
        let records = [
            // Another job, an earlier run with this pid: not this run's.
            record("old", 42, "2026-11-30T10:00:00Z", Some(Delivery::Pending)),
            record("mine", 42, "2026-12-01T10:00:00Z", Some(Delivery::Pending)),
        ];
        let m = RunMetrics::of_run(&records, 42, false, started, finished);
        assert!(!m.success);
        assert_eq!(m.duration, Duration::from_secs(10));
        assert_eq!(m.finished_at, finished);
        assert_eq!(
            m.actions,
            vec![
                action("activate", "acme", 3_000, true),
                // Started, never finished: failed, up to the run's end.
                action("backup", "acme", 5_000, false),
            ]
        );
        assert_eq!(m.undelivered_events, 2, "both records' closing events");
        let none = RunMetrics::of_run(&records, 7, true, started, finished);
        assert!(none.actions.is_empty(), "no record is this pid's");
    }

    /// A failed health check (`activate` exited 0, a service did not come
    /// up) counts as a failed action like any other.
    #[test]
    fn an_unhealthy_activation_is_a_failed_action() {
        use crate::model::journal::{ActionRecord, Posted};
        use crate::model::{EventPayload, HealthFailure, Op, Terminal, UnhealthyUnit, UserName};

        // The record's activate, replaced by one whose health check failed.
        let mut r = record("mine", 42, "2026-12-01T10:00:00Z", None);
        let user = UserName::parse("acme").expect("user");
        r.put(ActionRecord {
            index: 0,
            op: Op::Activate,
            user: user.clone(),
            state: ActionState::Finished {
                started_at: ts("2026-12-01T10:00:01Z"),
                finished_at: ts("2026-12-01T10:00:04Z"),
                adopted: false,
                event: Posted {
                    terminal: Terminal::failed(
                        "1 service(s) of acme not healthy after activation: app.service failed/failed (exit-code)",
                        Some(EventPayload::Unhealthy(HealthFailure {
                            user,
                            exit_code: 0,
                            unhealthy: vec![UnhealthyUnit {
                                unit: "app.service".into(),
                                active_state: "failed".into(),
                                sub_state: "failed".into(),
                                result: Some("exit-code".into()),
                                exec_main_status: Some(1),
                            }],
                        })),
                    ),
                    delivery: Delivery::Delivered,
                },
            },
        });
        let m = RunMetrics::of_run(
            &[r],
            42,
            false,
            ts("2026-12-01T10:00:00Z"),
            ts("2026-12-01T10:00:10Z"),
        );
        assert_eq!(m.actions[0], action("activate", "acme", 3_000, false));
    }

    #[test]
    fn the_destination_must_be_a_prom_file_in_a_directory_that_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_destination(&dir.path().join(FILE)).is_ok());
        let not_prom = check_destination(&dir.path().join("metrics.txt")).expect_err("name");
        assert!(not_prom.contains("does not end in .prom"), "{not_prom}");
        let gone = check_destination(&dir.path().join("gone").join(FILE)).expect_err("dir");
        assert!(gone.contains("does not exist"), "{gone}");
    }
}
