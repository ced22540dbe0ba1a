//! The man page and shell completions, rendered from the same clap
//! definition as `--help` (`Cli::command()`), so the three never disagree.
//! The package build runs `hostenv-activate --generate man|bash|zsh|fish`.

use std::io::{self, Write};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::{Cli, Generate};

/// Writes the requested document to `out`.
pub fn generate(what: Generate, out: &mut dyn Write) -> io::Result<()> {
    let shell = match what {
        Generate::Man => return out.write_all(man_page()?.as_bytes()),
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
    };
    let mut cmd = completion_command();
    let name = cmd.get_name().to_owned();
    // Rendered into memory first: clap_complete panics on a write error, and
    // a closed stdout (`--generate bash | head`) must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script)
}

/// `Cli::command()` less its hidden arguments: clap_complete offers hidden
/// flags too, and `--generate` is for the package build, not for operators.
fn completion_command() -> Command {
    let full = Cli::command();
    let visible = full
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .cloned();
    Command::new("hostenv-activate")
        .version(env!("CARGO_PKG_VERSION"))
        .args(visible.collect::<Vec<_>>())
        .subcommands(full.get_subcommands().cloned().collect::<Vec<_>>())
}

/// The man page: clap_mangen's, except that the after-help text
/// (configuration and exit status) is kept line for line as in `--help`,
/// in a section of its own, rather than refilled into one "EXTRA" paragraph.
fn man_page() -> io::Result<String> {
    let cmd = Cli::command();
    let after_help = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut page = Vec::new();
    Man::new(cmd.after_help(None::<&str>).after_long_help(None::<&str>)).render(&mut page)?;
    let page = String::from_utf8(page).map_err(io::Error::other)?;

    let mut section = String::from(".SH \"CONFIGURATION AND EXIT STATUS\"\n.nf\n");
    for line in after_help.lines() {
        section.push_str(&roff_literal(line));
        section.push('\n');
    }
    section.push_str(".fi\n");

    // Before the closing VERSION section, or at the end should it go away.
    let at = page.find("\n.SH VERSION\n").map_or(page.len(), |i| i + 1);
    Ok(format!("{}{section}{}", &page[..at], &page[at..]))
}

/// One line of text made safe for roff: backslashes and hyphens escaped, and
/// a leading `.` or `'` kept from being read as a request.
fn roff_literal(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::AFTER_HELP;

    fn render(what: Generate) -> String {
        let mut out = Vec::new();
        generate(what, &mut out).expect("rendering into memory cannot fail");
        String::from_utf8(out).expect("generated text is UTF-8")
    }

    /// The man page source with roff's escaped hyphens turned back, so
    /// `--node-name` and `HOSTENV_COMIN_NODE_NAME` can be searched as typed.
    fn man_text() -> String {
        render(Generate::Man).replace("\\-", "-")
    }

    /// Every `--long-flag` named in a piece of help text.
    fn long_flags(text: &str) -> Vec<String> {
        let mut flags: Vec<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.len() > 2 && word.starts_with("--"))
            .map(|word| word.trim_end_matches('-').to_owned())
            .collect();
        flags.sort();
        flags.dedup();
        flags
    }

    #[test]
    fn the_man_page_names_every_configuration_variable() {
        let man = man_text();
        for var in [
            "COMIN_GIT_SHA",
            "HOSTENV_COMIN_NODE_NAME",
            "HOSTENV_COMIN_API_BASE_URL",
            "HOSTENV_COMIN_TOKEN_FILE",
            "HOSTENV_COMIN_ACTION_TIMEOUT",
            "HOSTENV_COMIN_TARGET_OBSERVE_TIMEOUT",
            "HOSTENV_COMIN_INTENT_WAIT",
            "HOSTENV_COMIN_RUN_TIMEOUT",
            "HOSTENV_COMIN_HEALTH_TIMEOUT",
        ] {
            assert!(man.contains(var), "man page lacks {var}");
        }
        // And every variable clap knows of, should one be added later.
        for arg in Cli::command().get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(man.contains(&*env), "man page lacks {env}");
            }
        }
    }

    #[test]
    fn the_man_page_keeps_the_exit_status_table_line_for_line() {
        let man = man_text();
        assert!(man.contains(".SH \"CONFIGURATION AND EXIT STATUS\"\n.nf\n"));
        for line in AFTER_HELP.lines() {
            assert!(
                man.contains(&format!("{line}\n")),
                "man page lacks {line:?}"
            );
        }
        for status in [
            "  0  success",
            "  1  a deployment action failed",
            "  2  usage",
        ] {
            assert!(
                man.contains(status),
                "man page lacks exit status {status:?}"
            );
        }
    }

    #[test]
    fn help_and_man_page_list_the_same_long_flags() {
        let help = Cli::command().render_long_help().to_string();
        let man = man_text();
        let help_flags = long_flags(&help);
        for flag in ["--sha", "--node-name", "--dry-run", "--output", "--help"] {
            assert!(help_flags.iter().any(|f| f == flag), "--help lacks {flag}");
        }
        for flag in &help_flags {
            assert!(man.contains(flag.as_str()), "man page lacks {flag}");
        }
        // The hidden build-time flag stays out of both.
        assert!(!help.contains("--generate"));
        assert!(!man.contains("--generate"));
    }

    #[test]
    fn the_man_page_is_well_formed_roff() {
        let man = render(Generate::Man);
        assert!(man.contains("\n.TH hostenv-activate 1 "));
        assert_eq!(man.matches(".TH ").count(), 1);
        assert!(!man.contains(".SH EXTRA"));
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "VERSION"] {
            assert!(
                man.contains(&format!(".SH {section}\n")),
                "no {section} section"
            );
        }
        assert_eq!(
            man.matches("\n.nf\n").count(),
            man.matches("\n.fi\n").count()
        );
    }

    #[test]
    fn completions_offer_the_long_flags_but_not_the_hidden_one() {
        for shell in [Generate::Bash, Generate::Zsh, Generate::Fish] {
            let script = render(shell);
            assert!(script.contains("hostenv-activate"), "{shell:?}");
            assert!(script.contains("dry-run"), "{shell:?} lacks --dry-run");
            assert!(script.contains("node-name"), "{shell:?} lacks --node-name");
            assert!(!script.contains("generate"), "{shell:?} offers --generate");
        }
    }

    #[test]
    fn roff_literal_escapes_what_roff_would_interpret() {
        assert_eq!(roff_literal("--sha"), "\\-\\-sha");
        assert_eq!(roff_literal(".x"), "\\&.x");
        assert_eq!(roff_literal("'x"), "\\&'x");
        assert_eq!(roff_literal("a\\b"), "a\\eb");
    }
}
