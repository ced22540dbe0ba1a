//! Reading a file from outside safely: without blocking (a FIFO never
//! hangs the run), only a regular file, and never more than a bound (a
//! device or a huge file never fills memory).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

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
}
