//! Writing the restore plan into `/run/hostenv/user/<user>/restore/` as root.
//! That tree can be writable by the user, who could plant a symlink (say
//! `restore -> /etc`), so every step opens relative to the directory before
//! it, never follows a link, and works on file descriptors.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid};

use crate::adapters::files::replace_atomically;

use crate::model::RestorePlan;
use crate::ports::{Account, PlanStore};

const PLAN: &str = "plan.json";

/// [`PlanStore`] under `root` (`/` in production, a temp dir in tests).
#[derive(Debug, Clone)]
pub struct RunPlanStore {
    pub root: PathBuf,
}

impl RunPlanStore {
    pub fn new() -> Self {
        Self::with_root("/")
    }

    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        RunPlanStore { root: root.into() }
    }
}

impl Default for RunPlanStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Who a directory gets when this program creates it.
#[derive(Clone, Copy)]
enum Owner {
    /// Whoever runs this program (root in production).
    Us,
    User(Uid, Gid),
}

impl PlanStore for RunPlanStore {
    fn write_restore_plan(&self, account: &Account, plan: &RestorePlan) -> anyhow::Result<PathBuf> {
        let user = account.name.as_str();
        let owner = Owner::User(Uid::from_raw(account.uid), Gid::from_raw(account.gid));
        let root = openat(
            AT_FDCWD,
            &self.root,
            dir_flags() & !OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", self.root.display()))?;
        let mut shown = self.root.clone();
        let mut dir = root;
        let steps = [
            ("run", Owner::Us, 0o755),
            ("hostenv", Owner::Us, 0o755),
            ("user", Owner::Us, 0o755),
            (user, owner, 0o700),
        ];
        for (name, owner, mode) in steps {
            shown.push(name);
            dir = ensure_dir(&dir, name, &shown, owner, mode)?;
        }
        shown.push("restore");
        let restore = ensure_dir(&dir, "restore", &shown, owner, 0o700)?;
        // Also when it already existed: the contract fixes owner and mode.
        fchown(
            &restore,
            Some(Uid::from_raw(account.uid)),
            Some(Gid::from_raw(account.gid)),
        )
        .with_context(|| format!("cannot give {} to user {user}", shown.display()))?;
        fchmod(&restore, Mode::from_bits_truncate(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", shown.display()))?;

        let mut json = serde_json::to_vec_pretty(plan).context("cannot encode the restore plan")?;
        json.push(b'\n');
        write_atomically(&restore, &shown, &json, account)?;
        Ok(shown.join(PLAN))
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens `parent/name` as a directory without following a link; `None` if
/// it does not exist.
fn open_dir(parent: &OwnedFd, name: &str, shown: &Path) -> anyhow::Result<Option<OwnedFd>> {
    match openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(refusal(parent, name, shown)),
        Err(e) => Err(e).with_context(|| format!("cannot open directory {}", shown.display())),
    }
}

/// Why `parent/name` cannot be used as a directory.
fn refusal(parent: &OwnedFd, name: &str, shown: &Path) -> anyhow::Error {
    let is_link = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK);
    if is_link {
        anyhow!(
            "refused a symlink at {}: as root, this program never follows links in the user's \
             runtime tree (check who created it; remove it and retry)",
            shown.display()
        )
    } else {
        anyhow!(
            "{} is not a directory (check who created it; remove it and retry)",
            shown.display()
        )
    }
}

/// Opens `parent/name`, creating it (owner, mode) if missing.
fn ensure_dir(
    parent: &OwnedFd,
    name: &str,
    shown: &Path,
    owner: Owner,
    mode: u32,
) -> anyhow::Result<OwnedFd> {
    if let Some(fd) = open_dir(parent, name, shown)? {
        return Ok(fd);
    }
    let created = match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false, // appeared meanwhile: open (and check) it below
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create directory {}", shown.display()))
        }
    };
    let fd = open_dir(parent, name, shown)?
        .ok_or_else(|| anyhow!("{} vanished right after it was created", shown.display()))?;
    if created {
        if let Owner::User(uid, gid) = owner {
            fchown(&fd, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to uid {uid}", shown.display()))?;
        }
        fchmod(&fd, Mode::from_bits_truncate(mode))
            .with_context(|| format!("cannot set mode {mode:o} on {}", shown.display()))?;
    }
    Ok(fd)
}

/// `plan.json`, replaced atomically and given to the user.
fn write_atomically(
    dir: &OwnedFd,
    shown: &Path,
    data: &[u8],
    account: &Account,
) -> anyhow::Result<()> {
    replace_atomically(dir, shown, PLAN, data, |file| {
        fchown(
            file.as_fd(),
            Some(Uid::from_raw(account.uid)),
            Some(Gid::from_raw(account.gid)),
        )
        .context("chown to the user")?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(0o600)).context("chmod 0600")?;
        Ok(())
    })
    .with_context(|| format!("cannot write the restore plan for user {}", account.name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use nix::unistd::{getegid, geteuid};

    use super::*;
    use crate::model::{MigrationKey, NodeName, UserName};

    fn account() -> Account {
        // As root, a uid other than ours proves the chown happens.
        let (uid, gid) = if geteuid().is_root() {
            (4321, 4321)
        } else {
            (geteuid().as_raw(), getegid().as_raw())
        };
        Account {
            name: UserName::parse("acme").expect("name"),
            uid,
            gid,
            groups: vec![gid],
            home: PathBuf::from("/home/acme"),
        }
    }

    fn plan(id: &str) -> RestorePlan {
        RestorePlan {
            source_node: NodeName::parse("node-a").expect("node"),
            snapshots: BTreeMap::from([(
                MigrationKey::parse("db-migrate").expect("key"),
                id.to_owned(),
            )]),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn writes_the_plan_with_the_contract_modes_and_owner() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = RunPlanStore::with_root(root.path());
        let acct = account();
        let path = store
            .write_restore_plan(&acct, &plan("abc123"))
            .expect("write");
        let restore = root.path().join("run/hostenv/user/acme/restore");
        assert_eq!(path, restore.join("plan.json"));
        // Where the plan (and the dry run) says it goes.
        let planned = RestorePlan::path(&acct.name);
        assert_eq!(
            path,
            root.path()
                .join(planned.strip_prefix("/").expect("absolute"))
        );

        let read: RestorePlan =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(read, plan("abc123"));
        assert_eq!(mode(&restore), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&root.path().join("run/hostenv/user/acme")), 0o700);
        assert_eq!(mode(&root.path().join("run/hostenv/user")), 0o755);
        for p in [
            &restore,
            &path,
            &restore.parent().expect("user dir").to_path_buf(),
        ] {
            let meta = std::fs::metadata(p).expect("stat");
            assert_eq!(
                (meta.uid(), meta.gid()),
                (acct.uid, acct.gid),
                "{}",
                p.display()
            );
        }
        let entries: Vec<_> = std::fs::read_dir(&restore).expect("list").collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");

        store
            .write_restore_plan(&acct, &plan("def456"))
            .expect("rewrite");
        let read: RestorePlan =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(read, plan("def456"));
    }

    #[test]
    fn an_existing_restore_dir_gets_the_contract_mode() {
        let root = tempfile::tempdir().expect("tempdir");
        let restore = root.path().join("run/hostenv/user/acme/restore");
        std::fs::create_dir_all(&restore).expect("mkdir");
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        RunPlanStore::with_root(root.path())
            .write_restore_plan(&account(), &plan("x"))
            .expect("write");
        assert_eq!(mode(&restore), 0o700);
    }

    #[test]
    fn a_restore_symlink_is_refused_and_its_target_untouched() {
        let root = tempfile::tempdir().expect("tempdir");
        let victim = root.path().join("etc");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("passwd"), "keep").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let user_dir = root.path().join("run/hostenv/user/acme");
        std::fs::create_dir_all(&user_dir).expect("mkdir");
        std::os::unix::fs::symlink(&victim, user_dir.join("restore")).expect("symlink");

        let err = RunPlanStore::with_root(root.path())
            .write_restore_plan(&account(), &plan("x"))
            .expect_err("refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("symlink")
                && msg.contains(&user_dir.join("restore").display().to_string()),
            "{msg}"
        );
        assert_eq!(mode(&victim), 0o750);
        let names: Vec<_> = std::fs::read_dir(&victim)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("passwd")]);
        assert_eq!(
            std::fs::read_to_string(victim.join("passwd")).expect("read"),
            "keep"
        );
    }

