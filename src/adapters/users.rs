//! Resolving an environment's user name (which came over the network) to a
//! local account: uid, primary gid, supplementary groups and home, from the
//! passwd and group databases. Root and unknown names are refused here.

use std::ffi::CString;

use anyhow::{bail, Context};
use nix::unistd::{getgrouplist, User};

use crate::model::UserName;
use crate::ports::{Account, Users};

/// [`Users`] backed by the node's passwd/group databases.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemUsers;

impl SystemUsers {
    pub fn new() -> Self {
        SystemUsers
    }
}

impl Users for SystemUsers {
    fn lookup(&self, name: &UserName) -> anyhow::Result<Account> {
        let user = User::from_name(name.as_str())
            .with_context(|| format!("cannot read the passwd entry of user {name}"))?;
        let Some(user) = user else {
            bail!("user {name} does not exist on this node (no passwd entry)");
        };
        if user.uid.is_root() {
            bail!("refusing to act as {name}: uid 0 is root");
        }
        if !user.dir.is_absolute() || user.dir.to_str().is_none() {
            bail!(
                "user {name} has an unusable home directory {:?} in passwd (it must be an absolute UTF-8 path)",
                user.dir
            );
        }
        let cname = CString::new(name.as_str())
            .with_context(|| format!("user name {name} contains a NUL byte"))?;
        let mut groups: Vec<u32> = getgrouplist(&cname, user.gid)
            .with_context(|| format!("cannot list the groups of user {name} (getgrouplist)"))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        if !groups.contains(&user.gid.as_raw()) {
            groups.insert(0, user.gid.as_raw());
        }
        Ok(Account {
            name: name.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use nix::unistd::{geteuid, Uid};

    use super::*;

    fn name(s: &str) -> UserName {
        UserName::parse(s).expect("valid name")
    }

    #[test]
    fn an_existing_account_resolves_with_its_groups() {
        // The current user, or `nobody` when the tests run as root.
        let me = User::from_uid(geteuid())
            .expect("passwd")
            .expect("current user");
        let target = if me.uid.is_root() {
            match User::from_name("nobody").expect("passwd") {
                Some(u) => u,
                None => return eprintln!("skipped: no non-root account to look up"),
            }
        } else {
            me
        };
        let account = SystemUsers.lookup(&name(&target.name)).expect("lookup");
        assert_eq!(account.uid, target.uid.as_raw());
        assert_eq!(account.gid, target.gid.as_raw());
        assert!(
            account.groups.contains(&account.gid),
            "primary gid is included"
        );
        assert_eq!(account.home, target.dir);
        assert_ne!(Uid::from_raw(account.uid), Uid::from_raw(0));
    }

    #[test]
    fn root_is_refused() {
        let err = SystemUsers.lookup(&name("root")).expect_err("root");
        assert_eq!(err.to_string(), "refusing to act as root: uid 0 is root");
    }

    #[test]
    fn an_unknown_user_is_named() {
        let err = SystemUsers
            .lookup(&name("no-such-user-hostenv"))
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "user no-such-user-hostenv does not exist on this node (no passwd entry)"
        );
    }
}
