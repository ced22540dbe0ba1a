//! Property tests of the parsers that take input from outside (restic's
//! output, the intent and its names, the provider's HTTP answers,
//! configuration values, the journal's files, comin's store): for random
//! input they never panic and give a typed error; for valid input they give
//! back what was put in. And the escaping of a user's text for log lines and
//! event messages: for any input, one line with no control character; and
//! its cut for events, within its bound and keeping the end. Each property
//! runs [`CASES`] generated cases with no
//! failure files written (a failure prints its shrunk input).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use hostenv_activate::adapters::http::{
    classify, decode_backup_snapshot, decode_intent, decode_own_status, decode_statuses, excerpt,
    ApiBase, Endpoint, BODY_EXCERPT_CHARS,
};
use hostenv_activate::adapters::log::{journal_datagram, stderr_line};
use hostenv_activate::config::SECONDS;
use hostenv_activate::model::comin::newest_deployment;
use hostenv_activate::model::journal::{
    changes, ActionRecord, ActionState, Change, Delivery, JobRecord, Posted, RunEnd, Target,
};
use hostenv_activate::model::names::{MigrationKey, NodeName, UserName};
use hostenv_activate::model::snapshot::{
    is_restic_id, pick_snapshot, Snapshot, SnapshotError, SnapshotStream,
};
use hostenv_activate::model::text::{
    detail, escape, escape_bytes, escaped_width, summary, unescape, DETAIL_CHARS, SUMMARY_CHARS,
};
use hostenv_activate::model::{
    BackupPayload, CominStatus, EventPayload, Intent, IntentDigest, JobId, NodeEvent, Op, Phase,
    Status, Terminal,
};
use hostenv_activate::ports::{Level, LogFields, ProviderError};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Cases per property.
const CASES: u32 = 2000;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

// ------------------------------------------------------------ generators

/// Instants restic could have written: 1970 to 2100, any nanosecond.
fn instant() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800, 0i32..1_000_000_000)
        .prop_map(|(s, ns)| Timestamp::new(s, ns).expect("in jiff's range"))
}

/// UTC offsets in whole minutes, -12:00 to +14:00 (real zones have
/// quarter-hour ones too; any minute is allowed by RFC 3339).
fn offset() -> impl Strategy<Value = Offset> {
    (-720i32..=840).prop_map(|m| Offset::from_seconds(m * 60).expect("valid offset"))
}

/// How restic (Go's RFC3339Nano) writes an instant at `offset`: fraction
/// without trailing zeros, `Z` for UTC unless `plus_zero`.
fn rfc3339(ts: Timestamp, offset: Offset, plus_zero: bool) -> String {
    let dt = ts.to_zoned(TimeZone::fixed(offset)).datetime();
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.subsec_nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    let secs = offset.seconds();
    if secs == 0 && !plus_zero {
        out.push('Z');
    } else {
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60));
    }
    out
}

/// One snapshot as restic lists it: instant, how it was written, id.
#[derive(Debug, Clone)]
struct Snap {
    at: Timestamp,
    time: String,
    id: Option<String>,
}

fn snap() -> impl Strategy<Value = Snap> {
    (
        instant(),
        offset(),
        any::<bool>(),
        proptest::option::weighted(0.9, "[0-9a-f]{64}"),
    )
        .prop_map(|(at, offset, plus_zero, id)| Snap {
            at,
            time: rfc3339(at, offset, plus_zero),
            id,
        })
}

/// Up to 12 snapshots at distinct instants (so "the newest" is one).
fn snaps() -> impl Strategy<Value = Vec<Snap>> {
    proptest::collection::vec(snap(), 0..12).prop_map(|mut v| {
        let mut seen = std::collections::BTreeSet::new();
        v.retain(|s| seen.insert(s.at));
        v
    })
}

/// restic's `snapshots --json` line for `snaps`, with the other fields
/// restic writes.
fn restic_json(snaps: &[Snap]) -> String {
    let items: Vec<Value> = snaps
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "time": s.time,
                "tree": "f00d",
                "paths": ["/var/lib/site"],
                "hostname": "node-a",
                "username": "acme",
                "tags": ["drupal-migrate"],
                "program_version": "restic 0.17.3",
            });
            if let Some(id) = &s.id {
                v["id"] = Value::from(id.clone());
                v["short_id"] = Value::from(id[..8].to_owned());
            }
            v
        })
        .collect();
    Value::Array(items).to_string()
}

/// Any JSON value, with object keys often `time`/`id` so the parser gets
/// past the first checks.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        instant().prop_map(|t| Value::from(t.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![Just("time".to_owned()), Just("id".to_owned()), "[a-z]{1,6}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arrays that are nearly restic's: objects whose `time` is usually a valid
/// timestamp and whose `id` is present, blank, of the wrong type or absent.
fn snapshot_like_json() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        4 => instant().prop_map(|t| Value::from(t.to_string())),
        1 => json_value(),
    ];
    let id = prop_oneof![
        3 => "[0-9a-f]{64}".prop_map(|id| Some(Value::from(id))),
        1 => "[0-9a-f]{8,63}".prop_map(|id| Some(Value::from(id))),
        1 => Just(Some(Value::from("  "))),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ];
    proptest::collection::vec((time, id), 0..6).prop_map(|items| {
        Value::Array(
            items
                .into_iter()
                .map(|(time, id)| {
                    let mut item = serde_json::json!({ "time": time, "tree": "f00d" });
                    if let Some(id) = id {
                        item["id"] = id;
                    }
                    item
                })
                .collect(),
        )
    })
}

