//! Turning a program's output into what an event can carry: a one-line
//! summary for the message and a bounded detail for the payload.

use crate::model::text::escaped_width;

/// Newlines folded to "; ", blank lines dropped, at most `max` characters
/// once escaped (every event message is, see [`crate::model::NodeEvent::new`]),
/// keeping the end (where programs usually say what went wrong). The cut
/// falls between characters, never inside an escape sequence.
pub fn fold_output(output: &str, max: usize) -> String {
    let folded = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    escaped_tail(&folded, max)
}

/// The end of `s` that takes at most `max` characters escaped, with a
/// leading "…" when cut.
fn escaped_tail(s: &str, max: usize) -> String {
    if s.chars().map(escaped_width).sum::<usize>() <= max {
        return s.to_owned();
    }
    let budget = max.saturating_sub(1);
    let mut used = 0;
    let mut start = s.len();
    for (at, c) in s.char_indices().rev() {
        used += escaped_width(c);
        if used > budget {
            break;
        }
        start = at;
    }
    format!("…{}", &s[start..])
}

/// The last `max` characters of `s`, with a leading "…" when cut.
pub fn truncate_tail(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(1);
    let tail: String = s.chars().skip(count - keep).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_lines_and_keeps_the_end() {
        assert_eq!(fold_output("a\n\n  b \nc\n", 220), "a; b; c");
        let long = format!("{}\nERROR: disk full", "x".repeat(500));
        let s = fold_output(&long, 220);
        assert_eq!(s.chars().count(), 220);
        assert!(s.starts_with('…'));
        assert!(s.ends_with("ERROR: disk full"));
    }

    #[test]
    fn the_bound_holds_once_escaped_and_no_escape_is_cut() {
        use crate::model::text::escape;
        // Control characters stay (escaped later, with the whole message).
        assert_eq!(fold_output("a\rb\x1b[2J\n\0c\n", 220), "a\rb\x1b[2J; \0c");
        for unit in ["\x1b", "\u{85}", "\\", "é", "x\0"] {
            for max in [1, 2, 5, 219, 220] {
                // Not only blanks at the start: `trim` would drop U+0085 there.
                let long = format!("a{}tail", unit.repeat(300));
                let summary = fold_output(&long, max);
                let shown = escape(&summary);
                assert!(shown.chars().count() <= max, "{unit:?} {max}: {shown}");
                assert!(summary.starts_with('…'), "{summary:?}");
                assert!(long.ends_with(&summary['…'.len_utf8()..]), "{summary:?}");
                if max >= 220 {
                    assert!(shown.chars().count() > max - 10, "{unit:?}: {shown}");
                }
            }
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let s = truncate_tail(&"é".repeat(10), 4);
        assert_eq!(s, "…ééé");
    }
}
