//! A fake provider-service for tests and the demo: a tiny_http server on a
//! thread that speaks the node-facing API of provider-api.md (tokens per
//! node, 400/403/404/409 rules, action-row bookkeeping, job closing), records
//! every request, and has knobs for what tests need (injected failures,
//! late intents, closed jobs, other nodes' events).
//!
//! Use it with `#[path = "support/fake_provider.rs"] mod fake_provider;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde_json::{json, Map, Value};
use tiny_http::{Header, Method, Response, Server};

/// The event statuses the server accepts (after trimming and lower-casing).
pub const STATUSES: [&str; 6] = [
    "queued",
    "waiting",
    "running",
    "success",
    "failed",
    "timed_out",
];

/// Reads `fixtures/<rel>` of this crate as JSON; panics with the path if it
/// is missing or malformed (fixtures are ours, not outside input).
pub fn fixture_json(rel: &str) -> Value {
    let text = fixture_text(rel);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixtures/{rel} is not JSON: {e}"))
}

/// Reads `fixtures/<rel>` of this crate as text.
pub fn fixture_text(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The endpoints, for fault injection and request filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /api/deploy-intents/by-sha`
    IntentBySha,
    /// `GET /api/deploy-jobs/{job}/intents/{node}`
    JobIntent,
    /// `GET /api/deploy-jobs/{job}/status`
    Status,
    /// `GET /api/deploy-jobs/{job}/statuses`
    Statuses,
    /// `GET /api/deploy-jobs/{job}/actions`
    Actions,
    /// `GET /api/deploy-jobs/{job}/backup-snapshot`
    BackupSnapshot,
    /// `POST /api/deploy-jobs/{job}/events`
    Events,
    /// Anything else (answered 404 or 405).
    Unknown,
}

/// A job's lifecycle state on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Accepting node events.
    Waiting,
    Success,
    Failed,
    Superseded,
}

/// When `by-sha` starts serving a job's intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Now,
    /// The first `n` lookups per node answer 404.
    AfterLookups(usize),
    Never,
}

/// One event as the server stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub node: String,
    pub status: String,
    pub phase: String,
    pub message: String,
    pub payload: Option<Value>,
    pub created_at: String,
}

impl Event {
    /// `DeployStatus` JSON.
    pub fn to_status_json(&self) -> Value {
        json!({
            "eventId": self.id,
            "node": self.node,
            "status": self.status,
            "phase": self.phase,
            "message": self.message,
            "createdAt": self.created_at,
        })
    }

    pub fn is(&self, phase: &str, status: &str) -> bool {
        self.phase == phase && self.status == status
    }
}

/// One action row, as the server derives it from a node's intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub node: String,
    pub index: usize,
    pub op: String,
    pub user: String,
    pub status: String,
}

impl ActionRow {
    fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "waiting" | "running")
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Percent-decoded path.
    pub path: String,
    /// The raw request target (path and query, as sent).
    pub raw_url: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub route: Route,
    /// The whole `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The token matched the node the request spoke for.
    pub auth_ok: bool,
    pub body: String,
    /// Status the fake answered with.
    pub status: u16,
}

