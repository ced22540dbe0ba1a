//! The adapters as `--dry-run` and `doctor` may use them: reads only. Every
//! call that would start, stop or reload something, or write a restore
//! plan, is refused. (Wrap `UserBus::without_starting_managers()`, which
//! also never brings a user's manager up.)

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::model::RestorePlan;
use crate::ports::{
    Account, Cancel, FailedUnits, Health, PlanStore, UnitList, UnitRun, UserSystemd,
};

/// Wraps a [`UserSystemd`] so that nothing can change through it.
pub struct ReadOnlySystemd<S>(pub S);

impl<S: UserSystemd> UserSystemd for ReadOnlySystemd<S> {
    fn load_state(&self, account: &Account, unit: &str, limit: Duration) -> anyhow::Result<String> {
        self.0.load_state(account, unit, limit)
    }

    fn list_units(
        &self,
        account: &Account,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<UnitList> {
        self.0.list_units(account, prefix, limit)
    }

    fn failed_units(&self, account: &Account, limit: Duration) -> anyhow::Result<FailedUnits> {
        self.0.failed_units(account, limit)
    }

    fn check_health(
        &self,
        account: &Account,
        limit: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<Health> {
        self.0.check_health(account, limit, cancel)
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

    fn stop_unit(&self, _: &Account, unit: &str, _: Duration, _: &Cancel) -> anyhow::Result<()> {
        bail!("dry run: refusing to stop {unit}")
    }

    fn reload_manager(&self, account: &Account, _: Duration) -> anyhow::Result<()> {
        bail!(
            "dry run: refusing to reload the systemd manager of {}",
            account.name
        )
    }
}

/// The restore-plan store of a job that only looks (the dry run, `doctor`):
/// every write is refused.
pub struct ReadOnlyPlans;

impl PlanStore for ReadOnlyPlans {
    fn write_restore_plan(&self, account: &Account, _: &RestorePlan) -> anyhow::Result<PathBuf> {
        bail!(
            "read only: refusing to write the restore plan of {}",
            account.name
        )
    }
}