/// Whether `s` is one of the strings in `value`.
fn has_string(value: &Value, s: &str) -> bool {
    match value {
        Value::String(v) => v == s,
        Value::Array(items) => items.iter().any(|v| has_string(v, s)),
        Value::Object(map) => map.values().any(|v| has_string(v, s)),
        _ => false,
    }
}

/// Strings that are mostly near the name rules: their characters, the
/// dangerous ones, and some of anything.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.\\-]{0,40}",
        "[A-Za-z0-9_./ \\t\\n\\-]{0,40}",
        "(\\.\\.|/|[a-z]){0,12}",
        ".{0,40}",
        any::<String>(),
    ]
}

// ------------------------------------------------------------ snapshots

/// `text` through a [`SnapshotStream`], cut into chunks of the given sizes
/// (cycled; a size of 0 counts as 1).
fn streamed(
    text: &[u8],
    sizes: &[usize],
    not_before: Timestamp,
) -> Result<Snapshot, SnapshotError> {
    let mut stream = SnapshotStream::new(not_before);
    let mut rest = text;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at((*size).clamp(1, rest.len()));
        stream.feed(chunk);
        rest = after;
    }
    stream.finish()
}

/// The answer with a `Malformed` reason blanked: the two parsers word the
/// reasons differently (and may find a different first one).
fn kind(answer: Result<Snapshot, SnapshotError>) -> Result<Snapshot, SnapshotError> {
    answer.map_err(|e| match e {
        SnapshotError::Malformed(_) => SnapshotError::Malformed(String::new()),
        other => other,
    })
}

/// Chunk sizes: often tiny, so that every token is cut somewhere.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..4, 1usize..80, 1usize..5000], 1..16)
}

/// A snapshot's `id` as a wrapper might print it: restic's mostly, else a
/// path, an empty, short, long, upper-case or escaped string, null, absent.
fn any_id() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => "[0-9a-f]{64}".prop_map(|id| Some(Value::from(id))),
        1 => Just(Some(Value::from(""))),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
        1 => "/[a-z/]{1,20}".prop_map(|id| Some(Value::from(id))),
        1 => "[0-9A-F]{64}|[0-9a-f]{63}|[0-9a-f]{65}".prop_map(|id| Some(Value::from(id))),
        1 => (0usize..3000).prop_map(|n| Some(Value::from("a".repeat(n)))),
        1 => ".{0,80}".prop_map(|id| Some(Value::from(id))),
    ]
}