impl RecordedRequest {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// "When `node` posts (`phase`, `status`) on `job`, append `then` as an event."
#[derive(Debug, Clone)]
struct Reaction {
    job: String,
    node: String,
    phase: String,
    status: String,
    then: Value,
}

#[derive(Debug, Clone)]
struct Fault {
    route: Route,
    remaining: usize,
    status: u16,
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    sha: String,
    state: JobState,
    intents: BTreeMap<String, Value>,
    rows: Vec<ActionRow>,
    events: Vec<Event>,
    visibility: Visibility,
    lookups: BTreeMap<String, usize>,
    close_after_lookup: Option<JobState>,
}

impl Job {
    fn new(id: &str, sha: &str, intents: BTreeMap<String, Value>) -> Self {
        let mut rows = Vec::new();
        for (node, intent) in &intents {
            let actions = intent.get("actions").and_then(Value::as_array);
            for (index, action) in actions.into_iter().flatten().enumerate() {
                let field = |name: &str| {
                    action
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                rows.push(ActionRow {
                    node: node.clone(),
                    index,
                    op: field("op"),
                    user: field("user"),
                    status: "queued".into(),
                });
            }
        }
        Self {
            id: id.into(),
            sha: sha.into(),
            state: JobState::Waiting,
            intents,
            rows,
            events: Vec::new(),
            visibility: Visibility::Now,
            lookups: BTreeMap::new(),
            close_after_lookup: None,
        }
    }

    fn latest_of(&self, node: &str) -> Option<&Event> {
        self.events.iter().rev().find(|e| e.node == node)
    }

    /// Validates and applies one event the way the provider does. `Err` is
    /// (HTTP status, body).
    fn apply(&mut self, body: &Value, next_id: &mut u64) -> Result<(), (u16, String)> {
        let parsed = parse_event(body)?;
        if !self.intents.contains_key(&parsed.node) {
            return Err((
                404,
                format!("job {} has no intent for node {}", self.id, parsed.node),
            ));
        }
        if self.state != JobState::Waiting {
            return Err((
                409,
                format!("job {} is no longer waiting ({:?})", self.id, self.state),
            ));
        }
        *next_id += 1;
        let event = Event {
            id: *next_id,
            created_at: jiff::Timestamp::now().to_string(),
            ..parsed
        };
        self.book(&event);
        self.events.push(event);
        self.settle();
        Ok(())
    }

    /// The action-row rules of provider-api.md.
    fn book(&mut self, event: &Event) {
        let failure = matches!(event.status.as_str(), "failed" | "timed_out");
        let node = event.node.as_str();
        if event.phase == "intent" {
            if event.status == "success" || failure {
                for row in self
                    .rows
                    .iter_mut()
                    .filter(|r| r.node == node && r.is_open())
                {
                    row.status = event.status.clone();
                }
            }
            return;
        }
        let first_open = self
            .rows
            .iter()
            .position(|r| r.node == node && r.op == event.phase && r.is_open());
        if let Some(i) = first_open {
            self.rows[i].status = event.status.clone();
            if failure {
                for row in self
                    .rows
                    .iter_mut()
                    .filter(|r| r.node == node && r.is_open())
                {
                    row.status = event.status.clone();
                }
            }
        }
    }

    fn settle(&mut self) {
        if self.state != JobState::Waiting {
            return;
        }
        let failed = self
            .events
            .last()
            .is_some_and(|e| matches!(e.status.as_str(), "failed" | "timed_out"));
        if failed {
            self.state = JobState::Failed;
            return;
        }
        let all_nodes_done = self.intents.keys().all(|node| {
            self.latest_of(node)
                .is_some_and(|e| e.is("intent", "success"))
        });
        if all_nodes_done && self.rows.iter().all(|r| r.status == "success") {
            self.state = JobState::Success;
        }
    }
}

fn parse_event(body: &Value) -> Result<Event, (u16, String)> {
    let obj = body
        .as_object()
        .ok_or((400, "event body must be a JSON object".to_owned()))?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str).map(str::trim);
    let node = text("node").unwrap_or_default();
    if node.is_empty() {
        return Err((400, "node must not be blank".into()));
    }
    let status = text("status").unwrap_or_default().to_lowercase();
    if !STATUSES.contains(&status.as_str()) {
        return Err((400, format!("status {status:?} is not one of {STATUSES:?}")));
    }
    let phase = text("phase")
        .ok_or((400, "phase is missing".to_owned()))?
        .to_lowercase();
    Ok(Event {
        id: 0,
        node: node.to_owned(),
        status,
        phase,
        message: text("message").unwrap_or_default().to_owned(),
        payload: obj.get("payload").filter(|p| !p.is_null()).cloned(),
        created_at: String::new(),
    })
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<String, String>,
    jobs: Vec<Job>,
    faults: Vec<Fault>,
    reactions: Vec<Reaction>,
    requests: Vec<RecordedRequest>,
    next_event_id: u64,
    /// Path segments the API is mounted below (a reverse proxy's prefix).
    prefix: Vec<String>,
    /// Told of every event POST before it is answered.
    watchers: Vec<std::sync::mpsc::Sender<EventSeen>>,
    /// Every event POST, as seen.
    seen: Vec<EventSeen>,
    /// Event POSTs to refuse.
    event_faults: Vec<EventFault>,
}

/// POSTs of one event to refuse.
#[derive(Debug, Clone)]
struct EventFault {
    job: String,
    node: String,
    phase: String,
    status: String,
    remaining: usize,
    code: u16,
}

/// An event POST as the server saw it, before answering it.
#[derive(Debug, Clone)]
pub struct EventSeen {
    pub node: String,
    pub phase: String,
    pub status: String,
    /// The HTTP status it is about to be answered with.
    pub answer: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl State {
    fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn append(&mut self, job: &str, body: &Value) -> Result<(), (u16, String)> {
        let mut next = self.next_event_id;
        let result = match self.job_mut(job) {
            Some(j) => j.apply(body, &mut next),
            None => Err((404, format!("no job {job}"))),
        };
        self.next_event_id = next;
        if result.is_ok() {
            self.react(job, body);
        }
        result
    }

    fn react(&mut self, job: &str, body: &Value) {
        let Ok(posted) = parse_event(body) else {
            return;
        };
        let fired: Vec<Reaction> = {
            let (fire, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reactions)
                .into_iter()
                .partition(|r| {
                    r.job == job
                        && r.node == posted.node
                        && r.phase == posted.phase
                        && r.status == posted.status
                });
            self.reactions = keep;
            fire
        };
        for reaction in fired {
            // A reaction that the server refuses (e.g. the job just closed)
            // is dropped, as a real late event would be.
            let _ = self.append(&reaction.job, &reaction.then);
        }
    }
}

/// Entry point: `FakeProvider::builder()`.
pub struct FakeProvider;

impl FakeProvider {
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Describes the server before it starts.
#[derive(Debug, Default)]
pub struct Builder {
    state: State,
    seeded: Vec<(String, Value)>,
    unix_socket: Option<PathBuf>,
}

impl Builder {
    /// A node the server knows, with its bearer token.
    pub fn node(mut self, name: &str, token: &str) -> Self {
        self.state.tokens.insert(name.into(), token.into());
        self
    }

