//! comin's side of a deployment: the switch result it exports to us
//! (`COMIN_STATUS`, `COMIN_ERROR_MSG`) and its store file, from which a dry
//! run on a node finds the newest deployed commit. comin v0.10.0 to v0.13.0
//! export `COMIN_STATUS=done` even after a failed switch, so a non-empty
//! error message alone means the switch failed.

use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;

use super::cut;

/// What comin reported about the system switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CominStatus {
    Done,
    Failed { message: String },
}

/// `COMIN_STATUS` holds something other than `done` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCominStatus(pub String);

impl fmt::Display for UnknownCominStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "must be `done` or `failed`, got {}",
            super::shown(&self.0)
        )
    }
}

impl CominStatus {
    /// The message used when comin says `failed` but gives no text.
    pub const NO_MESSAGE: &'static str = "no error message from comin";

    /// The switch result a run goes by when nothing says otherwise:
    /// neither `COMIN_STATUS` nor `COMIN_ERROR_MSG` is set and comin's store
    /// recorded no failure. The one default; `--help` and the README say
    /// `done`.
    pub const ASSUMED: CominStatus = CominStatus::Done;

    /// The switch result a run goes by: what comin's variables said
    /// (`given`), else what comin's store recorded for the deployment the
    /// commit came from (`recorded`: a dry run of comin's newest), else
    /// [`Self::ASSUMED`].
    pub fn reported(given: Option<CominStatus>, recorded: Option<CominStatus>) -> CominStatus {
        given.or(recorded).unwrap_or(Self::ASSUMED)
    }

    /// From comin's `COMIN_STATUS` and `COMIN_ERROR_MSG`. Unset or blank
    /// status means `done`; a non-empty error message means the switch
    /// failed whatever the status says.
    pub fn from_comin(
        status: Option<&str>,
        error_msg: Option<&str>,
    ) -> Result<CominStatus, UnknownCominStatus> {
        let failed = match status.map(str::trim) {
            None | Some("") | Some("done") => false,
            Some("failed") => true,
            Some(other) => return Err(UnknownCominStatus(other.to_owned())),
        };
        let message = error_msg.map(str::trim).filter(|m| !m.is_empty());
        Ok(match (failed, message) {
            (_, Some(message)) => CominStatus::Failed {
                message: message.to_owned(),
            },
            (true, None) => CominStatus::Failed {
                message: Self::NO_MESSAGE.to_owned(),
            },
            (false, None) => CominStatus::Done,
        })
    }
}

/// One entry of the store's `deployments[]`, as much of it as we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub uuid: Option<String>,
    /// `generation.selected_commit_id`.
    pub commit: String,
    pub status: Option<String>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub error_msg: Option<String>,
}

impl Deployment {
    /// The switch result comin exported (or would export) for this
    /// deployment to its post-deployment command.
    pub fn switch(&self) -> CominStatus {
        let status = match self.status.as_deref() {
            Some("failed") => Some("failed"),
            _ => None,
        };
        CominStatus::from_comin(status, self.error_msg.as_deref()).unwrap_or(CominStatus::ASSUMED)
    }

    /// When it ended, else when it started: what "newest" is ordered by.
    pub fn when(&self) -> Option<Timestamp> {
        self.ended_at.or(self.started_at)
    }
}

/// Why the store does not name a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Not JSON, or `deployments` is not an array of objects.
    Malformed(String),
    /// No deployment in the store names a commit.
    NoDeployment,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Malformed(why) => write!(f, "it is not comin's store format ({why})"),
            StoreError::NoDeployment => f.write_str("it records no deployment with a commit"),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Deserialize)]
struct RawStore {
    #[serde(default)]
    deployments: Option<Vec<RawDeployment>>,
}

/// protojson writes every field in current releases, older ones omit some:
/// everything is optional here.
#[derive(Deserialize)]
struct RawDeployment {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    generation: Option<RawGeneration>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    ended_at: Option<String>,
    #[serde(default)]
    error_msg: Option<String>,
}

#[derive(Deserialize)]
struct RawGeneration {
    #[serde(default)]
    selected_commit_id: Option<String>,
}

fn time(raw: Option<&str>) -> Option<Timestamp> {
    raw.and_then(|t| t.trim().parse().ok())
}

