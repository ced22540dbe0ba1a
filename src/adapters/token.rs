//! Reading the node's bearer token. sops-nix renders the file at boot, maybe
//! a little after comin starts, so a missing or empty file is waited for
//! (bounded) before giving up. The contents never reach an error or a log.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use jiff::SignedDuration;

use crate::ports::Clock;
use crate::secret::Token;

/// How often the file is looked at while waiting.
pub const POLL: Duration = Duration::from_millis(500);

/// How long production waits for the file.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Reads the token from `path`, waiting up to `wait` for the file to exist
/// and hold something other than whitespace.
pub fn read_token(path: &Path, clock: &dyn Clock, wait: Duration) -> anyhow::Result<Token> {
    let start = clock.now();
    let limit = SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
    // Also bounded by attempts, in case the clock's sleep returns early (cancel).
    let max_attempts = wait.as_millis() / POLL.as_millis() + 2;
    let mut attempts = 0u128;
    let last_state = loop {
        attempts += 1;
        let state = match std::fs::read(path) {
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => match Token::new(text) {
                    Some(token) => return Ok(token),
                    None => "exists but is empty",
                },
                Err(_) => bail!(
                    "the token file {} is not valid UTF-8 text: check the sops secret behind HOSTENV_COMIN_TOKEN_FILE",
                    path.display()
                ),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => "does not exist",
            Err(e) => bail!(
                "cannot read the token file {}: {} (check its owner and mode, and HOSTENV_COMIN_TOKEN_FILE)",
                path.display(),
                e.kind()
            ),
        };
        let elapsed = clock.now().duration_since(start);
        if elapsed >= limit || attempts >= max_attempts {
            break state;
        }
        let left = (limit - elapsed).unsigned_abs();
        clock.sleep(left.min(POLL));
    };
    bail!(
        "the token file {} {} after waiting {}s: check that the sops-nix secret was rendered \
         (systemctl status sops-nix / the secret's path) and that HOSTENV_COMIN_TOKEN_FILE \
         (--token-file) points at it",
        path.display(),
        last_state,
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use jiff::Timestamp;

    use super::*;

    /// A clock whose sleep advances time instantly and runs a hook after
    /// each sleep (to make the file appear "later").
    struct FakeClock {
        now: Cell<Timestamp>,
        sleeps: Cell<u32>,
        on_sleep: RefCell<Box<dyn FnMut(u32)>>,
    }

    impl FakeClock {
        fn new(on_sleep: impl FnMut(u32) + 'static) -> Self {
            FakeClock {
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
        fn sleep(&self, d: Duration) {
            let d = SignedDuration::try_from(d).expect("small duration");
            self.now.set(self.now.get() + d);
            self.sleeps.set(self.sleeps.get() + 1);
            (self.on_sleep.borrow_mut())(self.sleeps.get());
        }
    }

    #[test]
    fn a_present_token_is_read_and_trimmed_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").expect("write");
        let clock = FakeClock::new(|_| {});
        let token = read_token(&path, &clock, DEFAULT_WAIT).expect("token");
        assert_eq!(token.expose(), "s3cr3t");
        assert_eq!(clock.sleeps.get(), 0);
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
        let token = read_token(&path, &clock, DEFAULT_WAIT).expect("token");
        assert_eq!(token.expose(), "later");
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
        let err = read_token(&path, &clock, DEFAULT_WAIT).expect_err("no file");
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(
            msg.contains("sops-nix") && msg.contains("HOSTENV_COMIN_TOKEN_FILE"),
            "{msg}"
        );
        assert_eq!(clock.elapsed(), SignedDuration::from_secs(30));
    }

    #[test]
    fn an_empty_file_is_reported_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, " \n").expect("write");
        let clock = FakeClock::new(|_| {});
        let err = read_token(&path, &clock, Duration::from_secs(2)).expect_err("empty");
        assert!(format!("{err:#}").contains("is empty"));
    }

    #[test]
    fn contents_never_reach_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, b"topsecret\xff\xfe").expect("write");
        let clock = FakeClock::new(|_| {});
        let err = read_token(&path, &clock, DEFAULT_WAIT).expect_err("not utf-8");
        let msg = format!("{err:#} {err:?}");
        assert!(!msg.contains("topsecret"), "{msg}");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }
}