    /// A job in `waiting` for commit `sha`, with one intent per node.
    pub fn job<'a>(
        mut self,
        id: &str,
        sha: &str,
        intents: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Self {
        let intents = intents
            .into_iter()
            .map(|(n, i)| (n.to_owned(), i))
            .collect();
        self.state.jobs.push(Job::new(id, sha, intents));
        self
    }

    /// When `by-sha` starts serving the job (default: at once).
    pub fn visibility(mut self, job: &str, visibility: Visibility) -> Self {
        self.job_mut(job).visibility = visibility;
        self
    }

    /// Right after `by-sha` served this job, it moves to `state` (a job that
    /// is superseded or fails elsewhere while this node works).
    pub fn close_after_lookup(mut self, job: &str, state: JobState) -> Self {
        self.job_mut(job).close_after_lookup = Some(state);
        self
    }

    /// An event already on the server (usually another node's), applied with
    /// the normal bookkeeping but without a token check.
    pub fn event(mut self, job: &str, event: Value) -> Self {
        self.seeded.push((job.into(), event));
        self
    }

    /// The next `count` requests to `route` answer `status`.
    pub fn fail(mut self, route: Route, count: usize, status: u16) -> Self {
        self.state.faults.push(Fault {
            route,
            remaining: count,
            status,
        });
        self
    }

    /// Once `node` posts (`phase`, `status`) on `job`, the server appends
    /// `then` (usually an event of another node) right after it.
    pub fn on_event(
        mut self,
        job: &str,
        node: &str,
        phase: &str,
        status: &str,
        then: Value,
    ) -> Self {
        self.state.reactions.push(Reaction {
            job: job.into(),
            node: node.into(),
            phase: phase.into(),
            status: status.into(),
            then,
        });
        self
    }

    /// Listen on a unix socket instead of 127.0.0.1:0.
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix_socket = Some(path.into());
        self
    }

