//! The man page and shell completions, rendered from the same clap
//! definition as `--help` so the three never disagree.

use std::io::{self, Write};

use crate::cli::Generate;

/// Writes the requested document to `out`.
pub fn generate(what: Generate, out: &mut dyn Write) -> io::Result<()> {
    let _ = (what, out);
    Err(io::Error::other("not implemented yet"))
}
