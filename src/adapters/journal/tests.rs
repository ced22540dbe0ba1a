//! The journal against a real filesystem: whole records replaced
//! atomically, changes appended one line and one fdatasync each (the same
//! bytes whatever the record holds), torn and damaged tails ignored and cut
//! off before the next append, earlier versions' files read and converted,
//! corrupt, foreign and odd files ignored with a clear log line, pruning.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::model::journal::{ActionRecord, ActionState, Delivery, Posted, Target};
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
fn a_record_is_written_whole_atomically_and_read_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    let (j, lines) = journal(&dir, "node-a");
    let r = record("node-a", "job-1", Delivery::Pending);
    j.rewrite(&r).expect("save");
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
fn a_crash_mid_rewrite_leaves_the_old_record() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let good = record("node-a", "job-1", Delivery::Delivered);
    j.rewrite(&good).expect("save");
    // A crash mid-rewrite leaves a temp file beside the record: the record
    // read is the old, whole one.
    let bytes =
        changes::encode_record(&record("node-a", "job-1", Delivery::Pending)).expect("encode");
    let temp = root.path().join(format!(".{}.99.1.tmp", j.file_name(&job)));
    std::fs::write(&temp, &bytes[..bytes.len() / 2]).expect("write temp");
    assert_eq!(j.load(&job), Some(good));
    // A file holding half a header (not written by this program's atomic
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

fn t(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

/// Action `index` of acme, started.
fn started(index: usize) -> Change {
    Change::Action(ActionRecord {
        index,
        op: Op::Activate,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Started {
            started_at: t("2026-12-01T10:00:00Z"),
        },
    })
}

/// Action `index` of acme, finished with a payload-less success.
fn finished(index: usize) -> Change {
    Change::Action(ActionRecord {
        index,
        op: Op::Activate,
        user: UserName::parse("acme").expect("user"),
        state: ActionState::Finished {
            started_at: t("2026-12-01T10:00:00Z"),
            finished_at: t("2026-12-01T10:00:01Z"),
            adopted: false,
            event: Posted {
                terminal: Terminal::success("Activation completed for acme", None),
                delivery: Delivery::Pending,
            },
        },
    })
}

fn delivered(index: usize) -> Change {
    Change::Delivery {
        of: Target::Action(index),
        delivery: Delivery::Delivered,
        touch: true,
    }
}

/// A run of `actions` actions as the engine journals it, through `j`:
/// the record written whole, then each change appended. Returns the
/// record the changes make (what reading the file must give).
fn journal_a_run(j: &FileJournal, job: &str, actions: usize) -> JobRecord {
    let mut r = record("node-a", job, Delivery::Delivered);
    r.apply(&Change::Run {
        pid: 8,
        started_at: t("2026-12-01T11:00:00Z"),
        sha: "abc".into(),
    });
    j.rewrite(&r).expect("rewrite");
    for index in 1..=actions {
        for change in [started(index), finished(index), delivered(index)] {
            r.apply(&change);
            j.append(&r.job, &change).expect("append");
        }
    }
    r
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

#[test]
fn changes_are_appended_one_line_and_one_sync_each_and_read_back_after_reopening() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let path = root.path().join(j.file_name(&job));
    let mut r = journal_a_run(&j, "job-1", 3);
    assert_eq!(j.load(&job), Some(r.clone()));
    assert_eq!(
        r.runs.last().map(|run| run.touched.clone()),
        Some(vec![1, 2, 3])
    );
    assert_eq!(
        j.written().syncs,
        2 + 3,
        "a new file is synced with its directory entry beside the run; then one \
         sync per change but an action's start, a delivery or the run's end"
    );
    assert!(
        j.unsynced().is_empty(),
        "the first durable change waited for it"
    );
    assert_eq!(j.written().bytes, size(&path));
    // Another process (a later run, after a crash) adds to the same file.
    let (again, _) = journal(root.path(), "node-a");
    assert_eq!(again.load(&job), Some(r.clone()));
    let change = Change::End(crate::model::journal::RunEnd {
        at: t("2026-12-01T11:05:00Z"),
        success: true,
        message: "done".into(),
    });
    let before = size(&path);
    again.append(&job, &change).expect("append after reopening");
    r.apply(&change);
    assert_eq!(j.load(&job), Some(r.clone()));
    assert_eq!(again.written().syncs, 0, "the run's end is not synced");
    assert_eq!(again.written().bytes, size(&path) - before);
    // Replacing a record that is there: temp file and directory synced.
    again.rewrite(&r).expect("compact");
    assert_eq!(again.written().syncs, 2);
    assert_eq!(j.load(&job), Some(r.clone()));
    assert!(lines.all().is_empty(), "{:?}", lines.all());
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn compaction_leaves_one_line_holding_the_same_record() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, _) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let path = root.path().join(j.file_name(&job));
    let r = journal_a_run(&j, "job-1", 20);
    let appended = size(&path);
    j.rewrite(&r).expect("compact");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
    assert!(
        (bytes.len() as u64) < appended,
        "{} < {appended}",
        bytes.len()
    );
    assert_eq!(j.load(&job), Some(r.clone()));
    // And changes go on after it.
    let mut r = r;
    j.append(&job, &started(21)).expect("append");
    r.apply(&started(21));
    assert_eq!(j.load(&job), Some(r));
}

