//! `StopUnit` and `ReloadManager` steps: the end of a `deactivate`, in the
//! user's own systemd.

use crate::model::Terminal;
use crate::ports::{Account, Level};

use super::{Ctx, Ended};

pub fn stop_unit(ctx: &Ctx<'_>, account: &Account, unit: &str) -> Result<(), Ended> {
    let user = &ctx.action.user;
    if let Some(terminal) = ctx.out_of_time(&format!("stop {unit}")) {
        return Err(Ended::With(terminal));
    }
    ctx.ports
        .systemd
        .stop_unit(account, unit, ctx.remaining(), ctx.ports.cancel)
        .map_err(|e| {
            let own = format!("cannot stop {unit} for {user}: {e:#}");
            if !ctx.remaining().is_zero() {
                return ctx.fail(Some(unit), None, own);
            }
            // The stop ran into the deadline: that is a timeout.
            let message = ctx.timed_out(own, &format!("stopping {unit} for {user} ({e:#})"));
            ctx.log(Level::Error, Some(unit), None, &message);
            Ended::With(Terminal::timed_out(message, None))
        })
}

pub fn reload_manager(ctx: &Ctx<'_>, account: &Account) -> Result<(), Ended> {
    let user = &ctx.action.user;
    if let Some(terminal) = ctx.out_of_time("reload the user's systemd") {
        return Err(Ended::With(terminal));
    }
    ctx.ports
        .systemd
        .reload_manager(account, ctx.remaining())
        .map_err(|e| {
            ctx.fail(
                None,
                None,
                format!("cannot reload the systemd of {user} after stopping its units: {e:#}"),
            )
        })?;
    ctx.log(Level::Info, None, None, "user's systemd reloaded");
    Ok(())
}
