//! The deploy intent: what the provider asks this node to do for one job.
//! It is parsed once, here, from the raw JSON of the wire into a typed
//! [`Intent`] or a typed [`IntentError`] that says what was wrong, so that a
//! bad intent becomes a `failed` event, never a panic or a vague error.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::names::{MigrationKey, NameError, NodeName, UserName};

/// The provider's job id. Servant serialises it as a string; a number is
/// accepted too and kept as its decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if !s.trim().is_empty() => Ok(Self(s)),
            Value::Number(n) => Ok(Self(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "jobId must be a non-empty string or a number, got {}",
                super::cut(&other.to_string())
            ))),
        }
    }
}

/// Body of `GET /api/deploy-intents/by-sha`, as the wire has it. The intent
/// stays raw JSON only until [`FetchedIntent::from`] parses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentEnvelope {
    pub job_id: JobId,
    #[serde(default)]
    pub commit_sha: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub intent: Value,
}

/// SHA-256 of the intent's canonical JSON (keys sorted): tells whether a
/// journal was written for this very intent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntentDigest(String);

impl IntentDigest {
    pub fn of(raw: &Value) -> Self {
        // serde_json's map is ordered by key, so equal intents give equal text.
        let canonical = raw.to_string();
        let hash = Sha256::digest(canonical.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("sha256:{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The intent lookup's answer, parsed: the job, the intent's digest, and
/// the intent itself or why it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedIntent {
    pub job: JobId,
    pub digest: IntentDigest,
    pub intent: Result<Intent, IntentError>,
}

impl From<IntentEnvelope> for FetchedIntent {
    fn from(envelope: IntentEnvelope) -> Self {
        FetchedIntent {
            job: envelope.job_id,
            digest: IntentDigest::of(&envelope.intent),
            intent: Intent::parse(&envelope.intent),
        }
    }
}

/// One action kind. Anything else is refused when the intent is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Activate,
    Reload,
    Backup,
    Restore,
    Deactivate,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Activate,
        Op::Reload,
        Op::Backup,
        Op::Restore,
        Op::Deactivate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Activate => "activate",
            Op::Reload => "reload",
            Op::Backup => "backup",
            Op::Restore => "restore",
            Op::Deactivate => "deactivate",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action of the intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub op: Op,
    pub user: UserName,
    pub from_node: Option<NodeName>,
    pub to_node: Option<NodeName>,
    pub migrations: Vec<MigrationKey>,
}

/// A deploy intent of schema version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intent {
    pub actions: Vec<Action>,
}

/// What is wrong with one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionProblem {
    NotAnObject,
    OpMissing,
    OpNotAString(String),
    UnknownOp(String),
    UserMissing,
    UserEmpty,
    UserNotAString(String),
    BadName(NameError),
    NodeNotAString { field: &'static str, got: String },
    MigrationsNotAnArray(String),
    KeyNotAString(String),
    DuplicateKey(MigrationKey),
}

impl fmt::Display for ActionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionProblem::NotAnObject => f.write_str("not a JSON object"),
            ActionProblem::OpMissing => f.write_str("op is missing"),
            ActionProblem::OpNotAString(got) => write!(f, "op must be a string, got {got}"),
            ActionProblem::UnknownOp(op) => write!(
                f,
                "op {op:?} is not one of activate, reload, backup, restore, deactivate"
            ),
            ActionProblem::UserMissing => f.write_str("user is missing"),
            ActionProblem::UserEmpty => f.write_str("user is empty"),
            ActionProblem::UserNotAString(got) => write!(f, "user must be a string, got {got}"),
            ActionProblem::BadName(e) => e.fmt(f),
            ActionProblem::NodeNotAString { field, got } => {
                write!(f, "{field} must be a string or null, got {got}")
            }
            ActionProblem::MigrationsNotAnArray(got) => {
                write!(f, "migrations must be an array, got {got}")
            }
            ActionProblem::KeyNotAString(got) => {
                write!(f, "migrations entries must be strings, got {got}")
            }
            ActionProblem::DuplicateKey(key) => write!(f, "migrations lists {key} twice"),
        }
    }
}

/// What is wrong with an intent, precise enough for an operator to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentError {
    NotAnObject,
    SchemaVersion(String),
    ActionsNotAnArray,
    Action {
        index: usize,
        problem: ActionProblem,
    },
}

impl fmt::Display for IntentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntentError::NotAnObject => f.write_str("the intent is not a JSON object"),
            IntentError::SchemaVersion(v) => write!(f, "schemaVersion must be 1, got {v}"),
            IntentError::ActionsNotAnArray => f.write_str("actions must be an array"),
            IntentError::Action { index, problem } => write!(f, "actions[{index}]: {problem}"),
        }
    }
}

impl std::error::Error for IntentError {}

/// A JSON value from the wire, shortened for a message.
fn shown(v: &Value) -> String {
    super::cut(&v.to_string())
}

