//! `hostenv-nix-fmt [--check] FILE...`: formats .nix files with the
//! alejandra library (the same rules as the `alejandra` command the flake's
//! `formatter` output runs). With `--check`, changes nothing and exits 1 if
//! any file is not formatted; exits 2 on unreadable or unparsable files.

use std::process::ExitCode;

use alejandra::format::{in_memory, Status};

fn main() -> ExitCode {
    let mut check = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: hostenv-nix-fmt [--check] FILE...");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("usage: hostenv-nix-fmt [--check] FILE...");
        return ExitCode::from(2);
    }

    let (mut unformatted, mut errors) = (0, 0);
    for path in files {
        let before = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("{path}: {err}");
                errors += 1;
                continue;
            }
        };
        match in_memory(path.clone(), before) {
            (Status::Error(err), _) => {
                eprintln!("{path}: {err}");
                errors += 1;
            }
            (Status::Changed(false), _) => {}
            (Status::Changed(true), _) if check => {
                eprintln!("{path}: not formatted (run: hostenv-nix-fmt {path})");
                unformatted += 1;
            }
            (Status::Changed(true), after) => match std::fs::write(&path, after) {
                Ok(()) => eprintln!("{path}: formatted"),
                Err(err) => {
                    eprintln!("{path}: {err}");
                    errors += 1;
                }
            },
        }
    }
    if errors > 0 {
        ExitCode::from(2)
    } else if unformatted > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
