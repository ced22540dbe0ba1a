//! restic's `snapshots --json` read as a stream: bytes in any chunks, one
//! byte at a time through a small JSON state machine that hands each
//! snapshot to the [`Decision`] and keeps nothing else. Memory does not
//! grow with the list, with a string (an `id` or `time` is kept up to a few
//! dozen bytes; longer ones only counted) or with the nesting (at most
//! [`MAX_DEPTH`] levels, one bit each). serde_json's `StreamDeserializer`
//! reads a sequence of documents, not the elements inside one array, hence
//! this hand-written one.
//!
//! Text around the array is tolerated as `extract_snapshot_json` used to:
//! a wrapper may print lines before (or after) restic's JSON on stdout.
//! Every line whose first non-blank character is `[` starts a candidate
//! array; a candidate that is not valid JSON, or is followed by more text on
//! the line where it ends, is dropped. The answer is the last candidate that
//! ended as complete JSON (restic prints one line, so that is its line).
//! At most [`MAX_CANDIDATES`] are followed at once: the oldest and the
//! newest ones are kept. A lone `[` line opens a candidate that swallows the
//! array after it, which is then still found as its own candidate.

use jiff::Timestamp;

use super::{Decision, IdField, Snapshot, SnapshotError, TimeField, ID_LEN, MAX_TIME_LEN};

/// Deepest nesting of arrays and objects accepted (serde_json's limit too).
const MAX_DEPTH: u32 = 128;
/// Candidate arrays followed at once.
const MAX_CANDIDATES: usize = 4;
/// Bytes of an object key kept: enough to tell `time` and `id` apart from
/// anything else.
const KEY_KEPT: usize = 8;

/// Reads `restic snapshots --json` as it arrives and picks the snapshot
/// this run made, exactly as [`super::pick_snapshot`] would from the whole
/// document.
#[derive(Debug)]
pub struct SnapshotStream {
    not_before: Timestamp,
    /// Only blanks since the last newline (or the start).
    at_line_start: bool,
    /// Bytes fed so far, for messages.
    offset: u64,
    candidates: Vec<Candidate>,
    /// The decision of the last candidate that ended as complete JSON.
    answer: Option<Result<Snapshot, SnapshotError>>,
    /// Why the last candidate was dropped.
    last_error: Option<String>,
}

impl SnapshotStream {
    pub fn new(not_before: Timestamp) -> Self {
        SnapshotStream {
            not_before,
            at_line_start: true,
            offset: 0,
            candidates: Vec::with_capacity(MAX_CANDIDATES),
            answer: None,
            last_error: None,
        }
    }

    /// The next bytes of restic's stdout, cut anywhere.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// The decision, once stdout has ended.
    pub fn finish(mut self) -> Result<Snapshot, SnapshotError> {
        for candidate in std::mem::take(&mut self.candidates) {
            if candidate.state == State::Ended {
                self.answer = Some(candidate.decision.finish());
            } else {
                self.last_error = Some(format!(
                    "the output ended inside the JSON array (after {} bytes)",
                    self.offset
                ));
            }
        }
        self.answer.unwrap_or_else(|| {
            Err(SnapshotError::Malformed(self.last_error.unwrap_or_else(
                || "no JSON array in restic's output".to_owned(),
            )))
        })
    }

    fn byte(&mut self, b: u8) {
        let mut i = 0;
        while i < self.candidates.len() {
            match self.candidates[i].byte(b) {
                Ok(Step::Going) => i += 1,
                Ok(Step::Complete) => {
                    let done = self.candidates.remove(i);
                    self.answer = Some(done.decision.finish());
                }
                Err(why) => {
                    self.candidates.remove(i);
                    self.last_error = Some(format!("{why} at byte {}", self.offset));
                }
            }
        }
        if self.at_line_start && b == b'[' {
            if self.candidates.len() == MAX_CANDIDATES {
                // Keep the oldest (maybe a multi-line array) and the newest.
                self.candidates.remove(1);
            }
            self.candidates.push(Candidate::new(self.not_before));
        }
        match b {
            b'\n' => self.at_line_start = true,
            b' ' | b'\t' | b'\r' => {}
            _ => self.at_line_start = false,
        }
        self.offset += 1;
    }
}

