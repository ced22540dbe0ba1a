//! One run at a time per node (`ports::RunLock`): an exclusive `flock` on
//! `/run/hostenv-activate/lock` (directory 0700, root; `/run` is per boot),
//! held until the process exits, so a crash releases it. The holder writes
//! its pid, start time and commit into the file for whoever finds it busy.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context};
use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::ports::{LockAttempt, LockHolder, RunLock, Setting};

/// Where the lock lives unless configured otherwise.
pub const DEFAULT_PATH: &str = "/run/hostenv-activate/lock";
/// What the holder writes is a line; more is not ours.
const MAX_INFO_BYTES: u64 = 4096;

/// [`RunLock`] on a file.
pub struct FileLock {
    path: PathBuf,
    held: Mutex<Option<Flock<File>>>,
}

impl FileLock {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileLock {
            path: path.into(),
            held: Mutex::new(None),
        }
    }

    fn open(&self, create: bool) -> std::io::Result<File> {
        let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        std::fs::OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .mode(0o600)
            .custom_flags(flags.bits())
            .open(&self.path)
    }

    /// The lock's directory, never a symlink; created 0700 when missing and
    /// `create` (else `false`: there is none yet).
    fn check_dir(&self, create: bool) -> anyhow::Result<bool> {
        let Some(dir) = self.path.parent() else {
            bail!("the lock file {} has no directory", self.path.display());
        };
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(true),
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() {
                    "a symlink, not a directory"
                } else {
                    "not a directory"
                };
                bail!(
                    "the lock's directory {} is {what}; it must be a real directory: remove it, or set {} (--{})",
                    dir.display(),
                    Setting::LockFile,
                    Setting::LockFile.flag()
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot look at {}", dir.display())),
        }
    }

    /// Why the lock file could not be opened.
    fn cannot_open(&self, e: std::io::Error) -> anyhow::Error {
        if e.raw_os_error() == Some(Errno::ELOOP as i32) {
            anyhow::anyhow!(
                "the lock file {} is a symlink; remove it (the lock file is never followed through a link)",
                self.path.display()
            )
        } else {
            anyhow::Error::new(e)
                .context(format!("cannot open the lock file {}", self.path.display()))
        }
    }
}

/// What the holder wrote into the lock file.
///
/// A holder that crashed leaves its line behind; when the pid is gone the
/// lock is held by someone else (say a `status` probing it), so the line
/// says nothing and is dropped.
fn read_info(file: &mut File) -> LockHolder {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(MAX_INFO_BYTES).read_to_string(&mut text);
    let holder = serde_json::from_str::<LockHolder>(text.trim()).unwrap_or_default();
    match holder.pid {
        Some(pid) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            LockHolder::default()
        }
        _ => holder,
    }
}

impl RunLock for FileLock {
    fn try_lock(&self, sha: &str, now: Timestamp) -> anyhow::Result<LockAttempt> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.is_some() {
            return Ok(LockAttempt::Taken);
        }
        self.check_dir(true)?;
        let file = self.open(true).map_err(|e| self.cannot_open(e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Ok(LockAttempt::Busy(read_info(&mut file)))
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", self.path.display()))
            }
        };
        let info = LockHolder {
            pid: Some(std::process::id()),
            since: Some(now),
            sha: Some(sha.to_owned()),
        };
        // Best effort: the lock is what matters; the text only helps others.
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", serde_json::to_string(&info).unwrap_or_default());
        *held = Some(lock);
        Ok(LockAttempt::Taken)
    }

    fn holder(&self) -> anyhow::Result<Option<LockHolder>> {
        // What would stop a run stops the look too: a lock that cannot be
        // taken is not "free".
        if !self.check_dir(false)? {
            return Ok(None);
        }
        let file = match self.open(false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.cannot_open(e)),
        };
        // A shared lock is granted only when no run holds the exclusive one;
        // it is dropped at once.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => Ok(None),
            Err((mut file, Errno::EWOULDBLOCK)) => Ok(Some(read_info(&mut file))),
            Err((_, e)) => {
                Err(e).with_context(|| format!("cannot look at {}", self.path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T10:00:00Z".parse().expect("ts")
    }

    #[test]
    fn one_holder_at_a_time_and_the_others_see_who() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("lock");
        let first = FileLock::new(&path);
        let second = FileLock::new(&path);
        assert_eq!(first.holder().expect("peek"), None, "no file, no holder");
        assert_eq!(
            first.try_lock("abc", now()).expect("lock"),
            LockAttempt::Taken
        );
        assert_eq!(
            first.try_lock("abc", now()).expect("again"),
            LockAttempt::Taken
        );
        let busy = second.try_lock("def", now()).expect("try");
        let holder = LockHolder {
            pid: Some(std::process::id()),
            since: Some(now()),
            sha: Some("abc".into()),
        };
        assert_eq!(busy, LockAttempt::Busy(holder.clone()));
        assert_eq!(second.holder().expect("peek"), Some(holder));
        let mode = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
        };
        assert_eq!(mode(&dir.path().join("run")), 0o700);
        drop(first);
        assert_eq!(second.holder().expect("peek"), None, "released on drop");
        assert_eq!(
            second.try_lock("def", now()).expect("lock"),
            LockAttempt::Taken
        );
    }

    #[test]
    fn a_symlinked_lock_or_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "x").expect("write");
        let link = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(FileLock::new(&link).try_lock("abc", now()).is_err());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "x");
        let linked_dir = dir.path().join("rundir");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).expect("symlink");
        let err = FileLock::new(linked_dir.join("lock"))
            .try_lock("abc", now())
            .expect_err("refused");
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");
        // Looking at it says so too, rather than "no run holds it".
        let err = FileLock::new(linked_dir.join("lock"))
            .holder()
            .expect_err("refused");
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
        let err = FileLock::new(&link).holder().expect_err("refused");
        assert!(format!("{err:#}").contains("never followed"), "{err:#}");
    }

    #[test]
    fn a_dead_holders_line_is_not_shown_as_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        // A crashed run left its line; pid 0 is never a process of ours
        // and /proc/0 does not exist.
        std::fs::write(
            &path,
            r#"{"pid":0,"since":"2026-12-01T09:00:00Z","sha":"old"}"#,
        )
        .expect("write");
        // Someone else holds the lock without writing (a shared probe).
        let file = File::open(&path).expect("open");
        let _probe = Flock::lock(file, FlockArg::LockSharedNonblock).expect("shared lock");
        let busy = FileLock::new(&path).try_lock("abc", now()).expect("try");
        assert_eq!(
            busy,
            LockAttempt::Busy(LockHolder {
                pid: None,
                since: None,
                sha: None
            })
        );
    }
}
