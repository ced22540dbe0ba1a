//! Reading the node's bearer token, defensively. sops-nix renders the file at
//! boot, maybe a little after comin starts, so a missing or empty file is
//! waited for (bounded by 30 s, the run's deadline and a stop signal) before
//! giving up. Only a small regular file is read: a FIFO, a device or a huge
//! file must not hang or exhaust the run. The contents never reach an error,
//! a log line or a panic.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use nix::errno::Errno;

use crate::adapters::files::{self, FileError, Step};
use crate::ports::{Cancel, Clock, Deadline, Level, Log, LogFields, Setting};
use crate::secret::Token;

/// How often the file is looked at while waiting.
pub const POLL: Duration = Duration::from_millis(500);

/// How long production waits for the file.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The most a token file may hold. Node tokens are well under 100 bytes;
/// anything near this is the wrong file.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Reads the token from `path`, waiting for the file to exist and hold
/// something other than whitespace, until `wait` has passed, `deadline` (the
/// run's, when there is one) is reached or `cancel` is set, whichever comes
/// first. Only a regular file of at most [`MAX_TOKEN_BYTES`] is accepted,
/// after following symlinks. A file that others may read or write, or that
/// root does not own, is used, with a warning through `log`.
pub fn read_token(
    path: &Path,
    clock: &dyn Clock,
    log: &dyn Log,
    cancel: &Cancel,
    wait: Duration,
    deadline: Option<Deadline>,
) -> anyhow::Result<Token> {
    let start = clock.instant();
    let waited_end = Deadline::from(start, wait);
    let (end, cut_by_deadline) = match deadline {
        Some(deadline) if deadline < waited_end => (deadline, true),
        _ => (waited_end, false),
    };
    // Also bounded by attempts, in case the clock does not move on.
    let window = end.remaining_at(start);
    let max_attempts = window.as_millis() / POLL.as_millis() + 2;
    let mut attempts = 0u128;
    let last_state = loop {
        attempts += 1;
        let state = match look(path)? {
            Look::Token(token, meta) => {
                warn_about_access(path, &meta, log);
                return Ok(token);
            }
            Look::NotYet(state) => state,
        };
        let now = clock.instant();
        if end.reached_at(now) || attempts >= max_attempts {
            break state;
        }
        clock.sleep(end.remaining_at(now).min(POLL));
        if cancel.is_cancelled() {
            bail!(
                "interrupted by a stop signal while waiting for the token file {} (it {state})",
                path.display()
            );
        }
    };
    let waited = clock.instant().saturating_duration_since(start).as_secs();
    let why = match (cut_by_deadline, wait.is_zero()) {
        (true, _) => format!(" when the run's deadline was reached after waiting {waited}s"),
        // Looked at once, without waiting (`doctor`).
        (false, true) => String::new(),
        (false, false) => format!(" after waiting {waited}s"),
    };
    bail!(
        "the token file {} {last_state}{why}: check that the sops-nix secret was rendered \
         (systemctl status sops-nix / the secret's path) and that {} points at it",
        path.display(),
        setting_and_flag(),
    )
}

/// What one look at the file found.
enum Look {
    Token(Token, Metadata),
    /// Worth waiting for; says what is there now.
    NotYet(String),
}

/// Looks at the file once: a token, something to wait for, or an error that
/// waiting will not heal.
fn look(path: &Path) -> anyhow::Result<Look> {
    // Symlinks are followed on purpose: sops-nix renders /run/secrets/<name>
    // as a symlink into /run/secrets.d/<generation>/, so O_NOFOLLOW (or
    // refusing symlinks) would refuse every real node's token. What the
    // link points at is checked instead, like a file named directly, and
    // looked at before it is opened (see `files::open_regular` for why).
    let (file, meta) = match files::open_regular(path, false) {
        Ok(opened) => opened,
        Err(FileError::Missing) => return Ok(Look::NotYet(missing(path))),
        Err(e) => return Err(refused(path, e)),
    };
    let limit = MAX_TOKEN_BYTES as u64;
    if meta.len() > limit {
        bail!(too_large(path, Some(meta.len())));
    }
    let bytes = match files::read_at_most(&file, limit) {
        Ok(Some(bytes)) => bytes,
        // It grew after the stat.
        Ok(None) => bail!(too_large(path, None)),
        Err(e) => return Err(refused(path, FileError::Io(Step::Read, e))),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!(
            "the token file {} is not valid UTF-8 text: check the sops secret behind {}",
            path.display(),
            Setting::TokenFile
        );
    };
    Ok(match Token::new(text) {
        Some(token) => Look::Token(token, meta),
        None => Look::NotYet("exists but is empty".to_owned()),
    })
}

