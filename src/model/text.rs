//! Text from an environment's user (program output, bus error texts, unit
//! properties, file names) made safe to show an operator: it can never
//! start a log line of its own, move a terminal's cursor or reorder what is
//! shown ("Truthful logs" in behaviour.md). One function, [`escape`], used
//! by every sink that shows such text (log lines, event messages, the text
//! of `status` and `doctor`).
//!
//! The escaped form, one rule per character:
//!
//! | character                                    | written as          |
//! |----------------------------------------------|---------------------|
//! | `\` (so that the escaping is unambiguous)     | `\\`                |
//! | LF, CR, TAB, NUL                             | `\n` `\r` `\t` `\0` |
//! | any other C0 control (ESC ...), and DEL      | `\x1b`, `\x7f` ...  |
//! | C1 controls U+0080..U+009F (NEL ...)         | `\u{85}` ...        |
//! | line and paragraph separators U+2028, U+2029 | `\u{2028}` ...      |
//! | bidirectional controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) | `\u{202e}` ... |
//!
//! Everything else stays as it is: printable ASCII without `\` is
//! unchanged, and so is other Unicode text. Hex digits are lowercase. The
//! result holds no control character and no line break of any kind, and
//! [`unescape`] gives the original back. Bytes that are not UTF-8 are first
//! replaced by U+FFFD ([`escape_bytes`]).
//!
//! Such text is also cut to what an event can carry, here and nowhere else:
//! a one-line [`summary`] of at most [`SUMMARY_CHARS`] for a message, a
//! [`detail`] of at most [`DETAIL_CHARS`] for a payload, both keeping the
//! end (where programs usually say what went wrong).

/// How one character is written.
enum Form {
    Plain(char),
    /// `\` followed by this character.
    Short(char),
    /// `\xHH`: C0 controls and DEL.
    Hex(u8),
    /// `\u{H..}`: C1 controls, line separators, bidirectional controls.
    Unicode(u32),
}

fn form(c: char) -> Form {
    match c {
        '\\' => Form::Short('\\'),
        '\n' => Form::Short('n'),
        '\r' => Form::Short('r'),
        '\t' => Form::Short('t'),
        '\0' => Form::Short('0'),
        // C0 and DEL are ASCII: the cast keeps the value.
        '\u{1}'..='\u{1f}' | '\u{7f}' => Form::Hex(c as u8),
        '\u{80}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => Form::Unicode(u32::from(c)),
        _ => Form::Plain(c),
    }
}

/// Whether `c` is written escaped.
pub fn needs_escape(c: char) -> bool {
    !matches!(form(c), Form::Plain(_))
}

/// Appends `c`, escaped, to `out`.
pub fn push_escaped(out: &mut String, c: char) {
    match form(c) {
        Form::Plain(c) => out.push(c),
        Form::Short(c) => {
            out.push('\\');
            out.push(c);
        }
        Form::Hex(b) => out.push_str(&format!("\\x{b:02x}")),
        Form::Unicode(u) => out.push_str(&format!("\\u{{{u:x}}}")),
    }
}

/// How many characters `c` takes once escaped (1 when it is not).
pub fn escaped_width(c: char) -> usize {
    match form(c) {
        Form::Plain(_) => 1,
        Form::Short(_) => 2,
        Form::Hex(_) => 4,
        // `\u{` + hex digits + `}`.
        Form::Unicode(u) => 4 + format!("{u:x}").len(),
    }
}

/// `text` escaped as the module describes.
pub fn escape(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// `bytes` as text (invalid UTF-8 replaced by U+FFFD), escaped.
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes))
}

/// The text [`escape`] was given, or `None` when `escaped` is not something
/// it writes (a raw control character, an unknown or malformed escape).
pub fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    loop {
        let start = escaped.len() - chars.as_str().len();
        let Some(c) = chars.next() else { break };
        if c != '\\' {
            if needs_escape(c) {
                return None;
            }
            out.push(c);
            continue;
        }
        let decoded = match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            '0' => '\0',
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                hex_char(&hex, 2)?
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                hex_char(&hex, 0)?
            }
            _ => return None,
        };
        // Only the form `escape` itself writes for that character.
        let mut again = String::new();
        push_escaped(&mut again, decoded);
        let end = escaped.len() - chars.as_str().len();
        if escaped[start..end] != again {
            return None;
        }
        out.push(decoded);
    }
    Some(out)
}

/// The character of lowercase hex digits `hex` (exactly `len` of them when
/// `len` is not 0).
fn hex_char(hex: &str, len: usize) -> Option<char> {
    let digits_ok = !hex.is_empty()
        && (len == 0 || hex.len() == len)
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !digits_ok {
        return None;
    }
    char::from_u32(u32::from_str_radix(hex, 16).ok()?)
}

/// The most characters an event message's summary of outside text (a
/// program's output, comin's error message) takes, once escaped.
pub const SUMMARY_CHARS: usize = 220;

