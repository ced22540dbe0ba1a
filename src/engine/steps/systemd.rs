//! `StopUnit` and `ReloadManager` steps: the end of a `deactivate`, in the
//! user's own systemd.

use crate::ports::{Account, Level};

use super::{Ctx, Ended};

pub fn stop_unit(ctx: &Ctx<'_>, account: &Account, unit: &str) -> Result<(), Ended> {
    let user = &ctx.action.user;
    ctx.ports
        .systemd
        .stop_unit(account, unit, ctx.remaining(), ctx.ports.cancel)
        .map_err(|e| {
            ctx.fail(
                Some(unit),
                None,
                format!("cannot stop {unit} for {user}: {e:#}"),
            )
        })
}

pub fn reload_manager(ctx: &Ctx<'_>, account: &Account) -> Result<(), Ended> {
    let user = &ctx.action.user;
    ctx.ports.systemd.reload_manager(account).map_err(|e| {
        ctx.fail(
            None,
            None,
            format!("cannot reload the systemd of {user} after stopping its units: {e:#}"),
        )
    })?;
    ctx.log(Level::Info, None, None, "user's systemd reloaded");
    Ok(())
}
