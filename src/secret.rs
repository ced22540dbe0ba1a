//! The node token as a type that never prints: no `Display`, a redacting
//! `Debug`, and access only through `expose()` where the header is built.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Trims surrounding whitespace (token files usually end in a newline).
    /// `None` if nothing is left.
    pub fn new(raw: &str) -> Option<Token> {
        let t = raw.trim();
        (!t.is_empty()).then(|| Token(t.to_owned()))
    }

    /// The secret itself. Call only where the Authorization header is built.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token::new("s3cr3t\n").expect("non-empty");
        assert_eq!(t.expose(), "s3cr3t");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(Token::new(" \n").is_none());
    }
}