    /// Sends every event POST to `tx` before answering it (and with the
    /// answer it gets), so a test can act at that very moment.
    pub fn watch_events(mut self, tx: std::sync::mpsc::Sender<EventSeen>) -> Self {
        self.state.watchers.push(tx);
        self
    }

    /// The next `count` POSTs of (`node`, `phase`, `status`) on `job` are
    /// answered `code` and not recorded.
    pub fn fail_event(
        mut self,
        job: &str,
        node: &str,
        (phase, status): (&str, &str),
        count: usize,
        code: u16,
    ) -> Self {
        self.state.event_faults.push(EventFault {
            job: job.into(),
            node: node.into(),
            phase: phase.into(),
            status: status.into(),
            remaining: count,
            code,
        });
        self
    }

    /// Serves the API below `/<prefix>` (e.g. "provider"), as behind a
    /// reverse proxy; anything else answers 404.
    pub fn mounted_at(mut self, prefix: &str) -> Self {
        self.state.prefix = prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        self
    }

    fn job_mut(&mut self, id: &str) -> &mut Job {
        self.state
            .job_mut(id)
            .unwrap_or_else(|| panic!("declare job {id} with .job() first"))
    }

    /// Binds and starts serving on a thread. Panics if seeding fails (a
    /// test bug) or the socket cannot be bound.
    pub fn start(mut self) -> FakeHandle {
        for (job, event) in std::mem::take(&mut self.seeded) {
            if let Err((status, why)) = self.state.append(&job, &event) {
                panic!("seeding {event} on job {job} failed: {status} {why}");
            }
        }
        let (server, url) = match &self.unix_socket {
            Some(path) => {
                let server = Server::http_unix(path)
                    .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", path.display()));
                (server, format!("unix:{}", path.display()))
            }
            None => {
                let server = Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0");
                let addr = server.server_addr().to_ip().expect("an IP listener");
                (server, format!("http://{addr}"))
            }
        };
        let url = if self.state.prefix.is_empty() {
            url
        } else {
            format!("{url}/{}", self.state.prefix.join("/"))
        };
        let server = Arc::new(server);
        let state = Arc::new(Mutex::new(self.state));
        let thread = {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("fake-provider".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        handle(&state, request);
                    }
                })
                .expect("spawn the fake provider thread")
        };
        FakeHandle {
            url,
            state,
            server,
            thread: Some(thread),
        }
    }
}

/// The running fake. Stops when dropped.
pub struct FakeHandle {
    url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeHandle {
    /// The base URL for `HOSTENV_COMIN_API_BASE_URL` (`http://127.0.0.1:<port>`
    /// or `unix:/path`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// When `node`'s first POST of (`phase`, `status`) arrived.
    pub fn arrival_of(&self, node: &str, phase: &str, status: &str) -> Option<std::time::Instant> {
        lock(&self.state)
            .seen
            .iter()
            .find(|e| e.node == node && e.phase == phase && e.status == status)
            .map(|e| e.at)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Requests to one endpoint.
    pub fn requests_to(&self, route: Route) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == route)
            .collect()
    }

    /// Event bodies POSTed over HTTP (whatever the answer was), as JSON.
    pub fn posted(&self) -> Vec<Value> {
        self.requests_to(Route::Events)
            .iter()
            .map(RecordedRequest::body_json)
            .collect()
    }

    /// Events stored for the job (seeded, posted and appended), in order.
    pub fn events(&self, job: &str) -> Vec<Event> {
        lock(&self.state)
            .job(job)
            .map(|j| j.events.clone())
            .unwrap_or_default()
    }

    /// Stored events of one node.
    pub fn events_of(&self, job: &str, node: &str) -> Vec<Event> {
        self.events(job)
            .into_iter()
            .filter(|e| e.node == node)
            .collect()
    }

    pub fn job_state(&self, job: &str) -> JobState {
        lock(&self.state)
            .job(job)
            .map(|j| j.state)
            .unwrap_or_else(|| panic!("no job {job}"))
    }

    pub fn actions(&self, job: &str) -> Vec<ActionRow> {
        lock(&self.state)
            .job(job)
            .map(|j| j.rows.clone())
            .unwrap_or_default()
    }