/// Why a path that does not resolve is waited for: nothing there yet, or a
/// symlink whose target sops-nix has not rendered yet.
fn missing(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(path) {
            Ok(target) => format!(
                "is a symlink to a file that does not exist ({})",
                target.display()
            ),
            Err(_) => "is a symlink to a file that does not exist".to_owned(),
        },
        _ => "does not exist".to_owned(),
    }
}

/// `size`: how much the file holds, when known.
fn too_large(path: &Path, size: Option<u64>) -> String {
    let holds = match size {
        Some(bytes) => format!("holds {bytes} bytes, more than"),
        None => "holds more than".to_owned(),
    };
    format!(
        "the token file {} {holds} the {MAX_TOKEN_BYTES}-byte limit for a token: \
         {} must name the file holding only the node's token",
        path.display(),
        setting_and_flag()
    )
}

/// The token file's setting as messages name it: its variable and flag.
fn setting_and_flag() -> String {
    format!("{} (--{})", Setting::TokenFile, Setting::TokenFile.flag())
}

/// Why the token file cannot be used, in the operator's terms.
fn refused(path: &Path, error: FileError) -> anyhow::Error {
    let shown = path.display();
    match error {
        FileError::Missing => anyhow!("the token file {shown} {}", missing(path)),
        FileError::NotRegular(kind) => {
            // Anything but a regular file (after following symlinks) says
            // what it is, and what the link led to.
            let via = match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(path) {
                    Ok(target) => format!(" (a symlink to {})", target.display()),
                    Err(_) => " (a symlink)".to_owned(),
                },
                _ => String::new(),
            };
            anyhow!(
                "the token file {shown}{via} is a {kind}, not a regular file: \
                 {} must name the file sops-nix renders",
                setting_and_flag()
            )
        }
        FileError::TooLarge { .. } => anyhow!(too_large(path, None)),
        FileError::Io(Step::Look, e) => anyhow!(
            "cannot look at the token file {shown}: {} (check the directories' modes and {})",
            e.kind(),
            Setting::TokenFile
        ),
        FileError::Io(Step::Open, e) => {
            let why = match e.raw_os_error() {
                Some(code) => Errno::from_raw(code).desc().to_owned(),
                None => e.kind().to_string(),
            };
            anyhow!(
                "cannot open the token file {shown}: {why} (check its owner and mode, and {})",
                Setting::TokenFile
            )
        }
        FileError::Io(Step::Stat, e) => {
            anyhow::Error::new(e).context(format!("cannot stat the opened token file {shown}"))
        }
        FileError::Io(Step::Read, e) => {
            anyhow!("cannot read the token file {shown}: {}", e.kind())
        }
    }
}