/// The most characters of a program's output an event's payload carries.
pub const DETAIL_CHARS: usize = 4000;

/// `output` as one line for an event message: lines trimmed and joined
/// with "; ", blank ones dropped, at most [`SUMMARY_CHARS`] once escaped
/// (every event message is, see [`crate::model::NodeEvent::new`]), keeping
/// the end. The cut falls between characters, never inside an escape
/// sequence.
pub fn summary(output: &str) -> String {
    folded(output, SUMMARY_CHARS)
}

/// The end of `output` for an event's payload: at most [`DETAIL_CHARS`]
/// characters.
pub fn detail(output: &str) -> String {
    tail(output, DETAIL_CHARS, |_| 1)
}

/// [`summary`], at most `max` characters once escaped.
fn folded(output: &str, max: usize) -> String {
    let folded = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    tail(&folded, max, escaped_width)
}

/// The end of `s` whose characters take at most `max`, each as wide as
/// `width` says, with a leading "…" (one wide) when cut. The only place
/// text is cut: between characters, never inside one.
fn tail(s: &str, max: usize, width: fn(char) -> usize) -> String {
    if s.chars().map(width).sum::<usize>() <= max {
        return s.to_owned();
    }
    let budget = max.saturating_sub(1);
    let mut used = 0;
    let mut start = s.len();
    for (at, c) in s.char_indices().rev() {
        used += width(c);
        if used > budget {
            break;
        }
        start = at;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_folds_lines_and_keeps_the_end() {
        assert_eq!(summary("a\n\n  b \nc\n"), "a; b; c");
        let long = format!("{}\nERROR: disk full", "x".repeat(500));
        let s = summary(&long);
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.starts_with('…'));
        assert!(s.ends_with("ERROR: disk full"));
    }

    #[test]
    fn a_summarys_bound_holds_once_escaped_and_no_escape_is_cut() {
        // Control characters stay (escaped later, with the whole message).
        assert_eq!(summary("a\rb\x1b[2J\n\0c\n"), "a\rb\x1b[2J; \0c");
        for unit in ["\x1b", "\u{85}", "\\", "é", "x\0"] {
            for max in [0, 1, 2, 5, SUMMARY_CHARS - 1, SUMMARY_CHARS] {
                // Not only blanks at the start: `trim` would drop U+0085 there.
                let long = format!("a{}tail", unit.repeat(300));
                let summary = folded(&long, max);
                let shown = escape(&summary);
                assert!(
                    shown.chars().count() <= max.max(1),
                    "{unit:?} {max}: {shown}"
                );
                assert!(summary.starts_with('…'), "{summary:?}");
                assert!(long.ends_with(&summary['…'.len_utf8()..]), "{summary:?}");
                if max >= SUMMARY_CHARS {
                    assert!(shown.chars().count() > max - 10, "{unit:?}: {shown}");
                }
            }
        }
    }

    #[test]
    fn a_detail_counts_characters_not_bytes() {
        let long = "é".repeat(DETAIL_CHARS + 10);
        let d = detail(&long);
        assert_eq!(d.chars().count(), DETAIL_CHARS);
        assert_eq!(d, format!("…{}", "é".repeat(DETAIL_CHARS - 1)));
        assert_eq!(detail("short"), "short");
        assert_eq!(tail(&"é".repeat(10), 4, |_| 1), "…ééé");
    }

    #[test]
    fn controls_and_separators_are_written_escaped() {
        assert_eq!(escape("plain text: ok (1/2)"), "plain text: ok (1/2)");
        assert_eq!(escape("a\nb\r\tc\0"), "a\\nb\\r\\tc\\0");
        assert_eq!(escape("\x1b[2J\x7f\x01"), "\\x1b[2J\\x7f\\x01");
        assert_eq!(escape("\u{85}\u{9f}"), "\\u{85}\\u{9f}");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
        assert_eq!(escape("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape("C:\\n"), "C:\\\\n");
        assert_eq!(escape("été ✓ 日本"), "été ✓ 日本");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(escape_bytes(b"ok\xff\xfe\n"), "ok\u{fffd}\u{fffd}\\n");
    }

    #[test]
    fn widths_match_what_is_written() {
        for c in [
            'a', '\\', '\n', '\x1b', '\u{85}', '\u{2028}', 'é', '\u{fffd}',
        ] {
            let mut s = String::new();
            push_escaped(&mut s, c);
            assert_eq!(s.chars().count(), escaped_width(c), "{c:?}");
        }
    }

    #[test]
    fn unescape_gives_the_original_back_and_refuses_the_rest() {
        let raw = "a\\b\n\r\t\0\x1b\x7f\u{85}\u{2028}\u{202e}é";
        assert_eq!(unescape(&escape(raw)).as_deref(), Some(raw));
        for bad in [
            "\\", "\\q", "\\x1", "\\x1B", "\\x41", "\\u{}", "\\u{85", "\\u{e9}", "\\u{7d}",
            "\\x0a", "a\nb",
        ] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }
}