impl Intent {
    /// Checks the raw intent against schema version 1 and the name rules.
    pub fn parse(raw: &Value) -> Result<Intent, IntentError> {
        let obj = raw.as_object().ok_or(IntentError::NotAnObject)?;
        let version = obj.get("schemaVersion").unwrap_or(&Value::Null);
        if version.as_u64() != Some(1) {
            return Err(IntentError::SchemaVersion(shown(version)));
        }
        let actions = obj
            .get("actions")
            .and_then(Value::as_array)
            .ok_or(IntentError::ActionsNotAnArray)?;
        let actions = actions
            .iter()
            .enumerate()
            .map(|(index, a)| {
                parse_action(a).map_err(|problem| IntentError::Action { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Intent { actions })
    }
}

fn parse_action(raw: &Value) -> Result<Action, ActionProblem> {
    let obj = raw.as_object().ok_or(ActionProblem::NotAnObject)?;
    let op = match obj.get("op") {
        Some(Value::String(s)) => {
            Op::parse(s).ok_or_else(|| ActionProblem::UnknownOp(super::cut(s)))?
        }
        Some(other) => return Err(ActionProblem::OpNotAString(shown(other))),
        None => return Err(ActionProblem::OpMissing),
    };
    let user = match obj.get("user") {
        Some(Value::String(s)) if s.is_empty() => return Err(ActionProblem::UserEmpty),
        Some(Value::String(s)) => UserName::parse(s).map_err(ActionProblem::BadName)?,
        Some(other) => return Err(ActionProblem::UserNotAString(shown(other))),
        None => return Err(ActionProblem::UserMissing),
    };
    let from_node = optional_node(obj.get("fromNode"), "fromNode")?;
    let to_node = optional_node(obj.get("toNode"), "toNode")?;
    let migrations = match obj.get("migrations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(keys)) => {
            let mut parsed: Vec<MigrationKey> = Vec::with_capacity(keys.len());
            for k in keys {
                let key = match k {
                    Value::String(s) => MigrationKey::parse(s).map_err(ActionProblem::BadName)?,
                    other => return Err(ActionProblem::KeyNotAString(shown(other))),
                };
                if parsed.contains(&key) {
                    return Err(ActionProblem::DuplicateKey(key));
                }
                parsed.push(key);
            }
            parsed
        }
        Some(other) => return Err(ActionProblem::MigrationsNotAnArray(shown(other))),
    };
    Ok(Action {
        op,
        user,
        from_node,
        to_node,
        migrations,
    })
}

fn optional_node(
    v: Option<&Value>,
    field: &'static str,
) -> Result<Option<NodeName>, ActionProblem> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => NodeName::parse(s)
            .map(Some)
            .map_err(|e| ActionProblem::BadName(NameError { kind: field, ..e })),
        Some(other) => Err(ActionProblem::NodeNotAString {
            field,
            got: shown(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accepts_the_documented_example() {
        let intent = Intent::parse(&json!({
            "schemaVersion": 1,
            "actions": [
                {"op": "backup", "user": "acme-shop-main", "fromNode": "node-a", "toNode": "node-b", "migrations": ["drupal-migrate"]},
                {"op": "deactivate", "user": "acme-shop-main", "fromNode": "node-a", "toNode": null}
            ]
        }))
        .expect("valid intent");
        assert_eq!(intent.actions.len(), 2);
        assert_eq!(intent.actions[0].op, Op::Backup);
        assert_eq!(intent.actions[0].migrations[0].as_str(), "drupal-migrate");
        assert_eq!(intent.actions[1].to_node, None);
        assert!(intent.actions[1].migrations.is_empty());
    }

    #[test]
    fn explains_each_kind_of_bad_intent() {
        let cases = [
            (json!([]), "not a JSON object"),
            (
                json!({"schemaVersion": 2, "actions": []}),
                "schemaVersion must be 1, got 2",
            ),
            (json!({"schemaVersion": 1}), "actions must be an array"),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "nuke", "user": "a"}]}),
                "actions[0]: op \"nuke\"",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "activate", "user": ""}]}),
                "actions[0]: user is empty",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "activate"}]}),
                "user is missing",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "activate", "user": "../root"}]}),
                "user name \"../root\"",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "backup", "user": "a", "migrations": ["x/../y"]}]}),
                "migration key \"x/../y\"",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "backup", "user": "a", "migrations": "k"}]}),
                "migrations must be an array",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "restore", "user": "a", "fromNode": 3}]}),
                "fromNode must be a string",
            ),
            (
                json!({"schemaVersion": 1, "actions": [{"op": "backup", "user": "a", "migrations": ["k", "k"]}]}),
                "migrations lists k twice",
            ),
        ];
        for (raw, expected) in cases {
            let err = Intent::parse(&raw)
                .expect_err("must be refused")
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn job_ids_may_be_strings_or_numbers() {
        let env: IntentEnvelope =
            serde_json::from_value(json!({"jobId": 42, "intent": {}})).expect("decodes");
        assert_eq!(env.job_id.as_str(), "42");
        let env: IntentEnvelope = serde_json::from_value(
            json!({"jobId": "j-1", "commitSha": "abc", "node": "n", "intent": {}}),
        )
        .expect("decodes");
        assert_eq!(env.job_id.as_str(), "j-1");
    }
}
