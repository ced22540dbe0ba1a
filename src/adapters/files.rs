//! Files, safely. Reading one from outside: looked at before it is opened
//! (only a regular file is opened at all), without blocking (a FIFO never
//! hangs the run), never more than a bound (a device or a huge file never
//! fills memory). Replacing one that must survive a crash: a new temp file,
//! fsync, rename over the old one, fsync of the directory, so a reader sees
//! the old file or the new one, never half.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};

/// Why a file could not be read.
#[derive(Debug)]
pub enum FileError {
    /// Nothing there (or, when symlinks are followed, a dangling symlink).
    Missing,
    /// Something other than a regular file: FIFO, directory, device, ...
    /// (named by [`kind_of`]).
    NotRegular(&'static str),
    /// Larger than the bound; nothing was kept.
    TooLarge { limit: u64 },
    /// The system refused `Step`.
    Io(Step, std::io::Error),
}

/// The step of reading a file that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `stat`/`lstat` of the path, before opening.
    Look,
    Open,
    /// `fstat` of what was opened.
    Stat,
    Read,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Missing => f.write_str("does not exist"),
            FileError::NotRegular(what) => write!(f, "is a {what}, not a regular file"),
            FileError::TooLarge { limit } => write!(f, "is larger than {limit} bytes"),
            FileError::Io(_, e) => write!(f, "cannot be read ({e})"),
        }
    }
}

impl std::error::Error for FileError {}

/// What kind of file `mode` describes, for messages ("is a {kind}").
pub fn kind_of(mode: u32) -> &'static str {
    let kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
    [
        (SFlag::S_IFIFO, "FIFO"),
        (SFlag::S_IFCHR, "character device"),
        (SFlag::S_IFDIR, "directory"),
        (SFlag::S_IFBLK, "block device"),
        (SFlag::S_IFREG, "regular file"),
        (SFlag::S_IFLNK, "symbolic link"),
        (SFlag::S_IFSOCK, "socket"),
    ]
    .into_iter()
    .find_map(|(flag, name)| (kind == flag).then_some(name))
    .unwrap_or("special file")
}

/// Opens the regular file at `path` for reading, with what `fstat` says of
/// it. Symlinks are followed unless `no_follow` (then a symlink is
/// [`FileError::NotRegular`]).
///
/// The path is looked at (`stat`, or `lstat` when `no_follow`) before it is
/// opened, and anything but a regular file is refused without opening it:
/// opening a device as root can act on it (a watchdog arms on open, a tape
/// rewinds), so only a regular file is opened at all. Should the path have
/// changed since the look, `O_NONBLOCK` makes opening a FIFO return at once
/// instead of waiting for a writer, `O_NOCTTY` keeps a terminal from
/// becoming ours, and the type of what was actually opened is checked again.
pub fn open_regular(path: &Path, no_follow: bool) -> Result<(File, Metadata), FileError> {
    let looked = if no_follow {
        std::fs::symlink_metadata(path)
    } else {
        std::fs::metadata(path)
    };
    match looked {
        Ok(meta) if meta.is_file() => {}
        Ok(meta) => return Err(FileError::NotRegular(kind_of(meta.mode()))),
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(FileError::Missing),
        Err(e) => return Err(FileError::Io(Step::Look, e)),
    }
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if no_follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true) // O_RDONLY
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => FileError::Missing,
            // O_NOFOLLOW met a symlink: one was put there since the look.
            _ if no_follow && e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                FileError::NotRegular("symbolic link")
            }
            _ => FileError::Io(Step::Open, e),
        })?;
    let meta = file.metadata().map_err(|e| FileError::Io(Step::Stat, e))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(kind_of(meta.mode())));
    }
    Ok((file, meta))
}

