//! `deactivate`: wait until the target node has taken the environment over
//! (never take a live site down for a job that failed there), then stop the
//! user's `hostenv.target` and reload the user's manager.

use crate::model::Status;
use crate::ports::Level;

use super::super::report::Stop;
use super::super::wait::{self, Target, Waited};
use super::{tri, Ctx, Terminal};

pub const TARGET_UNIT: &str = "hostenv.target";

pub fn perform(ctx: &Ctx<'_>) -> Result<Terminal, Stop> {
    let user = &ctx.action.user;
    let node = &ctx.settings.node;
    let target = ctx.action.to_node.as_ref().filter(|t| *t != node);
    match target {
        None => ctx.post_running()?,
        Some(target) => ctx.post(
            Status::Waiting,
            &format!("Waiting for {target} to activate {user}"),
        )?,
    }
    // An unknown user fails now, not after the wait.
    let account = tri!(ctx.account());
    if let Some(target) = target {
        match wait::for_target(ctx, target)? {
            Waited::Ready(Target::Activated) => ctx.post_running()?,
            Waited::Ready(Target::NotVisible) => ctx.post(
                Status::Running,
                &format!(
                    "Target node {target} not visible after {}s; proceeding with deactivation of {user}",
                    ctx.settings.target_observe_timeout.as_secs()
                ),
            )?,
            Waited::OtherFailed(why) => {
                return Ok(Terminal::failed(format!("Not deactivating {user}: {why}")))
            }
            Waited::TimedOut => {
                return Ok(Terminal::TimedOut(
                    format!(
                        "Deactivation of {user} timed out after {}s waiting for {target} to activate",
                        ctx.timeout_secs()
                    ),
                    None,
                ))
            }
            Waited::Interrupted => return Ok(ctx.interrupted(&format!("waiting for {target}"))),
        }
    }
    if let Err(e) = ctx
        .ports
        .systemd
        .stop_unit(&account, TARGET_UNIT, ctx.ports.cancel)
    {
        let msg = format!("cannot stop {TARGET_UNIT} for {user}: {e:#}");
        ctx.log(Level::Error, Some(TARGET_UNIT), None, &msg);
        return Ok(Terminal::failed(msg));
    }
    if let Err(e) = ctx.ports.systemd.reload_manager(&account) {
        let msg =
            format!("stopped {TARGET_UNIT} for {user} but cannot reload the user's systemd: {e:#}");
        ctx.log(Level::Error, None, None, &msg);
        return Ok(Terminal::failed(msg));
    }
    Ok(Terminal::Success(format!("Deactivated {user}"), None))
}
