//! The run journal on disk (`ports::Journal`): one file per (job, node) in
//! the state directory (0700, root), in the format of
//! [`crate::model::journal::changes`]: a run starts the file as its whole
//! record, appends one self-checking line per change with one `fdatasync`
//! (what a change writes does not grow with the intent), and compacts the
//! file back to its whole record when it ends (temp file, fsync, rename,
//! fsync of the directory). Read back bounded and defensively: a torn or
//! damaged tail is logged and ignored, a file that is not a record of this
//! node is logged and ignored, never fatal; a file in the whole-JSON format
//! of earlier versions is read, and replaced at the next write. The file
//! names keep the `.json` ending of those versions. Old files are pruned.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::fstatat;
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{fdatasync, fsync, ftruncate, mkdir, unlinkat, UnlinkatFlags};
use sha2::{Digest, Sha256};

use crate::adapters::files::{kind_of, read_at_most, read_bounded, replace_atomically, FileError};
use crate::model::journal::changes::{self, Change, Folded};
use crate::model::journal::JobRecord;
use crate::model::{JobId, NodeName};
use crate::ports::{Journal, JournalScan, Level, Log, LogFields, Setting};

/// Where the journal lives unless configured otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/hostenv-activate";
/// A journal file holds a job's whole record (a few hundred bytes per
/// action) and at most one run's changes on top (about three lines per
/// action, a failure's output at most once): a 1,000-action run's file
/// stays near 1 MiB. Anything this large is not ours, and an append that
/// would grow a file past it is refused.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Pruning keeps at least this many of the node's newest files...
pub const KEEP_NEWEST: usize = 50;
/// ...and every file younger than this.
pub const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// [`Journal`] in a directory.
pub struct FileJournal {
    dir: PathBuf,
    /// `None`: every node's records (`status` without a node name; read only).
    node: Option<NodeName>,
    log: Arc<dyn Log + Send + Sync>,
    /// A dry run, `status` and `doctor` only read.
    writable: bool,
    /// The files this journal wrote whole or has read since it was made:
    /// a change is appended to them as they are. Any other file is read
    /// first, and its torn tail cut off (or an earlier version's file
    /// converted), so that no change ever lands behind unreadable bytes.
    appendable: Mutex<HashSet<String>>,
    /// Files this journal created whose creation is not known to be on disk
    /// yet. Each is synced with its directory entry on a thread of its own
    /// (`Some`), so that the sync overlaps what the run does next; the next
    /// change that must be durable waits for it, and syncs the directory
    /// itself when that thread could not start or failed (`None`).
    unsynced: Mutex<HashMap<String, Option<Syncing>>>,
    /// What this journal wrote, for the benchmark and tests.
    bytes: AtomicU64,
    syncs: AtomicU64,
}

/// What a [`FileJournal`] has written so far: bytes handed to `write`, and
/// `fsync`/`fdatasync` calls (of files and of the directory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub syncs: u64,
}

/// A new file's sync (the file, then its directory entry) under way.
type Syncing = std::thread::JoinHandle<nix::Result<()>>;

/// Starts syncing a new `file` and its directory entry in `dir` on a thread
/// of its own; `None` if it cannot start (the caller syncs later).
fn sync_in_background(dir: &OwnedFd, file: &File) -> Option<Syncing> {
    let (dir, file) = (dir.try_clone().ok()?, file.try_clone().ok()?);
    std::thread::Builder::new()
        .name("journal-sync".into())
        .spawn(move || {
            fdatasync(&file)?;
            fsync(&dir)
        })
        .ok()
}

/// Creates `name` in `dir` (never through a symlink, never over anything)
/// holding `bytes`, mode 0600, without syncing: see [`Journal::rewrite`].
/// A partly written file is removed.
fn create_unsynced(dir: &OwnedFd, name: &str, bytes: &[u8]) -> anyhow::Result<File> {
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_bits_truncate(0o600))?;
    let mut file = File::from(fd);
    let written = file
        .write_all(bytes)
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(fchmod(&file, Mode::from_bits_truncate(0o600))?));
    if written.is_err() {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    written.map(|()| file)
}