/// restic's `snapshots --json`, with any ids and extra fields (any JSON),
/// equal instants allowed, compact (as restic prints) or pretty.
fn any_list() -> impl Strategy<Value = String> {
    let item = (
        instant(),
        offset(),
        any::<bool>(),
        any_id(),
        proptest::option::of(json_value()),
    )
        .prop_map(|(at, offset, plus_zero, id, extra)| {
            let mut v = serde_json::json!({
                "time": rfc3339(at, offset, plus_zero),
                "tree": "f00d",
                "paths": ["/var/lib/site"],
                "tags": ["drupal-migrate"],
            });
            if let Some(id) = id {
                v["id"] = id;
            }
            if let Some(extra) = extra {
                v["extra"] = extra;
            }
            v
        });
    (proptest::collection::vec(item, 0..12), any::<bool>()).prop_map(|(items, pretty)| {
        let list = Value::Array(items);
        if pretty {
            serde_json::to_string_pretty(&list).expect("json")
        } else {
            list.to_string()
        }
    })
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes from restic, cut anywhere: never a panic, a typed error
    /// or a restic id of this run.
    #[test]
    fn random_output_never_panics_the_snapshot_parser(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            "[\\[\\]{}\":,0-9a-z \\n\\\\]{0,300}".prop_map(String::into_bytes),
        ],
        sizes in chunking(),
        not_before in instant(),
    ) {
        match streamed(&bytes, &sizes, not_before) {
            Ok(snap) => {
                prop_assert!(is_restic_id(snap.id.as_bytes()) && snap.time >= not_before);
            }
            Err(SnapshotError::Malformed(why)) => prop_assert!(!why.is_empty()),
            Err(SnapshotError::Empty) => {}
            Err(e) => prop_assert!(e.newest_seen().is_some()),
        }
    }

    /// The stream and the whole-document parser agree, for any list and
    /// any chunking.
    #[test]
    fn the_stream_agrees_with_the_whole_document(
        json in any_list(),
        sizes in chunking(),
        not_before in prop_oneof![instant(), Just(Timestamp::UNIX_EPOCH)],
    ) {
        let whole = pick_snapshot(&json, not_before);
        prop_assert!(!matches!(whole, Err(SnapshotError::Malformed(_))), "{:?}", whole);
        prop_assert_eq!(kind(streamed(json.as_bytes(), &sizes, not_before)), whole);
    }

    /// Random JSON shapes: only an array of objects with a parseable `time`
    /// gets past `Malformed`; a pick names a restic id of the input. The
    /// stream agrees on arrays of objects, and never picks what the whole
    /// document would not.
    #[test]
    fn random_json_gives_a_typed_answer(
        value in prop_oneof![json_value(), snapshot_like_json()],
        not_before in prop_oneof![instant(), Just(Timestamp::UNIX_EPOCH)],
        sizes in chunking(),
    ) {
        let json = value.to_string();
        let whole = pick_snapshot(&json, not_before);
        match &whole {
            Ok(snap) => {
                prop_assert!(is_restic_id(snap.id.as_bytes()));
                prop_assert!(snap.time >= not_before);
                // Where in the input is up to serde: a snapshot may also be
                // read from an array `[time, id]` (the sequence form of a struct).
                prop_assert!(has_string(&value, &snap.id), "{:?} not in the input", snap.id);
            }
            Err(SnapshotError::Malformed(why)) => prop_assert!(!why.is_empty()),
            Err(SnapshotError::Empty) => prop_assert_eq!(&value, &Value::Array(vec![])),
            Err(SnapshotError::NoneFromThisRun { newest, .. }) => prop_assert!(*newest < not_before),
            Err(SnapshotError::MissingId { time } | SnapshotError::InvalidId { time, .. }) => {
                prop_assert!(*time >= not_before)
            }
        }
        let stream = kind(streamed(json.as_bytes(), &sizes, not_before));
        let objects = value.as_array().is_some_and(|items| items.iter().all(Value::is_object));
        if objects {
            prop_assert_eq!(stream, kind(whole));
        } else if stream.is_ok() {
            prop_assert_eq!(stream, whole);
        }
    }

    /// Valid restic arrays at random UTC offsets: the newest instant at or
    /// after `not_before` is chosen, compared as instants, never as strings.
    #[test]
    fn the_newest_snapshot_of_this_run_is_chosen(
        snaps in snaps(),
        not_before in prop_oneof![instant(), Just(Timestamp::UNIX_EPOCH)],
        pick_existing in any::<prop::sample::Index>(),
        at_existing in any::<bool>(),
        sizes in chunking(),
    ) {
        // Often exactly at one snapshot's instant (the boundary is "not older").
        let not_before = match (at_existing, snaps.is_empty()) {
            (true, false) => snaps[pick_existing.index(snaps.len())].at,
            _ => not_before,
        };
        let json = restic_json(&snaps);
        let got = pick_snapshot(&json, not_before);
        prop_assert_eq!(&streamed(json.as_bytes(), &sizes, not_before), &got);
        let newest = snaps.iter().map(|s| s.at).max();
        let chosen = snaps.iter().filter(|s| s.at >= not_before).max_by_key(|s| s.at);
        let listed = snaps.len() as u64;
        match (newest, chosen) {
            (None, _) => prop_assert_eq!(got, Err(SnapshotError::Empty)),
            (Some(newest), None) => {
                prop_assert_eq!(got, Err(SnapshotError::NoneFromThisRun { newest, listed }))
            }
            (Some(_), Some(want)) => match &want.id {
                Some(id) => {
                    let snap = got.expect("a snapshot of this run");
                    prop_assert_eq!(&snap.id, id);
                    prop_assert_eq!(snap.time, want.at);
                    prop_assert_eq!(snap.listed, listed);
                }
                None => prop_assert_eq!(got, Err(SnapshotError::MissingId { time: want.at })),
            },
        }
    }

    /// restic's JSON line is found among lines a wrapper prints before and
    /// after it on stdout. They may hold brackets, even start or end with
    /// one, as long as they are not themselves JSON.
    #[test]
    fn the_json_line_is_found_among_other_lines(
        snaps in snaps(),
        before in proptest::collection::vec("[^\\n\\r]{0,30}", 0..4),
        after in proptest::collection::vec("(\\[[a-z ]{1,10}\\] )?[a-z: ]{0,20}\\]?", 0..3),
        not_before in prop_oneof![instant(), Just(Timestamp::UNIX_EPOCH)],
        sizes in chunking(),
    ) {
        prop_assume!(!before.iter().chain(&after).any(|l| serde_json::from_str::<Value>(l.trim()).is_ok()));
        let json = restic_json(&snaps);
        let mut lines = before.clone();
        lines.push(json.clone());
        lines.extend(after.iter().cloned());
        let output = lines.join("\n") + "\n";
        prop_assert_eq!(
            streamed(output.as_bytes(), &sizes, not_before),
            pick_snapshot(&json, not_before)
        );
    }
}

// ------------------------------------------------------------ RFC 3339

proptest! {
    #![proptest_config(config())]

    /// Any string: `parse::<Timestamp>()` returns, never panics.
    #[test]
    fn any_string_parses_or_errs(s in ".{0,40}|[0-9T:.Z+\\-]{0,40}") {
        let _ = s.parse::<Timestamp>();
    }

    /// A time written at any offset parses back to the same instant, and
    /// the UTC form round-trips.
    #[test]
    fn rfc3339_at_any_offset_is_the_same_instant(
        at in instant(),
        a in offset(),
        b in offset(),
        plus_zero in any::<bool>(),
    ) {
        let (sa, sb) = (rfc3339(at, a, plus_zero), rfc3339(at, b, plus_zero));
        let pa: Timestamp = sa.parse().expect("valid RFC 3339");
        let pb: Timestamp = sb.parse().expect("valid RFC 3339");
        prop_assert_eq!(pa, at);
        prop_assert_eq!(pb, at);
        prop_assert_eq!(at.to_string().parse::<Timestamp>().expect("UTC form"), at);
    }

    /// Order of instants, not of strings: two instants written at random
    /// offsets compare as the instants do.
    #[test]
    fn parsed_times_order_as_instants(x in instant(), y in instant(), a in offset(), b in offset()) {
        let px: Timestamp = rfc3339(x, a, false).parse().expect("valid");
        let py: Timestamp = rfc3339(y, b, false).parse().expect("valid");
        prop_assert_eq!(px.cmp(&py), x.cmp(&y));
    }
}

