//! The fake provider follows provider-api.md (checked here with raw HTTP so
//! the other tests can trust it), and the real `HttpProvider` speaks that
//! contract against it, over TCP and over a unix socket.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::collections::BTreeMap;

use fake_provider::{
    backup_success, event, fixture_json, FakeProvider, JobState, Route, Visibility,
};
use hostenv_activate::adapters::http::ApiBase;
use hostenv_activate::adapters::http::HttpProvider;
use hostenv_activate::model::{
    BackupPayload, JobId, MigrationKey, NodeEvent, NodeName, Op, Phase, Status, UserName,
};
use hostenv_activate::ports::{Provider, ProviderError};
use hostenv_activate::secret::Token;
use reqwest::blocking::Client;
use serde_json::{json, Value};

fn migration() -> fake_provider::Builder {
    FakeProvider::builder()
        .node("node-a", "tok-a")
        .node("node-b", "tok-b")
        .job(
            "job-1",
            "sha1",
            [
                ("node-a", fixture_json("intents/migration-node-a.json")),
                ("node-b", fixture_json("intents/migration-node-b.json")),
            ],
        )
}

struct Raw {
    client: Client,
    base: String,
}

impl Raw {
    fn new(base: &str) -> Self {
        Self {
            client: Client::builder().no_proxy().build().expect("client"),
            base: base.to_owned(),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("request");
        (resp.status().as_u16(), resp.text().expect("body"))
    }

    fn post(&self, job: &str, token: &str, body: Value) -> (u16, String) {
        let resp = self
            .client
            .post(format!("{}/api/deploy-jobs/{job}/events", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .expect("request");
        (resp.status().as_u16(), resp.text().expect("body"))
    }
}

// ------------------------------------------------------------ the fake's rules

#[test]
fn by_sha_serves_the_intent_to_its_node_with_the_right_token() {
    let fake = migration().start();
    let raw = Raw::new(fake.url());
    let (status, body) = raw.get(
        "/api/deploy-intents/by-sha?sha=sha1&node=node-a",
        Some("tok-a"),
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["jobId"], "job-1");
    assert_eq!(body["commitSha"], "sha1");
    assert_eq!(body["node"], "node-a");
    assert_eq!(body["intent"]["actions"][0]["op"], "backup");

    // Wrong token, another node's token, unknown node: 403.
    for (path, token) in [
        (
            "/api/deploy-intents/by-sha?sha=sha1&node=node-a",
            Some("tok-b"),
        ),
        ("/api/deploy-intents/by-sha?sha=sha1&node=node-a", None),
        (
            "/api/deploy-intents/by-sha?sha=sha1&node=node-z",
            Some("tok-a"),
        ),
    ] {
        assert_eq!(raw.get(path, token).0, 403, "{path} {token:?}");
    }
    // Missing required parameter: 400 (before the token is looked at).
    assert_eq!(
        raw.get("/api/deploy-intents/by-sha?sha=sha1", Some("tok-a"))
            .0,
        400
    );
    assert_eq!(
        raw.get("/api/deploy-intents/by-sha?node=node-a", None).0,
        400
    );
    // No intent for this sha: 404.
    assert_eq!(
        raw.get(
            "/api/deploy-intents/by-sha?sha=other&node=node-a",
            Some("tok-a")
        )
        .0,
        404
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 7);
    assert!(requests[0].auth_ok);
    assert_eq!(requests[0].query_param("node"), Some("node-a"));
    assert!(!requests[1].auth_ok);
    assert_eq!(requests[2].authorization, None);
}

#[test]
fn by_sha_can_be_late_or_never_and_is_404_once_the_job_closed() {
    let fake = migration()
        .visibility("job-1", Visibility::AfterLookups(2))
        .start();
    let raw = Raw::new(fake.url());
    let path = "/api/deploy-intents/by-sha?sha=sha1&node=node-a";
    assert_eq!(raw.get(path, Some("tok-a")).0, 404);
    assert_eq!(raw.get(path, Some("tok-a")).0, 404);
    assert_eq!(raw.get(path, Some("tok-a")).0, 200);
    fake.set_job_state("job-1", JobState::Superseded);
    assert_eq!(raw.get(path, Some("tok-a")).0, 404);

    let never = migration().visibility("job-1", Visibility::Never).start();
    let raw = Raw::new(never.url());
    for _ in 0..3 {
        assert_eq!(raw.get(path, Some("tok-a")).0, 404);
    }
}

#[test]
fn events_are_checked_in_the_documented_order() {
    let fake = migration()
        .job(
            "job-2",
            "sha2",
            [("node-b", fixture_json("intents/activate-only.json"))],
        )
        .start();
    let raw = Raw::new(fake.url());
    let ok = event(
        "node-a",
        "backup",
        "running",
        "Applying action for acme-shop-main",
    );
    let (status, body) = raw.post("job-1", "tok-a", ok.clone());
    assert_eq!((status, body.as_str()), (200, ""), "200 with an empty body");

    assert_eq!(
        raw.post("job-1", "tok-a", event(" ", "intent", "failed", "m"))
            .0,
        400
    );
    assert_eq!(
        raw.post("job-1", "tok-a", event("node-a", "backup", "done", "m"))
            .0,
        400
    );
    assert_eq!(raw.post("job-1", "tok-b", ok.clone()).0, 403);
    assert_eq!(
        raw.post(
            "job-1",
            "tok-a",
            event("node-a", "intent", " SUCCESS ", "m")
        )
        .0,
        200
    );
    // node-a has no intent in job-2.
    assert_eq!(raw.post("job-2", "tok-a", ok.clone()).0, 404);
    assert_eq!(raw.post("job-404", "tok-a", ok.clone()).0, 404);

    fake.set_job_state("job-1", JobState::Superseded);
    assert_eq!(raw.post("job-1", "tok-a", ok).0, 409);

    let stored = fake.events("job-1");
    assert_eq!(stored.len(), 2);
    assert!(
        stored[1].is("intent", "success"),
        "status is trimmed and lower-cased"
    );
}

#[test]
fn action_rows_follow_the_servers_bookkeeping_and_the_job_closes() {
    let fake = migration().start();
    let raw = Raw::new(fake.url());
    let rows = fake.actions("job-1");
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.status == "queued"));

    // node-a: backup runs and succeeds; the first open backup row moves.
    raw.post("job-1", "tok-a", event("node-a", "backup", "running", "m"));
    raw.post(
        "job-1",
        "tok-a",
        backup_success("node-a", "acme-shop-main", &[("drupal-migrate", "abc")]),
    );
    let a = rows_of(&fake, "node-a");
    assert_eq!(
        (a[0].op.as_str(), a[0].status.as_str()),
        ("backup", "success")
    );
    assert_eq!(
        (a[1].op.as_str(), a[1].status.as_str()),
        ("deactivate", "queued")
    );

    // node-a finishes with (intent, success): its open rows become success.
    raw.post("job-1", "tok-a", event("node-a", "intent", "success", "m"));
    assert!(rows_of(&fake, "node-a")
        .iter()
        .all(|r| r.status == "success"));
    assert_eq!(
        fake.job_state("job-1"),
        JobState::Waiting,
        "node-b has not finished"
    );

    raw.post("job-1", "tok-b", event("node-b", "restore", "success", "m"));
    raw.post(
        "job-1",
        "tok-b",
        event("node-b", "activate", "success", "m"),
    );
    assert_eq!(
        fake.job_state("job-1"),
        JobState::Waiting,
        "no intent event from node-b yet"
    );
    raw.post("job-1", "tok-b", event("node-b", "intent", "success", "m"));
    assert_eq!(fake.job_state("job-1"), JobState::Success);
    assert_eq!(
        raw.post("job-1", "tok-b", event("node-b", "intent", "success", "m"))
            .0,
        409
    );
}

#[test]
fn a_failure_finalises_the_nodes_other_rows_and_fails_the_job() {
    let fake = migration().start();
    let raw = Raw::new(fake.url());
    raw.post(
        "job-1",
        "tok-a",
        event("node-a", "backup", "timed_out", "m"),
    );
    let a = rows_of(&fake, "node-a");
    assert!(a.iter().all(|r| r.status == "timed_out"), "{a:?}");
    let b = rows_of(&fake, "node-b");
    assert!(
        b.iter().all(|r| r.status == "queued"),
        "other nodes untouched: {b:?}"
    );
    assert_eq!(fake.job_state("job-1"), JobState::Failed);
    assert_eq!(
        raw.post("job-1", "tok-b", event("node-b", "restore", "running", "m"))
            .0,
        409
    );
}

#[test]
fn statuses_hold_only_the_latest_event_of_each_node() {
    let fake = migration()
        .event("job-1", event("node-b", "restore", "waiting", "m"))
        .event("job-1", event("node-b", "activate", "success", "m"))
        .start();
    let raw = Raw::new(fake.url());
    raw.post(
        "job-1",
        "tok-a",
        event("node-a", "deactivate", "waiting", "m"),
    );
    fake.append_event("job-1", event("node-b", "intent", "success", "done"));

    let (status, body) = raw.get("/api/deploy-jobs/job-1/statuses?node=node-a", Some("tok-a"));
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    let list = body["statuses"].as_array().expect("array");
    assert_eq!(list.len(), 2);
    let b = list.iter().find(|s| s["node"] == "node-b").expect("node-b");
    assert_eq!(
        (b["phase"].as_str(), b["status"].as_str()),
        (Some("intent"), Some("success"))
    );
    for field in ["eventId", "node", "status", "phase", "message", "createdAt"] {
        assert!(b.get(field).is_some(), "DeployStatus has {field}");
    }

    let (_, body) = raw.get("/api/deploy-jobs/job-1/status?node=node-b", Some("tok-b"));
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["status"]["phase"], "intent");
    assert_eq!(
        raw.get("/api/deploy-jobs/job-1/statuses", Some("tok-a")).0,
        400
    );
    assert_eq!(
        raw.get("/api/deploy-jobs/job-1/statuses?node=node-a", Some("tok-b"))
            .0,
        403
    );
    assert_eq!(
        raw.get("/api/deploy-jobs/nope/statuses?node=node-a", Some("tok-a"))
            .0,
        404
    );

