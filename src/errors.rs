//! Exit codes and the one error kind that maps to "usage" (2). Everything
//! else that goes wrong in a run is a deployment failure (1).

use std::fmt;
use std::process::ExitCode;

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
