//! Step lines where an operator looks: always stderr (comin keeps it only at
//! debug level), and the systemd journal when its socket is there, with the
//! run's context as structured `HOSTENV_*` fields. The message is escaped
//! here, at the sink ([`crate::model::text::escape`]): it may carry a user's
//! text, and our own messages hold no control character, so this one place
//! keeps every line one line.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::model::text::{escape, push_escaped};
use crate::ports::{Level, Log, LogFields, MessageId};

/// Where journald listens for native-protocol datagrams.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

const IDENTIFIER: &str = "hostenv-activate";

/// A journal message longer than this (in bytes, escaped) is cut (stderr
/// keeps the whole line).
const MAX_JOURNAL_MESSAGE: usize = 48 * 1024;

/// Logs to stderr and, best effort, to the journal.
#[derive(Debug)]
pub struct Logger {
    journal: Option<(UnixDatagram, PathBuf)>,
}

impl Logger {
    /// Logs to stderr, and to the journal at `journal_socket` if that socket
    /// exists now. Production passes [`JOURNAL_SOCKET`].
    pub fn new(journal_socket: impl AsRef<Path>) -> Self {
        let path = journal_socket.as_ref();
        let journal = if path.exists() {
            UnixDatagram::unbound()
                .ok()
                .map(|sock| (sock, path.to_path_buf()))
        } else {
            None
        };
        Logger { journal }
    }

    /// Logs to stderr and the system journal.
    pub fn system() -> Self {
        Self::new(JOURNAL_SOCKET)
    }

    /// Whether lines also go to the journal.
    pub fn has_journal(&self) -> bool {
        self.journal.is_some()
    }
}

impl Log for Logger {
    fn line(&self, level: Level, fields: &LogFields<'_>, message: &str) {
        let line = stderr_line(level, fields, message);
        // Nothing sensible to do if stderr is gone; never fail the run over it.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        if let Some((sock, path)) = &self.journal {
            // Best effort: a full or vanished journal must not fail the run.
            let _ = sock.send_to(&journal_datagram(level, fields, message), path);
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn priority(level: Level) -> &'static str {
    match level {
        Level::Info => "6",
        Level::Warn => "4",
        Level::Error => "3",
    }
}

/// The fields that are set, as (short name, journal field, value).
fn set_fields<'a>(fields: &LogFields<'a>) -> Vec<(&'static str, &'static str, &'a str)> {
    [
        ("node", "HOSTENV_NODE", fields.node),
        ("job", "HOSTENV_JOB", fields.job),
        ("sha", "HOSTENV_SHA", fields.sha),
        ("op", "HOSTENV_OP", fields.op),
        ("user", "HOSTENV_USER", fields.user),
        ("unit", "HOSTENV_UNIT", fields.unit),
        ("key", "HOSTENV_KEY", fields.key),
        ("status", "HOSTENV_STATUS", fields.status),
    ]
    .into_iter()
    .filter_map(|(short, journal, value)| value.map(|v| (short, journal, v)))
    .collect()
}

/// `hostenv-activate: <level> node=.. job=..: <message>\n`, the message
/// escaped: exactly one line whatever it holds.
pub fn stderr_line(level: Level, fields: &LogFields<'_>, message: &str) -> String {
    let mut line = format!("{IDENTIFIER}: {}", level_name(level));
    for (short, _, value) in set_fields(fields) {
        line.push_str(&format!(" {short}={value}"));
    }
    line.push_str(": ");
    line.push_str(&escape(message));
    line.push('\n');
    line
}

/// One journald native-protocol datagram, its `MESSAGE` escaped.
pub fn journal_datagram(level: Level, fields: &LogFields<'_>, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    push_field(
        &mut out,
        "MESSAGE",
        &escaped_head(message, MAX_JOURNAL_MESSAGE),
    );
    push_field(&mut out, "PRIORITY", priority(level));
    push_field(&mut out, "SYSLOG_IDENTIFIER", IDENTIFIER);
    if let Some(MessageId(id)) = fields.message_id {
        push_field(&mut out, "MESSAGE_ID", id);
    }
    for (_, name, value) in set_fields(fields) {
        push_field(&mut out, name, value);
    }
    out
}

