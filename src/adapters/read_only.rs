//! The user-systemd adapter as `--dry-run` may use it: reads only. It never
//! brings a user's manager up (a real run would start `user@<uid>.service`)
//! and refuses every call that would start, stop or reload something.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use crate::ports::{Account, Cancel, UnitRun, UserSystemd};

use super::systemd::bus_socket_path;

/// Wraps a [`UserSystemd`] so that nothing can change through it.
pub struct ReadOnlySystemd<S>(pub S);

impl<S: UserSystemd> ReadOnlySystemd<S> {
    fn require_bus(&self, account: &Account) -> anyhow::Result<()> {
        let bus = bus_socket_path(account.uid);
        if !Path::new(&bus).exists() {
            bail!(
                "the systemd user manager of {} is not running (no {}); a real run would start user@{}.service first",
                account.name,
                bus.display(),
                account.uid
            );
        }
        Ok(())
    }
}

impl<S: UserSystemd> UserSystemd for ReadOnlySystemd<S> {
    fn load_state(&self, account: &Account, unit: &str) -> anyhow::Result<String> {
        self.require_bus(account)?;
        self.0.load_state(account, unit)
    }

    fn list_units(&self, account: &Account, prefix: &str) -> anyhow::Result<Vec<String>> {
        self.require_bus(account)?;
        self.0.list_units(account, prefix)
    }

    fn run_unit(
        &self,
        _: &Account,
        unit: &str,
        _: Duration,
        _: &Cancel,
    ) -> anyhow::Result<UnitRun> {
        bail!("dry run: refusing to start {unit}")
    }

    fn stop_unit(&self, _: &Account, unit: &str, _: &Cancel) -> anyhow::Result<()> {
        bail!("dry run: refusing to stop {unit}")
    }

    fn reload_manager(&self, account: &Account) -> anyhow::Result<()> {
        bail!(
            "dry run: refusing to reload the systemd manager of {}",
            account.name
        )
    }
}
