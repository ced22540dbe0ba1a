//! Finding the user's own programs (`activate`, `restic-<key>`) in the
//! documented lookup order, and running them as the user through
//! `process`. The filesystem root is injectable so tests use a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::process::{user_path, ProcessRunner, UserCommand};
use crate::model::MigrationKey;
use crate::ports::{Account, Cancel, ProgramRun, Search, UserPrograms};

/// [`UserPrograms`] on the node's filesystem.
#[derive(Clone)]
pub struct UserProgramsAdapter {
    root: PathBuf,
    runner: ProcessRunner,
}

impl UserProgramsAdapter {
    /// Looks programs up under `/`.
    pub fn new(runner: ProcessRunner) -> Self {
        Self::with_root("/", runner)
    }

    /// Looks programs up under `root` (tests); returned paths omit `root`.
    pub fn with_root(root: impl Into<PathBuf>, runner: ProcessRunner) -> Self {
        UserProgramsAdapter {
            root: root.into(),
            runner,
        }
    }

    /// The first candidate that is an executable regular file (symlinks,
    /// e.g. into the nix store, are followed for the check). Each path is
    /// looked at (and listed) once: the user's PATH repeats the profiles.
    fn first_executable(&self, candidates: impl IntoIterator<Item = PathBuf>) -> Search {
        let mut looked: Vec<PathBuf> = Vec::new();
        for path in candidates {
            if !looked.contains(&path) {
                looked.push(path);
            }
        }
        let found = looked
            .iter()
            .find(|path| {
                let on_disk = self.root.join(path.strip_prefix("/").unwrap_or(path));
                std::fs::metadata(on_disk)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .cloned();
        Search { found, looked }
    }
}

impl UserPrograms for UserProgramsAdapter {
    fn find_activate(&self, account: &Account) -> Search {
        let user = account.name.as_str();
        let on_path = user_path(account)
            .into_iter()
            .map(|dir| dir.join("activate"));
        let fixed = [
            PathBuf::from(format!("/etc/profiles/per-user/{user}/bin/activate")),
            PathBuf::from(format!(
                "/nix/var/nix/profiles/per-user/{user}/profile/bin/activate"
            )),
            account.home.join(".nix-profile/bin/activate"),
        ];
        self.first_executable(on_path.chain(fixed))
    }

    fn find_restic_wrapper(&self, account: &Account, key: &MigrationKey) -> Search {
        let name = key.wrapper_name();
        let canonical = account.home.join(".local/bin").join(&name);
        let on_path = user_path(account).into_iter().map(|dir| dir.join(&name));
        let profile = account.home.join(".nix-profile/bin").join(&name);
        self.first_executable(std::iter::once(canonical).chain(on_path).chain([profile]))
    }

    fn run(
        &self,
        account: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        cancel: &Cancel,
    ) -> anyhow::Result<ProgramRun> {
        let cmd = UserCommand::for_account(account, program, args, timeout);
        self.runner.run(&cmd, account, cancel)
    }

    fn run_with_stdout(
        &self,
        account: &Account,
        program: &Path,
        args: &[String],
        timeout: Duration,
        cancel: &Cancel,
        stdout: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<ProgramRun> {
        let cmd = UserCommand::for_account(account, program, args, timeout);
        self.runner.run_with_stdout(&cmd, account, cancel, stdout)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::UserName;
    use crate::ports::{Level, Log, LogFields, ProgramOutcome};

    struct Quiet;
    impl Log for Quiet {
        fn line(&self, _: Level, _: &LogFields<'_>, _: &str) {}
    }

    struct Fixture {
        dir: tempfile::TempDir,
        adapter: UserProgramsAdapter,
        account: Account,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapter =
            UserProgramsAdapter::with_root(dir.path(), ProcessRunner::new(Arc::new(Quiet)));
        let account = Account {
            name: UserName::parse("acme").expect("name"),
            uid: 1234,
            gid: 1234,
            groups: vec![1234],
            home: PathBuf::from("/home/acme"),
        };
        Fixture {
            dir,
            adapter,
            account,
        }
    }

    impl Fixture {
        /// Creates `path` (absolute, under the temp root) with `mode`.
        fn file(&self, path: &str, mode: u32) {
            let on_disk = self.dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(on_disk.parent().expect("parent")).expect("mkdir");
            std::fs::write(&on_disk, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
        }

        fn activate(&self) -> Option<String> {
            let found = self.adapter.find_activate(&self.account).found;
            found.map(|p| p.display().to_string())
        }

        fn restic(&self) -> Option<String> {
            let key = MigrationKey::parse("db-migrate").expect("key");
            let found = self.adapter.find_restic_wrapper(&self.account, &key).found;
            found.map(|p| p.display().to_string())
        }
    }

    #[test]
    fn activate_follows_the_documented_order() {
        let f = fixture();
        assert_eq!(f.activate(), None);
        // The user's PATH, last to first. (The fixed fallbacks of the
        // contract are all on that PATH, in the same relative order.)
        let order = [
            "/bin/activate",
            "/usr/bin/activate",
            "/usr/local/bin/activate",
            "/run/current-system/sw/bin/activate",
            "/run/wrappers/bin/activate",
            "/nix/var/nix/profiles/per-user/acme/profile/bin/activate",
            "/home/acme/.nix-profile/bin/activate",
            "/etc/profiles/per-user/acme/bin/activate",
            "/home/acme/.local/bin/activate",
        ];
        // Each newly created, earlier-ranked candidate wins over the ones before.
        for path in order {
            f.file(path, 0o755);
            assert_eq!(f.activate().as_deref(), Some(path));
        }
    }

    #[test]
    fn each_place_is_looked_at_and_named_once() {
        let f = fixture();
        let key = MigrationKey::parse("db-migrate").expect("key");
        for search in [
            f.adapter.find_activate(&f.account),
            f.adapter.find_restic_wrapper(&f.account, &key),
        ] {
            let mut seen = std::collections::HashSet::new();
            assert!(
                search.looked.iter().all(|p| seen.insert(p.clone())),
                "a path is named twice: {}",
                search.looked_at()
            );
        }
    }

    #[test]
    fn non_executables_directories_and_dangling_links_are_skipped() {
        let f = fixture();
        f.file("/home/acme/.nix-profile/bin/activate", 0o755);
        f.file("/home/acme/.local/bin/activate", 0o644);
        std::fs::create_dir_all(f.dir.path().join("etc/profiles/per-user/acme/bin/activate"))
            .expect("dir");
        let bin = f.dir.path().join("run/current-system/sw/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::os::unix::fs::symlink("missing-target", bin.join("activate")).expect("symlink");
        assert_eq!(
            f.activate().as_deref(),
            Some("/home/acme/.nix-profile/bin/activate")
        );
    }

    #[test]
    fn a_symlink_to_an_executable_counts() {
        let f = fixture();
        f.file("/nix/store/abc-activate/bin/activate", 0o555);
        let bin = f.dir.path().join("home/acme/.local/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../../../nix/store/abc-activate/bin/activate",
            bin.join("activate"),
        )
        .expect("symlink");
        assert_eq!(
            f.activate().as_deref(),
            Some("/home/acme/.local/bin/activate")
        );
    }

    #[test]
    fn restic_wrapper_follows_the_documented_order() {
        let f = fixture();
        assert_eq!(f.restic(), None);
        let order = [
            "/bin/restic-db-migrate",
            "/run/current-system/sw/bin/restic-db-migrate",
            "/home/acme/.nix-profile/bin/restic-db-migrate",
            "/etc/profiles/per-user/acme/bin/restic-db-migrate",
            "/home/acme/.local/bin/restic-db-migrate",
        ];
        for path in order {
            f.file(path, 0o700);
            assert_eq!(f.restic().as_deref(), Some(path));
        }
    }

    #[test]
    fn run_executes_as_the_user_in_the_clean_environment() {
        let home = tempfile::tempdir().expect("tempdir");
        let adapter = UserProgramsAdapter::new(ProcessRunner::new(Arc::new(Quiet)));
        let gid = nix::unistd::getegid().as_raw();
        let account = Account {
            name: UserName::parse("hostenv-test").expect("name"),
            uid: nix::unistd::geteuid().as_raw(),
            gid,
            groups: vec![gid],
            home: home.path().to_path_buf(),
        };
        let args = vec!["-c".to_owned(), "echo $USER; exit 2".to_owned()];
        let run = adapter
            .run(
                &account,
                Path::new("/bin/sh"),
                &args,
                Duration::from_secs(60),
                &Cancel::new(),
            )
            .expect("run");
        assert_eq!(run.outcome, ProgramOutcome::Exited(2));
        assert_eq!(run.output, "hostenv-test\n");
    }
}
