//! Bounded retries of provider calls (5xx and transport errors, with
//! backoff, inside a time budget and the run deadline) and the 404 wait for
//! the intent.

use std::time::Duration;

use jiff::Timestamp;

use crate::model::FetchedIntent;
use crate::ports::{Clock, Level, LogFields, Ports, ProviderError};

use crate::engine::stop::Stop;
use crate::engine::Settings;

/// How long one provider call may keep failing before the run gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Total time spent retrying one call.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            budget: Duration::from_secs(60),
        }
    }
}

/// Time since `since` on `clock`, never negative.
pub fn elapsed(clock: &dyn Clock, since: Timestamp) -> Duration {
    Duration::try_from(clock.now().duration_since(since)).unwrap_or(Duration::ZERO)
}

/// Calls `call` until it succeeds, fails for good, or the budget is spent.
/// Once cancel is set, no more waiting: the error comes back at once.
pub fn retrying<T>(
    settings: &Settings,
    ports: Ports<'_>,
    step: &str,
    mut call: impl FnMut() -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let policy = settings.retry;
    let start = ports.clock.now();
    let mut delay = policy.first_delay;
    let mut attempt = 1u32;
    loop {
        match call() {
            Err(e) if e.is_retryable() => {
                let spent = elapsed(ports.clock, start);
                let left = settings.time_left(ports.clock.now());
                if ports.cancel.is_cancelled() || spent + delay > policy.budget || delay > left {
                    return Err(e);
                }
                let fields = LogFields {
                    node: Some(settings.node.as_str()),
                    ..LogFields::default()
                };
                ports.log.line(
                    Level::Warn,
                    &fields,
                    &format!(
                        "{step}: attempt {attempt} failed ({e}); retrying in {}s",
                        delay.as_secs_f32()
                    ),
                );
                ports.clock.sleep(delay);
                delay = (delay * 2).min(policy.max_delay);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Looks the intent up, retrying a 404 every poll interval for up to the
/// intent wait. `Ok(None)`: the provider has no intent for this node.
pub fn fetch_intent(settings: &Settings, ports: Ports<'_>) -> Result<Option<FetchedIntent>, Stop> {
    let start = ports.clock.now();
    let step = "intent lookup".to_owned();
    loop {
        let found = retrying(settings, ports, &step, || {
            ports.provider.intent_by_sha(&settings.sha)
        })
        .map_err(|e| Stop::from_provider(None, step.clone(), e))?;
        if found.is_some() {
            return Ok(found);
        }
        if ports.cancel.is_cancelled() {
            return Err(Stop::Interrupted { step });
        }
        let spent = elapsed(ports.clock, start);
        if spent >= settings.intent_wait {
            return Ok(None);
        }
        let left = settings.time_left(ports.clock.now());
        if left.is_zero() {
            return Err(Stop::Deadline {
                reached: settings.deadline_reached(),
                step: format!("{step} (the provider answered 404 so far)"),
            });
        }
        ports.clock.sleep(
            settings
                .intent_poll
                .min(settings.intent_wait - spent)
                .min(left),
        );
    }
}
