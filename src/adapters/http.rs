//! The provider API over HTTP(S) or a unix socket (`ports::Provider`), with
//! reqwest's client driven on the calling thread (a current-thread tokio
//! runtime: no thread of its own, no hand-off per request). One call is one
//! request: retries are the
//! engine's business. The node token travels only in a sensitive
//! `Authorization` header; it never appears in a URL, a log line or an error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION};
use reqwest::redirect::Policy;
use reqwest::Url;
use reqwest::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::{
    BackupPayload, DeployStatus, FetchedIntent, IntentEnvelope, JobId, NodeEvent, NodeName,
    UserName,
};
use crate::ports::{Cancel, Deadline, Provider, ProviderError, Setting};
use crate::secret::Token;

/// Time allowed to establish a connection (TCP + TLS, or the unix socket).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one whole request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one request once the run is being stopped.
pub const STOPPING_TIMEOUT: Duration = Duration::from_secs(3);
/// How much of an error answer's body is kept for messages.
pub const BODY_EXCERPT_CHARS: usize = 300;

/// Where the provider listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiBase {
    /// An `http://` or `https://` base URL; a path prefix is kept, and the
    /// API's own `/api/...` paths are joined below it.
    Http(Url),
    /// `unix:/path/to.sock`: HTTP over a unix socket (the local demo provider).
    Unix(PathBuf),
}

impl std::fmt::Display for ApiBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiBase::Http(url) => f.write_str(url.as_str().trim_end_matches('/')),
            ApiBase::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ApiBase {
    /// Parses a configured base URL; the error says what is wrong with it
    /// (the caller names the setting).
    pub fn parse(raw: &str) -> Result<ApiBase, String> {
        let raw = raw.trim();
        if let Some(path) = raw.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "must name an absolute socket path after unix:, got {}",
                    crate::model::shown(raw)
                ));
            }
            return Ok(ApiBase::Unix(path));
        }
        let url = Url::parse(raw)
            .map_err(|e| format!("is not a URL ({e}): {}", crate::model::shown(raw)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "must be an http(s):// URL with a host, or unix:/path, got {}",
                crate::model::shown(raw)
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "must not carry credentials; the token comes from {}",
                Setting::TokenFile
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "must not carry a query or fragment, got {}",
                crate::model::shown(raw)
            ));
        }
        Ok(ApiBase::Http(url))
    }

    /// A warning for a base URL that is probably wrong: one whose path
    /// already ends in `/api` (the API's paths start with `/api` already).
    pub fn warning(&self) -> Option<String> {
        let ApiBase::Http(url) = self else {
            return None;
        };
        let last = url.path_segments()?.rfind(|s| !s.is_empty())?;
        if last != "api" {
            return None;
        }
        let mut fixed = url.clone();
        if let Ok(mut path) = fixed.path_segments_mut() {
            path.pop_if_empty().pop();
        }
        let base = self.to_string();
        Some(format!(
            "{} ({base}) ends in /api, so requests go to {base}/api/deploy-intents/...; \
             the provider's paths already start with /api: if the provider answers 404, set it to {}",
            Setting::ApiBaseUrl,
            fixed.as_str().trim_end_matches('/')
        ))
    }
}

/// The endpoints this program calls; the status mapping depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/deploy-intents/by-sha`
    IntentBySha,
    /// `POST /api/deploy-jobs/{job}/events`
    Events,
    /// `GET /api/deploy-jobs/{job}/statuses`
    Statuses,
    /// `GET /api/deploy-jobs/{job}/status`
    OwnStatus,
    /// `GET /api/deploy-jobs/{job}/backup-snapshot`
    BackupSnapshot,
}

impl Endpoint {
    fn describe(self) -> &'static str {
        match self {
            Endpoint::IntentBySha => "intent lookup",
            Endpoint::Events => "event post",
            Endpoint::Statuses => "job statuses",
            Endpoint::OwnStatus => "this node's latest event",
            Endpoint::BackupSnapshot => "backup snapshot lookup",
        }
    }
}