/// What a candidate says after a byte.
enum Step {
    Going,
    /// Its array and the rest of its line ended: its decision stands.
    Complete,
}

/// Where a value being read belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// An element of the top-level array: a snapshot.
    Snapshot,
    /// The `time` of the snapshot being read.
    Time,
    /// Its `id`.
    Id,
    /// Anything else: checked as JSON, not kept.
    Other,
}

/// A member of a snapshot object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    Id,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value is expected; `close` allows the container to end instead
    /// (right after `[`).
    Value {
        close: bool,
    },
    /// After a value: `,` or the container's end.
    AfterValue,
    /// An object key is expected; `close` allows `}` (right after `{`).
    Key {
        close: bool,
    },
    Colon,
    Str(Str),
    Number(Num),
    Literal {
        word: Word,
        at: u8,
    },
    /// The top-level array has ended; only blanks may follow on its line.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    True,
    False,
    Null,
}

impl Word {
    fn text(self) -> &'static [u8] {
        match self {
            Word::True => b"true",
            Word::False => b"false",
            Word::Null => b"null",
        }
    }
}

/// Inside a string: what it is for and where its escape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Str {
    /// A key of a snapshot object, or a kept value (time, id).
    kind: StrKind,
    escape: Escape,
    /// A `\uD800`-`\uDBFF` waiting for its low half (kept strings only).
    high: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    SnapshotKey,
    /// A key deeper down: checked, not kept.
    OtherKey,
    Kept(Slot),
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    No,
    Backslash,
    Hex { seen: u8, value: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

/// Text kept from a string, up to a limit; longer text is only counted.
#[derive(Debug)]
struct Kept {
    bytes: Vec<u8>,
    len: usize,
    limit: usize,
}

impl Kept {
    fn new(limit: usize) -> Self {
        Kept {
            bytes: Vec::with_capacity(limit),
            len: 0,
            limit,
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.len = 0;
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.bytes.len() < self.limit {
                self.bytes.push(b);
            }
            self.len += 1;
        }
    }

    fn complete(&self) -> Option<&[u8]> {
        (self.len == self.bytes.len()).then_some(&self.bytes[..])
    }
}

/// The snapshot object being read.
#[derive(Debug)]
struct Element {
    field: Field,
    key: Kept,
    time: Kept,
    id: Kept,
    has_time: bool,
    /// `Some(false)`: `"id": null`.
    has_id: Option<bool>,
}

impl Element {
    fn new() -> Self {
        Element {
            field: Field::Other,
            key: Kept::new(KEY_KEPT),
            time: Kept::new(MAX_TIME_LEN),
            id: Kept::new(ID_LEN),
            has_time: false,
            has_id: None,
        }
    }

    fn reset(&mut self) {
        self.key.clear();
        self.time.clear();
        self.id.clear();
        self.has_time = false;
        self.has_id = None;
    }

    fn id_field(&self) -> IdField {
        match self.has_id {
            None | Some(false) => IdField::Missing,
            Some(true) if self.id.len == 0 => IdField::Missing,
            Some(true) => match self.id.complete() {
                Some(id) if super::is_restic_id(id) => {
                    IdField::Valid(String::from_utf8_lossy(id).into_owned())
                }
                _ => IdField::Invalid { len: self.id.len },
            },
        }
    }
}

/// One candidate array: its JSON state and its own decision.
#[derive(Debug)]
struct Candidate {
    state: State,
    /// Open containers; the top-level array is depth 1.
    depth: u32,
    /// Bit `d - 1` set: the container at depth `d` is an object.
    objects: u128,
    element: Element,
    decision: Decision,
}

type Fault = &'static str;

impl Candidate {
    /// A candidate that has just read its opening `[`.
    fn new(not_before: Timestamp) -> Self {
        Candidate {
            state: State::Value { close: true },
            depth: 1,
            objects: 0,
            element: Element::new(),
            decision: Decision::new(not_before),
        }
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1u128 << (self.depth - 1)) != 0
    }

    fn byte(&mut self, b: u8) -> Result<Step, Fault> {
        match self.state {
            State::Str(s) => self.string(s, b).map(|()| Step::Going),
            State::Number(n) => match next_num(n, b) {
                Some(n) => {
                    self.state = State::Number(n);
                    Ok(Step::Going)
                }
                None if matches!(n, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) => {
                    self.value_done();
                    self.structural(b)
                }
                None => Err("invalid number"),
            },
            State::Literal { word, at } => {
                let text = word.text();
                if text.get(usize::from(at)) != Some(&b) {
                    return Err("invalid literal");
                }
                if usize::from(at) + 1 == text.len() {
                    self.value_done();
                } else {
                    self.state = State::Literal { word, at: at + 1 };
                }
                Ok(Step::Going)
            }
            _ => self.structural(b),
        }
    }

    /// A byte between tokens.
    fn structural(&mut self, b: u8) -> Result<Step, Fault> {
        if self.state == State::Ended {
            return match b {
                b' ' | b'\t' | b'\r' => Ok(Step::Going),
                b'\n' => Ok(Step::Complete),
                _ => Err("text after the JSON array"),
            };
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            return Ok(Step::Going);
        }
        match self.state {
            State::Value { close } => {
                if close && b == b']' && !self.in_object() {
                    return self.close(b);
                }
                self.value_start(b)?;
            }
            State::AfterValue => match b {
                b',' if self.in_object() => self.state = State::Key { close: false },
                b',' => self.state = State::Value { close: false },
                b']' | b'}' => return self.close(b),
                _ => return Err("expected `,` or the end of a container"),
            },
            State::Key { close } => match b {
                b'"' => {
                    let kind = if self.depth == 2 {
                        self.element.key.clear();
                        StrKind::SnapshotKey
                    } else {
                        StrKind::OtherKey
                    };
                    self.state = State::Str(Str {
                        kind,
                        escape: Escape::No,
                        high: None,
                    });
                }
                b'}' if close => return self.close(b),
                _ => return Err("expected an object key"),
            },
            State::Colon => {
                if b != b':' {
                    return Err("expected `:`");
                }
                self.state = State::Value { close: false };
            }
            // Read by `byte` before it gets here.
            State::Ended | State::Str(_) | State::Number(_) | State::Literal { .. } => {
                return Err("unexpected state");
            }
        }
        Ok(Step::Going)
    }

    /// Where the value starting now belongs.
    fn slot(&self) -> Slot {
        match (self.depth, self.element.field) {
            (1, _) => Slot::Snapshot,
            (2, Field::Time) if self.in_object() => Slot::Time,
            (2, Field::Id) if self.in_object() => Slot::Id,
            _ => Slot::Other,
        }
    }

    fn value_start(&mut self, b: u8) -> Result<(), Fault> {
        let slot = self.slot();
        match (slot, b) {
            (Slot::Snapshot, b'{') => self.element.reset(),
            (Slot::Snapshot, _) => {
                let n = self.decision_count();
                self.decision
                    .malformed(|| format!("snapshot {n} of the list is not an object"));
            }
            (Slot::Time, b'"') => {
                self.element.has_time = true;
                self.element.time.clear();
            }
            (Slot::Time, _) => self
                .decision
                .malformed(|| "a snapshot time is not a string".to_owned()),
            (Slot::Id, b'"') => {
                self.element.has_id = Some(true);
                self.element.id.clear();
            }
            (Slot::Id, b'n') => self.element.has_id = Some(false),
            (Slot::Id, _) => self
                .decision
                .malformed(|| "a snapshot id is not a string".to_owned()),
            (Slot::Other, _) => {}
        }
        match b {
            b'{' | b'[' => {
                if self.depth >= MAX_DEPTH {
                    return Err("JSON nested too deeply");
                }
                self.depth += 1;
                let bit = 1u128 << (self.depth - 1);
                if b == b'{' {
                    self.objects |= bit;
                    self.state = State::Key { close: true };
                } else {
                    self.objects &= !bit;
                    self.state = State::Value { close: true };
                }
            }
            b'"' => {
                let kind = match slot {
                    Slot::Time | Slot::Id => StrKind::Kept(slot),
                    _ => StrKind::Skipped,
                };
                self.state = State::Str(Str {
                    kind,
                    escape: Escape::No,
                    high: None,
                });
            }
            b'-' => self.state = State::Number(Num::Minus),
            b'0' => self.state = State::Number(Num::Zero),
            b'1'..=b'9' => self.state = State::Number(Num::Int),
            b't' => {
                self.state = State::Literal {
                    word: Word::True,
                    at: 1,
                }
            }
            b'f' => {
                self.state = State::Literal {
                    word: Word::False,
                    at: 1,
                }
            }
            b'n' => {
                self.state = State::Literal {
                    word: Word::Null,
                    at: 1,
                }
            }
            _ => return Err("expected a JSON value"),
        }
        Ok(())
    }

    /// Snapshots handed to the decision so far plus one: the number of the
    /// one being read, for messages.
    fn decision_count(&self) -> u64 {
        self.decision.listed + 1
    }

    /// `]` or `}` where a container may end.
    fn close(&mut self, b: u8) -> Result<Step, Fault> {
        let object = self.in_object();
        if (b == b'}') != object {
            return Err("mismatched bracket");
        }
        if object && self.depth == 2 {
            self.snapshot_done();
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.state = State::Ended;
        } else {
            self.value_done();
        }
        Ok(Step::Going)
    }

    /// A value (scalar or container) has ended.
    fn value_done(&mut self) {
        self.state = State::AfterValue;
    }

    /// The snapshot object being read has ended.
    fn snapshot_done(&mut self) {
        let element = &self.element;
        if !element.has_time {
            return self
                .decision
                .malformed(|| "a snapshot has no `time`".to_owned());
        }
        let id = element.id_field();
        match element.time.complete().map(std::str::from_utf8) {
            Some(Ok(text)) => self.decision.snapshot(TimeField::Text(text), id),
            _ => self.decision.snapshot(
                TimeField::Unusable {
                    len: element.time.len,
                },
                id,
            ),
        }
    }

    /// A key of a snapshot object has been read.
    fn key_done(&mut self) -> Result<(), Fault> {
        let field = match self.element.key.complete() {
            Some(b"time") => Field::Time,
            Some(b"id") => Field::Id,
            _ => Field::Other,
        };
        let duplicate = match field {
            Field::Time => self.element.has_time,
            Field::Id => self.element.has_id.is_some(),
            Field::Other => false,
        };
        if duplicate {
            self.decision
                .malformed(|| "a snapshot has a duplicate field".to_owned());
        }
        self.element.field = field;
        self.state = State::Colon;
        Ok(())
    }

    fn keep(&mut self, kind: StrKind, bytes: &[u8]) {
        match kind {
            StrKind::SnapshotKey => self.element.key.push(bytes),
            StrKind::Kept(Slot::Time) => self.element.time.push(bytes),
            StrKind::Kept(_) => self.element.id.push(bytes),
            StrKind::OtherKey | StrKind::Skipped => {}
        }
    }

    fn string(&mut self, mut s: Str, b: u8) -> Result<(), Fault> {
        let decoding = matches!(s.kind, StrKind::SnapshotKey | StrKind::Kept(_));
        match s.escape {
            Escape::No => {
                if s.high.is_some() && b != b'\\' {
                    return Err("lone surrogate in a \\u escape");
                }
                match b {
                    b'"' => {
                        match s.kind {
                            StrKind::SnapshotKey => return self.key_done(),
                            StrKind::OtherKey => {
                                self.state = State::Colon;
                                return Ok(());
                            }
                            StrKind::Kept(_) | StrKind::Skipped => {}
                        }
                        self.value_done();
                        return Ok(());
                    }
                    b'\\' => s.escape = Escape::Backslash,
                    0x00..=0x1f => return Err("control character in a string"),
                    _ => self.keep(s.kind, &[b]),
                }
            }
            Escape::Backslash => {
                if s.high.is_some() && b != b'u' {
                    return Err("lone surrogate in a \\u escape");
                }
                let plain = match b {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        s.escape = Escape::Hex { seen: 0, value: 0 };
                        self.state = State::Str(s);
                        return Ok(());
                    }
                    _ => return Err("invalid escape in a string"),
                };
                self.keep(s.kind, &[plain]);
                s.escape = Escape::No;
            }
            Escape::Hex { seen, value } => {
                let digit = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    b'A'..=b'F' => b - b'A' + 10,
                    _ => return Err("invalid \\u escape"),
                };
                let value = value << 4 | u16::from(digit);
                if seen < 3 {
                    s.escape = Escape::Hex {
                        seen: seen + 1,
                        value,
                    };
                } else {
                    s.escape = Escape::No;
                    if decoding {
                        self.code_unit(&mut s, value)?;
                    }
                }
            }
        }
        self.state = State::Str(s);
        Ok(())
    }

    /// A `\uXXXX` of a kept string, surrogate pairs joined.
    fn code_unit(&mut self, s: &mut Str, unit: u16) -> Result<(), Fault> {
        let code = match (s.high.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                s.high = Some(unit);
                return Ok(());
            }
            (None, 0xDC00..=0xDFFF) => return Err("lone surrogate in a \\u escape"),
            (None, unit) => u32::from(unit),
            (Some(high), 0xDC00..=0xDFFF) => {
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00)
            }
            (Some(_), _) => return Err("lone surrogate in a \\u escape"),
        };
        let c = char::from_u32(code).ok_or("invalid \\u escape")?;
        let mut buf = [0; 4];
        self.keep(s.kind, c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }
}

