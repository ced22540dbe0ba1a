//! Bounded retries of provider calls (5xx and transport errors, with
//! backoff, inside a time budget and the run deadline) and the 404 wait for
//! the intent.

use std::time::Duration;

use crate::model::FetchedIntent;
use crate::ports::{Deadline, Level, LogFields, Ports, ProviderError};

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

/// Calls `call` until it succeeds, fails for good, or the budget is spent.
/// Once cancel is set, no more waiting: the error comes back at once.
pub fn retrying<T>(
    settings: &Settings,
    ports: Ports<'_>,
    step: &str,
    mut call: impl FnMut() -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let policy = settings.retry;
    // Retrying ends with the budget or the run, whichever comes first.
    let until = Deadline::on(ports.clock, policy.budget).earlier(settings.deadline());
    let mut delay = policy.first_delay;
    let mut attempt = 1u32;
    loop {
        match call() {
            Err(e) if e.is_retryable() => {
                let left = until.remaining_at(ports.clock.instant());
                if ports.cancel.is_cancelled() || delay > left {
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
    let waited = Deadline::on(ports.clock, settings.intent_wait);
    let run = settings.deadline();
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
        let now = ports.clock.instant();
        if waited.reached_at(now) {
            return Ok(None);
        }
        if run.reached_at(now) {
            return Err(Stop::Deadline {
                reached: settings.deadline_reached(),
                step: format!("{step} (the provider answered 404 so far)"),
            });
        }
        let left = waited.earlier(run).remaining_at(now);
        ports.clock.sleep(settings.intent_poll.min(left));
    }
}