    /// Appends an event as if its node had posted it (bookkeeping applied,
    /// no token check). Returns the status the server would have answered.
    pub fn append_event(&self, job: &str, event: Value) -> u16 {
        match lock(&self.state).append(job, &event) {
            Ok(()) => 200,
            Err((status, _)) => status,
        }
    }

    /// Closes (or reopens) a job.
    pub fn set_job_state(&self, job: &str, state: JobState) {
        if let Some(j) = lock(&self.state).job_mut(job) {
            j.state = state;
        }
    }

    /// The next `count` requests to `route` answer `status`.
    pub fn fail(&self, route: Route, count: usize, status: u16) {
        lock(&self.state).faults.push(Fault {
            route,
            remaining: count,
            status,
        });
    }
}

// ------------------------------------------------------------------ serving

struct Answer {
    status: u16,
    body: Option<Value>,
    text: String,
}

impl Answer {
    fn json(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
            text: String::new(),
        }
    }

    fn empty() -> Self {
        Self {
            status: 200,
            body: None,
            text: String::new(),
        }
    }

    fn error(status: u16, text: impl Into<String>) -> Self {
        Self {
            status,
            body: None,
            text: text.into(),
        }
    }
}

impl From<(u16, String)> for Answer {
    fn from((status, text): (u16, String)) -> Self {
        Answer::error(status, text)
    }
}

fn handle(state: &Mutex<State>, mut request: tiny_http::Request) {
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let raw_url = request.url().to_owned();
    let (raw_path, raw_query) = raw_url.split_once('?').unwrap_or((raw_url.as_str(), ""));
    let segments: Vec<String> = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query: Vec<(String, String)> = form_pairs(raw_query);
    let method = request.method().clone();
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let mut st = lock(state);
    let route = match segments.strip_prefix(st.prefix.as_slice()) {
        Some(rest) => route_of(&method, rest),
        None => Route::Unknown,
    };
    let segments: Vec<String> = segments[st.prefix.len().min(segments.len())..].to_vec();
    let mut recorded = RecordedRequest {
        method: method.as_str().to_owned(),
        path: format!("/{}", segments.join("/")),
        raw_url: raw_url.clone(),
        query: query.clone(),
        route,
        authorization: authorization.clone(),
        auth_ok: false,
        body: body.clone(),
        status: 0,
    };
    let ctx = Ctx {
        segments: &segments,
        query: &query,
        authorization: authorization.as_deref(),
        body: &body,
    };
    let answer = match take_fault(&mut st, route) {
        Some(status) => Answer::error(status, "injected failure"),
        None => serve(&mut st, route, &ctx, &mut recorded.auth_ok),
    };
    recorded.status = answer.status;
    st.requests.push(recorded);
    drop(st);
    respond(request, answer);
}

fn respond(request: tiny_http::Request, answer: Answer) {
    let result = match (answer.status, answer.body) {
        (200, Some(body)) => request.respond(
            Response::from_string(body.to_string())
                .with_header(json_header())
                .with_status_code(200),
        ),
        (200, None) => request.respond(Response::empty(200)),
        (status, _) => request.respond(
            Response::from_string(answer.text)
                .with_header(text_header())
                .with_status_code(status),
        ),
    };
    // The client may have gone away (timeouts); that is its business.
    let _ = result;
}

fn json_header() -> Header {
    Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("static header")
}

fn text_header() -> Header {
    Header::from_bytes(&b"Content-Type"[..], &b"text/plain; charset=utf-8"[..])
        .expect("static header")
}

fn take_fault(st: &mut State, route: Route) -> Option<u16> {
    let fault = st
        .faults
        .iter_mut()
        .find(|f| f.route == route && f.remaining > 0)?;
    fault.remaining -= 1;
    Some(fault.status)
}

