//! `CheckHealth` step: after `activate` exited 0, the environment's services
//! must be running, not just started (behaviour.md, "Healthy, not just
//! exited"): the units of `default.target` and `hostenv.target`, looked at
//! in the user's own systemd.

use std::time::Duration;

use crate::model::{EventPayload, HealthFailure, Terminal};
use crate::ports::{Account, Health, Level};

use super::Ctx;

/// Units named in a failure message; the payload lists them all.
const NAMED: usize = 10;

/// Waits up to `within` (never past the action's deadline) for the
/// services to settle; none failed gives `success`.
pub fn check(ctx: &Ctx<'_>, account: &Account, within: Duration, success: &str) -> Terminal {
    let user = &ctx.action.user;
    if let Some(terminal) = ctx.out_of_time("check the health of the services") {
        return terminal;
    }
    let limit = within.min(ctx.remaining());
    let health = ctx
        .ports
        .systemd
        .check_health(account, limit, ctx.ports.cancel);
    match health {
        Ok(Health::Healthy { looked_at }) => {
            ctx.log(
                Level::Info,
                None,
                None,
                &format!("{looked_at} unit(s) of default.target and hostenv.target healthy"),
            );
            Terminal::success(success, None)
        }
        Ok(Health::Unhealthy { units }) => {
            let mut named: Vec<String> =
                units.iter().take(NAMED).map(ToString::to_string).collect();
            if units.len() > NAMED {
                named.push(format!("and {} more", units.len() - NAMED));
            }
            let message = format!(
                "{} service(s) of {user} not healthy after activation: {}",
                units.len(),
                named.join(", ")
            );
            ctx.log(Level::Error, None, None, &message);
            Terminal::failed(
                message,
                Some(EventPayload::Unhealthy(HealthFailure {
                    user: user.clone(),
                    exit_code: 0,
                    unhealthy: units,
                })),
            )
        }
        Ok(Health::Interrupted) => ctx.interrupted("checking the health of the services"),
        Err(e) => {
            let message = format!(
                "cannot check the health of the services of {user} after activation: {e:#}"
            );
            ctx.log(Level::Error, None, None, &message);
            Terminal::failed(message, None)
        }
    }
}