    #[test]
    fn a_planted_plan_symlink_is_replaced_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = root.path().join("shadow");
        std::fs::write(&outside, "keep").expect("write");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let restore = root.path().join("run/hostenv/user/acme/restore");
        std::fs::create_dir_all(&restore).expect("mkdir");
        std::os::unix::fs::symlink(&outside, restore.join("plan.json")).expect("symlink");

        let path = RunPlanStore::with_root(root.path())
            .write_restore_plan(&account(), &plan("x"))
            .expect("write");
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep");
        assert_eq!(mode(&outside), 0o644);
        assert!(std::fs::symlink_metadata(&path)
            .expect("stat")
            .file_type()
            .is_file());
    }

    #[test]
    fn a_user_dir_symlink_or_a_file_on_the_way_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let users = root.path().join("run/hostenv/user");
        std::fs::create_dir_all(&users).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, users.join("acme")).expect("symlink");
        let store = RunPlanStore::with_root(root.path());
        let err = store
            .write_restore_plan(&account(), &plan("x"))
            .expect_err("refused");
        assert!(format!("{err:#}").contains("refused a symlink"), "{err:#}");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);

        std::fs::remove_file(users.join("acme")).expect("rm link");
        std::fs::create_dir(users.join("acme")).expect("mkdir");
        std::fs::write(users.join("acme/restore"), "").expect("file");
        let err = store
            .write_restore_plan(&account(), &plan("x"))
            .expect_err("refused");
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
    }
}