/// Everything from `reader` if that is at most `limit` bytes; `None` if
/// there is more. Never reads more than `limit + 1` bytes, whatever a size
/// said (procfs lies, a file may still be growing).
pub fn read_at_most(reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let capacity = usize::try_from(limit.saturating_add(1).min(64 * 1024)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// The whole of the regular file at `path`, at most `limit` bytes (opened
/// as [`open_regular`] does).
pub fn read_bounded(path: &Path, limit: u64, no_follow: bool) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path, no_follow)?;
    if meta.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    read_at_most(&file, limit)
        .map_err(|e| FileError::Io(Step::Read, e))?
        .ok_or(FileError::TooLarge { limit })
}

/// Replaces `dir/name` with `data`, atomically: a new temp file in `dir`
/// (created 0600, never through a link), `prepare`d (owner, mode), synced,
/// renamed over `name` (a link planted there is replaced, not followed),
/// then the directory synced. `shown` names `dir` in errors.
pub fn replace_atomically(
    dir: &OwnedFd,
    shown: &Path,
    name: &str,
    data: &[u8],
    prepare: impl FnOnce(&File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = format!(".{name}.{}.{nanos}.tmp", std::process::id());
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let fd = openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("cannot create a temporary file in {}", shown.display()))?;
    let mut file = File::from(fd);
    let written = (|| -> anyhow::Result<()> {
        file.write_all(data).context("write")?;
        prepare(&file)?;
        file.sync_all().context("fsync")?;
        renameat(dir, tmp.as_str(), dir, name).context("rename into place")?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e).with_context(|| format!("cannot write {}", shown.join(name).display()));
    }
    fsync(dir).with_context(|| format!("cannot fsync directory {}", shown.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").expect("write");
        assert_eq!(read_bounded(&path, 16, true).expect("read"), b"hello");
        assert!(matches!(
            read_bounded(&path, 4, true),
            Err(FileError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = read_bounded(&fifo, 16, false).expect_err("fifo");
        assert_eq!(err.to_string(), "is a FIFO, not a regular file");
        let err = read_bounded(dir.path(), 16, false).expect_err("dir");
        assert_eq!(err.to_string(), "is a directory, not a regular file");
        let err = read_bounded(Path::new("/dev/zero"), 16, false).expect_err("device");
        assert_eq!(err.to_string(), "is a character device, not a regular file");
        assert!(matches!(
            read_bounded(&dir.path().join("none"), 16, false),
            Err(FileError::Missing)
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        assert!(matches!(
            read_bounded(&link, 16, true),
            Err(FileError::NotRegular("symbolic link"))
        ));
    }

    #[test]
    fn says_which_step_failed_and_a_followed_loop_is_no_symlink_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        // A path through a regular file cannot even be looked at.
        assert!(matches!(
            read_bounded(&file.join("below"), 16, false),
            Err(FileError::Io(Step::Look, _))
        ));
        // Followed, a loop of links is an error of the look; not followed,
        // the link itself is what is refused.
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).expect("symlink");
        std::os::unix::fs::symlink(&a, &b).expect("symlink");
        assert!(matches!(
            read_bounded(&a, 16, false),
            Err(FileError::Io(Step::Look, _))
        ));
        assert!(matches!(
            read_bounded(&a, 16, true),
            Err(FileError::NotRegular("symbolic link"))
        ));
        // A symlink to a regular file is read when followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_bounded(&link, 16, false).expect("followed"), b"x");
    }

    #[test]
    fn at_most_one_byte_past_the_limit_is_ever_read() {
        /// An endless source that counts what was taken from it.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'x');
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut source = Endless(0);
        assert_eq!(read_at_most(&mut source, 4096).expect("reads"), None);
        assert_eq!(source.0, 4097);
        let small = read_at_most(&b"abc"[..], 4096).expect("reads");
        assert_eq!(small.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn a_replaced_file_is_whole_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fd = nix::fcntl::open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open dir");
        std::fs::write(dir.path().join("f"), b"old").expect("write");
        replace_atomically(&fd, dir.path(), "f", b"new contents", |_| Ok(())).expect("replace");
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"new contents"
        );
        let err = replace_atomically(&fd, dir.path(), "f", b"never", |_| anyhow::bail!("refused"))
            .expect_err("prepare fails");
        assert!(format!("{err:#}").contains("refused"));
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"new contents"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }
}
