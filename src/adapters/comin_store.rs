//! comin's store file (`/var/lib/comin/store.json`), read only, bounded:
//! where a dry run on a node finds the newest deployed commit when no
//! commit is given.

use std::path::Path;

use anyhow::anyhow;

use crate::adapters::files::read_bounded;
use crate::model::comin::{newest_deployment, Deployment};

/// comin's store holds every deployment's record; far below this.
pub const MAX_STORE_BYTES: u64 = 64 * 1024 * 1024;

/// The newest deployment recorded in the store at `path`.
pub fn newest(path: &Path) -> anyhow::Result<Deployment> {
    let bytes = read_bounded(path, MAX_STORE_BYTES, false)
        .map_err(|e| anyhow!("comin's store {} {e}", path.display()))?;
    newest_deployment(&bytes)
        .map_err(|e| anyhow!("cannot use comin's store {}: {e}", path.display()))
}