    let (status, body) = raw.get("/api/deploy-jobs/job-1/actions?node=node-b", Some("tok-b"));
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["actions"].as_array().map(Vec::len), Some(2));
}

#[test]
fn backup_snapshot_is_the_newest_successful_backup_of_that_user() {
    let fake = migration()
        .event(
            "job-1",
            backup_success("node-a", "other-user", &[("k-migrate", "zzz")]),
        )
        .event(
            "job-1",
            backup_success("node-a", "acme-shop-main", &[("drupal-migrate", "old")]),
        )
        .event(
            "job-1",
            backup_success("node-a", "acme-shop-main", &[("drupal-migrate", "new")]),
        )
        .start();
    let raw = Raw::new(fake.url());
    let path =
        "/api/deploy-jobs/job-1/backup-snapshot?node=node-b&source=node-a&user=acme-shop-main";
    let (status, body) = raw.get(path, Some("tok-b"));
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["sourceNode"], "node-a");
    assert_eq!(body["payload"]["snapshots"]["drupal-migrate"], "new");

    let none = "/api/deploy-jobs/job-1/backup-snapshot?node=node-b&source=node-a&user=nobody-here";
    let (_, body) = raw.get(none, Some("tok-b"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["payload"],
        Value::Null
    );
    let missing = "/api/deploy-jobs/job-1/backup-snapshot?node=node-b&source=node-a";
    assert_eq!(raw.get(missing, Some("tok-b")).0, 400);
}