/// The number state after `b`, or `None` when `b` does not continue it.
fn next_num(n: Num, b: u8) -> Option<Num> {
    let digit = b.is_ascii_digit();
    Some(match (n, b) {
        (Num::Minus, b'0') => Num::Zero,
        (Num::Minus, _) if digit => Num::Int,
        (Num::Int, _) if digit => Num::Int,
        (Num::Zero | Num::Int, b'.') => Num::Dot,
        (Num::Dot | Num::Frac, _) if digit => Num::Frac,
        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
        (Num::Exp, b'+' | b'-') => Num::ExpSign,
        (Num::Exp | Num::ExpSign | Num::ExpDigits, _) if digit => Num::ExpDigits,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::pick_snapshot;
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn id(c: char) -> String {
        c.to_string().repeat(ID_LEN)
    }

    /// `text` through a stream in chunks of `size` bytes.
    fn streamed(
        text: &[u8],
        size: usize,
        not_before: Timestamp,
    ) -> Result<Snapshot, SnapshotError> {
        let mut stream = SnapshotStream::new(not_before);
        for chunk in text.chunks(size) {
            stream.feed(chunk);
        }
        stream.finish()
    }

    const START: &str = "2026-11-21T23:00:00Z";

    fn list() -> String {
        format!(
            r#"[{{"time":"2026-11-21T23:31:25.26Z","tree":"f0","paths":["/a"],"tags":["k"],"id":"{}","short_id":"aaaaaaaa"}},{{"time":"2026-11-21T18:31:25.97-05:00","parent":"x","id":"{}","tags":["k",{{"nested":[1,-2.5e+3,true,null,"\u00e9\ud83d\ude00"]}}]}}]"#,
            id('a'),
            id('b')
        )
    }

    #[test]
    fn any_chunking_gives_the_whole_document_answer() {
        let json = list();
        let want = pick_snapshot(&json, ts(START));
        assert_eq!(want.as_ref().map(|s| s.id.clone()), Ok(id('b')));
        for size in [1, 2, 3, 7, 64, json.len()] {
            assert_eq!(streamed(json.as_bytes(), size, ts(START)), want, "{size}");
        }
    }

    #[test]
    fn the_recorded_restic_fixtures() {
        let read = |name: &str| {
            std::fs::read(format!(
                "{}/fixtures/restic/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("fixture")
        };
        let start = ts("2026-11-22T00:00:00Z");
        let mixed = streamed(&read("snapshots-mixed-offsets.json"), 5, start).expect("pick");
        assert_eq!(
            mixed.id,
            "bab8cd6748aac1ef77dad6147509d45b2c446bb317dfd0bc17da190faaf7aa82"
        );
        assert_eq!(
            streamed(&read("snapshots-empty.json"), 1, start),
            Err(SnapshotError::Empty)
        );
        let cut = streamed(&read("snapshots-truncated.json"), 3, start);
        assert!(
            matches!(&cut, Err(SnapshotError::Malformed(why)) if why.contains("ended inside")),
            "{cut:?}"
        );
    }

    #[test]
    fn lines_around_the_array_are_skipped() {
        let json = list();
        let start = ts(START);
        for text in [
            format!("warning: cache is old\n{json}\n"),
            format!("[notice] starting\n  {json}\n[stale] lock\nbye ]\n"),
            format!("[\n{json}\n"),
            format!("[1,\n[\n[ x\n{json}\n"),
            format!("{json}\n[1, 2\n"),
        ] {
            assert_eq!(
                streamed(text.as_bytes(), 4, start).map(|s| s.id),
                Ok(id('b')),
                "{text}"
            );
        }
        // A later line that is JSON wins, as the last JSON line always did.
        let later = format!("{json}\n[]\n");
        assert_eq!(
            streamed(later.as_bytes(), 4, start),
            Err(SnapshotError::Empty)
        );
        for bad in [
            "",
            "garbage",
            "[",
            "[{\"time\": 1}] trailing",
            &format!("x {json}"),
        ] {
            assert!(
                matches!(
                    streamed(bad.as_bytes(), 3, start),
                    Err(SnapshotError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_strings_are_counted_not_kept() {
        let start = ts(START);
        let mut stream = SnapshotStream::new(start);
        stream.feed(br#"[{"time":"2026-11-22T00:00:00Z","note":""#);
        let filler = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            stream.feed(&filler);
        }
        stream.feed(br#"","id":""#);
        for _ in 0..8 {
            stream.feed(&filler);
        }
        let kept: usize = stream
            .candidates
            .iter()
            .map(|c| c.element.id.bytes.capacity() + c.element.time.bytes.capacity())
            .sum();
        assert!(kept <= 2 * (ID_LEN + MAX_TIME_LEN), "{kept}");
        stream.feed(br#""}]"#);
        assert_eq!(
            stream.finish(),
            Err(SnapshotError::InvalidId {
                time: ts("2026-11-22T00:00:00Z"),
                len: 8 << 20
            })
        );
    }

    #[test]
    fn ids_and_times_are_checked() {
        let start = ts(START);
        let time = ts("2026-11-22T00:00:00Z");
        let one = |id: &str| format!(r#"[{{"time":"2026-11-22T00:00:00Z","id":{id}}}]"#);
        assert_eq!(
            streamed(one(r#""/etc/passwd""#).as_bytes(), 2, start),
            Err(SnapshotError::InvalidId { time, len: 11 })
        );
        assert_eq!(
            streamed(one(r#""""#).as_bytes(), 2, start),
            Err(SnapshotError::MissingId { time })
        );
        assert_eq!(
            streamed(one("null").as_bytes(), 2, start),
            Err(SnapshotError::MissingId { time })
        );
        let escaped = format!("\"\\u0061{}\"", "a".repeat(ID_LEN - 1));
        assert_eq!(
            streamed(one(&escaped).as_bytes(), 2, start).map(|s| s.id),
            Ok(id('a'))
        );
        for bad in ["1", "[]", r#""a","id":"b""#, r#""\ud800""#] {
            assert!(
                matches!(
                    streamed(one(bad).as_bytes(), 2, start),
                    Err(SnapshotError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let long_time = format!(r#"[{{"time":"{}","id":"{}"}}]"#, "9".repeat(100), id('c'));
        assert!(matches!(
            streamed(long_time.as_bytes(), 9, start),
            Err(SnapshotError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_without_growing() {
        let deep = format!("[{}", "[".repeat(10_000));
        let got = streamed(deep.as_bytes(), 100, ts(START));
        assert!(matches!(got, Err(SnapshotError::Malformed(_))), "{got:?}");
    }
}