// ------------------------------------------------------------ names

/// `value` written as JSON (as the intent carries it) reads back as itself.
fn json_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

/// The JSON string `s` does not deserialise as a `T`.
fn json_refuses<T: DeserializeOwned>(s: &str) -> bool {
    serde_json::to_string(s).map_or(true, |json| serde_json::from_str::<T>(&json).is_err())
}

proptest! {
    #![proptest_config(config())]

    /// User names: never a panic; accepted ones are plain account names
    /// that re-parse to themselves, also through JSON.
    #[test]
    fn user_names_are_plain_or_refused(s in name_like()) {
        match UserName::parse(&s) {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert!(!s.contains('/') && !s.contains("..") && !s.chars().any(char::is_whitespace));
                prop_assert!((1..=32).contains(&s.len()));
                prop_assert_eq!(UserName::parse(name.as_str()), Ok(name.clone()));
                json_round_trip(&name)?;
            }
            Err(e) => {
                prop_assert_eq!(e.kind, "user name");
                prop_assert_eq!(&e.value, &s);
                prop_assert!(json_refuses::<UserName>(&s));
            }
        }
    }

    /// Every name of the documented form is accepted.
    #[test]
    fn valid_user_names_are_accepted(s in "[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,31}") {
        prop_assume!(!s.contains(".."));
        prop_assert!(UserName::parse(&s).is_ok(), "{:?} refused", s);
    }

    /// Migration keys: never a panic; accepted ones cannot leave a unit or
    /// program name (no '/', no whitespace, no leading '.') and re-parse to
    /// themselves, also through JSON.
    #[test]
    fn migration_keys_are_names_or_refused(s in name_like()) {
        match MigrationKey::parse(&s) {
            Ok(key) => {
                prop_assert_eq!(key.as_str(), s.as_str());
                prop_assert!(!s.contains('/') && !s.chars().any(char::is_whitespace));
                prop_assert!(!s.starts_with('.') && s != "..");
                prop_assert!((1..=128).contains(&s.len()));
                prop_assert_eq!(key.unit_name(), format!("restic-backups-{s}.service"));
                prop_assert_eq!(MigrationKey::parse(key.as_str()), Ok(key.clone()));
                json_round_trip(&key)?;
            }
            Err(e) => {
                prop_assert_eq!(e.kind, "migration key");
                prop_assert_eq!(&e.value, &s);
                prop_assert!(json_refuses::<MigrationKey>(&s));
            }
        }
    }

    /// Every key of the documented form is accepted.
    #[test]
    fn valid_migration_keys_are_accepted(s in "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,127}") {
        prop_assert!(MigrationKey::parse(&s).is_ok(), "{:?} refused", s);
    }

    /// Node names: never a panic; accepted ones have no whitespace or
    /// control character and re-parse to themselves.
    #[test]
    fn node_names_are_printable_or_refused(s in name_like()) {
        match NodeName::parse(&s) {
            Ok(node) => {
                prop_assert!(!s.is_empty() && s.len() <= 253);
                prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert_eq!(NodeName::parse(node.as_str()), Ok(node.clone()));
                json_round_trip(&node)?;
            }
            Err(e) => {
                prop_assert_eq!(&e.value, &s);
                prop_assert!(json_refuses::<NodeName>(&s));
            }
        }
    }
}

// ------------------------------------------------------------ HTTP answers

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        Just(Endpoint::IntentBySha),
        Just(Endpoint::Events),
        Just(Endpoint::Statuses),
        Just(Endpoint::BackupSnapshot),
    ]
}

/// Bodies a provider (or a proxy in front of it) could send: long, multi-line,
/// multi-byte, every kind of whitespace.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z \\n\\r\\t\u{85}\u{a0}\u{2028}é€]{0,700}",
        ".{280,320}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// An excerpt is one line of at most BODY_EXCERPT_CHARS characters plus
    /// the ellipsis, with whitespace runs folded to single spaces.
    #[test]
    fn an_excerpt_is_one_short_line(body in body()) {
        let ex = excerpt(&body);
        prop_assert!(ex.chars().count() <= BODY_EXCERPT_CHARS + 1);
        prop_assert!(ex.lines().count() <= 1, "{:?}", ex);
        prop_assert!(!ex.chars().any(|c| c.is_whitespace() && c != ' '), "{:?}", ex);
        prop_assert!(!ex.contains("  ") && ex == ex.trim());
        let cut = ex.ends_with('…') && ex.chars().count() == BODY_EXCERPT_CHARS + 1;
        let folded = body.split_whitespace().collect::<Vec<_>>().join(" ");
        if !cut {
            prop_assert_eq!(ex, folded);
        }
    }

    /// Any status and body: no panic, the contract's error for the status,
    /// and a one-line message.
    #[test]
    fn any_answer_is_classified(endpoint in endpoint(), status in any::<u16>(), body in body()) {
        match classify(endpoint, status, &body) {
            Ok(()) => prop_assert!((200..300).contains(&status)),
            Err(err) => {
                prop_assert!(!(200..300).contains(&status));
                let message = err.to_string();
                prop_assert!(!message.contains('\n') && !message.contains('\r'), "{:?}", message);
                match err {
                    ProviderError::Refused => prop_assert_eq!(status, 403),
                    ProviderError::JobClosed => {
                        prop_assert_eq!((status, endpoint), (409, Endpoint::Events))
                    }
                    ProviderError::NotFound(_) => prop_assert_eq!(status, 404),
                    ProviderError::BadRequest(_) => prop_assert_eq!(status, 400),
                    ProviderError::Server { status: s, body: b } => {
                        prop_assert!((500..600).contains(&status) && s == status);
                        prop_assert_eq!(b, excerpt(&body));
                    }
                    ProviderError::Client { status: s, body: b } => {
                        prop_assert_eq!(s, status);
                        prop_assert!(![400, 403, 404].contains(&status) && !(500..600).contains(&status));
                        prop_assert_eq!(b, excerpt(&body));
                    }
                    other => prop_assert!(false, "classify never gives {:?}", other),
                }
            }
        }
    }
}