#[test]
fn what_one_change_writes_does_not_grow_with_the_actions() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, _) = journal(root.path(), "node-a");
    let mut growth = Vec::new();
    for actions in [1, 10, 100, 1000] {
        // The record of a run that went through `actions` actions, written
        // whole (as a compaction or a resumed run's start writes it).
        let mut r = record("node-a", &format!("job-{actions}"), Delivery::Delivered);
        for index in 1..=actions {
            for change in [started(index), finished(index), delivered(index)] {
                r.apply(&change);
            }
        }
        j.rewrite(&r).expect("rewrite");
        let path = root.path().join(j.file_name(&r.job));
        // Each kind of change, touching the first action and the last.
        let mut grew = Vec::new();
        for change in [started(1), finished(1), delivered(1), finished(actions)] {
            let (before, written) = (size(&path), j.written());
            j.append(&r.job, &change).expect("append");
            let now = j.written();
            assert_eq!(
                now.syncs - written.syncs,
                u64::from(change.must_be_durable()),
                "one fdatasync per change that must be durable (the new file and \
                 its directory entry were synced beside the run)"
            );
            assert_eq!(now.bytes - written.bytes, size(&path) - before);
            grew.push(size(&path) - before);
        }
        growth.push((actions, grew));
    }
    let (_, first) = &growth[0];
    for (actions, grew) in &growth {
        // The same change, the same bytes; the last action's index has
        // more digits.
        assert_eq!(grew[..3], first[..3], "{actions} actions: {growth:?}");
        assert!(grew[3] <= first[3] + 3, "{actions} actions: {growth:?}");
        assert!(grew.iter().all(|g| *g < 400), "{growth:?}");
    }
}

/// The bytes of a file holding a 3-action run, and where each line ends.
fn lines_of_a_run(root: &Path) -> (FileJournal, JobId, Vec<u8>, Vec<usize>) {
    let (j, _) = journal(root, "node-a");
    let r = journal_a_run(&j, "job-1", 3);
    let bytes = std::fs::read(root.join(j.file_name(&r.job))).expect("read");
    let ends = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    (j, r.job, bytes, ends)
}

/// What the record is after the first `lines` lines of [`lines_of_a_run`].
fn after_lines(lines: usize) -> JobRecord {
    let root = tempfile::tempdir().expect("tempdir");
    let (_, job, bytes, ends) = lines_of_a_run(root.path());
    changes::read(&bytes[..ends[lines - 1]])
        .map(|f| f.record)
        .unwrap_or_else(|e| panic!("{job}: {e}"))
}

#[test]
fn a_torn_last_record_is_ignored_at_every_byte_and_cut_off_before_the_next_change() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_, job, bytes, ends) = lines_of_a_run(root.path());
    let kept = after_lines(ends.len() - 1);
    let start = ends[ends.len() - 2];
    for cut in start + 1..bytes.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, lines) = journal(dir.path(), "node-a");
        let path = dir.path().join(j.file_name(&job));
        std::fs::write(&path, &bytes[..cut]).expect("write");
        assert_eq!(j.load(&job).as_ref(), Some(&kept), "cut at {cut}");
        let said = lines.all();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains(&format!("is read up to byte {start}")) && said[0].contains("torn"),
            "{said:?}"
        );
        // The next change (a later run's) is not lost behind the torn bytes.
        j.append(&job, &started(9)).expect("append");
        let mut expected = kept.clone();
        expected.apply(&started(9));
        assert_eq!(j.load(&job), Some(expected), "cut at {cut}");
        assert_eq!(
            size(&path),
            (start + changes::encode(&started(9)).expect("line").len()) as u64
        );
    }
}