#[test]
fn injected_failures_reactions_and_close_after_lookup() {
    let fake = migration()
        .fail(Route::Events, 2, 503)
        .on_event(
            "job-1",
            "node-a",
            "deactivate",
            "waiting",
            event("node-b", "intent", "success", "done"),
        )
        .close_after_lookup("job-1", JobState::Superseded)
        .start();
    let raw = Raw::new(fake.url());
    let waiting = event("node-a", "deactivate", "waiting", "m");
    assert_eq!(raw.post("job-1", "tok-a", waiting.clone()).0, 503);
    assert_eq!(raw.post("job-1", "tok-a", waiting.clone()).0, 503);
    assert_eq!(raw.post("job-1", "tok-a", waiting).0, 200);
    let b = fake.events_of("job-1", "node-b");
    assert_eq!(b.len(), 1, "the reaction appended node-b's event");
    assert!(b[0].is("intent", "success"));

    assert_eq!(
        raw.get(
            "/api/deploy-intents/by-sha?sha=sha1&node=node-a",
            Some("tok-a")
        )
        .0,
        200
    );
    assert_eq!(fake.job_state("job-1"), JobState::Superseded);
    assert_eq!(
        raw.post("job-1", "tok-a", event("node-a", "intent", "success", "m"))
            .0,
        409
    );
}

