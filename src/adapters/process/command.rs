//! A command to run as an environment's user, built as a value before
//! anything runs: program, arguments, the clean environment of behaviour.md
//! (nothing inherited from root), cwd `$HOME` and the timeout.

use std::path::PathBuf;
use std::time::Duration;

use crate::ports::Account;

/// A command to run as a user, complete before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment; nothing else is inherited.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub timeout: Duration,
}

/// The user's PATH directories, in order.
pub fn user_path(account: &Account) -> Vec<PathBuf> {
    let home = &account.home;
    let user = account.name.as_str();
    vec![
        home.join(".local/bin"),
        PathBuf::from(format!("/etc/profiles/per-user/{user}/bin")),
        home.join(".nix-profile/bin"),
        PathBuf::from(format!("/nix/var/nix/profiles/per-user/{user}/profile/bin")),
        PathBuf::from("/run/wrappers/bin"),
        PathBuf::from("/run/current-system/sw/bin"),
        PathBuf::from("/usr/local/bin"),
        PathBuf::from("/usr/bin"),
        PathBuf::from("/bin"),
    ]
}

impl UserCommand {
    /// `program args...` as `account`, in its clean environment and `$HOME`.
    pub fn for_account(
        account: &Account,
        program: impl Into<PathBuf>,
        args: impl Into<Vec<String>>,
        timeout: Duration,
    ) -> Self {
        let home = account.home.to_string_lossy().into_owned();
        let user = account.name.as_str().to_owned();
        let runtime = account.runtime_dir().to_string_lossy().into_owned();
        let path = user_path(account)
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let env = vec![
            ("HOME".to_owned(), home.clone()),
            ("USER".to_owned(), user.clone()),
            ("LOGNAME".to_owned(), user),
            ("XDG_CONFIG_HOME".to_owned(), format!("{home}/.config")),
            ("XDG_STATE_HOME".to_owned(), format!("{home}/.local/state")),
            ("XDG_DATA_HOME".to_owned(), format!("{home}/.local/share")),
            ("XDG_CACHE_HOME".to_owned(), format!("{home}/.cache")),
            ("XDG_RUNTIME_DIR".to_owned(), runtime.clone()),
            (
                "DBUS_SESSION_BUS_ADDRESS".to_owned(),
                format!("unix:path={runtime}/bus"),
            ),
            ("PATH".to_owned(), path),
        ];
        UserCommand {
            program: program.into(),
            args: args.into(),
            env,
            cwd: account.home.clone(),
            timeout,
        }
    }

    /// `program arg arg` for log lines (never the environment).
    pub fn display(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::UserName;

    #[test]
    fn the_command_value_has_exactly_the_documented_environment() {
        let acct = Account {
            name: UserName::parse("acme").expect("name"),
            uid: 1234,
            gid: 1234,
            groups: vec![1234],
            home: PathBuf::from("/home/acme"),
        };
        let cmd = UserCommand::for_account(
            &acct,
            Path::new("/home/acme/.local/bin/activate"),
            &["--flag".to_owned()],
            Duration::from_secs(9),
        );
        assert_eq!(cmd.program, PathBuf::from("/home/acme/.local/bin/activate"));
        assert_eq!(cmd.args, vec!["--flag".to_owned()]);
        assert_eq!(cmd.cwd, PathBuf::from("/home/acme"));
        assert_eq!(cmd.timeout, Duration::from_secs(9));
        let want: Vec<(String, String)> = [
            ("HOME", "/home/acme"),
            ("USER", "acme"),
            ("LOGNAME", "acme"),
            ("XDG_CONFIG_HOME", "/home/acme/.config"),
            ("XDG_STATE_HOME", "/home/acme/.local/state"),
            ("XDG_DATA_HOME", "/home/acme/.local/share"),
            ("XDG_CACHE_HOME", "/home/acme/.cache"),
            ("XDG_RUNTIME_DIR", "/run/user/1234"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1234/bus"),
            (
                "PATH",
                "/home/acme/.local/bin:/etc/profiles/per-user/acme/bin:/home/acme/.nix-profile/bin:\
                 /nix/var/nix/profiles/per-user/acme/profile/bin:/run/wrappers/bin:\
                 /run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(cmd.env, want, "nothing more, nothing inherited");
        assert_eq!(cmd.display(), "/home/acme/.local/bin/activate --flag");
    }
}