/// The token is used either way, but an operator should know that others
/// can read (or replace) it.
fn warn_about_access(path: &Path, meta: &Metadata, log: &dyn Log) {
    let fields = LogFields::default();
    let path = path.display();
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        log.line(
            Level::Warn,
            &fields,
            &format!(
                "the token file {path} is readable or writable by group or others (mode \
                 {mode:04o}): run `chmod 0400 {path}` (or set the sops secret's mode to 0400)"
            ),
        );
    }
    if meta.uid() != 0 {
        log.line(
            Level::Warn,
            &fields,
            &format!(
                "the token file {path} is owned by uid {}, not root: run `chown root {path}` \
                 (or set the sops secret's owner to root)",
                meta.uid()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;
    use std::time::Instant;

    use jiff::{SignedDuration, Timestamp};
    use nix::sys::stat::Mode;

    use super::*;
    use crate::adapters::clock::SystemClock;

    /// A clock whose sleep advances time instantly and runs a hook after
    /// each sleep (to make the file appear "later").
    struct FakeClock {
        /// Its monotonic time at the start.
        origin: Instant,
        now: Cell<Timestamp>,
        sleeps: Cell<u32>,
        on_sleep: RefCell<Box<dyn FnMut(u32)>>,
    }

    impl FakeClock {
        fn new(on_sleep: impl FnMut(u32) + 'static) -> Self {
            FakeClock {
                origin: Instant::now(),
                now: Cell::new(Timestamp::UNIX_EPOCH),
                sleeps: Cell::new(0),
                on_sleep: RefCell::new(Box::new(on_sleep)),
            }
        }
        fn elapsed(&self) -> SignedDuration {
            self.now.get().duration_since(Timestamp::UNIX_EPOCH)
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            self.now.get()
        }
        fn instant(&self) -> Instant {
            self.origin + self.elapsed().unsigned_abs()
        }
        fn sleep(&self, d: Duration) {
            let d = SignedDuration::try_from(d).expect("small duration");
            self.now.set(self.now.get() + d);
            self.sleeps.set(self.sleeps.get() + 1);
            (self.on_sleep.borrow_mut())(self.sleeps.get());
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Level, String)>>);

    impl Log for Recorder {
        fn line(&self, level: Level, _fields: &LogFields<'_>, message: &str) {
            self.0
                .lock()
                .expect("lock")
                .push((level, message.to_owned()));
        }
    }

    impl Recorder {
        fn warnings(&self) -> Vec<String> {
            let lines = self.0.lock().expect("lock");
            lines
                .iter()
                .filter(|(level, _)| *level == Level::Warn)
                .map(|(_, m)| m.clone())
                .collect()
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A root-owned (when we are root) 0400 token file in a fresh directory.
    fn token_file(contents: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, contents).expect("write");
        chmod(&path, 0o400);
        (dir, path)
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// `read_token` with the fake clock, a recorder, no cancel, no deadline.
    fn read(path: &Path, clock: &FakeClock, wait: Duration) -> (anyhow::Result<Token>, Recorder) {
        let log = Recorder::default();
        let got = read_token(path, clock, &log, &Cancel::new(), wait, None);
        (got, log)
    }

    fn message(result: anyhow::Result<Token>) -> String {
        let err = result.expect_err("refused");
        format!("{err:#}")
    }

    #[test]
    fn a_present_token_is_read_and_trimmed_without_waiting() {
        let (_dir, path) = token_file(b"s3cr3t\n");
        let clock = FakeClock::new(|_| {});
        let (token, log) = read(&path, &clock, DEFAULT_WAIT);
        assert_eq!(token.expect("token").expose(), "s3cr3t");
        assert_eq!(clock.sleeps.get(), 0);
        if is_root() {
            assert_eq!(
                log.warnings(),
                Vec::<String>::new(),
                "0400 root: no warning"
            );
        }
    }

    #[test]
    fn waits_for_the_file_to_appear_and_fill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let hook_path = path.clone();
        let clock = FakeClock::new(move |n| match n {
            2 => std::fs::write(&hook_path, "").expect("create empty"),
            4 => std::fs::write(&hook_path, "later\n").expect("fill"),
            _ => {}
        });
        let (token, _) = read(&path, &clock, DEFAULT_WAIT);
        assert_eq!(token.expect("token").expose(), "later");
        assert_eq!(clock.sleeps.get(), 4);
        assert_eq!(
            clock.elapsed(),
            SignedDuration::from_secs(2),
            "polled every 500 ms"
        );
    }

    #[test]
    fn gives_up_after_the_wait_naming_the_path_and_what_to_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("never");
        let clock = FakeClock::new(|_| {});
        let msg = message(read(&path, &clock, DEFAULT_WAIT).0);
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(msg.contains("after waiting 30s"), "{msg}");
        assert!(
            msg.contains("sops-nix") && msg.contains("HOSTENV_COMIN_TOKEN_FILE"),
            "{msg}"
        );
        assert_eq!(clock.elapsed(), SignedDuration::from_secs(30));
    }

    #[test]
    fn an_empty_file_is_reported_as_empty() {
        let (_dir, path) = token_file(b" \n");
        let clock = FakeClock::new(|_| {});
        let msg = message(read(&path, &clock, Duration::from_secs(2)).0);
        assert!(msg.contains("is empty"), "{msg}");
    }

    #[test]
    fn contents_never_reach_the_error() {
        let (_dir, path) = token_file(b"topsecret\xff\xfe");
        let clock = FakeClock::new(|_| {});
        let err = read(&path, &clock, DEFAULT_WAIT).0.expect_err("not utf-8");
        let msg = format!("{err:#} {err:?}");
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }

    /// Refused at once (no wait), naming the path and what is there.
    #[track_caller]
    fn assert_refused(path: &Path, what: &str) -> String {
        let clock = FakeClock::new(|_| {});
        let start = Instant::now();
        let msg = message(read(path, &clock, DEFAULT_WAIT).0);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(clock.sleeps.get(), 0, "not waited for");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains(what) && msg.contains("not a regular file"),
            "{msg}"
        );
        msg
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        assert_refused(&path, "a FIFO");
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_refused(dir.path(), "a directory");
    }

    #[test]
    fn a_device_is_refused_without_reading_it() {
        assert_refused(Path::new("/dev/zero"), "a character device");
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert_refused(&path, "a socket");
    }

    #[test]
    fn a_large_file_is_refused_naming_the_limit() {
        let (_dir, path) = token_file(&vec![b'x'; 10 * 1024 * 1024]);
        let msg = assert_refused_as_too_large(&path);
        assert!(msg.contains("10485760 bytes"), "{msg}");
        // One byte over is over; exactly the limit is fine.
        let (_dir, path) = token_file(&vec![b'y'; MAX_TOKEN_BYTES + 1]);
        assert_refused_as_too_large(&path);
        let (_dir, path) = token_file(&vec![b'z'; MAX_TOKEN_BYTES]);
        let clock = FakeClock::new(|_| {});
        let token = read(&path, &clock, DEFAULT_WAIT).0.expect("at the limit");
        assert_eq!(token.expose().len(), MAX_TOKEN_BYTES);
    }

    #[track_caller]
    fn assert_refused_as_too_large(path: &Path) -> String {
        let clock = FakeClock::new(|_| {});
        let msg = message(read(path, &clock, DEFAULT_WAIT).0);
        assert!(msg.contains("4096-byte limit"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("xxxx") && !msg.contains("yyyy"), "{msg}");
        msg
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_followed() {
        // How sops-nix renders secrets: /run/secrets/x -> /run/secrets.d/N/x.
        let (dir, target) = token_file(b"linked\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let clock = FakeClock::new(|_| {});
        let token = read(&link, &clock, DEFAULT_WAIT).0.expect("followed");
        assert_eq!(token.expose(), "linked");
    }

    #[test]
    fn a_symlink_to_a_fifo_or_a_device_is_refused_like_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let link = dir.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        let msg = assert_refused(&link, "a FIFO");
        assert!(msg.contains("a symlink to"), "{msg}");
        let link = dir.path().join("to-zero");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert_refused(&link, "a character device");
    }

    #[test]
    fn a_dangling_symlink_is_waited_for_until_its_target_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("secrets.d-1-token");
        let link = dir.path().join("token");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let clock = FakeClock::new(|_| {});
        let msg = message(read(&link, &clock, Duration::from_secs(2)).0);
        assert!(
            msg.contains("a symlink to a file that does not exist"),
            "{msg}"
        );

        let hook_target = target.clone();
        let clock = FakeClock::new(move |n| {
            if n == 3 {
                std::fs::write(&hook_target, "rendered\n").expect("render");
            }
        });
        let token = read(&link, &clock, DEFAULT_WAIT).0.expect("rendered late");
        assert_eq!(token.expose(), "rendered");
        assert_eq!(clock.sleeps.get(), 3);
    }

    #[test]
    fn a_file_others_can_read_is_used_with_a_warning() {
        let (_dir, path) = token_file(b"s3cr3t\n");
        chmod(&path, 0o644);
        let clock = FakeClock::new(|_| {});
        let (token, log) = read(&path, &clock, DEFAULT_WAIT);
        assert_eq!(token.expect("still used").expose(), "s3cr3t");
        let warnings = log.warnings();
        let warning = warnings
            .iter()
            .find(|w| w.contains("mode 0644"))
            .unwrap_or_else(|| panic!("a mode warning: {warnings:?}"));
        assert!(warning.contains(&path.display().to_string()), "{warning}");
        assert!(warning.contains("chmod 0400"), "{warning}");
        assert!(
            !warnings.iter().any(|w| w.contains("s3cr3t")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_file_root_does_not_own_is_used_with_a_warning() {
        let (_dir, path) = token_file(b"s3cr3t\n");
        if is_root() {
            let nobody = nix::unistd::Uid::from_raw(65534);
            nix::unistd::chown(&path, Some(nobody), None).expect("chown");
        }
        let clock = FakeClock::new(|_| {});
        let (token, log) = read(&path, &clock, DEFAULT_WAIT);
        assert_eq!(token.expect("still used").expose(), "s3cr3t");
        let warnings = log.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("not root"), "{warnings:?}");
        assert!(warnings[0].contains("chown root"), "{warnings:?}");
        assert!(
            warnings[0].contains(&path.display().to_string()),
            "{warnings:?}"
        );
    }

    #[test]
    fn cancel_during_the_wait_ends_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("never");
        let cancel = Cancel::new();
        let setter = cancel.clone();
        let clock = FakeClock::new(move |n| {
            if n == 2 {
                setter.cancel();
            }
        });
        let log = Recorder::default();
        let err =
            read_token(&path, &clock, &log, &cancel, DEFAULT_WAIT, None).expect_err("interrupted");
        let msg = format!("{err:#}");
        assert!(msg.contains("interrupted by a stop signal"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(clock.sleeps.get(), 2, "no look after the cancel");
    }

    #[test]
    fn a_stop_signal_ends_a_real_wait_within_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("never");
        let cancel = Cancel::new();
        let clock = SystemClock::new(cancel.clone());
        let setter = cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            setter.cancel();
            Instant::now()
        });
        let log = Recorder::default();
        let result = read_token(&path, &clock, &log, &cancel, DEFAULT_WAIT, None);
        let returned = Instant::now();
        let cancelled_at = canceller.join().expect("canceller");
        let msg = message(result);
        assert!(msg.contains("interrupted"), "{msg}");
        let reaction = returned.saturating_duration_since(cancelled_at);
        assert!(reaction < Duration::from_secs(1), "took {reaction:?}");
    }

    fn read_until(path: &Path, clock: &FakeClock, deadline: Deadline) -> anyhow::Result<Token> {
        let log = Recorder::default();
        read_token(
            path,
            clock,
            &log,
            &Cancel::new(),
            DEFAULT_WAIT,
            Some(deadline),
        )
    }

    #[test]
    fn the_run_deadline_cuts_the_wait_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("never");
        let clock = FakeClock::new(|_| {});
        let deadline = Deadline::from(clock.origin, Duration::from_secs(5));
        let err = read_until(&path, &clock, deadline).expect_err("gave up");
        let msg = format!("{err:#}");
        assert_eq!(clock.elapsed(), SignedDuration::from_secs(5));
        assert!(msg.contains("deadline"), "{msg}");

        // A later deadline leaves the 30 s as they are.
        let clock = FakeClock::new(|_| {});
        let late = Deadline::from(clock.origin, Duration::from_secs(3600));
        let err = read_until(&path, &clock, late).expect_err("gave up");
        assert_eq!(clock.elapsed(), SignedDuration::from_secs(30));
        assert!(!format!("{err:#}").contains("deadline"));

        // A deadline already past: one look, no wait.
        let clock = FakeClock::new(|_| {});
        let past = Deadline::at(clock.origin);
        let (_dir, present) = token_file(b"here\n");
        let token = read_until(&present, &clock, past).expect("a present file is still read");
        assert_eq!(token.expose(), "here");
        assert!(read_until(&path, &clock, past).is_err());
        assert_eq!(clock.sleeps.get(), 0);
    }
}
