//! The read-only checks of an environment's user that both the dry run and
//! `doctor` make before a run would need them: the account, a unit's load
//! state, the programs a run calls. Each check is decided here once; the dry
//! run and `doctor` only word and grade what it found.

use crate::model::{MigrationKey, UserName};
use crate::ports::{is_loaded, Account, Search, UserPrograms, UserSystemd, Users, LOOK_LIMIT};

/// What one check found: `Ok(detail)` when it passed, `Err(detail)` when it
/// did not.
pub type Found = Result<String, String>;

/// The user's account, or why it cannot be had (the error's chain).
pub fn account(users: &dyn Users, user: &UserName) -> Result<Account, String> {
    users.lookup(user).map_err(|e| format!("{e:#}"))
}

/// Whether `unit` is loaded in the user's systemd (`LoadState=…` either
/// way); an error when the user's systemd does not answer.
pub fn unit_loaded(
    systemd: &dyn UserSystemd,
    account: &Account,
    unit: &str,
) -> anyhow::Result<Found> {
    let state = systemd.load_state(account, unit, LOOK_LIMIT)?;
    Ok(if is_loaded(&state) {
        Ok(format!("LoadState={state}"))
    } else {
        Err(format!("LoadState={state}"))
    })
}

/// A program of the user that a run calls: where it was found, or the
/// paths looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program<'a> {
    /// The user's `activate`.
    Activate,
    /// The restic wrapper of a migration key.
    ResticWrapper(&'a MigrationKey),
}

/// Where `program` is, or the paths looked at (comma-separated).
pub fn find(programs: &dyn UserPrograms, account: &Account, program: Program<'_>) -> Found {
    let search: Search = match program {
        Program::Activate => programs.find_activate(account),
        Program::ResticWrapper(key) => programs.find_restic_wrapper(account, key),
    };
    match search.found {
        Some(path) => Ok(path.display().to_string()),
        None => Err(search.looked_at()),
    }
}
