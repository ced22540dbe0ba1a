//! Exit codes, and the one place each result maps to one: a run's
//! `Outcome`, a dry run's verdict, a usage error. The error kind that maps
//! to "usage" (2) is `ConfigError`; everything else that goes wrong in a
//! run is a deployment failure (1).

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
}