// ------------------------------------------------------------ HttpProvider

/// The action rows of `node` in job-1, in order.
fn rows_of(fake: &fake_provider::FakeHandle, node: &str) -> Vec<fake_provider::ActionRow> {
    fake.actions("job-1")
        .into_iter()
        .filter(|r| r.node == node)
        .collect()
}

fn http(fake_url: &str, node: &str, token: &str) -> HttpProvider {
    let base = match fake_url.strip_prefix("unix:") {
        Some(path) => ApiBase::Unix(path.into()),
        None => ApiBase::parse(fake_url).expect("the fake's URL"),
    };
    HttpProvider::new(
        &base,
        NodeName::parse(node).expect("node"),
        Token::new(token).expect("token"),
    )
    .expect("client")
}

fn node_event(node: &str, phase: Phase, status: Status, message: &str) -> NodeEvent {
    NodeEvent {
        node: NodeName::parse(node).expect("node"),
        status,
        phase,
        message: message.to_owned(),
        payload: None,
    }
}

#[test]
fn http_provider_speaks_the_contract() {
    let fake = migration()
        .event(
            "job-1",
            backup_success(
                "node-a",
                "acme-shop-main",
                &[("drupal-migrate", "355f5840")],
            ),
        )
        .start();
    let b = http(fake.url(), "node-b", "tok-b");

    let envelope = b.intent_by_sha("sha1").expect("lookup").expect("an intent");
    assert_eq!(envelope.job.as_str(), "job-1");
    let intent = envelope.intent.expect("a valid intent");
    assert_eq!(intent.actions[0].op, Op::Restore);
    assert!(b.intent_by_sha("unknown-sha").expect("lookup").is_none());

    let job = JobId::new("job-1");
    let payload = b
        .backup_snapshot(
            &job,
            &NodeName::parse("node-a").expect("node"),
            &UserName::parse("acme-shop-main").expect("user"),
        )
        .expect("snapshot lookup");
    assert_eq!(
        payload,
        Some(BackupPayload {
            user: UserName::parse("acme-shop-main").expect("user"),
            source_node: NodeName::parse("node-a").expect("node"),
            snapshots: BTreeMap::from([(
                MigrationKey::parse("drupal-migrate").expect("key"),
                "355f5840".into()
            )]),
        })
    );
    assert_eq!(
        b.backup_snapshot(
            &job,
            &NodeName::parse("node-a").expect("node"),
            &UserName::parse("someone-else").expect("user"),
        ),
        Ok(None)
    );

    b.post_event(
        &job,
        &node_event(
            "node-b",
            Phase::Restore,
            Status::Waiting,
            "Waiting for node-a",
        ),
    )
    .expect("posted");
    let statuses = b.statuses(&job).expect("statuses");
    let mine = statuses
        .iter()
        .find(|s| s.node == "node-b")
        .expect("node-b");
    assert_eq!((mine.phase, mine.status), (Phase::Restore, Status::Waiting));

    // Every request carried the token in the header, never in the URL.
    for r in fake.requests() {
        assert!(r.auth_ok, "{r:?}");
        assert!(!r.raw_url.contains("tok-b"), "{r:?}");
        assert_eq!(
            r.query_param("node"),
            if r.route == Route::Events {
                None
            } else {
                Some("node-b")
            }
        );
    }
    let posted = fake.posted();
    assert_eq!(
        posted[0],
        json!({"node": "node-b", "status": "waiting", "phase": "restore", "message": "Waiting for node-a"})
    );
}

