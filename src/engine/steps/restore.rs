//! `WriteRestorePlan` step: the snapshot ids the environment's own
//! activation restores from, written where the plan says.

use std::collections::BTreeMap;

use crate::model::{MigrationKey, NodeName, RestorePlan};
use crate::ports::{Account, Level};

use super::{Ctx, Ended};

pub fn write_plan(
    ctx: &Ctx<'_>,
    account: &Account,
    source: &NodeName,
    snapshots: BTreeMap<MigrationKey, String>,
) -> Result<(), Ended> {
    let plan = RestorePlan {
        source_node: source.clone(),
        snapshots,
    };
    let path = ctx
        .ports
        .plans
        .write_restore_plan(account, &plan)
        .map_err(|e| {
            ctx.fail(
                None,
                None,
                format!(
                    "cannot write the restore plan for {}: {e:#}",
                    ctx.action.user
                ),
            )
        })?;
    ctx.log(
        Level::Info,
        None,
        None,
        &format!("restore plan written to {}", path.display()),
    );
    Ok(())
}
