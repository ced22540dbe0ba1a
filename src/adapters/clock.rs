//! The real clock: wall time for events, the monotonic clock for
//! deadlines, and a sleep that wakes up within [`Deadline::SLICE`] of
//! SIGTERM/SIGINT so a stop is never delayed by a wait.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::ports::{Cancel, Clock, Deadline};

/// [`Clock`] on the system time; `sleep` returns early once `cancel` is set.
#[derive(Debug, Clone)]
pub struct SystemClock {
    cancel: Cancel,
}

impl SystemClock {
    pub fn new(cancel: Cancel) -> Self {
        SystemClock { cancel }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        let until = Deadline::after(duration);
        while let Ok(nap) = until.slice(Deadline::SLICE, &self.cancel) {
            std::thread::sleep(nap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_at_least_the_duration() {
        let clock = SystemClock::new(Cancel::new());
        let start = Instant::now();
        clock.sleep(Duration::from_millis(250));
        assert!(start.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn cancel_cuts_a_sleep_short() {
        let cancel = Cancel::new();
        let clock = SystemClock::new(cancel.clone());
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            cancel.cancel();
        });
        let start = Instant::now();
        clock.sleep(Duration::from_secs(60));
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "woke up on cancel"
        );
        canceller.join().expect("canceller thread");
    }

    #[test]
    fn now_is_the_wall_time() {
        let clock = SystemClock::new(Cancel::new());
        let before = Timestamp::now();
        let now = clock.now();
        assert!(now >= before && now <= Timestamp::now());
    }
}