/// Maps an HTTP answer to the contract's outcome. Pure: status code and body
/// text in, `Ok(())` for 2xx or the matching [`ProviderError`]. The body is
/// shortened to [`BODY_EXCERPT_CHARS`] and folded onto one line. A 404 from
/// the intent lookup is `NotFound` here; `HttpProvider` turns it into
/// "no intent yet".
pub fn classify(endpoint: Endpoint, status: u16, body: &str) -> Result<(), ProviderError> {
    let excerpt = || excerpt(body);
    match status {
        200..=299 => Ok(()),
        403 => Err(ProviderError::Refused),
        409 if endpoint == Endpoint::Events => Err(ProviderError::JobClosed),
        404 => Err(ProviderError::NotFound(with_context(endpoint, excerpt()))),
        400 => Err(ProviderError::BadRequest(with_context(endpoint, excerpt()))),
        500..=599 => Err(ProviderError::Server {
            status,
            body: excerpt(),
        }),
        // Other 4xx, and anything outside 2xx/4xx/5xx (redirects are not
        // followed; see `HttpProvider::new`).
        _ => Err(ProviderError::Client {
            status,
            body: excerpt(),
        }),
    }
}

fn with_context(endpoint: Endpoint, excerpt: String) -> String {
    if excerpt.is_empty() {
        format!("{} (empty answer)", endpoint.describe())
    } else {
        format!("{}: {excerpt}", endpoint.describe())
    }
}