fn route_of(method: &Method, segments: &[String]) -> Route {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, s.as_slice()) {
        (Method::Get, ["api", "deploy-intents", "by-sha"]) => Route::IntentBySha,
        (Method::Get, ["api", "deploy-jobs", _, "intents", _]) => Route::JobIntent,
        (Method::Get, ["api", "deploy-jobs", _, "status"]) => Route::Status,
        (Method::Get, ["api", "deploy-jobs", _, "statuses"]) => Route::Statuses,
        (Method::Get, ["api", "deploy-jobs", _, "actions"]) => Route::Actions,
        (Method::Get, ["api", "deploy-jobs", _, "backup-snapshot"]) => Route::BackupSnapshot,
        (Method::Post, ["api", "deploy-jobs", _, "events"]) => Route::Events,
        _ => Route::Unknown,
    }
}

struct Ctx<'a> {
    segments: &'a [String],
    query: &'a [(String, String)],
    authorization: Option<&'a str>,
    body: &'a str,
}

impl Ctx<'_> {
    /// A required query parameter (Servant: missing -> 400).
    fn param(&self, name: &str) -> Result<&str, Answer> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Answer::error(400, format!("missing required query parameter {name}")))
    }

    fn job_id(&self) -> &str {
        self.segments.get(2).map(String::as_str).unwrap_or_default()
    }
}

/// Checks the bearer token against the node's; unknown node or wrong token -> 403.
fn check_token(
    st: &State,
    node: &str,
    authorization: Option<&str>,
    auth_ok: &mut bool,
) -> Result<(), Answer> {
    let presented = authorization.and_then(|h| h.strip_prefix("Bearer "));
    match (st.tokens.get(node), presented) {
        (Some(expected), Some(given)) if expected == given => {
            *auth_ok = true;
            Ok(())
        }
        _ => Err(Answer::error(403, "invalid node token")),
    }
}

fn serve(st: &mut State, route: Route, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Answer {
    let result = match route {
        Route::IntentBySha => by_sha(st, ctx, auth_ok),
        Route::JobIntent => job_intent(st, ctx, auth_ok),
        Route::Status => status(st, ctx, auth_ok),
        Route::Statuses => statuses(st, ctx, auth_ok),
        Route::Actions => actions(st, ctx, auth_ok),
        Route::BackupSnapshot => backup_snapshot(st, ctx, auth_ok),
        Route::Events => events(st, ctx, auth_ok),
        Route::Unknown => Err(Answer::error(404, "no such endpoint")),
    };
    result.unwrap_or_else(|answer| answer)
}

fn by_sha(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let sha = ctx.param("sha")?;
    let node = ctx.param("node")?;
    check_token(st, node, ctx.authorization, auth_ok)?;
    let not_found = || {
        Answer::error(
            404,
            format!("no deploy intent for sha {sha} and node {node}"),
        )
    };
    let job = st
        .jobs
        .iter_mut()
        .rev()
        .find(|j| j.sha == sha && j.intents.contains_key(node))
        .ok_or_else(not_found)?;
    let seen = job.lookups.entry(node.to_owned()).or_default();
    *seen += 1;
    let visible = match job.visibility {
        Visibility::Now => true,
        Visibility::AfterLookups(n) => *seen > n,
        Visibility::Never => false,
    };
    if !visible || job.state != JobState::Waiting {
        return Err(not_found());
    }
    let answer = json!({
        "jobId": job.id,
        "commitSha": job.sha,
        "node": node,
        "intent": job.intents[node],
    });
    if let Some(state) = job.close_after_lookup.take() {
        job.state = state;
    }
    Ok(Answer::json(answer))
}

fn known_job<'s>(st: &'s State, ctx: &Ctx<'_>) -> Result<&'s Job, Answer> {
    let id = ctx.job_id();
    st.job(id)
        .ok_or_else(|| Answer::error(404, format!("no deploy job {id}")))
}

fn job_intent(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let node = ctx.segments.get(4).map(String::as_str).unwrap_or_default();
    check_token(st, node, ctx.authorization, auth_ok)?;
    let job = known_job(st, ctx)?;
    let intent = job.intents.get(node).ok_or_else(|| {
        Answer::error(404, format!("job {} has no intent for node {node}", job.id))
    })?;
    Ok(Answer::json(
        json!({"jobId": job.id, "node": node, "intent": intent}),
    ))
}

fn status(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let node = ctx.param("node")?;
    check_token(st, node, ctx.authorization, auth_ok)?;
    let job = known_job(st, ctx)?;
    let latest = job.latest_of(node).map(Event::to_status_json);
    Ok(Answer::json(
        json!({"jobId": job.id, "node": node, "status": latest}),
    ))
}

fn statuses(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let node = ctx.param("node")?;
    check_token(st, node, ctx.authorization, auth_ok)?;
    let job = known_job(st, ctx)?;
    // Only the latest event of each node, oldest first.
    let mut latest: BTreeMap<&str, &Event> = BTreeMap::new();
    for event in &job.events {
        latest.insert(event.node.as_str(), event);
    }
    let mut list: Vec<&Event> = latest.into_values().collect();
    list.sort_by_key(|e| e.id);
    let list: Vec<Value> = list.into_iter().map(Event::to_status_json).collect();
    Ok(Answer::json(
        json!({"jobId": job.id, "node": node, "statuses": list}),
    ))
}

fn actions(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let node = ctx.param("node")?;
    check_token(st, node, ctx.authorization, auth_ok)?;
    let job = known_job(st, ctx)?;
    // The contract does not fix DeployAction's fields; these are the fake's.
    let rows: Vec<Value> = job
        .rows
        .iter()
        .filter(|r| r.node == node)
        .map(|r| {
            json!({"jobId": job.id, "node": r.node, "actionIndex": r.index,
                   "op": r.op, "user": r.user, "status": r.status})
        })
        .collect();
    Ok(Answer::json(
        json!({"jobId": job.id, "node": node, "actions": rows}),
    ))
}

fn backup_snapshot(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let node = ctx.param("node")?;
    let source = ctx.param("source")?;
    let user = ctx.param("user")?;
    check_token(st, node, ctx.authorization, auth_ok)?;
    let job = known_job(st, ctx)?;
    let payload = job
        .events
        .iter()
        .rev()
        .filter(|e| e.node == source && e.is("backup", "success"))
        .filter_map(|e| e.payload.as_ref())
        .find(|p| p.get("user").and_then(Value::as_str) == Some(user))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Answer::json(json!({
        "jobId": job.id, "node": node, "sourceNode": source, "user": user, "payload": payload,
    })))
}

