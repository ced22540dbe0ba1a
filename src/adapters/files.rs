//! Files, safely. Reading one from outside: without blocking (a FIFO never
//! hangs the run), only a regular file, never more than a bound (a device
//! or a huge file never fills memory). Replacing one that must survive a
//! crash: a new temp file, fsync, rename over the old one, fsync of the
//! directory, so a reader sees the old file or the new one, never half.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};

/// Why a file could not be read.
#[derive(Debug)]
pub enum FileError {
    /// Nothing there (or a dangling symlink).
    Missing,
    /// Something other than a regular file: FIFO, directory, device, ...
    NotRegular(&'static str),
    /// Larger than the bound; nothing was kept.
    TooLarge {
        limit: u64,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Missing => f.write_str("does not exist"),
            FileError::NotRegular(what) => write!(f, "is a {what}, not a regular file"),
            FileError::TooLarge { limit } => write!(f, "is larger than {limit} bytes"),
            FileError::Io(e) => write!(f, "cannot be read ({e})"),
        }
    }
}

impl std::error::Error for FileError {}

/// What kind of file `mode` describes, for messages.
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

/// Opens `path` without blocking and checks it is a regular file (symlinks
/// are followed unless `no_follow`).
pub fn open_regular(path: &Path, no_follow: bool) -> Result<(File, std::fs::Metadata), FileError> {
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if no_follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileError::Missing,
            _ if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                FileError::NotRegular("symbolic link")
            }
            _ => FileError::Io(e),
        })?;
    let meta = file.metadata().map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(kind_of(meta.mode())));
    }
    Ok((file, meta))
}

/// The whole of the regular file at `path`, at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64, no_follow: bool) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path, no_follow)?;
    if meta.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The size can lie (procfs, a file still growing): read one byte more
    // than the bound at most.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(bytes)
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
