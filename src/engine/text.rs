//! Turning a program's output into what an event can carry: a one-line
//! summary for the message and a bounded detail for the payload.

/// Newlines folded to "; ", blank lines dropped, at most `max` characters,
/// keeping the end (where programs usually say what went wrong).
pub fn fold_output(output: &str, max: usize) -> String {
    let folded = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    truncate_tail(&folded, max)
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
    fn truncation_counts_characters_not_bytes() {
        let s = truncate_tail(&"é".repeat(10), 4);
        assert_eq!(s, "…ééé");
    }
}