fn events(st: &mut State, ctx: &Ctx<'_>, auth_ok: &mut bool) -> Result<Answer, Answer> {
    let body: Value = serde_json::from_str(ctx.body)
        .map_err(|e| Answer::error(400, format!("event body is not JSON: {e}")))?;
    let node = body
        .get("node")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(Answer::error(400, "node must not be blank"));
    }
    check_token(st, &node, ctx.authorization, auth_ok)?;
    let job = ctx.job_id().to_owned();
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    };
    let (phase, status) = (field("phase"), field("status"));
    let fault = st.event_faults.iter_mut().find(|f| {
        f.job == job && f.node == node && f.phase == phase && f.status == status && f.remaining > 0
    });
    let answer = match fault {
        Some(fault) => {
            fault.remaining -= 1;
            Answer::error(fault.code, "injected failure")
        }
        None => match st.append(&job, &body) {
            Ok(()) => Answer::empty(),
            Err(refused) => Answer::from(refused),
        },
    };
    let seen = EventSeen {
        node,
        phase,
        status,
        answer: answer.status,
        at: std::time::Instant::now(),
    };
    st.seen.push(seen.clone());
    st.watchers.retain(|tx| tx.send(seen.clone()).is_ok());
    Ok(answer)
}

// ------------------------------------------------------------------ decoding

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Builds a NodeEvent body, for seeding and reactions.
pub fn event(node: &str, phase: &str, status: &str, message: &str) -> Value {
    json!({"node": node, "phase": phase, "status": status, "message": message})
}

/// A successful backup event of `node` for `user`, with its payload.
pub fn backup_success(node: &str, user: &str, snapshots: &[(&str, &str)]) -> Value {
    let snapshots: Map<String, Value> = snapshots
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    json!({
        "node": node, "phase": "backup", "status": "success",
        "message": format!("Migration backups completed for {user}"),
        "payload": {"user": user, "sourceNode": node, "snapshots": snapshots},
    })
}
