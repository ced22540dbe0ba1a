//! The one deadline type every wait takes: a point on the monotonic clock
//! (never the wall clock, which may jump), with the few things a wait asks
//! of it — how long is left (never negative), whether it has passed, the
//! next slice to wait given the stop signal, and the earlier of two.
//!
//! Two ways to read "now": the adapters use the real monotonic clock (the
//! methods without a suffix); the engine reads its [`Clock`] (the `_at`
//! methods, given `clock.instant()`), so that its waits are tested without
//! sleeping.

use std::time::{Duration, Instant};

use super::{Cancel, Clock};

/// When a wait must be over, on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

/// Why a wait must end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The stop signal (SIGTERM/SIGINT) came.
    Stopped,
    /// The deadline has passed.
    Reached,
}

/// What stands in for "forever" when a limit does not fit the clock.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Deadline {
    /// How often a wait that nothing wakes looks at the stop signal and its
    /// deadline: a stop is seen within this.
    pub const SLICE: Duration = Duration::from_millis(100);

    /// `limit` from now on the real monotonic clock (adapters).
    pub fn after(limit: Duration) -> Self {
        Self::from(Instant::now(), limit)
    }

    /// `limit` from now on `clock` (the engine).
    pub fn on(clock: &dyn Clock, limit: Duration) -> Self {
        Self::from(clock.instant(), limit)
    }

    /// `limit` after `start`; a limit too large for the clock is a
    /// deadline that is never reached in practice.
    pub fn from(start: Instant, limit: Duration) -> Self {
        let at = start
            .checked_add(limit)
            .or_else(|| start.checked_add(FAR))
            .unwrap_or(start);
        Deadline(at)
    }

    /// Exactly at `instant`.
    pub fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// The instant itself, for an API that takes one.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left at `now`, zero once passed (never negative).
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether it has passed at `now` (reached counts as passed).
    pub fn reached_at(self, now: Instant) -> bool {
        now >= self.0
    }

    /// Time left now, on the real monotonic clock.
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Whether it has passed now, on the real monotonic clock.
    pub fn reached(self) -> bool {
        self.reached_at(Instant::now())
    }

    /// The earlier of the two.
    pub fn earlier(self, other: Deadline) -> Deadline {
        self.min(other)
    }

    /// The stop and deadline check of a wait at `now`: the stop signal
    /// first, then the deadline.
    pub fn check_at<'a>(
        self,
        now: Instant,
        stop: impl Into<Option<&'a Cancel>>,
    ) -> Result<(), Over> {
        if stop.into().is_some_and(Cancel::is_cancelled) {
            return Err(Over::Stopped);
        }
        if self.reached_at(now) {
            return Err(Over::Reached);
        }
        Ok(())
    }

    /// [`check_at`](Self::check_at) now, on the real monotonic clock.
    pub fn check<'a>(self, stop: impl Into<Option<&'a Cancel>>) -> Result<(), Over> {
        self.check_at(Instant::now(), stop)
    }

    /// The next wait at `now`: `period` (how often the stop signal is
    /// looked at), cut to the time left; or why there is none.
    pub fn slice_at<'a>(
        self,
        now: Instant,
        period: Duration,
        stop: impl Into<Option<&'a Cancel>>,
    ) -> Result<Duration, Over> {
        self.check_at(now, stop)?;
        Ok(period.min(self.remaining_at(now)))
    }

    /// [`slice_at`](Self::slice_at) now, on the real monotonic clock.
    pub fn slice<'a>(
        self,
        period: Duration,
        stop: impl Into<Option<&'a Cancel>>,
    ) -> Result<Duration, Over> {
        self.slice_at(Instant::now(), period, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn remaining_counts_down_to_zero_and_never_below() {
        let t0 = Instant::now();
        let d = Deadline::from(t0, 10 * SEC);
        assert_eq!(d.remaining_at(t0), 10 * SEC);
        assert_eq!(d.remaining_at(t0 + 4 * SEC), 6 * SEC);
        assert_eq!(d.remaining_at(t0 + 10 * SEC), Duration::ZERO);
        assert_eq!(d.remaining_at(t0 + 3600 * SEC), Duration::ZERO);
        assert!(!d.reached_at(t0 + 9 * SEC));
        assert!(d.reached_at(t0 + 10 * SEC), "reached at the instant itself");
        assert!(d.reached_at(t0 + 11 * SEC));
    }

    #[test]
    fn the_real_clock_counts_too() {
        let past = Deadline::after(Duration::ZERO);
        assert!(past.reached());
        assert_eq!(past.remaining(), Duration::ZERO);
        let far = Deadline::after(3600 * SEC);
        assert!(!far.reached());
        assert!(far.remaining() > 3599 * SEC && far.remaining() <= 3600 * SEC);
    }

    #[test]
    fn a_limit_beyond_the_clock_is_far_not_a_panic_nor_the_past() {
        let t0 = Instant::now();
        let d = Deadline::from(t0, Duration::MAX);
        assert!(!d.reached_at(t0 + 3600 * SEC));
        assert!(d.remaining_at(t0) >= 3600 * SEC);
    }

    #[test]
    fn earlier_is_the_first_to_come_either_way_round() {
        let t0 = Instant::now();
        let (soon, late) = (Deadline::from(t0, SEC), Deadline::from(t0, 9 * SEC));
        assert_eq!(soon.earlier(late), soon);
        assert_eq!(late.earlier(soon), soon);
        assert_eq!(soon.earlier(soon), soon);
    }

    #[test]
    fn a_slice_never_exceeds_the_period_nor_the_time_left() {
        let t0 = Instant::now();
        let d = Deadline::from(t0, 10 * SEC);
        let none = None::<&Cancel>;
        assert_eq!(d.slice_at(t0, Deadline::SLICE, none), Ok(Deadline::SLICE));
        let late = t0 + 10 * SEC - Duration::from_millis(30);
        assert_eq!(
            d.slice_at(late, Deadline::SLICE, none),
            Ok(Duration::from_millis(30))
        );
        for ms in (0..10_000).step_by(7) {
            let now = t0 + Duration::from_millis(ms);
            let slice = d.slice_at(now, Deadline::SLICE, none).expect("not over");
            assert!(slice <= Deadline::SLICE && slice <= d.remaining_at(now));
            assert!(!slice.is_zero(), "a wait before the deadline waits");
        }
        assert_eq!(
            d.slice_at(t0 + 10 * SEC, Deadline::SLICE, none),
            Err(Over::Reached)
        );
    }

    #[test]
    fn the_stop_signal_ends_a_wait_before_the_deadline_is_looked_at() {
        let t0 = Instant::now();
        let d = Deadline::from(t0, 10 * SEC);
        let cancel = Cancel::new();
        assert_eq!(d.check_at(t0, &cancel), Ok(()));
        cancel.cancel();
        assert_eq!(d.check_at(t0, &cancel), Err(Over::Stopped));
        assert_eq!(d.check_at(t0 + 60 * SEC, &cancel), Err(Over::Stopped));
        assert_eq!(d.slice_at(t0, Deadline::SLICE, &cancel), Err(Over::Stopped));
        assert_eq!(d.check_at(t0 + 60 * SEC, None), Err(Over::Reached));
        assert_eq!(d.check(&cancel), Err(Over::Stopped));
    }

    /// The engine's deadlines count on its clock, not on the real one.
    #[test]
    fn on_a_clock_counts_from_the_clock_s_instant() {
        struct Stopped(Instant);
        impl Clock for Stopped {
            fn now(&self) -> jiff::Timestamp {
                jiff::Timestamp::UNIX_EPOCH
            }
            fn instant(&self) -> Instant {
                self.0
            }
            fn sleep(&self, _: Duration) {}
        }
        let t0 = Instant::now() + 3600 * SEC;
        let d = Deadline::on(&Stopped(t0), 5 * SEC);
        assert_eq!(d, Deadline::at(t0 + 5 * SEC));
        assert_eq!(d.instant(), t0 + 5 * SEC);
        assert_eq!(d.remaining_at(t0), 5 * SEC);
    }
}