/// `NAME=value\n`, or the length-prefixed form when the value has a newline.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// `s` escaped, cut to at most `max` bytes between two escaped characters
/// (never inside an escape sequence).
fn escaped_head(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let before = out.len();
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(before);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> LogFields<'static> {
        LogFields {
            node: Some("node-a"),
            job: Some("job-1"),
            user: Some("acme"),
            ..LogFields::default()
        }
    }

    #[test]
    fn stderr_line_names_only_the_fields_that_are_set() {
        let line = stderr_line(Level::Warn, &fields(), "it happened");
        assert_eq!(
            line,
            "hostenv-activate: warn node=node-a job=job-1 user=acme: it happened\n"
        );
        let bare = stderr_line(Level::Info, &LogFields::default(), "hello");
        assert_eq!(bare, "hostenv-activate: info: hello\n");
    }

    /// Parses a native-protocol datagram back into (name, value) pairs.
    fn parse(mut data: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = data.iter().position(|b| *b == b'\n').expect("newline");
            let head = &data[..nl];
            if let Some(eq) = head.iter().position(|b| *b == b'=') {
                out.push((
                    String::from_utf8_lossy(&head[..eq]).into_owned(),
                    String::from_utf8_lossy(&head[eq + 1..]).into_owned(),
                ));
                data = &data[nl + 1..];
            } else {
                let name = String::from_utf8_lossy(head).into_owned();
                let rest = &data[nl + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
                let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
                assert_eq!(rest[8 + len], b'\n', "value is followed by a newline");
                out.push((name, value));
                data = &rest[8 + len + 1..];
            }
        }
        out
    }

    /// A datagram socket standing in for journald, and a logger sending to it.
    fn stand_in_journal() -> (tempfile::TempDir, UnixDatagram, Logger) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let logger = Logger::new(&path);
        (dir, server, logger)
    }

    #[test]
    fn lines_reach_a_journal_socket_with_their_fields() {
        let (_dir, server, logger) = stand_in_journal();
        assert!(logger.has_journal());

        logger.line(Level::Error, &fields(), "first line");
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).expect("a datagram arrives");
        let got = parse(&buf[..n]);
        let want: Vec<(String, String)> = [
            ("MESSAGE", "first line"),
            ("PRIORITY", "3"),
            ("SYSLOG_IDENTIFIER", "hostenv-activate"),
            ("HOSTENV_NODE", "node-a"),
            ("HOSTENV_JOB", "job-1"),
            ("HOSTENV_USER", "acme"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);

        logger.line(Level::Info, &LogFields::default(), "plain");
        let n = server.recv(&mut buf).expect("a second datagram");
        let got = parse(&buf[..n]);
        assert!(got.contains(&("MESSAGE".into(), "plain".into())));
        assert!(got.contains(&("PRIORITY".into(), "6".into())));
    }

    /// What a hostile program prints to forge a line of ours.
    const FORGED: &str = "ok\nhostenv-activate: info node=x: forged success\r\x1b[2J\0";

    fn has_control(s: &str) -> bool {
        s.chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    }

    #[test]
    fn a_forged_line_stays_inside_one_line() {
        let line = stderr_line(Level::Error, &fields(), &format!("failed: {FORGED}"));
        assert_eq!(
            line,
            "hostenv-activate: error node=node-a job=job-1 user=acme: failed: ok\\nhostenv-activate: info node=x: forged success\\r\\x1b[2J\\0\n"
        );
        assert_eq!(line.lines().count(), 1, "{line:?}");
        assert!(!has_control(line.trim_end_matches('\n')), "{line:?}");

        let (_dir, server, logger) = stand_in_journal();
        logger.line(Level::Error, &fields(), &format!("failed: {FORGED}"));
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).expect("a datagram arrives");
        let got = parse(&buf[..n]);
        let message = got
            .iter()
            .find(|(k, _)| k == "MESSAGE")
            .map(|(_, v)| v.clone())
            .expect("a MESSAGE");
        assert!(!has_control(&message), "{message:?}");
        assert_eq!(
            message,
            "failed: ok\\nhostenv-activate: info node=x: forged success\\r\\x1b[2J\\0"
        );
        // Escaped, the message travels in the plain `NAME=value` form.
        let datagram = &buf[..n];
        assert!(
            datagram.starts_with(b"MESSAGE=failed: ok\\n"),
            "{datagram:?}"
        );
        assert!(!datagram[..datagram.len() - 1]
            .split(|b| *b == b'\n')
            .any(|field| field.iter().any(|b| b.is_ascii_control())));
    }

    #[test]
    fn a_long_journal_message_is_cut_between_escapes() {
        let long = format!("x{}", "\x1b".repeat(MAX_JOURNAL_MESSAGE));
        let head = escaped_head(&long, MAX_JOURNAL_MESSAGE);
        assert!(head.len() <= MAX_JOURNAL_MESSAGE);
        assert!(head.len() > MAX_JOURNAL_MESSAGE - 4);
        assert!(head.ends_with("\\x1b"), "{}", &head[head.len() - 8..]);
        assert_eq!(escaped_head("short\n", MAX_JOURNAL_MESSAGE), "short\\n");
    }

    #[test]
    fn a_missing_or_dead_journal_never_fails_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = Logger::new(dir.path().join("nope.sock"));
        assert!(!missing.has_journal());
        missing.line(Level::Info, &fields(), "still goes to stderr");

        let path = dir.path().join("gone.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let logger = Logger::new(&path);
        drop(server);
        std::fs::remove_file(&path).expect("remove socket");
        logger.line(Level::Warn, &fields(), "journal vanished");
    }

    #[test]
    fn message_ids_reach_the_journal_socket() {
        let (_dir, server, logger) = stand_in_journal();
        for (_, id) in MessageId::ALL {
            let fields = LogFields {
                sha: Some("abc"),
                status: Some("failed"),
                message_id: Some(id),
                ..fields()
            };
            logger.line(Level::Error, &fields, "something ended");
            let mut buf = vec![0u8; 65536];
            let n = server.recv(&mut buf).expect("a datagram");
            let got = parse(&buf[..n]);
            assert!(got.contains(&("MESSAGE_ID".into(), id.0.into())), "{got:?}");
            assert!(
                got.contains(&("HOSTENV_SHA".into(), "abc".into())),
                "{got:?}"
            );
            assert!(
                got.contains(&("HOSTENV_STATUS".into(), "failed".into())),
                "{got:?}"
            );
        }
        let ids: std::collections::BTreeSet<&str> =
            MessageId::ALL.iter().map(|(_, id)| id.0).collect();
        assert_eq!(ids.len(), 4, "distinct");
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
