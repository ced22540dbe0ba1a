//! `hostenv-activate doctor`, wired: the file facts gathered with the real
//! adapters, read-only (the token file read once without waiting, comin's
//! store, the journal, the lock, the metrics destination), then judged by
//! `crate::doctor` with the read-only ports.

use std::sync::Arc;

use crate::adapters::metrics;
use crate::adapters::{clock::SystemClock, comin_store, http::HttpProvider, log::Logger, token};
use crate::cli::Cli;
use crate::config::{Config, StatusConfig};
use crate::doctor::{self, Facts, TokenFacts};
use crate::errors::{Error, Exit};
use crate::model::BackupPayload;
use crate::model::{DeployStatus, FetchedIntent, JobId, NodeEvent, NodeName, UserName};
use crate::ports::{Cancel, Level, Log, LogFields, Provider, ProviderError};
use crate::secret::Token;

use super::{journal_to_read, lock_holder, print, ReadOnly};

/// `hostenv-activate doctor`: gathers the file facts with the real
/// adapters, read-only, and lets `doctor` judge them.
pub fn doctor(cli: &Cli) -> Result<Exit, Error> {
    let log: Arc<Logger> = Arc::new(Logger::system());
    let paths = StatusConfig::from_cli(cli)?;
    let config = Config::from_cli(cli);
    let node = paths.node.as_ref().map(|n| n.to_string());
    let (summary, token) = match &config {
        Ok(c) => (
            Ok(format!(
                "valid: node {}, provider {}, action timeout {}s, run timeout {}s, {}",
                c.node,
                c.api_base,
                c.action_timeout.as_secs(),
                c.run_timeout.as_secs(),
                match c.health_timeout.as_secs() {
                    0 => "health check off".to_owned(),
                    s => format!("health check up to {s}s"),
                }
            )),
            token_facts(&c.token_file),
        ),
        Err(e) => (Err(e.to_string()), (TokenFacts::NotConfigured, None)),
    };
    let (mut token_shown, token) = token;
    let provider = match (&config, token) {
        (Ok(c), Some(t)) => match HttpProvider::new(&c.api_base, c.node.clone(), t) {
            Ok(provider) => Some(provider),
            // Read fine, yet unusable (a newline inside the token, say):
            // the token check says why, not only the provider's.
            Err(e) => {
                token_shown = TokenFacts::Unusable {
                    path: c.token_file.display().to_string(),
                    why: format!("{e:#}"),
                };
                None
            }
        },
        _ => None,
    };
    let store_path = match &config {
        Ok(c) => c.comin_store.clone(),
        Err(_) => std::path::PathBuf::from(cli.comin_store.to_string_lossy().into_owned()),
    };
    let store = comin_store::newest(&store_path).map_err(|e| format!("{e:#}"));
    let journal = journal_to_read(&paths, log.clone());
    let scan = journal.scan();
    let facts = Facts {
        node,
        config: summary,
        base_url_warning: config.as_ref().ok().and_then(|c| c.api_base.warning()),
        token: token_shown,
        comin_store: (store_path.display().to_string(), store),
        // A journal that cannot even be listed is the state directory's problem.
        state_dir: match &scan.unlisted {
            Some(why) => Err(why.clone()),
            None => journal.check_dir(),
        },
        journal: scan,
        lock: lock_holder(&paths.lock_file),
        metrics: config
            .as_ref()
            .ok()
            .and_then(|c| c.metrics_file.as_deref())
            .map(metrics::check_destination),
        lingering: Box::new(|user| {
            std::path::Path::new("/var/lib/systemd/linger")
                .join(user.as_str())
                .exists()
        }),
    };
    let adapters = ReadOnly::new(journal, &paths.lock_file, log, Cancel::new());
    let unusable = Unusable;
    let provider: &dyn Provider = match &provider {
        Some(provider) => provider,
        None => &unusable,
    };
    let diagnosis = doctor::examine(facts, adapters.ports(provider));
    print(
        paths.output,
        &diagnosis,
        doctor::render_text,
        "doctor's report",
    )?;
    Ok(Exit::passed(diagnosis.ok))
}

/// What reading the token file now, without waiting, finds, and the token
/// when it is usable.
fn token_facts(path: &std::path::Path) -> (TokenFacts, Option<Token>) {
    /// Keeps the warnings a run would log about the file.
    #[derive(Default)]
    struct Warnings(std::cell::RefCell<Vec<String>>);
    impl Log for Warnings {
        fn line(&self, _: Level, _: &LogFields<'_>, message: &str) {
            self.0.borrow_mut().push(message.to_owned());
        }
    }
    let clock = SystemClock::new(Cancel::new());
    let warnings = Warnings::default();
    let shown = path.display().to_string();
    let read = token::read_token(
        path,
        &clock,
        &warnings,
        &Cancel::new(),
        std::time::Duration::ZERO,
        None,
    );
    match read {
        Ok(t) => (
            TokenFacts::Read {
                path: shown,
                bytes: t.expose().len(),
                warnings: warnings.0.into_inner(),
            },
            Some(t),
        ),
        Err(e) => (
            TokenFacts::Unusable {
                path: shown,
                why: format!("{e:#}"),
            },
            None,
        ),
    }
}

/// Stands in for the provider when the configuration or the token file is
/// unusable: `doctor::examine` does not ask one then (its facts say so).
/// Asked anyway, it answers that there is none.
struct Unusable;

impl Unusable {
    fn none<T>(&self) -> Result<T, ProviderError> {
        Err(ProviderError::Transport(
            "no provider: the configuration or the token file is not usable".into(),
        ))
    }
}

impl Provider for Unusable {
    fn intent_by_sha(&self, _: &str) -> Result<Option<FetchedIntent>, ProviderError> {
        self.none()
    }
    fn intent_url(&self, _: &str) -> String {
        "(no provider)".into()
    }
    fn post_event(&self, _: &JobId, _: &NodeEvent) -> Result<(), ProviderError> {
        self.none()
    }
    fn statuses(&self, _: &JobId) -> Result<Vec<DeployStatus>, ProviderError> {
        self.none()
    }
    fn own_status(&self, _: &JobId) -> Result<Option<DeployStatus>, ProviderError> {
        self.none()
    }
    fn backup_snapshot(
        &self,
        _: &JobId,
        _: &NodeName,
        _: &UserName,
    ) -> Result<Option<BackupPayload>, ProviderError> {
        self.none()
    }
}