/// A journal file name part: `[A-Za-z0-9_-]` kept, other bytes `%XX`;
/// long values are replaced by a hash (file names are at most 255 bytes).
fn encode(raw: &str) -> String {
    let encoded: String = raw
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if encoded.len() <= 80 {
        encoded
    } else {
        let hash = Sha256::digest(raw.as_bytes());
        let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("h{hex}")
    }
}

/// How the file names of `node`'s records end.
fn node_suffix(node: &NodeName) -> String {
    format!(".node-{}.json", encode(node.as_str()))
}

impl FileJournal {
    /// The journal of `node` in `dir`, created (0700) on the first write.
    pub fn new(dir: impl Into<PathBuf>, node: NodeName, log: Arc<dyn Log + Send + Sync>) -> Self {
        FileJournal {
            dir: dir.into(),
            node: Some(node),
            log,
            writable: true,
            appendable: Mutex::default(),
            unsynced: Mutex::default(),
            bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// The same journal, for reading only: nothing is created or written.
    pub fn reader(
        dir: impl Into<PathBuf>,
        node: NodeName,
        log: Arc<dyn Log + Send + Sync>,
    ) -> Self {
        FileJournal {
            writable: false,
            ..Self::new(dir, node, log)
        }
    }

    /// Every node's records in `dir`, for reading only.
    pub fn all_nodes(dir: impl Into<PathBuf>, log: Arc<dyn Log + Send + Sync>) -> Self {
        FileJournal {
            dir: dir.into(),
            node: None,
            log,
            writable: false,
            appendable: Mutex::default(),
            unsynced: Mutex::default(),
            bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// What this journal has written since it was made.
    pub fn written(&self) -> Written {
        Written {
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    fn count(&self, bytes: usize, syncs: u64) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.syncs.fetch_add(syncs, Ordering::Relaxed);
    }

    /// `job-<job>.node-<node>.json`.
    pub fn file_name(&self, job: &JobId) -> String {
        format!("job-{}{}", encode(job.as_str()), self.suffix())
    }

    /// The file name of `record`, whichever node it is of.
    fn name_of(record: &JobRecord) -> String {
        format!(
            "job-{}{}",
            encode(record.job.as_str()),
            node_suffix(&record.node)
        )
    }

    /// How this journal's file names end.
    fn suffix(&self) -> String {
        self.node
            .as_ref()
            .map_or_else(|| ".json".to_owned(), node_suffix)
    }

    fn warn(&self, job: Option<&JobId>, message: &str) {
        let fields = LogFields {
            node: self.node.as_ref().map(NodeName::as_str),
            job: job.map(JobId::as_str),
            ..LogFields::default()
        };
        self.log.line(Level::Warn, &fields, message);
    }

    /// The directory, opened without following a link; created 0700 first
    /// when missing and `create`.
    fn open_dir(&self, create: bool) -> anyhow::Result<Option<OwnedFd>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match open(&self.dir, flags, Mode::empty()) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) if create => {}
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => bail!(self.not_a_directory()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot open the state directory {}", self.dir.display())
                })
            }
        }
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        match mkdir(&self.dir, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create the state directory {}", self.dir.display())
                })
            }
        }
        let fd = open(&self.dir, flags, Mode::empty())
            .with_context(|| format!("cannot open the state directory {}", self.dir.display()))?;
        fchmod(&fd, Mode::from_bits_truncate(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", self.dir.display()))?;
        Ok(Some(fd))
    }

    /// Reads one file as this node's record of `job` (when given), or
    /// says why it cannot be used (`None`: there is no file).
    fn read(&self, path: &Path, job: Option<&JobId>) -> Result<Folded, Option<String>> {
        let bytes = read_bounded(path, MAX_FILE_BYTES, true).map_err(|e| match e {
            FileError::Missing => None,
            other => Some(other.to_string()),
        })?;
        self.parse(&bytes, job).map_err(Some)
    }

    fn parse(&self, bytes: &[u8], job: Option<&JobId>) -> Result<Folded, String> {
        let folded = changes::read(bytes).map_err(|e| e.to_string())?;
        let record = &folded.record;
        if self.node.as_ref().is_some_and(|node| record.node != *node) {
            return Err(format!("it is the record of node {}", record.node));
        }
        if job.is_some_and(|job| record.job != *job) {
            return Err(format!("it is the record of job {}", record.job));
        }
        Ok(folded)
    }

    /// Says that the end of `path` was not read, and why.
    fn warn_tail(&self, job: Option<&JobId>, path: &Path, folded: &Folded) {
        if let Some(why) = &folded.ignored {
            self.warn(
                job,
                &format!(
                    "the journal file {} is read up to byte {}: {why}",
                    path.display(),
                    folded.valid
                ),
            );
        }
    }

    /// The checks every write makes: this journal may write, and `job`'s
    /// file is this node's.
    fn writable_for(&self, node: &NodeName) -> anyhow::Result<()> {
        if !self.writable {
            bail!("the journal is open for reading only");
        }
        if self.node.as_ref() != Some(node) {
            bail!(
                "a record of node {node} does not belong in this journal ({})",
                self.dir.display()
            );
        }
        Ok(())
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Syncing>>> {
        self.unsynced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn appendable(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic elsewhere cannot leave the set half-changed.
        self.appendable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens `name` to append to it: never through a symlink, never a FIFO
    /// or device, never created (a run starts a file whole, with
    /// [`Journal::rewrite`]).
    fn open_to_append(&self, dir: &OwnedFd, name: &str) -> anyhow::Result<File> {
        let path = self.dir.join(name);
        let flags = OFlag::O_RDWR
            | OFlag::O_APPEND
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        let fd = match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => bail!(
                "there is no journal file {} to add to (it is written whole when a run starts)",
                path.display()
            ),
            Err(Errno::ELOOP) => bail!("{} is a symbolic link", path.display()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {}", path.display()));
            }
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is a {}, not a regular file",
                path.display(),
                kind_of(meta.mode())
            );
        }
        Ok(file)
    }

    /// Makes `file` (of `job`) fit to take a change at its end: reads it
    /// and cuts off a torn or damaged tail. `Some(record)`: the file is in
    /// the format of earlier versions and must be rewritten first.
    fn make_appendable(
        &self,
        file: &mut File,
        name: &str,
        job: &JobId,
    ) -> anyhow::Result<Option<JobRecord>> {
        let path = self.dir.join(name);
        let bytes = read_at_most(&*file, MAX_FILE_BYTES)
            .with_context(|| format!("cannot read {}", path.display()))?
            .with_context(|| format!("{} is larger than {MAX_FILE_BYTES} bytes", path.display()))?;
        let folded = self
            .parse(&bytes, Some(job))
            .map_err(|why| anyhow::anyhow!("cannot add to {}: {why}", path.display()))?;
        if folded.legacy {
            return Ok(Some(folded.record));
        }
        if folded.ignored.is_some() {
            self.warn_tail(Some(job), &path, &folded);
            let valid = i64::try_from(folded.valid).context("file size")?;
            ftruncate(&*file, valid)
                .and_then(|()| fdatasync(&*file))
                .with_context(|| format!("cannot cut the damaged end off {}", path.display()))?;
            self.count(0, 1);
        }
        Ok(None)
    }

    /// The one wording of a state directory that is not one.
    fn not_a_directory(&self) -> String {
        format!(
            "the state directory {} is a symlink or not a directory: remove it, or set {} (--{})",
            self.dir.display(),
            Setting::StateDir,
            Setting::StateDir.flag()
        )
    }

    /// Every file of this node in the directory, with its modification
    /// time; none when the directory does not exist yet; an error when it
    /// cannot be listed.
    fn files(&self) -> Result<Vec<(PathBuf, SystemTime)>, String> {
        let suffix = self.suffix();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(Errno::ENOTDIR as i32) => {
                return Err(self.not_a_directory())
            }
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (run as root)"
                } else {
                    ""
                };
                return Err(format!(
                    "cannot list the state directory {}: {e}{hint}",
                    self.dir.display()
                ));
            }
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("job-") && name.ends_with(&suffix)
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((e.path(), meta.modified().ok()?))
            })
            .collect())
    }

    /// This node's readable records, newest first; unreadable files, or a
    /// directory that cannot be listed, are reported and skipped.
    pub fn records(&self) -> Vec<JobRecord> {
        let scan = self.scan();
        for problem in scan.unlisted.iter().chain(&scan.unreadable) {
            self.warn(None, problem);
        }
        scan.records
    }

    /// This node's readable records, newest first, the files that could
    /// not be used, and why the directory could not be listed at all.
    pub fn scan(&self) -> JournalScan {
        let mut scan = JournalScan::default();
        let files = self.files().unwrap_or_else(|why| {
            scan.unlisted = Some(why);
            Vec::new()
        });
        for (path, _) in files {
            match self.read(&path, None) {
                Ok(folded) if path.file_name() == Some(Self::name_of(&folded.record).as_ref()) => {
                    self.warn_tail(Some(&folded.record.job), &path, &folded);
                    scan.records.push(folded.record);
                }
                Ok(folded) => scan.unreadable.push(format!(
                    "ignoring journal file {}: it holds the record of job {}",
                    path.display(),
                    folded.record.job
                )),
                Err(None) => {}
                Err(Some(why)) => scan
                    .unreadable
                    .push(format!("ignoring journal file {}: {why}", path.display())),
            }
        }
        scan.records
            .sort_by_key(|r| std::cmp::Reverse(r.last_activity()));
        scan
    }

    /// Problems with the directory an operator should know about.
    pub fn check_dir(&self) -> Result<String, String> {
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(format!(
                    "{} does not exist yet; the first run creates it (0700)",
                    self.dir.display()
                ))
            }
            Err(e) => return Err(format!("cannot look at {}: {e}", self.dir.display())),
        };
        if !meta.is_dir() {
            return Err(self.not_a_directory());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 || meta.uid() != 0 {
            return Err(format!(
                "{} has owner uid {} and mode {mode:04o}; it should be root's, 0700 (chown root: {0}; chmod 0700 {0})",
                self.dir.display(),
                meta.uid(),
            ));
        }
        Ok(format!("{} is root's, mode 0700", self.dir.display()))
    }
}