/// At most [`BODY_EXCERPT_CHARS`] characters of `body`, whitespace runs
/// (newlines included) folded to one space, `…` when cut.
pub fn excerpt(body: &str) -> String {
    let folded = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = folded.chars();
    let mut out: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `ports::Provider` over HTTP.
pub struct HttpProvider {
    client: Client,
    /// Requests go to this URL (`http://localhost` over a unix socket).
    base: Url,
    /// The base as configured, for messages.
    shown_base: String,
    node: NodeName,
    /// Kept only to scrub it from error bodies a server might echo.
    token: Token,
    /// Once set (SIGTERM/SIGINT), requests get [`STOPPING_TIMEOUT`] so the
    /// last event cannot hold the exit up for a whole request timeout.
    cancel: Option<Cancel>,
    /// The run deadline: no request outlives it by more than
    /// [`STOPPING_TIMEOUT`].
    deadline: Option<Deadline>,
    /// Drives the requests on the calling thread.
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base", &self.shown_base)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// A client for `base` acting as `node`. `ApiBase::Unix` speaks plain
    /// HTTP over the socket. Redirects are not followed (an API that
    /// redirects is misconfigured, and a redirect would carry the token
    /// elsewhere); proxies from the environment are honoured for TCP.
    pub fn new(base: &ApiBase, node: NodeName, token: Token) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            // The error names neither the value nor the token.
            anyhow::anyhow!(
                "the token in {} (--{}) contains characters that cannot go into an HTTP header (a newline or control character inside it): the file must hold only the token, on one line",
                Setting::TokenFile,
                Setting::TokenFile.flag()
            )
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);

        let mut builder = Client::builder()
            .default_headers(headers)
            .user_agent(concat!("hostenv-activate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(Policy::none());
        let base_url = match base {
            // Plain HTTP never needs the CA roots: loading them is most of
            // what building the client costs.
            ApiBase::Http(url) if url.scheme() == "http" => {
                builder = builder.tls_built_in_root_certs(false);
                url.clone()
            }
            ApiBase::Http(url) => url.clone(),
            ApiBase::Unix(path) => {
                builder = builder
                    .unix_socket(path.as_path())
                    .tls_built_in_root_certs(false);
                // The host is not resolved; it only fills the Host header.
                Url::parse("http://localhost").context("building the unix-socket base URL")?
            }
        };
        if base_url.cannot_be_a_base() {
            anyhow::bail!("provider base URL {base} cannot carry a path");
        }
        let client = builder
            .build()
            .context("cannot set up the HTTP client (TLS roots or system settings)")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("cannot set up the HTTP client's event loop")?;
        Ok(Self {
            client,
            base: base_url,
            shown_base: base.to_string(),
            node,
            token,
            cancel: None,
            deadline: None,
            runtime,
        })
    }

    /// Bounds every request by the run deadline (plus [`STOPPING_TIMEOUT`],
    /// so the last event can still go out).
    pub fn ending_by(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How long the next request may take.
    fn request_limit(&self) -> Duration {
        let stopping = self.cancel.as_ref().is_some_and(Cancel::is_cancelled);
        match self.deadline {
            _ if stopping => STOPPING_TIMEOUT,
            Some(deadline) => REQUEST_TIMEOUT.min(deadline.remaining() + STOPPING_TIMEOUT),
            None => REQUEST_TIMEOUT,
        }
    }

    /// Shortens every request to [`STOPPING_TIMEOUT`] once `cancel` is set.
    pub fn stopping_with(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// `base` + `/api/...` segments, each segment percent-encoded; a path
    /// prefix in the base URL is kept.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn job_url(&self, job: &JobId, leaf: &str) -> Url {
        self.url(&["api", "deploy-jobs", job.as_str(), leaf])
    }

    /// Sends the request and reads the whole answer; transport problems
    /// become `Transport`, described without the token.
    fn send(
        &self,
        endpoint: Endpoint,
        request: RequestBuilder,
    ) -> Result<(u16, String), ProviderError> {
        let limit = self.request_limit();
        let request = request.timeout(limit);
        let cancel = self.cancel.as_ref();
        self.runtime.block_on(async {
            let mut exchange = std::pin::pin!(self.exchange(endpoint, request, limit));
            // A request in flight when the stop signal comes gets
            // STOPPING_TIMEOUT more, not the rest of REQUEST_TIMEOUT: the
            // signal is looked at every slice while the request goes on.
            let mut give_up: Option<Deadline> = None;
            loop {
                if let Ok(answer) = tokio::time::timeout(Deadline::SLICE, exchange.as_mut()).await {
                    return answer;
                }
                if !cancel.is_some_and(Cancel::is_cancelled) {
                    continue;
                }
                let at = *give_up.get_or_insert_with(|| Deadline::after(STOPPING_TIMEOUT));
                if at.reached() {
                    return Err(ProviderError::Transport(format!(
                        "{} at {}: no answer {}s after the stop signal; not waiting any longer",
                        endpoint.describe(),
                        self.display_base(),
                        STOPPING_TIMEOUT.as_secs()
                    )));
                }
            }
        })
    }

    /// One request and its whole answer, within `limit`.
    async fn exchange(
        &self,
        endpoint: Endpoint,
        request: RequestBuilder,
        limit: Duration,
    ) -> Result<(u16, String), ProviderError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(endpoint, &e, limit))?;
        let status = response.status();
        if status.is_redirection() {
            return Ok((status.as_u16(), redirect_note(&response)));
        }
        let body = response
            .text()
            .await
            .map_err(|e| self.transport(endpoint, &e, limit))?;
        Ok((status.as_u16(), self.scrub(&body)))
    }

    /// `limit` is what the request was given: [`REQUEST_TIMEOUT`], or less
    /// near the run deadline or after the stop signal.
    fn transport(
        &self,
        endpoint: Endpoint,
        err: &reqwest::Error,
        limit: Duration,
    ) -> ProviderError {
        let what = if err.is_timeout() {
            let why = if limit < REQUEST_TIMEOUT {
                " (shortened: the run deadline is near or the run is stopping)"
            } else {
                ""
            };
            format!(
                "timed out (connect {}s, request {:.1}s{why})",
                CONNECT_TIMEOUT.as_secs(),
                limit.as_secs_f64()
            )
        } else if err.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut chain = Vec::new();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        chain.dedup();
        let detail = if chain.is_empty() {
            String::new()
        } else {
            format!(": {}", chain.join(": "))
        };
        // The whole URL asked: with a wrong base URL it is the clue.
        let at = err
            .url()
            .map_or_else(|| self.display_base(), |url| self.display_url(url));
        ProviderError::Transport(
            self.scrub(&format!("{} at {at} {what}{detail}", endpoint.describe(),)),
        )
    }

    fn display_base(&self) -> String {
        self.shown_base.clone()
    }

    /// `url` as an operator can use it: over a unix socket, the path and
    /// the socket.
    fn display_url(&self, url: &Url) -> String {
        if self.shown_base.starts_with("unix:") {
            let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{}{query} on {}", url.path(), self.shown_base)
        } else {
            url.as_str().to_owned()
        }
    }

    fn intent_request(&self, sha: &str) -> (Url, [(&'static str, String); 2]) {
        let url = self.url(&["api", "deploy-intents", "by-sha"]);
        (
            url,
            [
                ("sha", sha.to_owned()),
                ("node", self.node.as_str().to_owned()),
            ],
        )
    }

    /// Removes the token from text that came from outside (a server could
    /// echo the request headers in an error page).
    fn scrub(&self, text: &str) -> String {
        let secret = self.token.expose();
        if secret.is_empty() || !text.contains(secret) {
            text.to_owned()
        } else {
            text.replace(secret, "<redacted>")
        }
    }

    /// Sends a GET and decodes a 200 answer as `T`.
    /// Sends a GET; the body of a 2xx answer.
    fn get(
        &self,
        endpoint: Endpoint,
        url: Url,
        query: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let (status, body) = self.send(endpoint, self.client.get(url).query(query))?;
        classify(endpoint, status, &body)?;
        Ok(body)
    }
}

fn redirect_note(response: &Response) -> String {
    let target = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no Location)");
    format!(
        "the provider redirects to {target}; redirects are not followed, set {} to the final address",
        Setting::ApiBaseUrl
    )
}

fn decode<T: DeserializeOwned>(endpoint: Endpoint, body: &str) -> Result<T, ProviderError> {
    serde_json::from_str(body).map_err(|e| {
        ProviderError::Decode(format!(
            "{} answer is not the documented JSON ({e}); body: {}",
            endpoint.describe(),
            excerpt(body)
        ))
    })
}

/// The intent lookup's 200 body, its intent parsed.
pub fn decode_intent(body: &str) -> Result<FetchedIntent, ProviderError> {
    decode::<IntentEnvelope>(Endpoint::IntentBySha, body).map(FetchedIntent::from)
}

/// The `statuses` 200 body: the latest event of each node.
pub fn decode_statuses(body: &str) -> Result<Vec<DeployStatus>, ProviderError> {
    decode::<StatusesBody>(Endpoint::Statuses, body).map(|b| b.statuses)
}

/// The `status` 200 body: this node's latest event, if any.
pub fn decode_own_status(body: &str) -> Result<Option<DeployStatus>, ProviderError> {
    decode::<StatusBody>(Endpoint::OwnStatus, body).map(|b| b.status)
}

/// The `backup-snapshot` 200 body: the source node's backup payload, if any.
pub fn decode_backup_snapshot(body: &str) -> Result<Option<BackupPayload>, ProviderError> {
    decode::<BackupSnapshotBody>(Endpoint::BackupSnapshot, body).map(|b| b.payload)
}

#[derive(Deserialize)]
struct StatusesBody {
    statuses: Vec<DeployStatus>,
}

#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    status: Option<DeployStatus>,
}

