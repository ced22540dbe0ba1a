//! The user units and helper scripts a test node installs, as on a hostenv
//! node: `restic-backups-<key>.service` with its `restic-<key>` wrapper, and
//! small units whose behaviour (fail, hang, belong to `hostenv.target`) the
//! tests rely on.

use std::path::Path;

/// `Type=oneshot` that exits 3.
pub const FAILING_UNIT: &str = "hat-fails.service";
/// The exit status of [`FAILING_UNIT`].
pub const FAILING_STATUS: i32 = 3;
/// `Type=oneshot` that sleeps for ten minutes.
pub const HANGING_UNIT: &str = "hat-hangs.service";
/// The target `deactivate` stops.
pub const HOSTENV_TARGET: &str = "hostenv.target";
/// A long-running service wanted by (and part of) [`HOSTENV_TARGET`].
pub const TARGET_SERVICE: &str = "hat-app.service";
/// How long [`HANGING_UNIT`] sleeps; its command line, to find leftovers.
pub const HANGING_SLEEP: &str = "600";

/// Paths of one backup key of one user.
pub struct BackupPaths<'a> {
    pub home: &'a Path,
    pub key: &'a str,
    pub restic: &'a Path,
}

impl BackupPaths<'_> {
    pub fn repo(&self) -> String {
        format!("{}/restic-repos/{}", self.home.display(), self.key)
    }
    pub fn password_file(&self) -> String {
        format!(
            "{}/.config/restic/{}.password",
            self.home.display(),
            self.key
        )
    }
    pub fn data_dir(&self) -> String {
        format!("{}/data/{}", self.home.display(), self.key)
    }
    pub fn cache_dir(&self) -> String {
        format!("{}/.cache/restic", self.home.display())
    }
    /// Relative to the home directory.
    pub fn wrapper_rel(&self) -> String {
        format!(".local/bin/restic-{}", self.key)
    }

    /// `restic-backups-<key>.service`: a real `restic backup --tag <key>` of
    /// the key's data dir into its local repository.
    pub fn unit(&self) -> String {
        format!(
            "[Unit]\n\
             Description=hostenv test backup {key}\n\n\
             [Service]\n\
             Type=oneshot\n\
             Environment=RESTIC_REPOSITORY={repo}\n\
             Environment=RESTIC_PASSWORD_FILE={password}\n\
             Environment=RESTIC_CACHE_DIR={cache}\n\
             ExecStart={restic} backup --tag {key} {data}\n",
            key = self.key,
            repo = self.repo(),
            password = self.password_file(),
            cache = self.cache_dir(),
            restic = self.restic.display(),
            data = self.data_dir(),
        )
    }

    /// `~/.local/bin/restic-<key>`: restic with the unit's repository and password.
    pub fn wrapper(&self) -> String {
        format!(
            "#!/bin/sh\n\
             export RESTIC_REPOSITORY='{repo}'\n\
             export RESTIC_PASSWORD_FILE='{password}'\n\
             export RESTIC_CACHE_DIR='{cache}'\n\
             exec '{restic}' \"$@\"\n",
            repo = self.repo(),
            password = self.password_file(),
            cache = self.cache_dir(),
            restic = self.restic.display(),
        )
    }
}

pub fn failing_unit() -> String {
    format!(
        "[Unit]\nDescription=hostenv test: fails on purpose\n\n\
         [Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'echo failing on purpose; exit {FAILING_STATUS}'\n"
    )
}

pub fn hanging_unit() -> String {
    format!(
        "[Unit]\nDescription=hostenv test: hangs\n\n\
         [Service]\nType=oneshot\nExecStart=/bin/sleep {HANGING_SLEEP}\n"
    )
}

pub fn hostenv_target() -> String {
    format!("[Unit]\nDescription=hostenv test environment\nWants={TARGET_SERVICE}\n")
}

pub fn target_service() -> String {
    format!(
        "[Unit]\nDescription=hostenv test app\nPartOf={HOSTENV_TARGET}\n\n\
         [Service]\nExecStart=/bin/sleep infinity\n"
    )
}