impl Journal for FileJournal {
    fn load(&self, job: &JobId) -> Option<JobRecord> {
        let path = self.dir.join(self.file_name(job));
        match self.read(&path, Some(job)) {
            Ok(folded) => {
                self.warn_tail(Some(job), &path, &folded);
                Some(folded.record)
            }
            Err(None) => None,
            Err(Some(why)) => {
                self.warn(
                    Some(job),
                    &format!(
                        "ignoring the journal file {} ({why}); this run starts the job's record afresh",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    fn rewrite(&self, record: &JobRecord) -> anyhow::Result<()> {
        self.writable_for(&record.node)?;
        let dir = self
            .open_dir(true)?
            .with_context(|| format!("the state directory {} vanished", self.dir.display()))?;
        let name = self.file_name(&record.job);
        let bytes = changes::encode_record(record).context("cannot encode the record")?;
        // A record that replaces nothing holds nothing a crash must keep: it
        // is written in place and synced, with its directory entry, beside
        // the run; the next change that must be durable waits for that.
        let created = if matches!(
            fstatat(
                &dir,
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
            ),
            Err(Errno::ENOENT)
        ) {
            create_unsynced(&dir, &name, &bytes).ok()
        } else {
            None
        };
        let fresh = created.is_some();
        let syncing = created.and_then(|file| sync_in_background(&dir, &file));
        let written = if fresh {
            Ok(())
        } else {
            replace_atomically(&dir, &self.dir, &name, &bytes, |file: &File| {
                fchmod(file, Mode::from_bits_truncate(0o600)).context("chmod 0600")?;
                Ok(())
            })
        };
        // Whatever happened, the file is now either the old one or the new.
        let mut appendable = self.appendable();
        match written {
            Ok(()) => {
                let syncs = if fresh { syncing.is_some() } else { true };
                self.count(bytes.len(), if syncs { 2 } else { 0 });
                if fresh {
                    self.unsynced().insert(name.clone(), syncing);
                } else {
                    self.unsynced().remove(&name);
                }
                appendable.insert(name);
                Ok(())
            }
            Err(e) => {
                appendable.remove(&name);
                Err(e)
            }
        }
    }

    fn append_all(&self, job: &JobId, changes: &[Change]) -> anyhow::Result<()> {
        let Some(node) = &self.node else {
            bail!("the journal is open for reading only");
        };
        self.writable_for(node)?;
        let name = self.file_name(job);
        let path = self.dir.join(&name);
        let dir = self.open_dir(false)?.with_context(|| {
            format!("the state directory {} does not exist", self.dir.display())
        })?;
        let mut file = self.open_to_append(&dir, &name)?;
        if !self.appendable().contains(&name) {
            if let Some(earlier) = self.make_appendable(&mut file, &name, job)? {
                // An earlier version's whole-JSON file: written anew as
                // lines, then the change goes after it.
                drop(file);
                self.rewrite(&earlier)?;
                file = self.open_to_append(&dir, &name)?;
            }
            self.appendable().insert(name.clone());
        }
        let mut line = Vec::new();
        for change in changes {
            line.extend(changes::encode(change).context("cannot encode the change")?);
        }
        let before = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if before + line.len() as u64 > MAX_FILE_BYTES {
            bail!(
                "{} would grow past {MAX_FILE_BYTES} bytes; the change is not written",
                path.display()
            );
        }
        let durable = changes.iter().any(Change::must_be_durable);
        // A new file's entry is on disk once its sync is: waited for here,
        // or made here if that sync could not start or failed.
        let creation = if durable {
            self.unsynced().remove(&name)
        } else {
            None
        };
        let new_entry = match creation {
            None => false,
            Some(Some(syncing)) => !matches!(syncing.join(), Ok(Ok(()))),
            Some(None) => true,
        };
        let written = file.write_all(&line).context("write").and_then(|()| {
            if durable {
                fdatasync(&file).context("fdatasync")?;
            }
            if new_entry {
                fsync(&dir).context("fsync of the directory")?;
            }
            Ok(())
        });
        self.count(line.len(), u64::from(durable) + u64::from(new_entry));
        if new_entry && written.is_err() {
            self.unsynced().insert(name.clone(), None);
        }
        if let Err(e) = written {
            // Never leave half a line for the next change to land behind;
            // if even that fails, the next append reads the file first.
            let cut = i64::try_from(before)
                .ok()
                .and_then(|len| ftruncate(&file, len).ok());
            if cut.is_none() {
                self.appendable().remove(&name);
            }
            return Err(e).with_context(|| format!("cannot add to {}", path.display()));
        }
        Ok(())
    }

    fn with_pending(&self) -> Vec<JobRecord> {
        self.records()
            .into_iter()
            .filter(|r| !r.pending().is_empty())
            .collect()
    }

    fn prune(&self, now: Timestamp) {
        if !self.writable {
            return;
        }
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(now.as_second()).unwrap_or(0));
        let mut files = match self.files() {
            Ok(files) => files,
            Err(why) => return self.warn(None, &why),
        };
        files.sort_by_key(|(_, modified)| std::cmp::Reverse(*modified));
        for (path, modified) in files.into_iter().skip(KEEP_NEWEST) {
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age <= KEEP_FOR {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => self.warn(
                    None,
                    &format!("pruned the journal file {} (older than 30 days, beyond the newest {KEEP_NEWEST})", path.display()),
                ),
                Err(e) => self.warn(None, &format!("cannot prune {}: {e}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
