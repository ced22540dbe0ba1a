//! Exit codes, and the one place each result maps to one: a run's
//! `Outcome`, a dry run's verdict ([`Exit`]), and every error that ends the
//! program ([`Error`], mapped by the one match in [`Error::exit`]): a
//! setting or a combination of flags is a usage error (2), anything else a
//! failure (1).

use std::fmt;
use std::process::ExitCode;

use crate::engine::Outcome;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, or nothing to do.
    Ok = 0,
    /// A deployment action failed, or the provider failed or refused us.
    Failed = 1,
    /// Usage or configuration error.
    Usage = 2,
}

impl Exit {
    /// A run's exit status.
    pub fn of(outcome: &Outcome) -> Exit {
        Exit::passed(outcome.is_success())
    }

    /// A dry run's (or a check's) exit status: 0 when everything passed.
    pub fn passed(ok: bool) -> Exit {
        if ok {
            Exit::Ok
        } else {
            Exit::Failed
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A missing or malformed setting, named by its variable and its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub flag: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (--{}) {}", self.variable, self.flag, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Flags given together that do not go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combination(pub &'static str);

impl fmt::Display for Combination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Combination {}

/// Everything that ends the program with an error: what `main` prints (with
/// its chain, `{:#}`) and exits with ([`Error::exit`]).
#[derive(Debug)]
pub enum Error {
    /// A missing or malformed setting.
    Setting(ConfigError),
    /// Flags that do not go together.
    Combination(Combination),
    /// Anything else that went wrong.
    Failed(anyhow::Error),
}

impl Error {
    /// The one place an error becomes an exit code.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Setting(_) | Error::Combination(_) => Exit::Usage,
            Error::Failed(_) => Exit::Failed,
        }
    }
}

impl fmt::Display for Error {
    /// The error itself; `{:#}` adds a failure's chain.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setting(e) => fmt::Display::fmt(e, f),
            Error::Combination(e) => fmt::Display::fmt(e, f),
            Error::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Setting(e)
    }
}

impl From<Combination> for Error {
    fn from(e: Combination) -> Self {
        Error::Combination(e)
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_codes() {
        assert_eq!(Exit::of(&Outcome::NothingToDo("n".into())) as u8, 0);
        assert_eq!(Exit::of(&Outcome::Succeeded("s".into())) as u8, 0);
        assert_eq!(Exit::of(&Outcome::Failed("f".into())) as u8, 1);
        assert_eq!(Exit::passed(true) as u8, 0);
        assert_eq!(Exit::passed(false) as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
    }

    #[test]
    fn errors_map_to_usage_or_failure_and_keep_their_chain() {
        let setting = Error::from(ConfigError {
            variable: "V",
            flag: "f",
            problem: "is bad".into(),
        });
        assert_eq!(setting.exit(), Exit::Usage);
        assert_eq!(format!("{setting:#}"), "V (--f) is bad");
        assert_eq!(Error::from(Combination("no")).exit(), Exit::Usage);
        let failed = Error::from(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(failed.exit(), Exit::Failed);
        assert_eq!(format!("{failed:#}"), "outer: inner");
        assert_eq!(format!("{failed}"), "outer");
    }
}