#[derive(Deserialize)]
struct BackupSnapshotBody {
    #[serde(default)]
    payload: Option<BackupPayload>,
}

impl Provider for HttpProvider {
    fn intent_by_sha(&self, sha: &str) -> Result<Option<FetchedIntent>, ProviderError> {
        let (url, query) = self.intent_request(sha);
        let query = query.each_ref().map(|(k, v)| (*k, v.as_str()));
        match self.get(Endpoint::IntentBySha, url, &query) {
            Ok(body) => decode_intent(&body).map(Some),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn intent_url(&self, sha: &str) -> String {
        let (mut url, query) = self.intent_request(sha);
        url.query_pairs_mut().extend_pairs(query.iter());
        self.display_url(&url)
    }

    fn post_event(&self, job: &JobId, event: &NodeEvent) -> Result<(), ProviderError> {
        let url = self.job_url(job, "events");
        let (status, body) = self.send(Endpoint::Events, self.client.post(url).json(event))?;
        // 200 with an empty body (Servant NoContent): nothing to parse.
        classify(Endpoint::Events, status, &body)
    }

    fn statuses(&self, job: &JobId) -> Result<Vec<DeployStatus>, ProviderError> {
        let url = self.job_url(job, "statuses");
        decode_statuses(&self.get(Endpoint::Statuses, url, &[("node", self.node.as_str())])?)
    }

    fn own_status(&self, job: &JobId) -> Result<Option<DeployStatus>, ProviderError> {
        let url = self.job_url(job, "status");
        decode_own_status(&self.get(Endpoint::OwnStatus, url, &[("node", self.node.as_str())])?)
    }

    fn backup_snapshot(
        &self,
        job: &JobId,
        source: &NodeName,
        user: &UserName,
    ) -> Result<Option<BackupPayload>, ProviderError> {
        let url = self.job_url(job, "backup-snapshot");
        let query = [
            ("node", self.node.as_str()),
            ("source", source.as_str()),
            ("user", user.as_str()),
        ];
        decode_backup_snapshot(&self.get(Endpoint::BackupSnapshot, url, &query)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn once_stopping_a_silent_provider_is_given_up_quickly() {
        // A provider that accepts the connection and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = ApiBase::parse(&format!("http://{}", listener.local_addr().expect("addr")))
            .expect("base");
        let cancel = Cancel::new();
        let provider = HttpProvider::new(
            &base,
            NodeName::parse("node-a").expect("node"),
            Token::new("t").expect("token"),
        )
        .expect("client")
        .stopping_with(cancel.clone());
        cancel.cancel();
        let start = Instant::now();
        let err = provider.intent_by_sha("abc").expect_err("no answer");
        assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
        assert!(
            start.elapsed() < REQUEST_TIMEOUT,
            "gave up after {:?}",
            start.elapsed()
        );

        // A request already in flight when the signal comes.
        let flag = Cancel::new();
        let provider = provider.stopping_with(flag.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            flag.cancel();
        });
        let start = Instant::now();
        let err = provider.intent_by_sha("abc").expect_err("no answer");
        t.join().expect("thread");
        assert!(format!("{err}").contains("after the stop signal"), "{err}");
        assert!(
            start.elapsed() < REQUEST_TIMEOUT,
            "gave up after {:?}",
            start.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn success_codes_are_ok_and_the_body_is_ignored() {
        assert_eq!(classify(Endpoint::Events, 200, ""), Ok(()));
        assert_eq!(classify(Endpoint::Events, 204, "not json at all"), Ok(()));
        assert_eq!(classify(Endpoint::IntentBySha, 200, "{}"), Ok(()));
    }

    #[test]
    fn forbidden_is_refused_on_every_endpoint() {
        for endpoint in [
            Endpoint::IntentBySha,
            Endpoint::Events,
            Endpoint::Statuses,
            Endpoint::BackupSnapshot,
        ] {
            assert_eq!(classify(endpoint, 403, "nope"), Err(ProviderError::Refused));
        }
    }

    #[test]
    fn conflict_means_job_closed_only_for_events() {
        assert_eq!(
            classify(Endpoint::Events, 409, ""),
            Err(ProviderError::JobClosed)
        );
        assert_eq!(
            classify(Endpoint::Statuses, 409, "odd"),
            Err(ProviderError::Client {
                status: 409,
                body: "odd".into()
            })
        );
    }

    #[test]
    fn not_found_and_bad_request_keep_the_endpoint_and_body() {
        assert_eq!(
            classify(Endpoint::Events, 404, "no intent for node"),
            Err(ProviderError::NotFound(
                "event post: no intent for node".into()
            ))
        );
        assert_eq!(
            classify(Endpoint::IntentBySha, 404, ""),
            Err(ProviderError::NotFound(
                "intent lookup (empty answer)".into()
            ))
        );
        assert_eq!(
            classify(Endpoint::Events, 400, "bad status"),
            Err(ProviderError::BadRequest("event post: bad status".into()))
        );
    }

    #[test]
    fn other_client_errors_and_server_errors() {
        assert_eq!(
            classify(Endpoint::Statuses, 401, "who"),
            Err(ProviderError::Client {
                status: 401,
                body: "who".into()
            })
        );
        assert_eq!(
            classify(Endpoint::Statuses, 422, ""),
            Err(ProviderError::Client {
                status: 422,
                body: String::new()
            })
        );
        for status in [500, 502, 503, 599] {
            let err = classify(Endpoint::IntentBySha, status, "boom").expect_err("error");
            assert_eq!(
                err,
                ProviderError::Server {
                    status,
                    body: "boom".into()
                }
            );
            assert!(err.is_retryable());
        }
        assert!(!classify(Endpoint::Events, 403, "")
            .expect_err("error")
            .is_retryable());
        assert!(matches!(
            classify(Endpoint::Events, 301, ""),
            Err(ProviderError::Client { status: 301, .. })
        ));
    }

    #[test]
    fn bodies_are_cut_to_one_short_line() {
        let long = "x".repeat(1000);
        let ProviderError::Server { body, .. } =
            classify(Endpoint::Events, 500, &long).expect_err("error")
        else {
            panic!("expected a server error");
        };
        assert_eq!(body.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(body.ends_with('…'));
        assert_eq!(excerpt("line one\n  line two\r\n"), "line one line two");
        // Multi-byte characters are never split.
        let wide = "é".repeat(400);
        assert_eq!(excerpt(&wide).chars().count(), BODY_EXCERPT_CHARS + 1);
    }

    fn provider(base: &str) -> HttpProvider {
        HttpProvider::new(
            &ApiBase::parse(base).expect("base"),
            NodeName::parse("node-a").expect("node"),
            Token::new("s3cr3t-token").expect("token"),
        )
        .expect("client")
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments() {
        let p = provider("https://provider.example.org/prefix");
        assert_eq!(
            p.job_url(&JobId::new("job 1/x"), "events").as_str(),
            "https://provider.example.org/prefix/api/deploy-jobs/job%201%2Fx/events"
        );
        let p = provider("http://127.0.0.1:8080");
        assert_eq!(
            p.url(&["api", "deploy-intents", "by-sha"]).as_str(),
            "http://127.0.0.1:8080/api/deploy-intents/by-sha"
        );
    }

    #[test]
    fn the_token_is_scrubbed_and_never_debug_printed() {
        let p = provider("http://127.0.0.1:1");
        assert_eq!(
            p.scrub("echo: Bearer s3cr3t-token"),
            "echo: Bearer <redacted>"
        );
        assert!(!format!("{p:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_echoing_it() {
        let err = HttpProvider::new(
            &ApiBase::parse("http://127.0.0.1:1").expect("base"),
            NodeName::parse("node-a").expect("node"),
            Token::new("bad\u{7}token").expect("token"),
        )
        .expect_err("refused");
        let text = format!("{err:#}");
        assert!(text.contains("HOSTENV_COMIN_TOKEN_FILE"), "{text}");
        assert!(!text.contains("bad\u{7}token"));
    }

    #[test]
    fn transport_errors_name_the_endpoint_not_the_token() {
        // Port 1 on loopback: nothing listens there.
        let p = provider("http://127.0.0.1:1");
        let err = p.intent_by_sha("abc").expect_err("cannot connect");
        assert!(err.is_retryable(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("intent lookup at http://127.0.0.1:1"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn base_urls_are_checked_and_a_trailing_api_is_flagged() {
        let ok = ApiBase::parse("https://provider.example.org/").expect("valid");
        assert_eq!(ok.to_string(), "https://provider.example.org");
        assert_eq!(ok.warning(), None);
        assert_eq!(
            ApiBase::parse("unix:/run/provider.sock").expect("valid"),
            ApiBase::Unix("/run/provider.sock".into())
        );
        for (raw, problem) in [
            ("ftp://x", "must be an http(s):// URL"),
            ("unix:relative.sock", "absolute socket path"),
            ("http://u:p@host", "must not carry credentials"),
            ("http://host/?a=b", "query or fragment"),
            ("not a url", "is not a URL"),
        ] {
            let err = ApiBase::parse(raw).expect_err(raw);
            assert!(err.contains(problem), "{raw}: {err}");
        }
        let long = format!("http://{}", "x".repeat(10_000));
        let err = ApiBase::parse(&format!("{long} y")).expect_err("space");
        assert!(err.len() < 200, "the value is cut: {err}");

        let api = ApiBase::parse("http://host:8080/prefix/api/").expect("valid");
        let warning = api.warning().expect("a warning");
        assert!(
            warning.contains("http://host:8080/prefix/api/api/deploy-intents/")
                && warning.contains("set it to http://host:8080/prefix"),
            "{warning}"
        );
    }

    #[test]
    fn the_intent_url_is_shown_in_full() {
        let p = provider("http://provider.example.org/prefix");
        assert_eq!(
            p.intent_url("abc"),
            "http://provider.example.org/prefix/api/deploy-intents/by-sha?sha=abc&node=node-a"
        );
        let unix = HttpProvider::new(
            &ApiBase::parse("unix:/run/p.sock").expect("base"),
            NodeName::parse("node-a").expect("node"),
            Token::new("t").expect("token"),
        )
        .expect("client");
        assert_eq!(
            unix.intent_url("abc"),
            "/api/deploy-intents/by-sha?sha=abc&node=node-a on unix:/run/p.sock"
        );
    }

    #[test]
    fn a_missing_unix_socket_is_named_in_the_error() {
        let p = HttpProvider::new(
            &ApiBase::parse("unix:/nonexistent/provider.sock").expect("base"),
            NodeName::parse("node-a").expect("node"),
            Token::new("s3cr3t-token").expect("token"),
        )
        .expect("client");
        let err = p.intent_by_sha("abc").expect_err("no socket").to_string();
        assert!(err.contains("unix:/nonexistent/provider.sock"), "{err}");
        assert!(!err.contains("localhost"), "{err}");
    }

    #[test]
    fn past_the_run_deadline_a_silent_provider_is_given_up_quickly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = ApiBase::parse(&format!("http://{}", listener.local_addr().expect("addr")))
            .expect("base");
        let provider = HttpProvider::new(
            &base,
            NodeName::parse("node-a").expect("node"),
            Token::new("s3cr3t-token").expect("token"),
        )
        .expect("client")
        .ending_by(Deadline::after(Duration::ZERO));
        assert_eq!(provider.request_limit(), STOPPING_TIMEOUT);
        let start = Instant::now();
        let err = provider.intent_by_sha("abc").expect_err("no answer");
        assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
        assert!(start.elapsed() < REQUEST_TIMEOUT, "{:?}", start.elapsed());
        let later = provider.ending_by(Deadline::after(Duration::from_secs(10)));
        assert!(later.request_limit() <= Duration::from_secs(13));
        assert!(later.request_limit() > STOPPING_TIMEOUT);
    }
}
