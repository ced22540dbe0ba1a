//! Validated names. The intent arrives over the network, so a user name or a
//! migration key is checked once, here, and is a distinct type afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name from the intent was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is not valid: {}",
            self.kind,
            super::shown(&self.value),
            self.rule
        )
    }
}

impl std::error::Error for NameError {}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

/// A plain Unix account name: 1-32 characters of `[A-Za-z0-9_.-]`, starting
/// with a letter, digit or `_`. No `/`, no `..`, nothing a path could abuse.
/// Whether the account exists (and is not root) is checked when it is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub const RULE: &'static str =
        "a plain account name: 1-32 characters of [A-Za-z0-9_.-], starting with a letter, digit or '_'";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let ok = !value.is_empty()
            && value.len() <= 32
            && value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && value.chars().all(is_word_char)
            && !value.contains("..");
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(NameError {
                kind: "user name",
                value: value.to_owned(),
                rule: Self::RULE,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A restic backup name used for a migration, e.g. `drupal-migrate`:
/// `[A-Za-z0-9][A-Za-z0-9._-]*`. It becomes part of a unit name and a
/// program name, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MigrationKey(String);

impl MigrationKey {
    pub const RULE: &'static str =
        "a restic backup name: [A-Za-z0-9][A-Za-z0-9._-]*, at most 128 characters";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let ok = value.len() <= 128
            && value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && value.chars().all(is_word_char);
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(NameError {
                kind: "migration key",
                value: value.to_owned(),
                rule: Self::RULE,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The one unit that backs this key up, in the user's own systemd.
    /// There is deliberately no fallback name.
    pub fn unit_name(&self) -> String {
        format!("restic-backups-{}.service", self.0)
    }

    /// The user's restic wrapper for this key (same repository and password
    /// as the unit).
    pub fn wrapper_name(&self) -> String {
        format!("restic-{}", self.0)
    }
}

impl fmt::Display for MigrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MigrationKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A node's logical name as the provider knows it (non-empty, printable,
/// no whitespace or control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    pub const RULE: &'static str = "a non-empty node name without whitespace or control characters";

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let ok = !value.is_empty()
            && value.len() <= 253
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(NameError {
                kind: "node name",
                value: value.to_owned(),
                rule: Self::RULE,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Names compare with plain text, for tests and lookups.
macro_rules! compares_with_text {
    ($($name:ident),*) => {$(
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    )*};
}

compares_with_text!(UserName, MigrationKey, NodeName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_account_names() {
        for ok in ["acme-shop-main", "_svc", "u1", "a.b", "x_y-z"] {
            assert!(UserName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "..",
            "a..b",
            "-rf",
            ".hidden",
            "has space",
            "tab\t",
            "ünï",
            "a\n",
            &"x".repeat(33),
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn migration_keys_follow_the_restic_name_rule() {
        for ok in ["drupal-migrate", "db.migrate", "A_1", "9lives"] {
            assert!(MigrationKey::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in ["", "-x", ".x", "_x", "a/b", "a b", "a;rm", "key\n"] {
            assert!(
                MigrationKey::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_key_names_exactly_one_unit_and_one_wrapper() {
        let key = MigrationKey::parse("drupal-migrate").expect("valid key");
        assert_eq!(key.unit_name(), "restic-backups-drupal-migrate.service");
        assert_eq!(key.wrapper_name(), "restic-drupal-migrate");
    }

    #[test]
    fn node_names_reject_blank_and_whitespace() {
        assert!(NodeName::parse("node-a").is_ok());
        assert!(NodeName::parse("").is_err());
        assert!(NodeName::parse("node a").is_err());
    }
}