/// The newest deployment (latest `ended_at`, else `started_at`; the array
/// is not ordered) that names a commit, from the store file's bytes.
pub fn newest_deployment(bytes: &[u8]) -> Result<Deployment, StoreError> {
    let store: RawStore =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Malformed(cut(&e.to_string())))?;
    store
        .deployments
        .unwrap_or_default()
        .into_iter()
        .filter_map(|raw| {
            let commit = raw
                .generation
                .and_then(|g| g.selected_commit_id)
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())?;
            Some(Deployment {
                uuid: raw.uuid,
                commit,
                status: raw.status,
                started_at: time(raw.started_at.as_deref()),
                ended_at: time(raw.ended_at.as_deref()),
                error_msg: raw.error_msg.filter(|m| !m.trim().is_empty()),
            })
        })
        // max_by_key keeps the last of equals; None sorts first.
        .max_by_key(Deployment::when)
        .ok_or(StoreError::NoDeployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_win_then_the_store_then_the_one_default() {
        let failed = |m: &str| CominStatus::Failed { message: m.into() };
        assert_eq!(CominStatus::reported(None, None), CominStatus::ASSUMED);
        assert_eq!(CominStatus::ASSUMED, CominStatus::Done);
        assert_eq!(
            CominStatus::reported(None, Some(failed("store"))),
            failed("store")
        );
        assert_eq!(
            CominStatus::reported(Some(CominStatus::Done), Some(failed("store"))),
            CominStatus::Done
        );
        // Nothing set is what the default says.
        assert_eq!(
            CominStatus::from_comin(None, None),
            Ok(CominStatus::ASSUMED)
        );
    }

    #[test]
    fn a_non_empty_error_message_means_the_switch_failed() {
        assert_eq!(CominStatus::from_comin(None, None), Ok(CominStatus::Done));
        assert_eq!(
            CominStatus::from_comin(Some("done"), Some("  ")),
            Ok(CominStatus::Done)
        );
        // comin v0.10.0 - v0.13.0: done, with the failure only in the message.
        assert_eq!(
            CominStatus::from_comin(Some("done"), Some("switch exited 4")),
            Ok(CominStatus::Failed {
                message: "switch exited 4".into()
            })
        );
        assert_eq!(
            CominStatus::from_comin(Some("failed"), None),
            Ok(CominStatus::Failed {
                message: CominStatus::NO_MESSAGE.into()
            })
        );
        let err = CominStatus::from_comin(Some("meh"), None).expect_err("unknown");
        assert_eq!(err.to_string(), "must be `done` or `failed`, got \"meh\"");
    }

    #[test]
    fn the_example_store_names_its_newest_deployment_and_its_failed_switch() {
        let bytes = include_bytes!("../../fixtures/comin/store.json");
        let newest = newest_deployment(bytes).expect("a deployment");
        assert_eq!(newest.commit, "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b");
        assert_eq!(newest.status.as_deref(), Some("done"));
        assert_eq!(
            newest.switch(),
            CominStatus::Failed {
                message: "error: switch-to-configuration exited with status 4".into()
            }
        );
    }

    #[test]
    fn newest_is_by_time_not_by_position() {
        let json = br#"{"deployments": [
            {"generation": {"selected_commit_id": "new"}, "ended_at": "2026-12-01T10:00:00Z", "status": "done"},
            {"generation": {"selected_commit_id": "old"}, "ended_at": "2026-12-01T04:00:00-05:00", "status": "done"},
            {"generation": {"selected_commit_id": "running"}, "started_at": "2026-12-01T09:59:00Z"},
            {"generation": {}, "ended_at": "2027-01-01T00:00:00Z"}
        ]}"#;
        let newest = newest_deployment(json).expect("one");
        assert_eq!(newest.commit, "new");
        assert_eq!(newest.switch(), CominStatus::Done);
        // Newest last, and the older one's time sorts later as a string.
        let json = br#"{"deployments": [
            {"generation": {"selected_commit_id": "old"}, "ended_at": "2026-12-01T10:30:00+02:00", "status": "done"},
            {"generation": {"selected_commit_id": "new"}, "ended_at": "2026-12-01T10:00:00Z", "status": "done"}
        ]}"#;
        assert_eq!(newest_deployment(json).expect("one").commit, "new");
    }

    #[test]
    fn odd_stores_are_typed_errors() {
        assert!(matches!(
            newest_deployment(b"not json"),
            Err(StoreError::Malformed(_))
        ));
        assert!(matches!(
            newest_deployment(br#"{"deployments": 3}"#),
            Err(StoreError::Malformed(_))
        ));
        assert_eq!(
            newest_deployment(br#"{"deployments": []}"#),
            Err(StoreError::NoDeployment)
        );
        assert_eq!(newest_deployment(b"{}"), Err(StoreError::NoDeployment));
    }
}