// ------------------------------------------------------------ the intent

/// Node names as providers use them.
fn node() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

/// A valid action as JSON: any op, a valid user, optional nodes (absent or
/// null), distinct keys.
fn action_json() -> impl Strategy<Value = Value> {
    (
        0usize..5,
        "[a-z_][a-z0-9_\\-]{0,20}",
        proptest::option::of(node()),
        proptest::option::of(node()),
        proptest::collection::btree_set("[a-z0-9][a-z0-9._\\-]{0,20}", 0..4),
        any::<bool>(),
    )
        .prop_map(|(op, user, from, to, keys, nulls)| {
            let op = ["activate", "reload", "backup", "restore", "deactivate"][op];
            let mut a = serde_json::json!({"op": op, "user": user, "migrations": keys});
            for (field, value) in [("fromNode", from), ("toNode", to)] {
                match value {
                    Some(n) => a[field] = Value::from(n),
                    None if nulls => a[field] = Value::Null,
                    None => {}
                }
            }
            a
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON as an intent, and as the lookup's whole answer: a typed
    /// intent or a typed error, never a panic.
    #[test]
    fn any_json_is_an_intent_or_a_typed_error(v in json_value(), actions in proptest::collection::vec(json_value(), 0..4)) {
        let _ = Intent::parse(&v);
        let nearly = serde_json::json!({"schemaVersion": 1, "actions": actions});
        if let Err(e) = Intent::parse(&nearly) {
            prop_assert!(!e.to_string().is_empty());
        }
        let body = serde_json::json!({"jobId": v.clone(), "intent": nearly}).to_string();
        let _ = decode_intent(&body);
        let _ = decode_intent(&v.to_string());
    }

    /// Random bytes as the lookup's answer: a decode error, never a panic.
    #[test]
    fn random_bytes_are_no_intent(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = decode_intent(&text) {
            prop_assert!(matches!(e, ProviderError::Decode(_)), "{:?}", e);
        }
    }

    /// A valid intent parses, and what it parsed to reads back the same.
    #[test]
    fn valid_intents_round_trip(actions in proptest::collection::vec(action_json(), 0..6)) {
        let raw = serde_json::json!({"schemaVersion": 1, "actions": actions});
        let intent = Intent::parse(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(intent.actions.len(), actions.len());
        let mut again = serde_json::to_value(&intent).map_err(|e| TestCaseError::fail(e.to_string()))?;
        again["schemaVersion"] = Value::from(1);
        prop_assert_eq!(Intent::parse(&again), Ok(intent));
        let body = serde_json::json!({"jobId": "job-1", "intent": raw}).to_string();
        let fetched = decode_intent(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(fetched.digest, IntentDigest::of(&raw));
    }
}

// ------------------------------------------------------------ provider replies

fn status_json() -> impl Strategy<Value = Value> {
    (node(), 0usize..7, 0usize..6, ".{0,30}", instant()).prop_map(|(n, st, ph, msg, at)| {
        let status = [
            "queued",
            "waiting",
            "running",
            "success",
            "failed",
            "timed_out",
            "odd",
        ][st];
        let phase = [
            "intent",
            "activate",
            "reload",
            "backup",
            "restore",
            "deactivate",
        ][ph];
        serde_json::json!({"eventId": 7, "node": n, "status": status, "phase": phase,
                           "message": msg, "createdAt": at.to_string()})
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON as any reply: a value or a typed decode error.
    #[test]
    fn any_reply_is_decoded_or_refused(v in json_value()) {
        let body = v.to_string();
        for result in [
            decode_statuses(&body).map(|_| ()),
            decode_own_status(&body).map(|_| ()),
            decode_backup_snapshot(&body).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(matches!(e, ProviderError::Decode(_)), "{:?}", e);
            }
        }
        let wrapped = serde_json::json!({"statuses": [v.clone()], "status": v.clone(), "payload": v}).to_string();
        let _ = decode_statuses(&wrapped);
        let _ = decode_own_status(&wrapped);
        let _ = decode_backup_snapshot(&wrapped);
    }

    /// Valid replies give back what they hold.
    #[test]
    fn valid_replies_decode(statuses in proptest::collection::vec(status_json(), 0..5),
                            user in "[a-z][a-z0-9-]{0,10}", source in node(),
                            snaps in proptest::collection::btree_map("[a-z][a-z0-9-]{0,10}", "[0-9a-f]{64}", 0..4)) {
        let body = serde_json::json!({"jobId": "j", "node": "me", "statuses": statuses}).to_string();
        let decoded = decode_statuses(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.len(), statuses.len());
        for (d, s) in decoded.iter().zip(&statuses) {
            prop_assert_eq!(Value::from(d.node.clone()), s["node"].clone());
            prop_assert_eq!(d.message.clone().map(Value::from), Some(s["message"].clone()));
        }
        let payload = serde_json::json!({"user": user, "sourceNode": source, "snapshots": snaps});
        let body = serde_json::json!({"jobId": "j", "node": "me", "sourceNode": source, "user": user, "payload": payload}).to_string();
        let decoded = decode_backup_snapshot(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = decoded.ok_or_else(|| TestCaseError::fail("no payload"))?;
        prop_assert_eq!(serde_json::to_value(&decoded).map_err(|e| TestCaseError::fail(e.to_string()))?, payload);
        prop_assert_eq!(decode_backup_snapshot(r#"{"payload": null}"#), Ok(None));
    }
}

// ------------------------------------------------------------ configuration values

proptest! {
    #![proptest_config(config())]

    /// Any bytes as a number of seconds: accepted exactly when a whole
    /// number within the bounds, otherwise one short line naming the setting.
    #[test]
    fn seconds_settings_accept_exactly_their_range(raw in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(OsString::from_vec),
        "-?[0-9]{0,25}".prop_map(OsString::from),
        (0u64..2_000_000).prop_map(|n| OsString::from(n.to_string())),
    ]) {
        for setting in SECONDS {
            let expected = raw
                .to_str()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|n| (setting.min..=setting.max).contains(n));
            match setting.parse(&raw) {
                Ok(d) => prop_assert_eq!(Some(d.as_secs()), expected),
                Err(e) => {
                    prop_assert!(expected.is_none());
                    let line = e.to_string();
                    prop_assert!(line.starts_with(&format!("{} (--{})", setting.variable, setting.flag)), "{}", line);
                    prop_assert!(!line.contains('\n') && line.len() < 300, "{}", line);
                }
            }
        }
    }

    /// Base URLs and comin's values: parsed or refused, never a panic, and
    /// a refusal is one line.
    #[test]
    fn urls_and_comin_values_never_panic(raw in prop_oneof![".{0,80}", "(https?|unix|ftp):[ -~]{0,60}"],
                                         status in proptest::option::of(".{0,12}"),
                                         message in proptest::option::of(".{0,40}")) {
        if let Err(problem) = ApiBase::parse(&raw) {
            prop_assert!(!problem.contains('\n') || raw.contains('\n'), "{}", problem);
        }
        let _ = CominStatus::from_comin(status.as_deref(), message.as_deref());
    }
}

// ------------------------------------------------------------ the journal and comin's store

fn terminal() -> impl Strategy<Value = Terminal> {
    (
        0usize..3,
        ".{0,40}",
        proptest::option::of(("[a-z][a-z0-9-]{0,10}", node(), "[0-9a-f]{8,64}")),
    )
        .prop_map(|(status, message, payload)| {
            let payload = payload.map(|(user, source, id)| {
                EventPayload::Backup(BackupPayload {
                    user: UserName::parse(&user).expect("valid user"),
                    source_node: NodeName::parse(&source).expect("valid node"),
                    snapshots: [(MigrationKey::parse("db-migrate").expect("key"), id)]
                        .into_iter()
                        .collect(),
                })
            });
            match status {
                0 => Terminal::success(message, payload),
                1 => Terminal::failed(message, payload),
                _ => Terminal::timed_out(message, payload),
            }
        })
}

fn job_record() -> impl Strategy<Value = JobRecord> {
    (
        node(),
        // Job ids as the provider sends them: never blank.
        ".{0,20}[a-z0-9]",
        proptest::collection::vec(
            (
                any::<u32>(),
                instant(),
                proptest::option::of((instant(), any::<bool>(), ".{0,30}")),
            ),
            0..4,
        ),
        proptest::collection::btree_map(
            0usize..20,
            (
                0usize..5,
                "[a-z][a-z0-9-]{0,10}",
                instant(),
                proptest::option::of((instant(), terminal(), 0usize..3, any::<bool>())),
            ),
            0..6,
        ),
        proptest::option::of((terminal(), 0usize..3)),
    )
        .prop_map(|(n, job, runs, actions, closing)| {
            let mut r = JobRecord::new(
                NodeName::parse(&n).expect("node"),
                JobId::new(job),
                "abc".into(),
                IntentDigest::of(&Value::Null),
            );
            for (pid, at, end) in runs {
                r.begin_run(pid, at);
                if let Some((at, success, message)) = end {
                    r.end_run(RunEnd {
                        at,
                        success,
                        message,
                    });
                }
            }
            let delivery =
                |d: usize| [Delivery::Pending, Delivery::Delivered, Delivery::Dropped][d];
            for (index, (op, user, started_at, finished)) in actions {
                let state = match finished {
                    None => ActionState::Started { started_at },
                    Some((finished_at, terminal, d, adopted)) => ActionState::Finished {
                        started_at,
                        finished_at,
                        adopted,
                        event: Posted {
                            terminal,
                            delivery: delivery(d),
                        },
                    },
                };
                r.put(ActionRecord {
                    index,
                    op: Op::ALL[op],
                    user: UserName::parse(&user).expect("user"),
                    state,
                });
            }
            r.closing = closing.map(|(terminal, d)| Posted {
                terminal,
                delivery: delivery(d),
            });
            r
        })
}

/// A journal file as a run writes it: the header (a record), then a run's
/// changes (its start, each action, deliveries, the closing event, its end).
fn journal_file() -> impl Strategy<Value = (JobRecord, Vec<Change>)> {
    (
        job_record(),
        job_record(),
        any::<u32>(),
        instant(),
        proptest::collection::vec((0usize..20, 0usize..3, any::<bool>()), 0..6),
    )
        .prop_map(|(header, run, pid, at, deliveries)| {
            let mut changes = vec![Change::Run {
                pid,
                started_at: at,
                sha: "def".into(),
            }];
            changes.extend(run.actions.into_iter().map(Change::Action));
            for (index, d, closing) in deliveries {
                changes.push(Change::Delivery {
                    of: if closing {
                        Target::Closing
                    } else {
                        Target::Action(index)
                    },
                    delivery: [Delivery::Pending, Delivery::Delivered, Delivery::Dropped][d],
                    touch: index % 2 == 0,
                });
            }
            changes.extend(run.closing.map(Change::Closing));
            changes.extend(
                run.runs
                    .into_iter()
                    .filter_map(|r| r.ended)
                    .map(Change::End),
            );
            (header, changes)
        })
}

/// The file's bytes, and where each line ends.
fn journal_bytes(header: &JobRecord, changes: &[Change]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = changes::encode_record(header).expect("encode");
    let mut ends = vec![bytes.len()];
    for change in changes {
        bytes.extend(changes::encode(change).expect("encode"));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #![proptest_config(config())]

    /// A journal file's lines fold into the record its changes make.
    #[test]
    fn journal_lines_fold_like_the_changes((header, changes) in journal_file()) {
        let (bytes, _) = journal_bytes(&header, &changes);
        let mut expected = header.clone();
        for change in &changes {
            expected.apply(change);
        }
        let folded = changes::read(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(folded.valid, bytes.len());
        prop_assert_eq!(folded.ignored, None);
        prop_assert_eq!(folded.record, expected);
    }

    /// Any bytes, or a journal file cut anywhere, with anything appended
    /// or one byte changed: never a panic; what is read is exactly the
    /// whole lines before the first bad one, folded.
    #[test]
    fn journal_files_cut_or_extended_never_panic((header, changes) in journal_file(),
                                                 cut in 0.0f64..=1.0,
                                                 tail in proptest::collection::vec(any::<u8>(), 0..200),
                                                 flip in proptest::option::of((0.0f64..1.0, 1u8..=255)),
                                                 noise in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = changes::read(&noise);
        let (whole, ends) = journal_bytes(&header, &changes);
        let at = ((whole.len() as f64) * cut) as usize;
        let mut bytes = whole[..at].to_vec();
        bytes.extend(&tail);
        if let Some((where_, by)) = flip {
            let i = ((bytes.len() as f64) * where_) as usize;
            if let Some(b) = bytes.get_mut(i) {
                *b ^= by;
            }
        }
        let Ok(folded) = changes::read(&bytes) else {
            return Ok(());
        };
        // What was read reads again the same, whole, from its own bytes.
        let again = changes::read(&bytes[..folded.valid]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again.record, &folded.record);
        prop_assert_eq!(again.ignored, None);
        prop_assert_eq!(folded.ignored.is_some(), folded.valid < bytes.len());
        // Cut only: exactly the lines wholly before the cut.
        if tail.is_empty() && flip.is_none() {
            let lines = ends.iter().filter(|end| **end <= at).count();
            prop_assert!(lines >= 1);
            prop_assert_eq!(folded.valid, ends[lines - 1]);
            let mut expected = header.clone();
            for change in &changes[..lines - 1] {
                expected.apply(change);
            }
            prop_assert_eq!(folded.record, expected);
        }
    }

    /// A record reads back as it was written.
    #[test]
    fn journal_records_round_trip(record in job_record()) {
        prop_assert_eq!(JobRecord::parse(&record.to_bytes()), Ok(record));
    }

    /// Any bytes, any JSON, any record cut short: a typed error or a
    /// record, never a panic; a torn record is never taken for a whole one.
    #[test]
    fn broken_journal_files_are_typed_errors(record in job_record(), v in json_value(),
                                             bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                             cut in 0.0f64..1.0) {
        let _ = JobRecord::parse(&bytes);
        let _ = JobRecord::parse(v.to_string().as_bytes());
        let whole = record.to_bytes();
        let at = ((whole.len() as f64) * cut) as usize;
        // A prefix that still parses must be the record (only trailing
        // whitespace was cut).
        if let Ok(parsed) = JobRecord::parse(&whole[..at]) {
            prop_assert_eq!(parsed, record);
        }
    }

    /// comin's store: any JSON is a deployment or a typed error; among
    /// valid deployments the newest by time is chosen.
    #[test]
    fn comin_stores_name_their_newest_deployment(v in json_value(),
                                                 deployments in proptest::collection::vec(("[0-9a-f]{40}", proptest::option::of(instant()), proptest::option::of(instant())), 1..6)) {
        let _ = newest_deployment(v.to_string().as_bytes());
        let _ = newest_deployment(serde_json::json!({"deployments": [v]}).to_string().as_bytes());
        let store = serde_json::json!({"deployments": deployments.iter().map(|(commit, started, ended)| {
            let mut d = serde_json::json!({"generation": {"selected_commit_id": commit}, "status": "done"});
            if let Some(t) = started { d["started_at"] = Value::from(t.to_string()); }
            if let Some(t) = ended { d["ended_at"] = Value::from(t.to_string()); }
            d
        }).collect::<Vec<_>>()});
        let newest = newest_deployment(store.to_string().as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let latest = deployments.iter().map(|(_, s, e)| e.or(*s)).max().flatten();
        prop_assert_eq!(newest.when(), latest);
    }
}

// ------------------------------------------------------------ escaping

/// Characters a hostile program would print, often: every control
/// character, the line breaks Unicode knows, bidirectional controls,
/// backslashes and what escapes are made of; and any character at all.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).expect("C0")),
        1 => (0x7fu32..0xa0).prop_map(|c| char::from_u32(c).expect("DEL and C1")),
        2 => proptest::sample::select(vec![
            '\\', '\n', '\r', '\0', '\x1b', 'x', 'u', '{', '}', '0', '1', 'b',
            '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{fffd}',
        ]),
        2 => proptest::char::range(' ', '~'),
    ]
}

fn hostile_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(hostile_char(), 0..80).prop_map(|cs| cs.into_iter().collect())
}

/// What an operator's terminal or a journal viewer could take for a line
/// break, a control sequence or a reordering of what it shows.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

proptest! {
    #![proptest_config(config())]

    /// Any text escapes to one line of safe characters, and back.
    #[test]
    fn escaped_text_is_one_safe_line_and_unambiguous(text in hostile_text(), other in hostile_text()) {
        let escaped = escape(&text);
        prop_assert!(!escaped.chars().any(unsafe_char), "{:?}", escaped);
        prop_assert_eq!(escaped.lines().count(), usize::from(!escaped.is_empty()));
        prop_assert_eq!(unescape(&escaped), Some(text.clone()));
        prop_assert_eq!(escaped.chars().count(), text.chars().map(escaped_width).sum::<usize>());
        if text != other {
            prop_assert_ne!(escaped, escape(&other));
        }
    }

    /// Any bytes: invalid UTF-8 replaced, then escaped the same way.
    #[test]
    fn escaped_bytes_are_one_safe_line(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let escaped = escape_bytes(&bytes);
        prop_assert!(!escaped.chars().any(unsafe_char), "{:?}", escaped);
        prop_assert!(!escaped.bytes().any(|b| b.is_ascii_control()));
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert_eq!(unescape(&escaped), Some(lossy));
        if let Ok(text) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(escaped, escape(text));
        }
    }

    /// Any output: its summary takes at most SUMMARY_CHARS once escaped, is
    /// the end of the output's lines (cut between characters, marked "…"),
    /// and is the whole of them when they fit; its detail is the end of it
    /// in at most DETAIL_CHARS characters.
    #[test]
    fn summaries_and_details_keep_the_end_within_their_bound(
        text in proptest::collection::vec(hostile_char(), 0..600).prop_map(|cs| cs.into_iter().collect::<String>()),
        repeat in 1usize..12,
    ) {
        let text = text.repeat(repeat);
        let folded = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        let s = summary(&text);
        prop_assert!(escape(&s).chars().count() <= SUMMARY_CHARS, "{:?}", s);
        match s.strip_prefix('…') {
            Some(end) if s != folded => {
                prop_assert!(folded.ends_with(end));
                prop_assert!(escape(&folded).chars().count() > SUMMARY_CHARS);
            }
            _ => prop_assert_eq!(&s, &folded),
        }
        let d = detail(&text);
        prop_assert!(d.chars().count() <= DETAIL_CHARS);
        match d.strip_prefix('…') {
            Some(end) if d != text => prop_assert!(text.ends_with(end)),
            _ => prop_assert_eq!(&d, &text),
        }
    }

    /// Printable ASCII without a backslash is shown as it is.
    #[test]
    fn plain_text_is_unchanged(text in "[ -\\[\\]-~]{0,80}") {
        prop_assert_eq!(escape(&text), text);
    }

    /// Whatever a message holds: one stderr line starting with ours, a
    /// journal MESSAGE without a control character, an event message
    /// without one.
    #[test]
    fn log_lines_and_event_messages_stay_one_line(text in hostile_text()) {
        let fields = LogFields { node: Some("node-a"), user: Some("acme"), ..LogFields::default() };
        let message = format!("Activation failed for acme (exit code 1): {text}");
        let line = stderr_line(Level::Error, &fields, &message);
        prop_assert!(line.starts_with("hostenv-activate: error node=node-a user=acme: "));
        let body = line.strip_suffix('\n').expect("ends with a newline");
        prop_assert!(!body.chars().any(unsafe_char), "{:?}", line);

        let datagram = journal_datagram(Level::Error, &fields, &message);
        let value = datagram
            .strip_prefix(b"MESSAGE=")
            .and_then(|rest| rest.split(|b| *b == b'\n').next())
            .expect("MESSAGE first, in the NAME=value form");
        let value = std::str::from_utf8(value).expect("UTF-8");
        prop_assert!(!value.chars().any(unsafe_char), "{:?}", value);
        prop_assert_eq!(unescape(value), Some(message.clone()));

        let event = NodeEvent::new(NodeName::parse("node-a").expect("name"), Status::Failed, Phase::Activate, &message, None);
        prop_assert!(!event.message.chars().any(unsafe_char), "{:?}", event.message);
        prop_assert_eq!(unescape(&event.message), Some(message));
    }
}