#[test]
fn a_corrupt_middle_record_ends_the_reading_and_what_follows_is_ignored() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_, job, mut bytes, ends) = lines_of_a_run(root.path());
    // Line 5 of 10 (the second action's start) damaged in the middle.
    let at = (ends[3] + ends[4]) / 2;
    bytes[at] ^= 0x01;
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(dir.path(), "node-a");
    let path = dir.path().join(j.file_name(&job));
    std::fs::write(&path, &bytes).expect("write");
    let kept = after_lines(4);
    assert_eq!(j.load(&job).as_ref(), Some(&kept));
    let said = lines.all();
    assert!(
        said[0].contains("record 5 is damaged (its checksum does not match)")
            && said[0].contains(&format!(
                "{} byte(s) after it are ignored",
                bytes.len() - ends[3]
            )),
        "{said:?}"
    );
    assert_eq!(j.records(), vec![kept.clone()]);
    j.append(&job, &started(2)).expect("append");
    let mut expected = kept;
    expected.apply(&started(2));
    assert_eq!(j.load(&job), Some(expected));
}

#[test]
fn an_earlier_versions_file_is_read_and_becomes_lines_at_the_first_change() {
    let root = tempfile::tempdir().expect("tempdir");
    let (j, lines) = journal(root.path(), "node-a");
    let job = JobId::new("job-1");
    let path = root.path().join(j.file_name(&job));
    let mut r = record("node-a", "job-1", Delivery::Pending);
    std::fs::write(&path, r.to_bytes()).expect("write");
    assert_eq!(j.load(&job), Some(r.clone()));
    assert_eq!(j.with_pending(), vec![r.clone()]);
    let change = Change::Delivery {
        of: Target::Action(0),
        delivery: Delivery::Delivered,
        touch: false,
    };
    j.append(&job, &change).expect("append");
    r.apply(&change);
    assert_eq!(j.load(&job), Some(r));
    let bytes = std::fs::read(&path).expect("read");
    assert!(!changes::read(&bytes).expect("lines").legacy);
    assert!(lines.all().is_empty(), "{:?}", lines.all());
}

#[test]
fn appending_needs_a_regular_file_written_whole_first() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    let (j, _) = journal(&dir, "node-a");
    let job = JobId::new("job-1");
    let err = j.append(&job, &started(0)).expect_err("no directory");
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    std::fs::create_dir_all(&dir).expect("dir");
    let err = j.append(&job, &started(0)).expect_err("no file");
    assert!(format!("{err:#}").contains("no journal file"), "{err:#}");
    let path = dir.join(j.file_name(&job));
    let target = root.path().join("elsewhere");
    std::fs::write(&target, b"keep").expect("write");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    let err = j.append(&job, &started(0)).expect_err("symlink");
    assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
    assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    std::fs::remove_file(&path).expect("rm");
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).expect("fifo");
    let err = j.append(&job, &started(0)).expect_err("fifo");
    assert!(
        format!("{err:#}").contains("FIFO") || format!("{err:#}").contains("cannot open"),
        "{err:#}"
    );
    std::fs::remove_file(&path).expect("rm");
    std::fs::write(&path, b"garbage\n").expect("write");
    let err = j.append(&job, &started(0)).expect_err("not a journal");
    assert!(
        format!("{err:#}").contains("not a journal record"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"garbage\n",
        "left as it was"
    );
    // Rewriting replaces whatever was there.
    let r = record("node-a", "job-1", Delivery::Pending);
    j.rewrite(&r).expect("rewrite");
    assert_eq!(j.load(&job), Some(r));
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
    a.rewrite(&record("node-a", "job-1", Delivery::Pending))
        .expect("save a");
    b.rewrite(&record("node-b", "job-1", Delivery::Delivered))
        .expect("save b");
    assert_eq!(a.with_pending().len(), 1);
    assert!(b.with_pending().is_empty());
    assert_eq!(b.records().len(), 1);
    assert!(a
        .rewrite(&record("node-b", "job-9", Delivery::Pending))
        .is_err());
    assert!(a.append(&JobId::new("job-1"), &started(0)).is_ok());
    // node-b's file of job-1 is node-b's: node-a never reads or adds to it.
    assert!(b
        .load(&JobId::new("job-1"))
        .is_some_and(|r| r.actions.len() == 1));
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
        j.rewrite(&record("node-a", &job, Delivery::Delivered))
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
        .rewrite(&record("node-a", "j", Delivery::Pending))
        .is_err());
    assert!(reader.append(&JobId::new("j"), &started(0)).is_err());
    assert_eq!(reader.load(&JobId::new("j")), None);
    assert!(!dir.exists());
}