#[test]
fn http_provider_maps_refusal_closure_and_server_errors() {
    let fake = migration()
        .fail(Route::Statuses, 1, 502)
        .close_after_lookup("job-1", JobState::Failed)
        .start();
    let wrong = http(fake.url(), "node-a", "not-the-token");
    assert_eq!(
        wrong.intent_by_sha("sha1").map(|e| e.is_some()),
        Err(ProviderError::Refused)
    );

    let a = http(fake.url(), "node-a", "tok-a");
    let job = JobId::new("job-1");
    match a.statuses(&job) {
        Err(ProviderError::Server { status: 502, body }) => assert_eq!(body, "injected failure"),
        other => panic!("expected a 502, got {other:?}"),
    }
    assert!(a.intent_by_sha("sha1").expect("lookup").is_some());
    // The job failed elsewhere right after the lookup: events get 409.
    assert_eq!(
        a.post_event(
            &job,
            &node_event("node-a", Phase::Backup, Status::Running, "m")
        ),
        Err(ProviderError::JobClosed)
    );
    // No intent for this node in that job: 404.
    let other = JobId::new("job-x");
    assert!(matches!(
        a.post_event(
            &other,
            &node_event("node-a", Phase::Intent, Status::Success, "m")
        ),
        Err(ProviderError::NotFound(_))
    ));
}

#[test]
fn http_provider_reports_decode_errors_and_unreachable_providers() {
    // A server that answers 200 with something that is not the contract.
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
    let addr = server.server_addr().to_ip().expect("ip");
    let thread = std::thread::spawn(move || {
        if let Ok(req) = server.recv() {
            let _ = req.respond(tiny_http::Response::from_string("<html>login</html>"));
        }
    });
    let p = http(&format!("http://{addr}"), "node-a", "tok-a");
    match p.intent_by_sha("sha1") {
        Err(ProviderError::Decode(why)) => assert!(why.contains("<html>login</html>"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    thread.join().expect("server thread");

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let p = http(&format!("http://127.0.0.1:{port}"), "node-a", "tok-a");
    let err = p.intent_by_sha("sha1").expect_err("unreachable");
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert!(!err.to_string().contains("tok-a"));
}

#[test]
fn http_provider_works_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("provider.sock");
    let fake = migration().unix_socket(&socket).start();
    assert_eq!(fake.url(), format!("unix:{}", socket.display()));
    let a = http(fake.url(), "node-a", "tok-a");
    let envelope = a.intent_by_sha("sha1").expect("lookup").expect("intent");
    assert_eq!(envelope.job.as_str(), "job-1");
    a.post_event(
        &envelope.job,
        &node_event("node-a", Phase::Intent, Status::Success, "m"),
    )
    .expect("posted");
    assert_eq!(fake.events_of("job-1", "node-a").len(), 1);
}
