//! The journal against a real filesystem: atomic replacement, corrupt,
//! torn and foreign files ignored with a clear log line, pruning.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::model::journal::{ActionRecord, ActionState, Delivery, Posted};
use crate::model::{IntentDigest, Op, Terminal, UserName};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Log for Lines {
    fn line(&self, _: Level, _: &LogFields<'_>, message: &str) {
        self.0.lock().expect("lock").push(message.to_owned());
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

fn node(n: &str) -> NodeName {
    NodeName::parse(n).expect("node")
}

fn journal(dir: &Path, n: &str) -> (FileJournal, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (FileJournal::new(dir, node(n), lines.clone()), lines)
}

fn record(n: &str, job: &str, delivery: Delivery) -> JobRecord {
    let t: Timestamp = "2026-12-01T10:00:00Z".parse().expect("ts");
    let mut r = JobRecord::new(
        node(n),
        JobId::new(job),
        "abc".into(),
        IntentDigest::of(&json!({"schemaVersion": 1, "actions": []})),
    );
    r.begin_run(7, t);
    r.put(ActionRecord {
        index: 0,
        op: Op::Activate,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Finished {
            started_at: t,
            finished_at: t,
            adopted: false,
            event: Posted {
                terminal: Terminal::success("Activation completed for acme", None),
                delivery,
            },
        },
    });
    r
}

#[test]
fn a_record_is_saved_atomically_and_read_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    let (j, lines) = journal(&dir, "node-a");
    let r = record("node-a", "job-1", Delivery::Pending);
    j.save(&r).expect("save");
    assert_eq!(j.load(&JobId::new("job-1")), Some(r.clone()));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the state directory is created 0700");
    let file = dir.join(j.file_name(&JobId::new("job-1")));
    assert_eq!(mode(&file), 0o600);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["job-job-1.node-node-a.json"],
        "no temp file is left"
    );
    assert!(lines.all().is_empty(), "{:?}", lines.all());
    assert_eq!(j.with_pending(), vec![r]);
    assert_eq!(j.load(&JobId::new("job-2")), None, "no record, no noise");
    assert!(lines.all().is_empty(), "{:?}", lines.all());
}

#[test]
fn a_torn_write_is_never_read_as_a_record() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let good = record("node-a", "job-1", Delivery::Delivered);
    j.save(&good).expect("save");
    // A crash mid-save leaves a temp file beside the record: the record
    // read is the old, whole one.
    let bytes = record("node-a", "job-1", Delivery::Pending).to_bytes();
    let temp = root.path().join(format!(".{}.99.1.tmp", j.file_name(&job)));
    std::fs::write(&temp, &bytes[..bytes.len() / 2]).expect("write temp");
    assert_eq!(j.load(&job), Some(good));
    // A file cut short in place (not written by this program's atomic
    // replace) is refused, with a line saying which file and why.
    let path = root.path().join(j.file_name(&job));
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("tear");
    assert_eq!(j.load(&job), None);
    let all = lines.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0].contains(&path.display().to_string()) && all[0].contains("not a journal record"),
        "{all:?}"
    );
}

#[test]
fn corrupt_foreign_and_odd_files_are_ignored_with_a_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let path = root.path().join(j.file_name(&job));
    type Make<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Make<'_>)> = vec![
        (
            "not a journal record",
            Box::new(|| std::fs::write(&path, [0xff, 0x00, 0x13]).expect("write")),
        ),
        (
            "format version 9",
            Box::new(|| std::fs::write(&path, br#"{"formatVersion": 9}"#).expect("write")),
        ),
        (
            "record of node node-b",
            Box::new(|| {
                std::fs::write(
                    &path,
                    record("node-b", "job-1", Delivery::Pending).to_bytes(),
                )
                .expect("write")
            }),
        ),
        (
            "record of job job-2",
            Box::new(|| {
                std::fs::write(
                    &path,
                    record("node-a", "job-2", Delivery::Pending).to_bytes(),
                )
                .expect("write")
            }),
        ),
        (
            "larger than",
            Box::new(|| {
                std::fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).expect("write")
            }),
        ),
        (
            "FIFO",
            Box::new(|| nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).expect("fifo")),
        ),
        (
            "symbolic link",
            Box::new(|| std::os::unix::fs::symlink("/etc/passwd", &path).expect("symlink")),
        ),
    ];
    for (why, make) in cases {
        let _ = std::fs::remove_file(&path);
        make();
        assert_eq!(j.load(&job), None, "{why}");
        let last = lines.all().pop().unwrap_or_default();
        assert!(last.contains(why), "{why}: {last}");
        assert!(j.with_pending().is_empty(), "{why}");
    }
}

#[test]
fn nodes_sharing_a_directory_keep_apart() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, _) = journal(root.path(), "node-a");
    let (b, _) = journal(root.path(), "node-b");
    a.save(&record("node-a", "job-1", Delivery::Pending))
        .expect("save a");
    b.save(&record("node-b", "job-1", Delivery::Delivered))
        .expect("save b");
    assert_eq!(a.with_pending().len(), 1);
    assert!(b.with_pending().is_empty());
    assert_eq!(b.records().len(), 1);
    assert!(a
        .save(&record("node-b", "job-9", Delivery::Pending))
        .is_err());
}

#[test]
fn odd_job_ids_make_safe_file_names() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, _) = journal(root.path(), "node/../a");
    for job in ["../../etc/passwd", "a b", &"x".repeat(1000), ".hidden"] {
        let name = j.file_name(&JobId::new(job));
        assert!(!name.contains('/') && name.len() < 200, "{name}");
        assert!(name.starts_with("job-"), "{name}");
    }
}

#[test]
fn pruning_keeps_the_newest_fifty_or_thirty_days() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, _) = journal(root.path(), "node-a");
    let now: Timestamp = "2026-12-01T10:00:00Z".parse().expect("ts");
    let day = Duration::from_secs(24 * 3600);
    let at =
        |age: Duration| SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_second() as u64) - age;
    // 40 young files, 15 old ones: the 10 newest old ones are within the
    // newest 50 and stay; the 5 oldest go.
    for i in 0..55u64 {
        let job = format!("job-{i:02}");
        j.save(&record("node-a", &job, Delivery::Delivered))
            .expect("save");
        let age = if i < 40 {
            day * (i as u32 % 20)
        } else {
            day * (31 + i as u32)
        };
        let file = File::options()
            .write(true)
            .open(root.path().join(j.file_name(&JobId::new(&job))))
            .expect("open");
        file.set_modified(at(age)).expect("set mtime");
    }
    j.prune(now);
    let left: Vec<String> = j.records().iter().map(|r| r.job.to_string()).collect();
    assert_eq!(left.len(), 50, "{left:?}");
    for gone in 50..55 {
        assert!(!left.contains(&format!("job-{gone:02}")), "{gone}");
    }
    // Nothing is pruned while there are at most 50, however old.
    let reader = FileJournal::reader(root.path(), node("node-a"), Arc::new(Lines::default()));
    reader.prune(now + jiff::SignedDuration::from_hours(24 * 365));
    assert_eq!(j.records().len(), 50);
    j.prune(now + jiff::SignedDuration::from_hours(24 * 365));
    assert_eq!(j.records().len(), 50);
}

#[test]
fn a_reader_creates_and_writes_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    let reader = FileJournal::reader(&dir, node("node-a"), Arc::new(Lines::default()));
    assert!(reader
        .save(&record("node-a", "j", Delivery::Pending))
        .is_err());
    assert_eq!(reader.load(&JobId::new("j")), None);
    assert!(!dir.exists());
}
